"""Self-training: teachers' soft labels for unlabelled soundscape windows
(`pseudolabel`) and several training runs in a row, pseudo-labelling between them
(`stages`)."""

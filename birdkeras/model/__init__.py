"""The model: the log-mel front end (`frontend`, Keras; `mel`, its numpy twin),
SpecAugment (`specaugment`), backbones and their weights (`backbones`), the classifier
and its heads (`classifier`), and a run's files beside its models (`run_files`).
Only `mel` and `run_files` import without Keras."""

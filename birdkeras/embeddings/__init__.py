"""The embedding route: frozen pretrained models (`frozen`), per-window embeddings in
shards (`extract`), heads on them (`heads`), their training with out-of-fold
predictions (`fit`) and what those tune (`tuning`), and a trained route run in
predict (`runner`)."""

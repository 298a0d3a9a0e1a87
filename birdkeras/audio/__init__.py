"""Audio in: files found, decoded, down-mixed and resampled (`io`), and cut into the
windows models score (`windows`)."""

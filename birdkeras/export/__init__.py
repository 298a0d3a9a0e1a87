"""Export for CPU inference: the conversions (`convert`: SavedModel, TFLite, ONNX,
OpenVINO), int8 quantisation (`int8`), the export card (`card`), and one model in one
runtime (`runtime`; `keras_runtime` for a `.keras` file). `card` and `runtime` import
neither Keras nor TensorFlow."""

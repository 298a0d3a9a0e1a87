"""birdkeras: BirdCLEF bird-sound classifiers in TensorFlow/Keras.

One module per stage of the flow:

    config       typed run configuration (frozen dataclasses + YAML + --set overrides)
    layout       each Kaggle download's folders, metadata files and columns
    synth        synthetic BirdCLEF tree for tests and the demo
    audio        decode, down-mix, resample (soundfile + soxr)
    sources      each Kaggle download's metadata -> one normalised table
    manifest     hygiene, class balancing, folds, label map
    tfrecord     the record format; shards: resumable build and verify
    data         tf.data pipeline; mixing: batch-level waveform augmentation
    features     in-model log-mel front end; augment: SpecAugment masks
    models       EfficientNet backbones and heads
    distribute   strategy selection; train: the trainer; metrics: official metrics
    logging      W&B, history, spectrograms; soundscapes: labelled soundscape tables
    export       SavedModel / TFLite / ONNX with an FFT-free front end
    infer        soundscapes -> windows -> probabilities -> submission (any runtime)
    evaluate     a submission vs labelled soundscapes: official metrics, plots
    kaggle       Kaggle download / publish, and the notebook environment
"""

__version__ = "0.1.0"

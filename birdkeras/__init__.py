"""birdkeras: BirdCLEF bird-sound classifiers in TensorFlow/Keras.

One module per stage of the flow:

    config     typed run configuration (frozen dataclasses + YAML + --set overrides)
    synth      synthetic BirdCLEF tree for tests and the demo
    audio      decode, down-mix, resample (soundfile + soxr)
    sources    each Kaggle download's metadata -> one normalised table
    manifest   hygiene, class balancing, folds, label map
    tfrecord   sharded, resumable TFRecord build and verify
"""

__version__ = "0.1.0"

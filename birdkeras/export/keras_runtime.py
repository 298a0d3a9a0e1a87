"""The "tf" runtime of a `.keras` model: the training model itself (training front end,
no augmentation) as a traced function. Kept apart from `birdkeras.export.runtime`
because it needs Keras and TensorFlow, which the export-folder runtimes must not import.
"""

from __future__ import annotations

import tensorflow as tf

from birdkeras.export.convert import inference_model
from birdkeras.model import classifier, run_files


def load(path, activation: str = "sigmoid", sed_output: str = "clip"):
    """(the run's config, its class names, windows -> probabilities) of a `.keras` model."""
    cfg, classes = run_files.read(path)
    model = inference_model(classifier.load_keras(path), activation, exportable=False,
                            sed_output=sed_output)
    fn = tf.function(lambda w: model(w, training=False), reduce_retracing=True)
    return cfg, classes, lambda w: fn(tf.constant(w)).numpy()

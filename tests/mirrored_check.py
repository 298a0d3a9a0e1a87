"""Run as a script: one device vs MirroredStrategy over 2 logical CPUs, same model/data.

Prints two JSON lists of per-step losses. BatchNorm layers are frozen (inference mode)
and dropout/masks are off, so per-replica batch statistics cannot differ from the
single-device ones; what remains is the strategy's gradient all-reduce.
"""

import json
import os
import sys

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from birdkeras.model import classifier  # noqa: E402
from birdkeras.train import optimization  # noqa: E402
from birdkeras.config import load_config  # noqa: E402

cfg = load_config(None, ["audio.num_mel_bins=32", "audio.hop_length=1024", "audio.window_s=1",
                         "model.dropout=0", "model.mask_probability=0", "train.lr_max=0.001",
                         "train.warmup_epochs=0", "train.epochs=1"])
rng = np.random.default_rng(0)
x = rng.standard_normal((64, 32000)).astype(np.float32) * 0.1
y = np.eye(4, dtype=np.float32)[rng.integers(0, 4, 64)]
steps = int(sys.argv[1]) if len(sys.argv) > 1 else 6


def trajectory(strategy):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = classifier.build_model(cfg, 4)
        for layer in model._flatten_layers():
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
        model.compile(optimizer=optimization.make_optimizer(cfg.train, 8, steps),
                      loss=optimization.make_loss(cfg.train))
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8).take(steps)
    losses = []
    model.fit(ds, epochs=1, verbose=0, callbacks=[keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda b, logs: losses.append(float(logs["loss"])))])
    return losses


one = trajectory(tf.distribute.OneDeviceStrategy("/cpu:0"))
two = trajectory(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
print(json.dumps({"one": one, "mirrored": two}))

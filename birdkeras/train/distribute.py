"""Choosing a tf.distribute strategy (TPU -> several GPUs -> one device), and the
training loop for the one strategy Keras' `fit` cannot drive (multi-worker).

`strategy: auto` takes a TPU where the machine has TPU device files (`/dev/accel*`) or
`TPU_NAME` (`TPUClusterResolver`, `tpu='local'` on TPU VMs), then
`MultiWorkerMirroredStrategy` when `TF_CONFIG` names several workers, then
`MirroredStrategy` over every GPU when there are two or more, else the default
(one device) strategy. Each choice can be forced by name. There is no silent fallback:
a TPU or GPU that is there but unusable (Kaggle's v5e-8 under TensorFlow 2.21, a GPU
without a CUDA build) stops the run with a `DeviceError` naming it.
"""

from __future__ import annotations

import glob
import json
import logging
import os

import keras
import tensorflow as tf

from birdkeras.errors import ConfigError, UserError

log = logging.getLogger(__name__)


class DeviceError(UserError):
    """The devices asked for, or present on the machine, cannot be used; the message
    says what was found and what to install or set."""


def accelerator_files() -> dict:
    """Accelerator device files on this machine: {"tpu": [...], "gpu": [...]}."""
    return {"tpu": sorted(glob.glob("/dev/accel*") + glob.glob("/dev/vfio/[0-9]*")),
            "gpu": sorted(glob.glob("/dev/nvidia[0-9]*"))}


def _unusable(kind: str, files: list) -> DeviceError:
    found = f"found {', '.join(files[:4])}" if files else "none found"
    fix = ("Kaggle's TPU v5e-8 has no TensorFlow TPU build (tensorflow-tpu stops at 2.20; "
           "TF and JAX cannot share the chips): train it with Keras on JAX "
           "(KERAS_BACKEND=jax); a TPU VM of your own needs a tensorflow-tpu matching its "
           "libtpu") if kind == "tpu" else "install a CUDA build: pip install 'tensorflow[and-cuda]'"
    return DeviceError(f"a {kind.upper()} was asked for or is on this machine ({found}) but "
                       f"TensorFlow cannot use it: {fix}; or set train.strategy=default to "
                       "train on the CPU")


def _tpu():
    kwargs = {"tpu": "local"} if os.environ.get("TPU_NAME", "") == "local" or os.path.exists(
        "/dev/accel0") else {}
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(**kwargs)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.NotFoundError, RuntimeError) as err:
        raise _unusable("tpu", accelerator_files()["tpu"]) from err
    return tf.distribute.TPUStrategy(resolver)


def _workers() -> int:
    config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    return len(config.get("cluster", {}).get("worker", []))


def select(name: str = "auto") -> tf.distribute.Strategy:
    """The strategy named (auto | tpu | multiworker | mirrored | default).

    `auto` never falls back silently: accelerator device files (`/dev/accel*`,
    `/dev/nvidia*`) that TensorFlow cannot use are an error naming them; a machine
    without any trains on the CPU and says so.
    """
    if name == "tpu":
        return _tpu()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "default":
        return tf.distribute.get_strategy()
    if name != "auto":
        raise ConfigError(f"train.strategy={name!r} is not one of auto, tpu, multiworker, "
                         "mirrored, default")
    files = accelerator_files()
    if files["tpu"] or os.environ.get("TPU_NAME"):
        return _tpu()
    if _workers() > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    if not gpus and files["gpu"]:
        raise _unusable("gpu", files["gpu"])
    if not gpus:
        log.info("no TPU or GPU on this machine: training on the CPU")
    return tf.distribute.get_strategy()


def describe(strategy: tf.distribute.Strategy) -> str:
    return f"{type(strategy).__name__} with {strategy.num_replicas_in_sync} replica(s)"


def fit_multiworker(model, strategy, dataset, loss_fn, callbacks, initial_epoch, epochs,
                    steps_per_epoch, global_batch):
    """The epochs `fit` would run, as a plain distributed loop driving the same callbacks.

    Keras 3's `fit` does not run under MultiWorkerMirroredStrategy
    (keras-team/keras#20585): per-replica losses (`loss_fn` with no reduction) are
    averaged over the global batch and the gradients all-reduced by `strategy.run`, as
    the TF multi-worker guide does.

    Args:
        model: the compiled model (its optimizer steps here).
        strategy: the MultiWorkerMirroredStrategy.
        dataset: the training dataset, repeated.
        loss_fn: the loss per example (no reduction).
        callbacks: the run's callbacks.
        initial_epoch: first epoch to run.
        epochs: run until this epoch.
        steps_per_epoch: steps in each epoch.
        global_batch: examples per step over all workers.
    """
    batches = iter(strategy.experimental_distribute_dataset(dataset))

    @tf.function
    def step(batch):
        def replica(x, y, *weights):
            with tf.GradientTape() as tape:
                losses = loss_fn(y, model(x, training=True))
                loss = tf.nn.compute_average_loss(
                    losses, sample_weight=weights[0] if weights else None,
                    global_batch_size=global_batch)
            grads = tape.gradient(loss, model.trainable_variables)
            model.optimizer.apply(grads, model.trainable_variables)
            return loss

        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(replica, args=batch),
                               axis=None)

    callback_list = keras.callbacks.CallbackList(callbacks, model=model)
    callback_list.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        callback_list.on_epoch_begin(epoch)
        total = 0.0
        for index in range(steps_per_epoch):
            total += float(step(next(batches)))
            callback_list.on_train_batch_end(index, {"loss": total / (index + 1)})
        callback_list.on_epoch_end(epoch, {"loss": total / steps_per_epoch})
    callback_list.on_train_end()

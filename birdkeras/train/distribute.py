"""Where a run trains: the devices, and how the batch is split over them (`Placement`).

One name in the config, `train.strategy`, on either backend (`train.backend`):

    auto         the accelerators there are (TPU, then GPUs), else the CPU, said in the log
    tpu | gpu    those, or a `DeviceError`
    cpu          the host CPU (on JAX: every host device, e.g. the 8 of
                 XLA_FLAGS=--xla_force_host_platform_device_count=8)
    mirrored, multiworker, default   TensorFlow's MirroredStrategy over the GPUs,
                 MultiWorkerMirroredStrategy (TF_CONFIG), one device

TensorFlow: a `tf.distribute` strategy (`TPUClusterResolver` for a TPU, `tpu='local'`
on TPU VMs; it needs a tensorflow-tpu build matching the machine's libtpu). JAX:
`keras.distribution.DataParallel` over `keras.distribution.list_devices()`, each global
batch split along its first axis (so it must divide by the device count: the trainer's
global batch is `input.batch_size` per device times the devices). There is no silent
fallback: a TPU or GPU that is there but unusable (Kaggle's v5e-8 under TensorFlow 2.21, a
GPU without a CUDA build of TF or JAX) stops the run with a `DeviceError` naming it and
what to install.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import logging
import os

import keras
import tensorflow as tf

from birdkeras.errors import ConfigError, UserError

log = logging.getLogger(__name__)

NAMES = ("auto", "tpu", "gpu", "cpu", "mirrored", "multiworker", "default")


class DeviceError(UserError):
    """The devices asked for, or present on the machine, cannot be used; the message
    says what was found and what to install or set."""


@dataclasses.dataclass
class Placement:
    """The devices of a run and how it spreads over them.

    Attributes:
        backend: the Keras backend (tensorflow | jax).
        platform: tpu | gpu | cpu.
        replicas: devices sharing each global batch.
        strategy: the `tf.distribute` strategy (TensorFlow), else None.
        distribution: the `keras.distribution.DataParallel` (JAX on several devices),
            else None.
    """

    backend: str
    platform: str
    replicas: int
    strategy: tf.distribute.Strategy | None = None
    distribution: object = None

    def scope(self):
        """The context to build, compile, fit and predict in."""
        if self.strategy is not None:
            return self.strategy.scope()
        if self.distribution is not None:
            return self.distribution.scope()
        return contextlib.nullcontext()

    @property
    def multiworker(self) -> bool:
        return isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy)

    def mixed_policy(self, setting) -> str | None:
        """The Keras policy for `train.mixed_precision` here (None: float32)."""
        if setting in ("bfloat16", "float16"):
            return f"mixed_{setting}"
        if setting is True and self.platform != "cpu":
            return "mixed_bfloat16" if self.platform == "tpu" else "mixed_float16"
        return None

    def check_batch(self, global_batch: int) -> None:
        """A clear error for a global batch the devices cannot share evenly."""
        if global_batch % self.replicas:
            raise ConfigError(f"a global batch of {global_batch} does not divide over "
                              f"{self.replicas} devices; make it a multiple of {self.replicas}")

    def describe(self) -> str:
        how = (type(self.strategy).__name__ if self.strategy is not None
               else "DataParallel" if self.distribution is not None else "one device")
        return (f"{self.backend} on {self.replicas} {self.platform.upper()} device(s) "
                f"({how}) with {self.replicas} replica(s)")


def accelerator_files() -> dict:
    """Accelerator device files on this machine: {"tpu": [...], "gpu": [...]}."""
    return {"tpu": sorted(glob.glob("/dev/accel*") + glob.glob("/dev/vfio/[0-9]*")),
            "gpu": sorted(glob.glob("/dev/nvidia[0-9]*"))}


def _unusable(kind: str, files: list, backend: str = "tensorflow") -> DeviceError:
    found = f"found {', '.join(files[:4])}" if files else "none found"
    if backend == "jax":
        fix = ("install JAX for it: pip install 'jax[tpu]'" if kind == "tpu" else
               "install a CUDA build of JAX: pip install 'jax[cuda12]'")
        name = "JAX"
    else:
        fix = ("Kaggle's TPU v5e-8 has no TensorFlow TPU build (tensorflow-tpu stops at 2.20; "
               "TF and JAX cannot share the chips): train it with Keras on JAX "
               "(train.backend=jax); a TPU VM of your own needs a tensorflow-tpu matching its "
               "libtpu") if kind == "tpu" else "install a CUDA build: pip install 'tensorflow[and-cuda]'"
        name = "TensorFlow"
    return DeviceError(f"a {kind.upper()} was asked for or is on this machine ({found}) but "
                       f"{name} cannot use it: {fix}; or set train.strategy=cpu to "
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


def select(name: str = "auto") -> Placement:
    """The placement named (see the module docstring), on the backend Keras runs on."""
    if name not in NAMES:
        raise ConfigError(f"train.strategy={name!r} is not one of {', '.join(NAMES)}")
    if keras.backend.backend() == "jax":
        return _select_jax(name)
    if keras.backend.backend() != "tensorflow":
        raise ConfigError(f"Keras runs on {keras.backend.backend()}; birdkeras trains on "
                          "tensorflow or jax (KERAS_BACKEND)")
    strategy, platform = _select_tf(name)
    return Placement("tensorflow", platform, strategy.num_replicas_in_sync, strategy=strategy)


def _select_tf(name: str):
    """(strategy, platform) on TensorFlow."""
    if name == "tpu":
        return _tpu(), "tpu"
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy(), "cpu"
    gpus = tf.config.list_logical_devices("GPU")
    platform = "gpu" if gpus else "cpu"
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(), platform
    if name == "default":
        return tf.distribute.get_strategy(), platform
    if name == "cpu":
        return tf.distribute.OneDeviceStrategy("/cpu:0"), "cpu"
    files = accelerator_files()
    if name == "gpu":
        if not gpus:
            raise _unusable("gpu", files["gpu"])
        return (tf.distribute.MirroredStrategy() if len(gpus) > 1
                else tf.distribute.get_strategy()), "gpu"
    # auto
    if files["tpu"] or os.environ.get("TPU_NAME"):
        return _tpu(), "tpu"
    if _workers() > 1:
        return tf.distribute.MultiWorkerMirroredStrategy(), platform
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy(), "gpu"
    if not gpus and files["gpu"]:
        raise _unusable("gpu", files["gpu"])
    if not gpus:
        log.info("no TPU or GPU on this machine: training on the CPU")
    return tf.distribute.get_strategy(), platform


def _select_jax(name: str) -> Placement:
    """DataParallel over the devices JAX sees (set before the model is built)."""
    import jax  # noqa: PLC0415 - the JAX backend only

    if name == "multiworker":
        raise ConfigError("train.strategy=multiworker is TensorFlow's; on JAX a multi-host "
                          "TPU pod slice needs jax.distributed, which birdkeras does not set up")
    # tf.data feeds JAX from the host: TensorFlow must not take the accelerators' memory.
    with contextlib.suppress(RuntimeError):  # already initialised: nothing to hide then
        tf.config.set_visible_devices([], "GPU")
    files, platform = accelerator_files(), jax.default_backend()
    if name in ("tpu", "gpu") and platform != name:
        raise _unusable(name, files[name], "jax")
    if name == "auto":
        for kind in ("tpu", "gpu"):
            if files[kind] and platform == "cpu":
                raise _unusable(kind, files[kind], "jax")
    if name in ("cpu", "default") or platform == "cpu":
        platform = "cpu"
    devices = keras.distribution.list_devices(platform)
    if name == "default":
        devices = devices[:1]
    if platform == "cpu" and name == "auto":
        log.info(f"no TPU or GPU on this machine: training on the CPU ({len(devices)} "
                 "device(s))")
    distribution = (keras.distribution.DataParallel(devices=devices) if len(devices) > 1
                    else None)
    return Placement("jax", platform, len(devices), distribution=distribution)


def describe(placement: Placement) -> str:
    return placement.describe()


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
    model.stop_training = False
    for epoch in range(initial_epoch, epochs):
        if model.stop_training:  # early stopping
            break
        callback_list.on_epoch_begin(epoch)
        total = 0.0
        for index in range(steps_per_epoch):
            total += float(step(next(batches)))
            callback_list.on_train_batch_end(index, {"loss": total / (index + 1)})
        callback_list.on_epoch_end(epoch, {"loss": total / steps_per_epoch})
    callback_list.on_train_end()

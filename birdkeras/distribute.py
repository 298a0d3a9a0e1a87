"""Choosing a tf.distribute strategy: TPU -> several GPUs -> one device.

`strategy: auto` tries a TPU (`TPUClusterResolver`, `tpu='local'` on TPU VMs), then
`MultiWorkerMirroredStrategy` when `TF_CONFIG` names several workers, then
`MirroredStrategy` over every GPU when there are two or more, else the default
(one device) strategy. Each choice can be forced by name.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf


def _tpu():
    kwargs = {"tpu": "local"} if os.environ.get("TPU_NAME", "") == "local" or os.path.exists(
        "/dev/accel0") else {}
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(**kwargs)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def _workers() -> int:
    config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    return len(config.get("cluster", {}).get("worker", []))


def select(name: str = "auto") -> tf.distribute.Strategy:
    """The strategy named (auto | tpu | multiworker | mirrored | default)."""
    if name == "tpu":
        return _tpu()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "default":
        return tf.distribute.get_strategy()
    if name != "auto":
        raise ValueError(f"train.strategy={name!r} is not one of auto, tpu, multiworker, "
                         "mirrored, default")
    try:
        return _tpu()
    except (ValueError, tf.errors.NotFoundError, RuntimeError):
        pass  # no TPU here
    if _workers() > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def describe(strategy: tf.distribute.Strategy) -> str:
    return f"{type(strategy).__name__} with {strategy.num_replicas_in_sync} replica(s)"

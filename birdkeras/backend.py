"""Which Keras backend runs the model: TensorFlow (CPU/GPU, and TF's own TPU builds) or
JAX (Kaggle's TPU v5e-8, GPUs). The data path (`tf.data`, TFRecords, `gs://`) is
TensorFlow under both.

Keras reads `KERAS_BACKEND` once, when it is first imported, so the choice is made
before that: the `birdkeras` command and `scripts/train.py` call `use(cfg.train.backend)`
(or `--backend`) first thing, and a notebook calls it in its first cell:

    from birdkeras import backend
    backend.use("jax")          # before anything that imports keras
    from birdkeras import train

Asking for another backend than the one Keras was imported with is an error naming
both, never a run on the wrong one. This module imports no Keras itself.
"""

from __future__ import annotations

import os
import sys

from birdkeras.errors import ConfigError

BACKENDS = ("tensorflow", "jax")


def current() -> str:
    """The backend Keras runs on, or will run on when it is imported."""
    if "keras" in sys.modules:
        return sys.modules["keras"].backend.backend()
    return os.environ.get("KERAS_BACKEND", "tensorflow")


def use(name: str) -> str:
    """Makes `name` the Keras backend; an error if Keras already runs on another.

    Returns:
        `name`.
    """
    if name not in BACKENDS:
        raise ConfigError(f"backend {name!r} is not one of {', '.join(BACKENDS)}")
    if "keras" in sys.modules:
        imported = current()
        if imported != name:
            raise ConfigError(
                f"this run asks for the {name} backend (train.backend or --backend) but Keras "
                f"was already imported with {imported}: set KERAS_BACKEND={name} before "
                "anything imports keras (in a notebook: restart the kernel and call "
                f"birdkeras.backend.use({name!r}) in the first cell)")
        return name
    os.environ["KERAS_BACKEND"] = name
    return name


def check(name: str) -> None:
    """An error unless Keras runs on `name` (a run's config against the process)."""
    if current() != name:
        raise ConfigError(
            f"train.backend={name} but Keras runs on {current()} in this process: start it "
            f"with KERAS_BACKEND={name} (the birdkeras command and scripts/train.py do this "
            f"from the config), or call birdkeras.backend.use({name!r}) before importing keras")

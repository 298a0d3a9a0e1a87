"""What training minimises and how: losses, the learning-rate schedule, the optimizer."""

from __future__ import annotations

import math

import keras
import numpy as np

from birdkeras import config as config_lib
from birdkeras.records import format as record_format


@keras.saving.register_keras_serializable(package="birdkeras")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """A warmup from `start` to `peak` over `warmup_steps`, then cosine to `end`.

    Args:
        start: learning rate at step 0.
        peak: learning rate at the end of the warmup.
        end: learning rate at `total_steps` and after.
        warmup_steps: steps of the warmup.
        total_steps: steps of the whole curve.
        offset_steps: steps already taken before this optimizer (a fresh optimizer
            part-way through a run, after unfreezing, continues the curve).
        cycle_steps: > 0: cosine cycles of this many steps after the warmup, each from
            `peak` to `end` (restarts); 0: one cosine to `total_steps`.
        warmup_shape: linear, or cosine (a half cosine from `start` up to `peak`:
            one-cycle).
    """

    def __init__(self, start, peak, end, warmup_steps, total_steps, offset_steps=0,
                 cycle_steps=0, warmup_shape="linear"):
        self.start, self.peak, self.end = float(start), float(peak), float(end)
        self.warmup_steps, self.total_steps = int(warmup_steps), int(total_steps)
        self.offset_steps = int(offset_steps)
        self.cycle_steps, self.warmup_shape = int(cycle_steps), warmup_shape

    def __call__(self, step):
        step = keras.ops.cast(step, "float32") + self.offset_steps
        rise = step / max(self.warmup_steps, 1)
        if self.warmup_shape == "cosine":
            rise = 0.5 * (1 - keras.ops.cos(math.pi * rise))
        warmup = self.start + (self.peak - self.start) * rise
        after = step - self.warmup_steps
        if self.cycle_steps:
            progress = (after % self.cycle_steps) / self.cycle_steps
        else:
            progress = keras.ops.clip(after / max(self.total_steps - self.warmup_steps, 1),
                                      0.0, 1.0)
        cosine = self.end + 0.5 * (self.peak - self.end) * (1 + keras.ops.cos(math.pi * progress))
        return keras.ops.where(step < self.warmup_steps, warmup, cosine)

    def get_config(self):
        return {"start": self.start, "peak": self.peak, "end": self.end,
                "warmup_steps": self.warmup_steps, "total_steps": self.total_steps,
                "offset_steps": self.offset_steps, "cycle_steps": self.cycle_steps,
                "warmup_shape": self.warmup_shape}


@keras.saving.register_keras_serializable(package="birdkeras")
class PositiveWeightedBCE(keras.losses.Loss):
    """BCE or focal BCE on logits with a weight per class on the positive term.

        loss = w_c · y · (1 - p)^γ · softplus(-z) + (1 - y) · p^γ · softplus(z)

    with p = sigmoid(z), y the (smoothed) target and γ = 0 for BCE. With all weights 1
    and hard targets it is Keras' BinaryCrossentropy / BinaryFocalCrossentropy (without
    alpha); averaged over classes like them.

    Args:
        pos_weight: one weight per class.
        gamma: the focal exponent (0: plain BCE).
        label_smoothing: targets move towards 0.5 by this much, as in Keras.
    """

    def __init__(self, pos_weight, gamma=0.0, label_smoothing=0.0,
                 reduction="sum_over_batch_size", name="positive_weighted_bce", **kwargs):
        super().__init__(reduction=reduction, name=name, **kwargs)
        self.pos_weight = [float(w) for w in pos_weight]
        self.gamma, self.label_smoothing = float(gamma), float(label_smoothing)

    def call(self, y_true, y_pred):
        ops = keras.ops
        y = ops.cast(y_true, y_pred.dtype)
        y = y * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        weight = ops.convert_to_tensor(self.pos_weight, dtype=y_pred.dtype)
        positive, negative = ops.softplus(-y_pred), ops.softplus(y_pred)  # -log p, -log(1-p)
        if self.gamma:
            p = ops.sigmoid(y_pred)
            positive = positive * ops.power(1.0 - p, self.gamma)
            negative = negative * ops.power(p, self.gamma)
        return ops.mean(weight * y * positive + (1.0 - y) * negative, axis=-1)

    def get_config(self):
        return {**super().get_config(), "pos_weight": self.pos_weight, "gamma": self.gamma,
                "label_smoothing": self.label_smoothing}


def positive_weights(card: dict, cfg: config_lib.Config, class_names) -> np.ndarray:
    """`train.pos_weight`'s weight per class from the dataset card's counts: negatives /
    positives among the training folds' records (inverse) or its square root (sqrt),
    between 1 and `train.pos_weight_max`; a class without training records gets the cap."""
    counts = card["counts_per_class_per_fold"]
    val = str(cfg.input.val_fold)
    total = record_format.training_records(card, cfg.input.val_fold)
    positives = np.array([sum(n for fold, n in counts.get(name, {}).items() if fold != val)
                          for name in class_names], dtype=np.float64)
    ratio = np.where(positives > 0, (total - positives) / np.maximum(positives, 1),
                     np.inf)
    if cfg.train.pos_weight == "sqrt":
        ratio = np.sqrt(ratio)
    return np.clip(ratio, 1.0, cfg.train.pos_weight_max).astype(np.float32)


@keras.saving.register_keras_serializable(package="birdkeras")
class EmbeddingDistance(keras.losses.Loss):
    """The distance of a projection to a teacher's embedding of the same window
    (embedding distillation):

        cosine: 1 - cos(projection, teacher)
        mse:    mean over dimensions of (p / |p| - t / |t|)^2

    A window without a teacher embedding (all zeros) adds zero.

    Args:
        kind: "cosine" or "mse".
    """

    def __init__(self, kind="cosine", reduction="sum_over_batch_size",
                 name="embedding_distance", **kwargs):
        super().__init__(reduction=reduction, name=name, **kwargs)
        if kind not in ("cosine", "mse"):
            raise ValueError(f"kind must be cosine or mse. Received: kind={kind!r}")
        self.kind = kind

    def call(self, y_true, y_pred):
        ops = keras.ops
        teacher, projection = ops.cast(y_true, "float32"), ops.cast(y_pred, "float32")
        present = ops.cast(ops.sum(ops.abs(teacher), axis=-1) > 0, "float32")
        unit = lambda v: v * ops.rsqrt(  # noqa: E731 - floored: untrained features are tiny
            ops.maximum(ops.sum(ops.square(v), axis=-1, keepdims=True), 1e-30))
        teacher, projection = unit(teacher), unit(projection)
        if self.kind == "cosine":
            distance = 1.0 - ops.sum(teacher * projection, axis=-1)
        else:
            distance = ops.mean(ops.square(teacher - projection), axis=-1)
        return distance * present

    def get_config(self):
        return {**super().get_config(), "kind": self.kind}


def make_loss(cfg: config_lib.TrainConfig, reduction="sum_over_batch_size", pos_weights=None):
    """CCE (one-hot), BCE (multi-hot) or focal BCE, on logits, with label smoothing;
    BCE and focal with `pos_weights` (one per class; `train.pos_weight`) weight each
    class's positive term."""
    common = {"from_logits": True, "label_smoothing": cfg.label_smoothing,
              "reduction": reduction}
    if cfg.loss == "cce":
        return keras.losses.CategoricalCrossentropy(**common)
    if pos_weights is not None:
        return PositiveWeightedBCE(pos_weights, cfg.focal_gamma if cfg.loss == "focal" else 0.0,
                                   cfg.label_smoothing, reduction=reduction)
    if cfg.loss == "bce":
        return keras.losses.BinaryCrossentropy(**common)
    return keras.losses.BinaryFocalCrossentropy(gamma=cfg.focal_gamma, **common)


def make_optimizer(cfg: config_lib.TrainConfig, global_batch: int, steps_per_epoch: int,
                   offset_steps: int = 0):
    """Adam or AdamW on the run's schedule (`train.schedule`), stepped per batch.

    Args:
        cfg: the run's training section (`lr_*`, `warmup_epochs`, `schedule`,
            `optimizer`, `clip_norm`, `ema`).
        global_batch: examples per step over all replicas (scales
            `lr_max_per_sample`).
        steps_per_epoch: optimizer steps per epoch.
        offset_steps: steps already taken before this optimizer.

    Returns:
        A `keras.optimizers.Optimizer`: its learning rate a `WarmupCosine`, or for
        `plateau` a number that `callbacks.Plateau` lowers.
    """
    peak = cfg.lr_max_per_sample * global_batch if cfg.lr_max_per_sample else cfg.lr_max
    if cfg.schedule == "plateau":
        rate = peak
    else:
        rate = WarmupCosine(min(cfg.lr_start, peak), peak, min(cfg.lr_min, peak),
                            int(cfg.warmup_epochs * steps_per_epoch),
                            cfg.epochs * steps_per_epoch, offset_steps,
                            cycle_steps=(max(1, round(cfg.restart_epochs * steps_per_epoch))
                                         if cfg.schedule == "cosine_restarts" else 0),
                            warmup_shape="cosine" if cfg.schedule == "one_cycle" else "linear")
    common = {"global_clipnorm": cfg.clip_norm or None, "use_ema": cfg.ema,
              "ema_momentum": cfg.ema_momentum}
    if cfg.optimizer == "adamw":
        return keras.optimizers.AdamW(rate, weight_decay=cfg.weight_decay, **common)
    return keras.optimizers.Adam(rate, **common)

"""What training minimises and how: losses, the learning-rate schedule, the optimizer."""

from __future__ import annotations

import math

import keras

from birdkeras import config as config_lib


@keras.saving.register_keras_serializable(package="birdkeras")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from `start` to `peak` over `warmup_steps`, cosine to `end`.

    Args:
        start: learning rate at step 0.
        peak: learning rate at the end of the warmup.
        end: learning rate at `total_steps` and after.
        warmup_steps: steps of the linear warmup.
        total_steps: steps of the whole curve.
        offset_steps: steps already taken before this optimizer (a fresh optimizer
            part-way through a run, after unfreezing, continues the curve).
    """

    def __init__(self, start, peak, end, warmup_steps, total_steps, offset_steps=0):
        self.start, self.peak, self.end = float(start), float(peak), float(end)
        self.warmup_steps, self.total_steps = int(warmup_steps), int(total_steps)
        # A fresh optimizer part-way through a run (after unfreezing) continues the curve.
        self.offset_steps = int(offset_steps)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32") + self.offset_steps
        warm = max(self.warmup_steps, 1)
        warmup = self.start + (self.peak - self.start) * step / warm
        progress = keras.ops.clip((step - self.warmup_steps)
                                  / max(self.total_steps - self.warmup_steps, 1), 0.0, 1.0)
        cosine = self.end + 0.5 * (self.peak - self.end) * (1 + keras.ops.cos(math.pi * progress))
        return keras.ops.where(step < self.warmup_steps, warmup, cosine)

    def get_config(self):
        return {"start": self.start, "peak": self.peak, "end": self.end,
                "warmup_steps": self.warmup_steps, "total_steps": self.total_steps,
                "offset_steps": self.offset_steps}


def make_loss(cfg: config_lib.TrainConfig, reduction="sum_over_batch_size"):
    """CCE (one-hot), BCE (multi-hot) or focal BCE, on logits, with label smoothing."""
    common = {"from_logits": True, "label_smoothing": cfg.label_smoothing,
              "reduction": reduction}
    if cfg.loss == "cce":
        return keras.losses.CategoricalCrossentropy(**common)
    if cfg.loss == "bce":
        return keras.losses.BinaryCrossentropy(**common)
    return keras.losses.BinaryFocalCrossentropy(gamma=cfg.focal_gamma, **common)


def make_optimizer(cfg: config_lib.TrainConfig, global_batch: int, steps_per_epoch: int,
                   offset_steps: int = 0):
    """Adam or AdamW on the warmup + cosine schedule, stepped per batch.

    Args:
        cfg: the run's training section (`lr_*`, `warmup_epochs`, `optimizer`).
        global_batch: examples per step over all replicas (scales
            `lr_max_per_sample`).
        steps_per_epoch: optimizer steps per epoch.
        offset_steps: steps already taken before this optimizer.

    Returns:
        A `keras.optimizers.Optimizer` whose learning rate is a `WarmupCosine`.
    """
    peak = cfg.lr_max_per_sample * global_batch if cfg.lr_max_per_sample else cfg.lr_max
    schedule = WarmupCosine(min(cfg.lr_start, peak), peak, min(cfg.lr_min, peak),
                            int(cfg.warmup_epochs * steps_per_epoch), cfg.epochs * steps_per_epoch,
                            offset_steps)
    if cfg.optimizer == "adamw":
        return keras.optimizers.AdamW(schedule, weight_decay=cfg.weight_decay)
    return keras.optimizers.Adam(schedule)

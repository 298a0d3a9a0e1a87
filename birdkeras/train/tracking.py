"""Experiment tracking: W&B (offline by default), per-step and per-epoch logs,
spectrograms, the worst validation clips, and the history plot at the end of a run.

W&B modes: `disabled`, `offline` (default; a run directory under `workdir/wandb`) and
`online` (only when asked *and* WANDB_API_KEY is set; otherwise offline, with a
message). Keys are read from the environment by wandb itself and never written to the
config dump, logs or files birdkeras writes.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import keras
import numpy as np

from birdkeras import config as config_lib
from birdkeras import plots

log = logging.getLogger(__name__)


def resolve_wandb_mode(requested: str) -> str:
    """`wandb.mode` as it can run here: 'online' needs WANDB_API_KEY, else 'offline'."""
    if requested == "online" and not os.environ.get("WANDB_API_KEY"):
        log.warning("wandb: mode 'online' asked but WANDB_API_KEY is not set: logging offline")
        return "offline"
    return requested


class RunLogger(keras.callbacks.Callback):
    """Logs per-step loss and LR, per-epoch metrics, spectrograms and worst clips.

    Args:
        cfg: the run's configuration (its `wandb` section decides the mode).
        workdir: the run's folder (W&B writes under it).
        val_ds: the validation dataset (a few spectrograms are logged from it).
        validation: the run's `ValidationMetrics` (its last predictions give the
            worst clips).
        class_names: the label vocabulary.
        log_every_steps: log loss and learning rate every this many steps.
    """

    def __init__(self, cfg: config_lib.Config, workdir: Path, val_ds, validation, class_names,
                 log_every_steps: int = 10):
        super().__init__()
        self.cfg, self.workdir, self.val_ds = cfg, Path(workdir), val_ds
        self.validation, self.class_names, self.every = validation, class_names, log_every_steps
        self.run = None

    def on_train_begin(self, logs=None):
        if self.run is not None or self.cfg.wandb.mode == "disabled":
            return
        import wandb  # noqa: PLC0415 - optional at run time, slow to import: only when logging

        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(project=self.cfg.wandb.project, name=self.cfg.name,
                              dir=str(self.workdir), mode=resolve_wandb_mode(self.cfg.wandb.mode),
                              config=config_lib.to_dict(self.cfg), reinit="finish_previous")
        self._log_spectrograms(wandb)

    def _log_spectrograms(self, wandb):
        x = np.asarray(next(iter(self.val_ds))[0][:4])
        mel = np.asarray(self.model.get_layer("log_mel")(x))[..., 0]
        images = []
        for m in mel:
            pixels = (255 * (m - m.min()) / (m.max() - m.min() + 1e-9)).astype(np.uint8)[::-1]
            images.append(wandb.Image(pixels, caption="log-mel"))
        self.run.log({"examples/log_mel": images}, commit=False)

    def on_train_batch_end(self, batch, logs=None):
        if self.run is None or batch % self.every:
            return
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self.run.log({"train/loss": float(logs["loss"]), "train/lr": lr}, step=step)

    def on_epoch_end(self, epoch, logs=None):
        if self.run is not None:
            step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
            self.run.log({f"epoch/{k}": float(v) for k, v in (logs or {}).items()}
                         | {"epoch": epoch}, step=step)

    def finish(self, summary: dict) -> None:
        plots.history(self.workdir / "history.csv", self.workdir / "history.png")
        if self.run is None:
            return
        import wandb  # noqa: PLC0415 - see on_train_begin

        self._log_worst_clips(wandb)
        self.run.summary.update({k: v for k, v in summary.items() if isinstance(v, float)})
        self.run.finish()

    def _log_worst_clips(self, wandb, limit: int = 2048):
        if self.validation.last is None:
            return
        labels, logits = self.validation.last
        waves = np.concatenate([x.numpy() for x, *_ in self.val_ds])[:limit]
        labels, logits = labels[: len(waves)], logits[: len(waves)]
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        loss = -np.sum(labels * np.log(probs + 1e-9), axis=1)
        table = wandb.Table(columns=["index", "label", "predicted", "loss", "audio"])
        for i in np.argsort(-loss)[: self.cfg.wandb.num_audio_examples]:
            table.add_data(int(i), self.class_names[int(labels[i].argmax())],
                           self.class_names[int(logits[i].argmax())], float(loss[i]),
                           wandb.Audio(waves[i], sample_rate=self.cfg.audio.sample_rate_hz))
        self.run.log({"validation/worst_clips": table})

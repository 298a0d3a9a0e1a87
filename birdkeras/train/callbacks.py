"""Callbacks of a training run: validation with the official metrics, checkpoints.

    ValidationMetrics  loss, macro ROC-AUC and padded cmAP on the whole validation set
    SoundscapeValidation  the same on labelled soundscape windows
    StepCheckpoint     ckpt/last.keras + state.json every N steps and every epoch
    best_checkpoints   best.keras and best.weights.h5 by the monitored metric
    MixShares          the realised share of each mixed training source
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from birdkeras import metrics
from birdkeras.model import classifier


class ValidationMetrics(keras.callbacks.Callback):
    """At each epoch end: loss and the official metrics on the whole validation set.

    Predictions run compiled (`Model.predict`, under the run's strategy), through a
    model that passes each batch's labels through beside its logits, so one pass over
    the data gives both, aligned. `eager=True` loops in Python instead (Keras 3's
    compiled loops do not run under MultiWorkerMirroredStrategy).

    Args:
        dataset: the validation `tf.data.Dataset` of (x, y[, weights]) batches.
        loss_fn: the training loss, applied to the whole set's (labels, logits).
        eager: loop in Python instead of `Model.predict`.

    Logs `val_loss`, `val_macro_auc` and `val_padded_cmap`; `last` keeps the
    latest (labels, logits).
    """

    def __init__(self, dataset, loss_fn, eager: bool = False):
        super().__init__()
        self.dataset, self.loss_fn, self.eager = dataset, loss_fn, eager
        self.inputs = dataset.map(lambda x, y, *weights: ((x, y),))
        self.last = None
        self._passthrough = (None, None)  # (model it wraps, passthrough model)

    def _predict(self):
        if self.eager:
            scorer = keras.Model(self.model.input, classifier.output_of(self.model))
            pairs = [(np.asarray(scorer(x, training=False)), y.numpy())
                     for x, y, *_ in self.dataset]
            return np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])
        if self._passthrough[0] is not self.model:
            logits = classifier.output_of(self.model)
            labels = keras.Input(logits.shape[1:], name="labels")
            passthrough = keras.Model([self.model.input, labels],
                                      [logits, keras.layers.Identity()(labels)])
            self._passthrough = (self.model, passthrough)
        with warnings.catch_warnings():
            # Keras warns when a dataset of unknown length ends; here that is the point.
            warnings.filterwarnings("ignore", message="Your input ran out of data")
            logits, labels = self._passthrough[1].predict(self.inputs, verbose=0)
        return np.asarray(logits), np.asarray(labels)

    def evaluate(self) -> dict:
        logits, labels = self._predict()
        self.last = (labels, logits)
        return {
            "val_loss": float(self.loss_fn(labels, logits)),
            "val_macro_auc": metrics.macro_roc_auc(labels, logits),
            "val_padded_cmap": metrics.padded_cmap(labels, logits),
        }

    def on_epoch_end(self, epoch, logs=None):
        logs.update(self.evaluate())


class StepCheckpoint(keras.callbacks.Callback):
    """Saves the full model (optimizer state included) and the position in training.

    Both files are written under a temporary name and renamed, so a run killed while
    saving keeps the previous checkpoint.

    Args:
        folder: where `last.keras` and `state.json` go.
        every_steps: save every this many steps inside an epoch (0: only at epoch end).
        steps_per_epoch: steps in one epoch (the last step is saved by the epoch end).
        epoch_offset: the epoch a resumed run starts in.
        step_offset: the step inside that epoch a resumed run starts at.
    """

    def __init__(self, folder: Path, every_steps: int, steps_per_epoch: int,
                 epoch_offset: int = 0, step_offset: int = 0):
        super().__init__()
        self.folder, self.every = folder, every_steps
        self.steps_per_epoch, self.epoch, self.step_offset = steps_per_epoch, epoch_offset, step_offset
        self.folder.mkdir(parents=True, exist_ok=True)

    def _save(self, epoch: int, step_in_epoch: int):
        tmp = self.folder / "last.tmp.keras"
        self.model.save(tmp)
        tmp.replace(self.folder / "last.keras")
        state = {"epoch": epoch, "step_in_epoch": step_in_epoch,
                 "global_step": int(self.model.optimizer.iterations.numpy())}
        (self.folder / "state.tmp.json").write_text(json.dumps(state))
        (self.folder / "state.tmp.json").replace(self.folder / "state.json")

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        step = self.step_offset + batch + 1
        if self.every and step % self.every == 0 and step < self.steps_per_epoch:
            self._save(self.epoch, step)

    def on_epoch_end(self, epoch, logs=None):
        self.step_offset = 0
        self._save(epoch + 1, 0)


def resume_state(folder: Path):
    """(state, last.keras) of the checkpoint in `folder`, or (None, None) when none."""
    state_path, model_path = folder / "state.json", folder / "last.keras"
    if state_path.is_file() and model_path.is_file():
        return json.loads(state_path.read_text()), model_path
    return None, None


def best_checkpoints(workdir: Path, monitor: str, history_csv: Path | None = None):
    """`best.keras` and `best.weights.h5`, saved when `monitor` improves.

    `history_csv`: the history of the run being resumed; the best value in it stays
    the one to beat, so a resumed run does not overwrite a better model with a worse.
    """
    mode = "min" if monitor == "val_loss" else "max"
    saves = [keras.callbacks.ModelCheckpoint(workdir / "best.keras", monitor=monitor,
                                             mode=mode, save_best_only=True),
             keras.callbacks.ModelCheckpoint(workdir / "best.weights.h5", monitor=monitor,
                                             mode=mode, save_best_only=True,
                                             save_weights_only=True)]
    if history_csv is not None and history_csv.is_file() and history_csv.stat().st_size > 0:
        history = pd.read_csv(history_csv)
        if monitor in history and len(history):
            best = float(history[monitor].min() if mode == "min" else history[monitor].max())
            for callback in saves:
                callback.best = best
    return saves


class SoundscapeValidation(keras.callbacks.Callback):
    """At each epoch end: the official metrics on labelled soundscape windows.

    `windows` (n, samples) and `targets` (n, classes) come from
    `soundscapes.labelled_windows` (either of Kaggle's label forms); predictions run
    compiled (`Model.predict`). Logged as val_soundscape_macro_auc and
    val_soundscape_padded_cmap, which `train.monitor` may select on (then the same
    soundscapes no longer give an unbiased final figure).

    Args:
        windows: (n, samples) float32 audio windows.
        targets: (n, classes) multi-hot labels.
        batch_size: prediction batch size.
    """

    def __init__(self, windows: np.ndarray, targets: np.ndarray, batch_size: int):
        super().__init__()
        self.windows, self.targets, self.batch_size = windows, targets, batch_size

    def on_epoch_end(self, epoch, logs=None):
        logits = self.model.predict(self.windows, batch_size=self.batch_size, verbose=0)
        if isinstance(logits, dict):  # a SED model trained with its frame-max output
            logits = logits["logits"]
        logs["val_soundscape_macro_auc"] = metrics.macro_roc_auc(self.targets, logits)
        logs["val_soundscape_padded_cmap"] = metrics.padded_cmap(self.targets, logits)


class MixShares(keras.callbacks.Callback):
    """Logs, per epoch, the share of training windows drawn from each mixed source
    (`mix_share_<folder name>`; the main records are `mix_share_main`)."""

    def __init__(self, counter):
        super().__init__()
        self.counter, self.start = counter, None

    def on_epoch_begin(self, epoch, logs=None):
        self.start = self.counter.counts.numpy().copy()

    def on_epoch_end(self, epoch, logs=None):
        delta = self.counter.counts.numpy() - self.start
        for k, (name, count) in enumerate(zip(self.counter.names, delta)):
            key = "main" if k == 0 else Path(name).name
            logs[f"mix_share_{key}"] = float(count / max(delta.sum(), 1))

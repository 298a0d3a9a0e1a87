"""Callbacks of a training run: validation with the official metrics, checkpoints.

    ValidationMetrics  loss, macro ROC-AUC and padded cmAP on the whole validation set
    SoundscapeValidation  the same on labelled soundscape windows
    DivergenceGuard    stops the run at the first non-finite loss (DivergenceError)
    StepCheckpoint     ckpt/last.keras (its position inside) every N steps and epoch
    BestCheckpoint     best.keras and best.weights.h5 by the monitored metric
    MixShares          the realised share of each mixed training source
    EMAWeights         the optimizer's moving average in the model for validation and
                       best.keras, the live weights back before the step checkpoint
    SWA                the weights at the last N epoch ends, averaged into swa.keras
    EarlyStopping      stops when the monitored metric has not improved for N epochs
    Plateau            lowers a constant learning rate when the metric stalls
"""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from birdkeras import metrics
from birdkeras.errors import UserError
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
        pad_to: pad every batch to this many examples (JAX: static shapes, an even split
            over the devices); the padding rows are dropped from the results.

    Logs `val_loss`, `val_macro_auc` and `val_padded_cmap`; `last` keeps the
    latest (labels, logits).
    """

    def __init__(self, dataset, loss_fn, eager: bool = False, pad_to: int | None = None):
        super().__init__()
        self.dataset, self.loss_fn, self.eager = dataset, loss_fn, eager
        self.inputs = dataset.map(lambda x, y, *weights: ((x, y),))
        if pad_to:
            self.inputs = dataset.map(lambda x, y, *weights: (_padded(x, y, pad_to),))
        self.last = None
        self.epoch = 0  # the epochs done when evaluated (for messages)
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
        real = np.asarray(labels)[:, 0] >= 0  # padding rows have label -1
        return np.asarray(logits)[real], np.asarray(labels)[real]

    def evaluate(self) -> dict:
        logits, labels = self._predict()
        if not np.isfinite(logits).all():
            raise _diverged("the validation predictions are not finite", self.epoch,
                            0, self.model)
        self.last = (labels, logits)
        return {
            "val_loss": float(self.loss_fn(labels, logits)),
            "val_macro_auc": metrics.macro_roc_auc(labels, logits),
            "val_padded_cmap": metrics.padded_cmap(labels, logits),
        }

    def on_epoch_end(self, epoch, logs=None):
        self.epoch = epoch + 1
        logs.update(self.evaluate())


class DivergenceError(UserError):
    """Training produced a non-finite loss, weights or predictions; the message names
    where, the learning rate there, and what to try."""


def _diverged(what: str, epoch: int, step: int, model) -> DivergenceError:
    lr = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    return DivergenceError(
        f"training diverged: {what} at epoch {epoch}, step {step} (learning rate {lr:.3g} "
        "there). The last good checkpoint is kept: lower train.lr_max (or "
        "train.lr_max_per_sample), lengthen train.warmup_epochs, or use bfloat16 instead "
        "of float16, then run the same command to resume from it")


class DivergenceGuard(keras.callbacks.Callback):
    """Stops a run at the first non-finite training loss, before anything saves that step
    (it comes first in the run's callbacks).

    Args:
        epoch_offset: the epoch a resumed run starts in.
        step_offset: the step inside that epoch a resumed run starts at.
    """

    def __init__(self, epoch_offset: int = 0, step_offset: int = 0):
        super().__init__()
        self.epoch, self.step_offset = epoch_offset, step_offset
        self.where = None  # (epoch, step) of the divergence

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", 0.0))
        if not np.isfinite(loss):
            self.where = (self.epoch, self.step_offset + batch + 1)
            raise _diverged(f"the training loss is {loss}", *self.where, self.model)

    def on_epoch_end(self, epoch, logs=None):
        self.step_offset = 0


def _finite(model) -> bool:
    return all(np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in model.weights)


CHECKPOINT_STATE = "birdkeras_state.json"  # the position, inside the checkpoint's zip


class StepCheckpoint(keras.callbacks.Callback):
    """Saves the full model (optimizer state included) and the position in training.

    One file, `last.keras`, holds both (the position as `birdkeras_state.json` inside
    the zip), written under a temporary name and renamed: a run killed or out of disk
    while saving resumes from the previous complete checkpoint. `state.json` beside it
    is a readable copy.

    Only weights known to be good replace the last checkpoint: a save inside an epoch is
    committed (renamed) at the next step's end, once `DivergenceGuard` (before this
    callback) has seen that step's loss, computed with those weights, finite; a save at
    an epoch's end, once the validation (also before it) has predicted finite values.
    Non-finite weights are never written (a `DivergenceError` instead).

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
        self.tmp, self.pending = self.folder / "last.tmp.keras", None

    def _write(self, epoch: int, step_in_epoch: int):
        """The model and its position, to the temporary file (not yet the checkpoint)."""
        if not _finite(self.model):
            raise _diverged("the weights are not finite", epoch, step_in_epoch, self.model)
        state = {"epoch": epoch, "step_in_epoch": step_in_epoch,
                 "global_step": int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))}
        self.pending = None
        self.model.save(self.tmp)
        with zipfile.ZipFile(self.tmp, "a") as archive:
            archive.writestr(CHECKPOINT_STATE, json.dumps(state))
        self.pending = state

    def _commit(self):
        if self.pending is None:
            return
        self.tmp.replace(self.folder / "last.keras")  # the commit point
        (self.folder / "state.tmp.json").write_text(json.dumps(self.pending))
        (self.folder / "state.tmp.json").replace(self.folder / "state.json")
        self.pending = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self._commit()  # this step's loss, from the pending weights, was finite
        step = self.step_offset + batch + 1
        if self.every and step % self.every == 0 and step < self.steps_per_epoch:
            self._write(self.epoch, step)

    def on_epoch_end(self, epoch, logs=None):
        self.step_offset = 0
        self._write(epoch + 1, 0)
        self._commit()


def _padded(x, y, size: int):
    """(x, y) padded to `size` rows: zeros, and labels of -1 that mark the padding."""
    extra = size - tf.shape(x)[0]
    x = tf.pad(x, [[0, extra]] + [[0, 0]] * (len(x.shape) - 1))
    y = tf.pad(y, [[0, extra], [0, 0]], constant_values=-1.0)
    x.set_shape([size, *x.shape[1:]])
    y.set_shape([size, *y.shape[1:]])
    return x, y


def resume_state(folder: Path):
    """(state, last.keras) of the checkpoint in `folder`, or (None, None) when none.

    The state is the one inside `last.keras` (written with it, in one rename).
    """
    model_path = folder / "last.keras"
    if not model_path.is_file():
        return None, None
    with zipfile.ZipFile(model_path) as archive:
        return json.loads(archive.read(CHECKPOINT_STATE)), model_path


class BestCheckpoint(keras.callbacks.Callback):
    """`best.keras` and `best.weights.h5`, saved (each to a temporary name, then renamed)
    when `monitor` improves on `best`; a non-finite value never counts as better.

    Args:
        workdir: the run's folder.
        monitor: the logged metric (val_loss is minimised, the others maximised).
        best: the value to beat (a resumed run's best so far), or None.
    """

    def __init__(self, workdir: Path, monitor: str, best: float | None = None):
        super().__init__()
        self.workdir, self.monitor = workdir, monitor
        self.mode = "min" if monitor == "val_loss" else "max"
        self.best = best

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not np.isfinite(value):
            return
        if self.best is not None and (value >= self.best if self.mode == "min"
                                      else value <= self.best):
            return
        self.best = float(value)
        for name, save in (("best.keras", self.model.save),
                           ("best.weights.h5", self.model.save_weights)):
            tmp = self.workdir / name.replace("best.", "best.tmp.")
            save(tmp)
            tmp.replace(self.workdir / name)


def best_checkpoints(workdir: Path, monitor: str, history_csv: Path | None = None):
    """`best.keras` and `best.weights.h5`, saved when `monitor` improves.

    `history_csv`: the history of the run being resumed; the best value in it stays
    the one to beat, so a resumed run does not overwrite a better model with a worse.
    """
    best = None
    if history_csv is not None and history_csv.is_file() and history_csv.stat().st_size > 0:
        history = pd.read_csv(history_csv)
        if monitor in history and history[monitor].notna().any():
            values = history[monitor].dropna()
            best = float(values.min() if monitor == "val_loss" else values.max())
    return [BestCheckpoint(workdir, monitor, best)]


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

    def __init__(self, windows: np.ndarray, targets: np.ndarray, batch_size: int,
                 pad: bool = False):
        super().__init__()
        self.windows, self.targets, self.batch_size = windows, targets, batch_size
        if pad:  # whole batches only (JAX); the padding windows are dropped again
            extra = -len(windows) % batch_size
            self.windows = np.concatenate([windows, np.zeros((extra, *windows.shape[1:]),
                                                             windows.dtype)])

    def on_epoch_end(self, epoch, logs=None):
        logits = self.model.predict(self.windows, batch_size=self.batch_size, verbose=0)
        if isinstance(logits, dict):  # a SED model trained with its frame-max output
            logits = logits["logits"]
        logits = np.asarray(logits)[:len(self.targets)]
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


class EMAWeights(keras.callbacks.Callback):
    """The optimizer's exponential moving average (`use_ema`) in the model at each epoch
    end, for the callbacks after this one (validation, best.keras, SWA); `restore`, a
    second callback placed before the step checkpoint, puts the live weights back, so
    the checkpoint resumes training from them (its optimizer holds the average).

    Keras overwrites the weights with the average when a `fit` call ends; the live ones
    are put back then too, so training continues from them in the next `fit` call (a
    frozen-backbone phase, a resumed epoch). The trainer takes the average for
    final.keras.
    """

    def __init__(self):
        super().__init__()
        self.live = None
        self.restore = _Call(self._restore)

    def on_epoch_end(self, epoch, logs=None):
        self.live = [keras.ops.convert_to_numpy(v) for v in self.model.trainable_variables]
        set_to_average(self.model)

    def _restore(self):
        if self.live is not None:
            for variable, value in zip(self.model.trainable_variables, self.live):
                variable.assign(value)

    def on_train_end(self, logs=None):
        self._restore()
        self.live = None


def set_to_average(model: keras.Model) -> None:
    """Sets the model's trainable weights to its optimizer's moving average (`use_ema`).

    Each weight gets a copy: on JAX, a weight assigned the average's own array shares
    its buffer, which the next compiled step donates, deleting the average with it.

    Args:
        model: a model whose optimizer has `use_ema` on and has been built.
    """
    averages = model.optimizer._model_variables_moving_average  # noqa: SLF001 - Keras' own
    for variable, average in zip(model.trainable_variables, averages):
        variable.assign(keras.ops.convert_to_numpy(average))


class _Call(keras.callbacks.Callback):
    """Calls `fn` at each epoch end (a second position in the callback list)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def on_epoch_end(self, epoch, logs=None):
        self.fn()


class SWA(keras.callbacks.Callback):
    """Keeps the model's weights at the last `epochs` epoch ends (`folder`/
    epoch-NNN.weights.h5, older ones deleted); `average` sets their mean into a model.

    The files survive a kill, so a resumed run averages the same epochs. Every weight is
    averaged, BatchNorm's moving statistics included (checkpoint averaging, as the
    BirdCLEF seeds do it, rather than a BatchNorm pass afterwards).

    Args:
        folder: where the epochs' weights go (the run's `swa/`).
        epochs: how many of the last epochs to keep and average.
    """

    def __init__(self, folder: Path, epochs: int):
        super().__init__()
        self.folder, self.epochs = folder, epochs
        folder.mkdir(parents=True, exist_ok=True)

    def on_epoch_end(self, epoch, logs=None):
        tmp = self.folder / "epoch.tmp.weights.h5"
        self.model.save_weights(tmp)
        tmp.replace(self.folder / f"epoch-{epoch + 1:03d}.weights.h5")
        for old in self.files()[:-self.epochs]:
            old.unlink()

    def files(self) -> list[Path]:
        return sorted(self.folder.glob("epoch-*.weights.h5"))

    def average(self, model) -> list[int]:
        """Sets the mean of the kept epochs' weights into `model`; returns the epochs."""
        files = self.files()[-self.epochs:]
        total = None
        for path in files:
            model.load_weights(path)
            weights = model.get_weights()
            total = weights if total is None else [a + b for a, b in zip(total, weights)]
        model.set_weights([(t / len(files)).astype(t.dtype) for t in total])
        return [int(p.name[6:9]) for p in files]


class _Patience(keras.callbacks.Callback):
    """Counts the epochs since `monitor` last improved; a resumed run's count starts
    from its history (`history_csv`), so a kill does not reset it."""

    def __init__(self, monitor: str, patience: int, history_csv: Path | None = None):
        super().__init__()
        self.monitor, self.patience = monitor, patience
        self.mode = "min" if monitor == "val_loss" else "max"
        self.best, self.wait = None, 0
        if history_csv is not None and history_csv.is_file() and history_csv.stat().st_size:
            history = pd.read_csv(history_csv)
            for value in history.get(monitor, []):
                if self._update(value) and self.resets:
                    self.wait = 0

    resets = False  # the count restarts after the patience is reached (Plateau)

    def _update(self, value) -> bool:
        """Counts one epoch's value; True when the count has reached the patience."""
        if value is None or not np.isfinite(value):
            self.wait += 1
        elif self.best is None or (value < self.best if self.mode == "min" else value > self.best):
            self.best, self.wait = float(value), 0
        else:
            self.wait += 1
        return self.wait >= self.patience


class EarlyStopping(_Patience):
    """Stops training when `monitor` has not improved for `patience` epochs; `stopped`
    tells the trainer's epoch loop (several `fit` calls) to end too."""

    stopped = None  # the epochs done when it stopped

    def on_epoch_end(self, epoch, logs=None):
        if self._update((logs or {}).get(self.monitor)):
            self.stopped, self.model.stop_training = epoch + 1, True


class Plateau(_Patience):
    """Multiplies the optimizer's (constant) learning rate by `factor` when `monitor` has
    not improved for `patience` epochs, down to `floor`; the rate is an optimizer
    variable, so the checkpoint carries it.

    Args:
        monitor: the logged metric (val_loss is minimised, the others maximised).
        patience: epochs without gain before each reduction.
        factor: what the rate is multiplied by.
        floor: the lowest rate.
        history_csv: a resumed run's history (the count goes on from it), or None.
    """

    resets = True

    def __init__(self, monitor: str, patience: int, factor: float, floor: float,
                 history_csv: Path | None = None):
        super().__init__(monitor, patience, history_csv)
        self.factor, self.floor = factor, floor

    def on_epoch_end(self, epoch, logs=None):
        if self._update((logs or {}).get(self.monitor)):
            rate = self.model.optimizer.learning_rate
            rate.assign(max(float(keras.ops.convert_to_numpy(rate)) * self.factor, self.floor))
            self.wait = 0

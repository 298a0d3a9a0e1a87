"""One plain trainer: strategy, model, loss, schedule, metrics, checkpoints, logs.

    python scripts/train.py --cfg configs/b0_pre.yaml [--set a.b=c] [--workdir DIR]
    birdkeras train --cfg configs/b0_pre.yaml

Order of initialisation matters: 1. resume from `workdir/ckpt` if a checkpoint is
there (same command again after a crash or kill), 2. else `train.init_from`, 3. else
from scratch. Everything a run writes goes to its workdir: the resolved config,
`name2label.json`, `ckpt/` (last.keras + state.json, every `checkpoint_every_steps`
steps and every epoch), `best.keras` and `best.weights.h5` (by `train.monitor`),
`final.keras`, `history.csv`, `history.png`, `per_class.csv`, TensorBoard logs in
`tb/`, and the W&B run directory in `wandb/`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from birdkeras import config as config_lib
from birdkeras import data, distribute, metrics, models
from birdkeras import logging as logging_lib


@keras.saving.register_keras_serializable(package="birdkeras")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from `start` to `peak` over `warmup_steps`, cosine to `end`."""

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
    common = {"from_logits": True, "label_smoothing": cfg.label_smoothing,
              "reduction": reduction}
    if cfg.loss == "cce":
        return keras.losses.CategoricalCrossentropy(**common)
    if cfg.loss == "bce":
        return keras.losses.BinaryCrossentropy(**common)
    return keras.losses.BinaryFocalCrossentropy(gamma=cfg.focal_gamma, **common)


def fit_multiworker(model, strategy, dataset, loss_cfg, callbacks, initial_epoch, epochs,
                    steps_per_epoch, global_batch):
    """The epochs `fit` would run, as a plain distributed loop driving the same callbacks.

    Keras 3's `fit` does not run under MultiWorkerMirroredStrategy
    (keras-team/keras#20585): per-replica losses are averaged over the global batch and
    the gradients all-reduced by `strategy.run`, as the TF multi-worker guide does.
    """
    per_example = make_loss(loss_cfg, reduction=None)
    batches = iter(strategy.experimental_distribute_dataset(dataset))

    @tf.function
    def step(batch):
        def replica(x, y, *weights):
            with tf.GradientTape() as tape:
                losses = per_example(y, model(x, training=True))
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


def make_optimizer(cfg: config_lib.TrainConfig, global_batch: int, steps_per_epoch: int,
                   offset_steps: int = 0):
    peak = cfg.lr_max_per_sample * global_batch if cfg.lr_max_per_sample else cfg.lr_max
    schedule = WarmupCosine(min(cfg.lr_start, peak), peak, min(cfg.lr_min, peak),
                            int(cfg.warmup_epochs * steps_per_epoch), cfg.epochs * steps_per_epoch,
                            offset_steps)
    if cfg.optimizer == "adamw":
        return keras.optimizers.AdamW(schedule, weight_decay=cfg.weight_decay)
    return keras.optimizers.Adam(schedule)


def init_from(model: keras.Model, path: str, skip=("logits", "sed")) -> dict:
    """Loads every layer of `path`'s model that `model` has, except those in `skip`.

    A layer present in both with different weight shapes is an error unless skipped.
    Returns {'loaded': [...], 'skipped': [...]} (also printed).
    """
    source = keras.models.load_model(path, compile=False)
    source_layers = {layer.name: layer for layer in source.layers}
    loaded, skipped = [], []
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name in skip or layer.name not in source_layers:
            skipped.append(layer.name)
            continue
        theirs = source_layers[layer.name].get_weights()
        mine = layer.get_weights()
        shapes = [w.shape for w in mine], [w.shape for w in theirs]
        if shapes[0] != shapes[1]:
            raise ValueError(
                f"train.init_from={path}: layer {layer.name!r} has weights of shapes "
                f"{shapes[1][:3]}... there and {shapes[0][:3]}... here; add it to "
                "train.init_skip or use a matching model")
        layer.set_weights(theirs)
        loaded.append(layer.name)
    print(f"init_from {path}: loaded {loaded}; skipped {skipped}")
    return {"loaded": loaded, "skipped": skipped}


class ValidationMetrics(keras.callbacks.Callback):
    """At each epoch end: loss and the official metrics on the whole validation set."""

    def __init__(self, dataset, loss_fn, class_names):
        super().__init__()
        self.dataset, self.loss_fn, self.class_names = dataset, loss_fn, class_names
        self.last = None

    def evaluate(self):
        labels, logits = [], []
        for x, y, *_ in self.dataset:
            logits.append(np.asarray(self.model(x, training=False)))
            labels.append(y.numpy())
        labels, logits = np.concatenate(labels), np.concatenate(logits)
        self.last = (labels, logits)
        return {
            "val_loss": float(self.loss_fn(labels, logits)),
            "val_macro_auc": metrics.macro_roc_auc(labels, logits),
            "val_padded_cmap": metrics.padded_cmap(labels, logits),
        }

    def on_epoch_end(self, epoch, logs=None):
        logs.update(self.evaluate())


class StepCheckpoint(keras.callbacks.Callback):
    """Saves the full model (optimizer state included) and the position in training."""

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


def _resume_state(workdir: Path):
    state_path, model_path = workdir / "ckpt" / "state.json", workdir / "ckpt" / "last.keras"
    if state_path.is_file() and model_path.is_file():
        return json.loads(state_path.read_text()), model_path
    return None, None


def _steps_per_epoch(cfg: config_lib.Config, card: dict, global_batch: int) -> int:
    if cfg.train.steps_per_epoch:
        return cfg.train.steps_per_epoch
    train_records = sum(s["records"] for s in card["shards"]
                        if not s["name"].startswith(f"fold{cfg.input.val_fold}-"))
    return max(1, train_records // global_batch)


def run(cfg: config_lib.Config, workdir: str | Path | None = None,
        stage_overrides: tuple = (), strategy: tf.distribute.Strategy | None = None) -> dict:
    """Trains `cfg` in `workdir` (default cfg.workdir); resumes if a checkpoint is there.

    `strategy`: one made already (a notebook's TPU can be initialised only once);
    default: `distribute.select(cfg.train.strategy)`.
    """
    if cfg.train.stages:
        return run_stages(cfg, workdir, stage_overrides)
    workdir = Path(workdir or cfg.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    # Fail before any training: the records must exist and agree with the config.
    card = data.read_card(cfg.tfrecords.dir)
    name2label = card["name2label"]
    manifest_map = Path(cfg.data.manifest_dir) / "name2label.json"
    data.check_card(card, cfg, json.loads(manifest_map.read_text()) if manifest_map.is_file()
                    else None)
    class_names = sorted(name2label, key=name2label.get)
    config_lib.save_config(cfg, workdir / "config.yaml")
    (workdir / "name2label.json").write_text(json.dumps(name2label, indent=1) + "\n")

    strategy = strategy or distribute.select(cfg.train.strategy)
    if cfg.train.mixed_precision:
        on_tpu = isinstance(strategy, tf.distribute.TPUStrategy)
        if on_tpu or tf.config.list_logical_devices("GPU"):
            keras.mixed_precision.set_global_policy("mixed_bfloat16" if on_tpu else "mixed_float16")
    global_batch = cfg.input.batch_size * strategy.num_replicas_in_sync
    multiworker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    if multiworker and strategy.cluster_resolver.task_id != 0:
        # Only the chief writes the run's outputs; the others keep theirs apart.
        workdir = workdir / f"worker{strategy.cluster_resolver.task_id}"
        workdir.mkdir(parents=True, exist_ok=True)
        cfg = dataclasses.replace(cfg, wandb=dataclasses.replace(cfg.wandb, mode="disabled"))
    steps = _steps_per_epoch(cfg, card, global_batch)
    print(f"{cfg.name}: {distribute.describe(strategy)}, global batch {global_batch}, "
          f"{steps} steps x {cfg.train.epochs} epochs, {len(class_names)} classes")
    train_ds = data.make_dataset(cfg, len(class_names), True, global_batch_size=global_batch)
    val_ds = data.make_dataset(cfg, len(class_names), False, global_batch_size=global_batch)
    loss_fn = make_loss(cfg.train)

    # Decide how to initialise. Order matters: 1. resume, 2. init_from, 3. scratch.
    state, last = _resume_state(workdir)
    with strategy.scope():
        if state is not None:
            model = keras.models.load_model(last)
            print(f"resuming from {last}: epoch {state['epoch']}, step "
                  f"{state['step_in_epoch']}, global step {state['global_step']}")
        else:
            model = models.build_model(cfg, len(class_names))
            if cfg.train.init_from:
                init_from(model, cfg.train.init_from, cfg.train.init_skip)

    def compile_model(offset_steps: int) -> None:
        with strategy.scope():
            model.compile(
                optimizer=make_optimizer(cfg.train, global_batch, steps, offset_steps),
                loss=loss_fn, jit_compile=cfg.train.jit_compile,
                metrics=[keras.metrics.AUC(curve="ROC", multi_label=True, from_logits=True,
                                           name="auc"),
                         keras.metrics.AUC(curve="PR", multi_label=True, from_logits=True,
                                           name="pr_auc")])

    validation = ValidationMetrics(val_ds, loss_fn, class_names)
    mode = "min" if cfg.train.monitor == "val_loss" else "max"
    epoch0 = state["epoch"] if state else 0
    step0 = state["step_in_epoch"] if state else 0
    checkpoint = StepCheckpoint(workdir / "ckpt", cfg.train.checkpoint_every_steps, steps,
                                epoch0, step0)
    logger = logging_lib.RunLogger(cfg, workdir, val_ds, validation, class_names)
    callbacks = [
        validation,
        keras.callbacks.ModelCheckpoint(workdir / "best.keras", monitor=cfg.train.monitor,
                                        mode=mode, save_best_only=True),
        keras.callbacks.ModelCheckpoint(workdir / "best.weights.h5", monitor=cfg.train.monitor,
                                        mode=mode, save_best_only=True, save_weights_only=True),
        checkpoint,
        keras.callbacks.CSVLogger(workdir / "history.csv", append=state is not None),
        keras.callbacks.TensorBoard(workdir / "tb", update_freq="epoch"),
        logger,
    ]
    if state is not None and (workdir / "history.csv").is_file() and (
            workdir / "history.csv").stat().st_size > 0:
        # The best model so far stays the best unless beaten after the resume.
        history = pd.read_csv(workdir / "history.csv")
        if cfg.train.monitor in history and len(history):
            best = history[cfg.train.monitor]
            for callback in callbacks[1:3]:
                callback.best = float(best.min() if mode == "min" else best.max())

    # Epochs before freeze_backbone_epochs train the head only; unfreezing needs a new
    # optimizer, whose schedule continues where the first one stopped.
    backbone = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    freeze_until, epoch, partial = cfg.train.freeze_backbone_epochs, epoch0, step0
    needs_compile = state is None
    while epoch < cfg.train.epochs:
        frozen = epoch < freeze_until
        if needs_compile or backbone.trainable == frozen:
            backbone.trainable = not frozen
            compile_model(offset_steps=epoch * steps)
            needs_compile = False
            print(f"epoch {epoch}: backbone {'frozen' if frozen else 'trainable'}")
        end = min(cfg.train.epochs, freeze_until) if frozen else cfg.train.epochs
        if partial:  # finish the interrupted epoch first, with the steps it still had
            end, epoch_steps = epoch + 1, steps - partial
        else:
            epoch_steps = steps
        if multiworker:
            fit_multiworker(model, strategy, train_ds, cfg.train, callbacks, epoch, end,
                            epoch_steps, global_batch)
        else:
            model.fit(train_ds, initial_epoch=epoch, epochs=end, steps_per_epoch=epoch_steps,
                      callbacks=callbacks, verbose="auto")
        epoch, partial = end, 0
    model.save(workdir / "final.keras")
    labels, logits = validation.last if validation.last else (None, None)
    if labels is None:
        validation.set_model(model)  # a resumed run that had no epoch left to train
        validation.evaluate()
        labels, logits = validation.last
    table = metrics.per_class_table(labels, logits, class_names)
    table.to_csv(workdir / "per_class.csv", index=False)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    summary = {
        "workdir": str(workdir),
        "val_macro_auc": metrics.macro_roc_auc(labels, logits),
        "val_padded_cmap": metrics.padded_cmap(labels, logits),
        "global_step": int(model.optimizer.iterations.numpy()),
        "best": str(workdir / "best.keras"),
    }
    logger.finish(summary)
    return summary


def run_stages(cfg: config_lib.Config, workdir: str | Path | None = None,
               stage_overrides: tuple = ()) -> dict:
    """Runs each config in `train.stages` in order, each from the previous best model.

    Stage files are paths relative to the working directory; `stage_overrides` (the
    command's --set values) apply to every stage.
    """
    workdir = Path(workdir or cfg.workdir)
    previous, summary = cfg.train.init_from, {}
    for stage_path in cfg.train.stages:
        path = Path(stage_path)
        overrides = [item for item in stage_overrides if not item.startswith("train.stages=")]
        if previous:
            overrides.append(f"train.init_from={previous}")
        stage = config_lib.load_config(path, overrides)
        summary = run(stage, workdir / stage.name)
        previous = summary["best"]
    return summary

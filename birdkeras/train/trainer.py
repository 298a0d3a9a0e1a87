"""One plain trainer: prepare, initialise, fit epoch by epoch, report.

    python scripts/train.py --cfg configs/b0_pre.yaml [--set a.b=c] [--workdir DIR]
    birdkeras train --cfg configs/b0_pre.yaml

`run` reads as its steps: `prepare` (records checked against the config, workdir,
strategy, datasets), `initial_model` (resume, `init_from` or scratch), `make_callbacks`,
`fit_epochs` (with backbone freezing), `final_report`. (Several runs in a row, and
self-training rounds: `birdkeras.selftrain.stages`, which calls `run` per stage.) Everything a run writes goes to
its workdir: the resolved config, `name2label.json`, `ckpt/` (last.keras + state.json,
every `checkpoint_every_steps` steps and every epoch), `best.keras` and
`best.weights.h5` (by `train.monitor`), `final.keras`, `history.csv`, `history.png`,
`per_class.csv`, TensorBoard logs in `tb/`, and the W&B run directory in `wandb/`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from birdkeras import backend as backend_lib
from birdkeras import config as config_lib
from birdkeras import metrics
from birdkeras.datasets import soundscapes as soundscapes_lib
from birdkeras.errors import ConfigError, UserError, require_file
from birdkeras.model import classifier, run_files
from birdkeras.records import format as record_format
from birdkeras.records import pipeline
from birdkeras.records import teacher as teacher_lib
from birdkeras.train import callbacks as callbacks_lib
from birdkeras.train import distribute, tracking
from birdkeras.train.optimization import (EmbeddingDistance, make_loss, make_optimizer,
                                          positive_weights)

log = logging.getLogger(__name__)


class InitError(UserError):
    """`train.init_from` cannot initialise this model; the message names the layer."""


@dataclasses.dataclass
class Run:
    """What a run needs once prepared (see `prepare`)."""

    cfg: config_lib.Config
    workdir: Path
    placement: distribute.Placement
    class_names: list
    global_batch: int
    steps: int  # per epoch
    train_ds: tf.data.Dataset
    val_ds: tf.data.Dataset
    mix_counter: pipeline.MixCounter | None = None
    pos_weights: np.ndarray | None = None  # train.pos_weight's, one per class
    teacher_dim: int = 0  # train.distill_embedding: the teacher's embedding size

    @property
    def frame_loss(self) -> bool:
        """A SED head trained on its clip logits and its frames' maximum."""
        return self.cfg.model.head == "sed" and self.cfg.train.sed_frame_loss_weight > 0

    @property
    def multiworker(self) -> bool:
        return self.placement.multiworker


def run(cfg: config_lib.Config, workdir: str | Path | None = None,
        placement: distribute.Placement | None = None) -> dict:
    """Trains `cfg` in `workdir` (default cfg.workdir); resumes if a checkpoint is there.

    `placement`: one made already (a notebook's TPU can be initialised only once);
    default: `distribute.select(cfg.train.strategy)`. Keras must run on
    `cfg.train.backend` (`birdkeras.backend.use`). Keras' global mixed-precision policy is
    restored when the run ends, so the caller's next model does not inherit it.
    """
    if cfg.train.stages:
        raise ConfigError(f"{cfg.name} lists train.stages {list(cfg.train.stages)}: run it with "
                          "birdkeras.selftrain.stages.run_stages (the `birdkeras train` command "
                          "does), which calls this function once per stage")
    if cfg.train.folds:
        raise ConfigError(f"{cfg.name} lists train.folds {list(cfg.train.folds)}: run it with "
                          "birdkeras.train.folds.run_folds (the `birdkeras train` command "
                          "does), which calls this function once per fold")
    policy = keras.mixed_precision.global_policy()
    try:
        prepared = prepare(cfg, Path(workdir or cfg.workdir), placement)
        with prepared.placement.scope():
            model, state = initial_model(prepared)
            validation = callbacks_lib.ValidationMetrics(
                prepared.val_ds, make_loss(cfg.train, pos_weights=prepared.pos_weights),
                eager=prepared.multiworker,
                pad_to=_pad_to(prepared))
            logger = tracking.RunLogger(prepared.cfg, prepared.workdir, prepared.val_ds,
                                        validation, prepared.class_names)
            callbacks = make_callbacks(prepared, state, validation, logger)
            try:
                fit_epochs(prepared, model, state, callbacks)
            except callbacks_lib.DivergenceError as err:
                _record_divergence(prepared, callbacks[0], err)
                raise
            return final_report(prepared, model, validation, logger)
    finally:
        keras.mixed_precision.set_global_policy(policy)


def prepare(cfg: config_lib.Config, workdir: Path, placement=None) -> Run:
    """Checks the records against the config (before any training), sets up the workdir,
    the placement, mixed precision and the datasets."""
    backend_lib.check(cfg.train.backend)
    if cfg.train.backend == "jax" and not cfg.input.drop_remainder:
        raise ConfigError("input.drop_remainder=false: XLA on JAX compiles one program per "
                          "batch shape; keep every training batch full (true)")
    card = record_format.read_dataset_card(cfg.tfrecords.dir)
    manifest_map = Path(cfg.data.manifest_dir) / "name2label.json"
    pipeline.check_card(card, cfg, json.loads(manifest_map.read_text()) if manifest_map.is_file()
                    else None)
    skipped = {}  # damaged shards, an error here unless input.skip_damaged_shards
    for folder in [cfg.tfrecords.dir, *cfg.input.mix_dirs]:
        skipped.update(pipeline.check_shards(folder, cfg))
    for path, why in skipped.items():
        log.warning(f"input.skip_damaged_shards: leaving out shard {path}, which {why}")
    name2label = card["name2label"]
    class_names = sorted(name2label, key=name2label.get)
    run_files.write(workdir, cfg, name2label)

    placement = placement or distribute.select(cfg.train.strategy)
    policy = placement.mixed_policy(cfg.train.mixed_precision)
    if policy:
        keras.mixed_precision.set_global_policy(policy)
    global_batch = cfg.input.batch_size * placement.replicas
    placement.check_batch(global_batch)
    if placement.multiworker and placement.strategy.cluster_resolver.task_id != 0:
        # Only the chief writes the run's outputs; the others keep theirs apart.
        workdir = workdir / f"worker{placement.strategy.cluster_resolver.task_id}"
        workdir.mkdir(parents=True, exist_ok=True)
        cfg = dataclasses.replace(cfg, wandb=dataclasses.replace(cfg.wandb, mode="disabled"))
    steps = steps_per_epoch(cfg, card, global_batch)
    log.info(f"{cfg.name}: {placement.describe()}, {policy or 'float32'}, global batch "
             f"{global_batch}, "
          f"{steps} steps x {cfg.train.epochs} epochs, {len(class_names)} classes")
    counter = None
    if cfg.input.mix_dirs:
        counter = pipeline.MixCounter([cfg.tfrecords.dir, *cfg.input.mix_dirs])
        shares = [1 - sum(cfg.input.mix_weights), *cfg.input.mix_weights]
        log.info("mixing " + ", ".join(f"{w:.0%} {d}" for w, d in zip(shares, counter.names)))
    teacher = None
    if cfg.train.distill_embedding.teacher:
        teacher = teacher_lib.load(cfg.train.distill_embedding.teacher)
        teacher_lib.check(teacher, cfg)
        log.info(f"train.distill_embedding: {teacher.dim}-d embeddings of "
                 f"{len(teacher.recordings)} recordings from {teacher.model}, "
                 f"{cfg.train.distill_embedding.loss} loss x {cfg.train.distill_embedding.weight}")
    train_ds = pipeline.make_dataset(cfg, len(class_names), True, global_batch_size=global_batch,
                                     mix_counter=counter, teacher=teacher)
    prepared = Run(cfg, workdir, placement, class_names, global_batch, steps, train_ds,
                   pipeline.make_dataset(cfg, len(class_names), False,
                                     global_batch_size=global_batch), counter)
    if cfg.train.pos_weight != "none":
        prepared.pos_weights = positive_weights(card, cfg, class_names)
        log.info(f"train.pos_weight={cfg.train.pos_weight}: positive weights from "
                 f"{prepared.pos_weights.min():.2f} to {prepared.pos_weights.max():.2f}")
    (workdir / REPORT).unlink(missing_ok=True)  # this run's report, not the previous one's
    write_report(prepared, status="running", skipped_shards=skipped)
    if teacher is not None:
        prepared.teacher_dim = teacher.dim
    if prepared.frame_loss or teacher is not None:  # one target per output
        prepared.train_ds = train_ds.map(lambda x, y, *rest: (
            x, _targets(prepared, y, rest[0] if teacher is not None else None),
            *rest[1 if teacher is not None else 0:]))
    return prepared


def _targets(prepared: Run, labels, embeddings) -> dict:
    """The targets of a model with several outputs: the labels for the logits (and the
    frame maximum), the teacher's embeddings for the projection."""
    targets = {"logits": labels}
    if prepared.frame_loss:
        targets["frame_max"] = labels
    if embeddings is not None:
        targets["teacher"] = embeddings
    return targets


def steps_per_epoch(cfg: config_lib.Config, card: dict, global_batch: int) -> int:
    """`train.steps_per_epoch`, or one pass over the training records."""
    if cfg.train.steps_per_epoch:
        return cfg.train.steps_per_epoch
    return max(1, record_format.training_records(card, cfg.input.val_fold) // global_batch)


def initial_model(prepared: Run):
    """The model to train and the resume state (None for a fresh run)."""
    cfg = prepared.cfg
    # Decide how to initialise. Order matters: 1. resume from the workdir's checkpoint
    # (the same command again after a crash), 2. train.init_from, 3. scratch.
    state, last = callbacks_lib.resume_state(prepared.workdir / "ckpt")
    with prepared.placement.scope():
        if state is not None:
            log.info(f"resuming from {last}: epoch {state['epoch']}, step "
                  f"{state['step_in_epoch']}, global step {state['global_step']}")
            return keras.models.load_model(last), state
        model = classifier.build_model(cfg, len(prepared.class_names))
        if prepared.frame_loss:
            model = classifier.with_frame_max(model)
        if prepared.teacher_dim:
            model = classifier.with_teacher_projection(model, prepared.teacher_dim)
        if cfg.train.init_from:
            init_from(model, cfg.train.init_from, cfg.train.init_skip)
    return model, None


def init_from(model: keras.Model, path: str, skip=config_lib.HEAD_LAYERS) -> dict:
    """Loads every layer of `path`'s model that `model` has, except those in `skip`.

    A layer present in both with different weight shapes is an error unless skipped.
    Returns {'loaded': [...], 'skipped': [...]} (also printed).
    """
    source = keras.models.load_model(require_file(path, "train.init_from"), compile=False)
    source_layers = {layer.name: layer for layer in source.layers}
    loaded, skipped = [], []
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name in skip or layer.name not in source_layers:
            skipped.append(layer.name)
            continue
        theirs = source_layers[layer.name].get_weights()
        shapes = [w.shape for w in layer.get_weights()], [w.shape for w in theirs]
        if shapes[0] != shapes[1]:
            raise InitError(
                f"train.init_from={path}: layer {layer.name!r} has weights of shapes "
                f"{shapes[1][:3]}... there and {shapes[0][:3]}... here; add it to "
                "train.init_skip or use a matching model")
        layer.set_weights(theirs)
        loaded.append(layer.name)
    log.info(f"init_from {path}: loaded {loaded}; skipped {skipped}")
    return {"loaded": loaded, "skipped": skipped}


def make_callbacks(prepared: Run, state, validation, logger) -> list:
    """Validation first (the checkpoints monitor its metrics), then saves and logs.

    Args:
        prepared: the prepared run (config, workdir, datasets, strategy).
        state: the resumed checkpoint's state, or None for a fresh run.
        validation: the run's `ValidationMetrics`.
        logger: the run's `RunLogger`.

    Returns:
        The callbacks, in the order Keras must call them.
    """
    # Labelled soundscapes are decoded once, before the first epoch.
    cfg, workdir = prepared.cfg, prepared.workdir
    history = workdir / "history.csv"
    if state is None:
        history.unlink(missing_ok=True)  # a fresh run's history starts empty
    soundscapes = []
    if cfg.train.val_soundscapes:
        waves, targets, table = soundscapes_lib.labelled_windows(
            cfg.data.root, cfg.train.val_soundscapes, prepared.class_names,
            cfg.audio.sample_rate_hz, cfg.audio.window_s)
        log.info(f"validating on {len(table)} labelled soundscape windows of "
              f"{cfg.train.val_soundscapes} ({table['path'].nunique()} files)")
        soundscapes = [callbacks_lib.SoundscapeValidation(waves, targets, prepared.global_batch,
                                                          pad=_pad_to(prepared) is not None)]
    mix = [callbacks_lib.MixShares(prepared.mix_counter)] if prepared.mix_counter else []
    resumed_history = history if state is not None else None
    # At an epoch end, in this order: the EMA weights in, validation, best.keras, SWA,
    # early stopping and plateau on the validated metric, the live weights back, the step
    # checkpoint.
    ema = callbacks_lib.EMAWeights() if cfg.train.ema else None
    after = []
    if cfg.train.swa_epochs:
        after.append(callbacks_lib.SWA(workdir / "swa", cfg.train.swa_epochs))
    if cfg.train.early_stopping_patience:
        after.append(callbacks_lib.EarlyStopping(cfg.train.monitor,
                                                 cfg.train.early_stopping_patience,
                                                 resumed_history))
    if cfg.train.schedule == "plateau":
        after.append(callbacks_lib.Plateau(cfg.train.monitor, cfg.train.plateau_patience,
                                           cfg.train.plateau_factor, cfg.train.lr_min,
                                           resumed_history))
    return [
        callbacks_lib.DivergenceGuard(state["epoch"] if state else 0,
                                      state["step_in_epoch"] if state else 0),
        *([ema] if ema else []),
        validation,
        *soundscapes,
        *mix,
        *callbacks_lib.best_checkpoints(workdir, cfg.train.monitor, resumed_history),
        *after,
        *([ema.restore] if ema else []),
        callbacks_lib.StepCheckpoint(workdir / "ckpt", cfg.train.checkpoint_every_steps,
                                     prepared.steps, state["epoch"] if state else 0,
                                     state["step_in_epoch"] if state else 0),
        # Appending: each `fit` call (a frozen-backbone phase, then the rest) reopens it.
        keras.callbacks.CSVLogger(history, append=True),
        keras.callbacks.TensorBoard(workdir / "tb", update_freq="epoch"),
        logger,
    ]


def fit_epochs(prepared: Run, model: keras.Model, state, callbacks) -> None:
    """Trains until `train.epochs`, the backbone frozen for `freeze_backbone_epochs`.

    Unfreezing needs a new optimizer, whose schedule continues where the first one
    stopped. A resumed run first finishes its interrupted epoch with the steps it had left.

    Args:
        prepared: the prepared run.
        model: the model to train (compiled here).
        state: the resumed checkpoint's state, or None for a fresh run.
        callbacks: from `make_callbacks`.
    """
    cfg, steps = prepared.cfg, prepared.steps
    backbone = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    # One line per epoch when the output is a log file, not a terminal (Keras' bars
    # would be one giant line of ANSI codes there).
    verbose = "auto" if sys.stdout.isatty() else 2
    epoch, partial = (state["epoch"], state["step_in_epoch"]) if state else (0, 0)
    # A resumed model is compiled again from the config (a fixed learning rate takes
    # effect), carrying the checkpoint's optimizer state.
    carried = getattr(model, "optimizer", None) if state else None
    needs_compile = True
    while epoch < cfg.train.epochs:
        frozen = epoch < cfg.train.freeze_backbone_epochs
        if needs_compile or backbone.trainable == frozen:
            backbone.trainable = not frozen
            _compile(prepared, model, offset_steps=epoch * steps, carried=carried,
                     position=epoch * steps + partial)
            needs_compile, carried = False, None
            log.info(f"epoch {epoch}: backbone {'frozen' if frozen else 'trainable'}")
        end = min(cfg.train.epochs, cfg.train.freeze_backbone_epochs) if frozen else cfg.train.epochs
        epoch_steps = steps
        if partial:
            end, epoch_steps = epoch + 1, steps - partial
        if prepared.multiworker:
            distribute.fit_multiworker(model, prepared.placement.strategy, prepared.train_ds,
                                       _per_example_loss(prepared), callbacks, epoch, end,
                                       epoch_steps, prepared.global_batch)
        else:
            model.fit(prepared.train_ds, initial_epoch=epoch, epochs=end,
                      steps_per_epoch=epoch_steps, callbacks=callbacks, verbose=verbose)
        epoch, partial = end, 0
        stopped = [c.stopped for c in callbacks if getattr(c, "stopped", None)]
        if stopped:
            epoch = stopped[0]
            log.info(f"early stopping after epoch {epoch}: {cfg.train.monitor} has not "
                     f"improved for {cfg.train.early_stopping_patience} epochs")
            write_report(prepared, stopped_early_after_epoch=epoch)
            break


def losses_for(cfg: config_lib.Config, pos_weights=None, reduction="sum_over_batch_size"):
    """(loss, loss weights): one loss, or one per output of a model with several: a SED
    head trained on its frames too (`train.sed_frame_loss_weight` > 0,
    `classifier.with_frame_max`) and a teacher projection (`train.distill_embedding`,
    `classifier.with_teacher_projection`); `pos_weights`: `train.pos_weight`'s."""
    loss = make_loss(cfg.train, reduction=reduction, pos_weights=pos_weights)
    losses, weights = {"logits": loss}, {"logits": 1.0}
    if cfg.model.head == "sed" and cfg.train.sed_frame_loss_weight > 0:
        losses["frame_max"] = make_loss(cfg.train, reduction=reduction, pos_weights=pos_weights)
        weights["frame_max"] = cfg.train.sed_frame_loss_weight
    distill = cfg.train.distill_embedding
    if distill.teacher:
        losses["teacher"] = EmbeddingDistance(distill.loss, reduction=reduction)
        weights["teacher"] = distill.weight
    return (loss, None) if len(losses) == 1 else (losses, weights)


def _compile(prepared: Run, model: keras.Model, offset_steps: int, carried=None,
             position: int = 0) -> None:
    """Compiles `model` with a fresh optimizer whose schedule starts `offset_steps` in;
    `carried`: a resumed checkpoint's optimizer, whose state (moments, step count) the
    new one takes over, its schedule continuing at `position` (the run's global step)."""
    cfg = prepared.cfg
    if carried is not None:
        offset_steps = position - int(keras.ops.convert_to_numpy(carried.iterations))
    loss, weights = losses_for(cfg, prepared.pos_weights)
    metrics_ = [keras.metrics.AUC(curve="ROC", multi_label=True, from_logits=True, name="auc"),
                keras.metrics.AUC(curve="PR", multi_label=True, from_logits=True,
                                  name="pr_auc")]
    if weights:
        metrics_ = {"logits": metrics_}
    with prepared.placement.scope():
        model.compile(
            optimizer=make_optimizer(cfg.train, prepared.global_batch, prepared.steps,
                                     offset_steps),
            loss=loss, loss_weights=weights, metrics=metrics_,
            # JAX always compiles: un-jitted JAX steps op by op.
            jit_compile=True if prepared.placement.backend == "jax" else cfg.train.jit_compile)
        if carried is not None:
            _carry_state(carried, model)


def _carry_state(old, model: keras.Model) -> None:
    """Copies a loaded optimizer's variables into `model`'s new one (same model, so the
    same variables in the same order); a mismatch starts fresh moments, said in the log."""
    new = model.optimizer
    new.build(model.trainable_variables)
    pairs = list(zip(old.variables, new.variables))
    if len(old.variables) != len(new.variables) or any(
            tuple(a.shape) != tuple(b.shape) for a, b in pairs):
        log.warning("the checkpoint's optimizer state does not fit this optimizer "
                    f"({len(old.variables)} vs {len(new.variables)} variables): its moments "
                    "start fresh; the step count carries on")
        new.iterations.assign(old.iterations)
        return
    for a, b in pairs:
        b.assign(a)


def _pad_to(prepared: Run) -> int | None:
    """Prediction batches padded to the global batch on JAX (static shapes for XLA, an
    even split over the devices); None on TensorFlow."""
    return prepared.global_batch if prepared.placement.backend == "jax" else None


def _per_example_loss(prepared: Run):
    """The loss per example (no reduction), for the multi-worker loop."""
    losses, weights = losses_for(prepared.cfg, prepared.pos_weights, reduction=None)
    if weights is None:
        return losses
    return lambda y, out: sum(weights[k] * losses[k](y[k], out[k]) for k in losses)


def final_report(prepared: Run, model: keras.Model, validation, logger) -> dict:
    """final.keras, the per-class table of the last validation, and the run summary.

    Args:
        prepared: the prepared run.
        model: the trained model.
        validation: the run's `ValidationMetrics` (evaluated here when a resumed run
            had no epoch left).
        logger: the run's `RunLogger`, finished with the summary.

    Returns:
        The summary: workdir, final validation macro AUC and padded cmAP, global step,
        path of best.keras.
    """
    workdir = prepared.workdir
    if prepared.cfg.train.ema:  # the averaged weights, which the validation scored
        callbacks_lib.set_to_average(model)
    model.save(workdir / "final.tmp.keras")
    (workdir / "final.tmp.keras").replace(workdir / "final.keras")
    if validation.last is None:  # a resumed run that had no epoch left to train
        validation.set_model(model)
        validation.evaluate()
    labels, logits = validation.last
    table = metrics.per_class_table(labels, logits, prepared.class_names)
    table.to_csv(workdir / "per_class.csv", index=False)
    log.info(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    summary = {
        "workdir": str(workdir),
        "val_macro_auc": metrics.macro_roc_auc(labels, logits),
        "val_padded_cmap": metrics.padded_cmap(labels, logits),
        "global_step": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
        "best": str(workdir / "best.keras"),
        "model": str(workdir / "best.keras"),  # what export and predict take
    }
    if prepared.cfg.train.swa_epochs:
        summary.update(_swa_model(prepared, model, validation))
    logger.finish(summary)
    write_report(prepared, status="completed", summary=summary)
    return summary


def _swa_model(prepared: Run, model: keras.Model, validation) -> dict:
    """swa.keras: the mean of the last `train.swa_epochs` epochs' weights, validated;
    `model` keeps its own weights."""
    swa = callbacks_lib.SWA(prepared.workdir / "swa", prepared.cfg.train.swa_epochs)
    own = model.get_weights()
    epochs = swa.average(model)
    model.save(prepared.workdir / "swa.tmp.keras")
    (prepared.workdir / "swa.tmp.keras").replace(prepared.workdir / "swa.keras")
    validation.set_model(model)
    scores = validation.evaluate()
    model.set_weights(own)
    log.info(f"swa.keras (epochs {epochs}): val_macro_auc {scores['val_macro_auc']:.4f}, "
             f"val_padded_cmap {scores['val_padded_cmap']:.4f}")
    return {"swa": str(prepared.workdir / "swa.keras"), "swa_epochs": epochs,
            "swa_val_macro_auc": scores["val_macro_auc"],
            "swa_val_padded_cmap": scores["val_padded_cmap"]}


REPORT = "run_report.json"


def write_report(prepared: Run, **fields) -> dict:
    """Updates the run's `run_report.json`: its status (running, completed, diverged),
    the shards left out, and how it ended."""
    path = prepared.workdir / REPORT
    report = json.loads(path.read_text()) if path.is_file() else {}
    report.update(fields)
    path.write_text(json.dumps(report, indent=1) + "\n")
    return report


def _record_divergence(prepared: Run, guard, err) -> None:
    """A diverged run says so in run_report.json and in history.csv (a row with the
    epoch and a non-finite loss); its last good checkpoint is left as it was."""
    write_report(prepared, status="diverged", message=str(err))
    history = prepared.workdir / "history.csv"
    if guard.where is not None and history.is_file() and history.stat().st_size > 0:
        columns = history.read_text().splitlines()[0].split(",")
        row = ["nan" if c == "loss" else str(guard.where[0]) if c == "epoch" else ""
               for c in columns]
        with history.open("a") as f:
            f.write(",".join(row) + "\n")

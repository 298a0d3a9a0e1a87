"""k-fold training: one run per fold, out-of-fold predictions, one ensemble.

    birdkeras train --cfg configs/b0_pre.yaml --folds 0,1,2,3,4
    (or train.folds: [0, 1, 2, 3, 4] in the config)

Each fold k trains in `<workdir>/fold<k>/` with `input.val_fold = k` (the plain trainer,
so a killed fold resumes from its own checkpoint and a completed fold is not trained
again), then predicts its validation fold with its `best.keras`: those windows were never
seen by that model (folds are split by recording, and by group where the manifest
groups them). The workdir gets

    oof.csv            recording_id, fold, start_s, label_<class>..., <class>... (sigmoid)
    oof_metrics.json   macro ROC-AUC and padded cmAP per fold and pooled over all folds
    ensemble.json      the folds' best models, which `predict --model <workdir>` averages
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from birdkeras import config as config_lib
from birdkeras import metrics
from birdkeras.errors import ConfigError
from birdkeras.model import classifier, run_files
from birdkeras.records import format as record_format
from birdkeras.records import pipeline
from birdkeras.train import trainer

log = logging.getLogger(__name__)

OOF = "oof.csv"


def available_folds(cfg: config_lib.Config) -> list[int]:
    """The folds the records hold (train-only shards are no fold)."""
    card = record_format.read_dataset_card(cfg.tfrecords.dir)
    return sorted({record_format.shard_fold(s["name"]) for s in card["shards"]}
                  - {record_format.TRAIN_ONLY_FOLD})


def run_folds(cfg: config_lib.Config, workdir: str | Path | None = None,
              folds=None, placement=None) -> dict:
    """Trains each fold of `folds` (default `train.folds`) in turn; returns the summary.

    Args:
        cfg: the run's config.
        workdir: the folder of the folds (default cfg.workdir).
        folds: fold numbers; each must be one the records hold.
        placement: one strategy for every fold (a notebook's TPU, initialised once).

    Returns:
        {"workdir", "model" (the folder: what export and predict take as one model),
        "folds": {k: fold summary}, "oof": per-fold and pooled metrics,
        "val_macro_auc", "val_padded_cmap" (pooled out-of-fold)}.
    """
    folds = [int(k) for k in (folds if folds is not None else cfg.train.folds)]
    have = available_folds(cfg)
    missing = sorted(set(folds) - set(have))
    if not folds or missing:
        raise ConfigError(f"train.folds={folds}: the records in {cfg.tfrecords.dir} hold folds "
                          f"{have}" + (f", not {missing}" if missing else ""))
    workdir = Path(workdir or cfg.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    summaries, tables = {}, []
    for k in folds:
        fold_cfg = dataclasses.replace(
            cfg, input=dataclasses.replace(cfg.input, val_fold=k),
            train=dataclasses.replace(cfg.train, folds=()))
        folder = workdir / f"fold{k}"
        summaries[k] = _trained(fold_cfg, folder, placement)
        tables.append(_oof(fold_cfg, folder, k))
    oof = pd.concat(tables, ignore_index=True)
    oof.to_csv(workdir / OOF, index=False)
    scores = oof_metrics(oof)
    (workdir / "oof_metrics.json").write_text(json.dumps(scores, indent=1) + "\n")
    run_files.write_ensemble(workdir, [f"fold{k}/{_best(workdir / f'fold{k}')}" for k in folds],
                             folds=folds)
    log.info(f"{len(folds)} folds: out-of-fold macro ROC-AUC {scores['pooled']['macro_auc']:.4f}, "
             f"padded cmAP {scores['pooled']['padded_cmap']:.4f}; ensemble -> {workdir / run_files.ENSEMBLE}")
    return {"workdir": str(workdir), "model": str(workdir), "folds": summaries, "oof": scores,
            "val_macro_auc": scores["pooled"]["macro_auc"],
            "val_padded_cmap": scores["pooled"]["padded_cmap"]}


def _trained(cfg: config_lib.Config, folder: Path, placement) -> dict:
    """The fold's run summary: trained now, or read back when it completed before."""
    report = folder / trainer.REPORT
    if report.is_file():
        done = json.loads(report.read_text())
        if done.get("status") == "completed":
            log.info(f"fold {cfg.input.val_fold}: completed before, in {folder}")
            return done["summary"]
    return trainer.run(cfg, folder, placement)


def _oof(cfg: config_lib.Config, folder: Path, fold: int) -> pd.DataFrame:
    """The fold's validation windows scored by its best model (written to its folder)."""
    path = folder / OOF
    if path.is_file():
        return pd.read_csv(path)
    card = record_format.read_dataset_card(cfg.tfrecords.dir)
    names = sorted(card["name2label"], key=card["name2label"].get)
    model = classifier.load_keras(folder / _best(folder))
    scorer = keras.Model(model.input, classifier.output_of(model))
    files = pipeline.fold_files(cfg, training=False)
    rows, labels, scores = [], [], []
    for clips, y, ids, starts in pipeline.identified_windows(cfg, len(names), files,
                                                             cfg.input.batch_size):
        scores.append(np.asarray(keras.ops.sigmoid(scorer(clips, training=False))))
        labels.append(y.numpy())
        rows += [(i.decode(), fold, round(float(s), 3)) for i, s in zip(ids.numpy(),
                                                                        starts.numpy())]
    table = pd.DataFrame(rows, columns=["recording_id", "fold", "start_s"])
    table = pd.concat([table, pd.DataFrame(np.concatenate(labels),
                                           columns=[f"label_{n}" for n in names]),
                       pd.DataFrame(np.concatenate(scores), columns=names)], axis=1)
    table.to_csv(path, index=False)
    return table


def _best(folder: Path) -> str:
    """best.keras, or final.keras when no epoch's validation was finite."""
    return "best.keras" if (folder / "best.keras").is_file() else "final.keras"


def oof_metrics(oof: pd.DataFrame) -> dict:
    """Macro ROC-AUC and padded cmAP per fold and pooled, from an `oof.csv` table."""
    names = [c.removeprefix("label_") for c in oof.columns if c.startswith("label_")]

    def score(part):
        y, p = part[[f"label_{n}" for n in names]].to_numpy(), part[names].to_numpy()
        return {"windows": len(part), "macro_auc": metrics.macro_roc_auc(y, p),
                "padded_cmap": metrics.padded_cmap(y, p)}

    return {"per_fold": {str(k): score(part) for k, part in oof.groupby("fold")},
            "pooled": score(oof)}

"""Evaluate a submission against labelled soundscapes with the official metrics.

    birdkeras evaluate --pred submission.csv --root data/kaggle --source birdclef-2024 \
        --out work/eval

Labels are either of Kaggle's forms (`birdkeras.soundscapes`): the 2021
`train_soundscape_labels.csv` (audio_id, site, seconds, birds; "nocall" is a negative
for every class) or the 2026 `train_soundscapes_labels.csv` (filename, start, end,
';'-separated labels, rows of one window merged). A labelled window is matched to the
prediction row `{soundscape file stem}_{end second}` (the row_id form `birdkeras
predict` writes; 2021's own row_id drops the date from the stem). A labelled window
without a prediction is an error (the submission is incomplete). Classes the
submission has no column for are ignored. Writes `metrics.json`, `per_class.csv`,
`roc.png` and `pr.png`.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from birdkeras import config as config_lib
from birdkeras import metrics, plots
from birdkeras.config import catalog
from birdkeras.datasets import soundscapes
from birdkeras.errors import UserError
from birdkeras.infer import submission
from birdkeras.infer.predicting import predict


class EvaluateError(UserError):
    """Predictions and labels do not fit together; the message says how."""


def truth_table(root, source: str, class_names: list[str]) -> pd.DataFrame:
    """One row per labelled window (prediction row_id index), one 0/1 column per class."""
    labels = soundscapes.read_labels(root, source)
    index = {name: k for k, name in enumerate(class_names)}
    y = np.zeros((len(labels), len(class_names)), dtype=np.int8)
    for i, window_labels in enumerate(labels["labels"]):
        for label in window_labels:
            if label in index:
                y[i, index[label]] = 1
    row_ids = [submission.row_id(f, end) for f, end in zip(labels["file"], labels["end_s"])]
    return pd.DataFrame(y, index=row_ids, columns=class_names)


def evaluate(pred_csv, root, source: str, out_dir=None) -> dict:
    """    Args:
        pred_csv: a submission (row_id + class columns).
        root: the data root.
        source: the source whose labelled soundscapes score it.
        out_dir: where metrics.json, per_class.csv and plots go (None: nowhere).

    Returns:
        {windows, scored_classes, macro_auc, padded_cmap}."""
    pred = pd.read_csv(pred_csv)
    if "row_id" not in pred.columns:
        raise EvaluateError(f"{pred_csv} has no row_id column")
    classes = [c for c in pred.columns if c != "row_id"]
    truth = truth_table(root, source, classes)
    pred = pred.set_index(pred["row_id"].astype(str))
    missing = truth.index.difference(pred.index)
    if len(missing):
        raise EvaluateError(f"{pred_csv} has no rows for {len(missing)} labelled windows, "
                            f"e.g. {list(missing[:3])}")
    scores = pred.loc[truth.index, classes].to_numpy(dtype=np.float64)
    y = truth.to_numpy()
    if not len(metrics.scored_classes(y)):
        raise EvaluateError(f"no class of {pred_csv} has both positive and negative labelled "
                            f"windows in {source}: nothing to score (wrong class names?)")
    result = {"windows": len(y), "scored_classes": int(len(metrics.scored_classes(y))),
              "macro_auc": metrics.macro_roc_auc(y, scores),
              "padded_cmap": metrics.padded_cmap(y, scores)}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(result, indent=1) + "\n")
        metrics.per_class_table(y, scores, classes).to_csv(out / "per_class.csv", index=False)
        plots.roc_and_pr(y, scores, classes, metrics.scored_classes(y), out)
    return result


def precision_check(export_dir, root, source: str, runtime: str, precision: str) -> dict:
    """Macro ROC-AUC on `source`'s labelled soundscapes in float32 and in `precision`
    ("int8", "bf16", "f16"), and the change: what `birdkeras export --int8-check` prints.

    Args:
        export_dir: a `birdkeras export` folder.
        root: the data root holding `source`'s folder.
        source: a source with labelled soundscapes (e.g. birdclef-2026).
        runtime: "onnx" or "openvino".
        precision: "int8" (the export's int8 CNN), "bf16" or "f16" (OpenVINO).

    Returns:
        {"f32_macro_auc", "<precision>_macro_auc", "delta", ...}.
    """
    audio_dir = Path(root) / catalog.SOURCES[source].folder / "train_soundscapes"
    result = {"source": source, "runtime": runtime, "precision": precision}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("f32", precision):
            icfg = config_lib.InferConfig(
                int8=name == "int8", precision=name if name in ("bf16", "f16") else "f32",
                workers=1)
            predict([export_dir], audio_dir, Path(tmp) / f"{name}.csv", runtime, icfg,
                    progress=False)
            result[f"{name}_macro_auc"] = evaluate(Path(tmp) / f"{name}.csv", root,
                                                   source)["macro_auc"]
    result["delta"] = result[f"{precision}_macro_auc"] - result["f32_macro_auc"]
    return result

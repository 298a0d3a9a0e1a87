"""Evaluate a submission against labelled soundscapes with the official metrics.

    birdkeras evaluate --pred submission.csv --root data/kaggle --source birdclef-2024 \
        --out work/eval

Labels are the 2021 `train_soundscape_labels.csv` form (audio_id, site, seconds, birds;
"nocall" is a negative for every class). A labelled window is matched to the prediction
row `{soundscape file stem}_{seconds}` (the 2022+ row_id form `birdkeras predict`
writes; 2021's own row_id drops the date from the stem). A labelled row without a
prediction is an error (the submission is incomplete). Classes the submission has no
column for are ignored. Writes `metrics.json`, `per_class.csv`, `roc.png` and `pr.png`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from birdkeras import metrics, soundscapes


class EvaluateError(ValueError):
    """Predictions and labels do not fit together; the message says how."""


def truth_table(root, source: str, class_names: list[str]) -> pd.DataFrame:
    """One row per labelled window (prediction row_id index), one 0/1 column per class."""
    labels = soundscapes.read_labels(root, source)
    index = {name: k for k, name in enumerate(class_names)}
    y = np.zeros((len(labels), len(class_names)), dtype=np.int8)
    for i, birds in enumerate(labels["birds"]):
        for bird in birds:
            if bird in index:
                y[i, index[bird]] = 1
    row_ids = [f"{Path(p).stem}_{s}" for p, s in zip(labels["path"], labels["seconds"])]
    return pd.DataFrame(y, index=row_ids, columns=class_names)


def evaluate(pred_csv, root, source: str, out_dir=None) -> dict:
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
        _plots(y, scores, classes, out)
    return result


def _plots(y, scores, classes, out: Path) -> None:
    """ROC and PR curves: micro-average over scored classes, plus the five most common."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: PLC0415

    scored = metrics.scored_classes(y)
    if not len(scored):
        return
    common = [k for k in np.argsort(-y.sum(axis=0)) if k in set(scored)][:5]
    curves = [("micro-average", y[:, scored].ravel(), scores[:, scored].ravel())]
    curves += [(classes[k], y[:, k], scores[:, k]) for k in common]
    for name, curve, axes in (("roc", roc_curve, ("false positive rate", "true positive rate")),
                              ("pr", precision_recall_curve, ("recall", "precision"))):
        fig, ax = plt.subplots(figsize=(5, 5))
        for label, truth, score in curves:
            a, b, _ = curve(truth, score)
            xs, ys = (a, b) if name == "roc" else (b, a)
            ax.plot(xs, ys, label=label, lw=2 if label == "micro-average" else 1)
        ax.set(xlabel=axes[0], ylabel=axes[1], title=f"{name.upper()} ({len(y)} windows)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=100)
        plt.close(fig)

"""The official BirdCLEF metrics, computed on a whole validation set.

- `padded_cmap`: BirdCLEF 2023. Five rows of ones are appended to both the labels and
  the scores, then macro average precision over all classes (so a class with no
  positives still scores, and a perfect score needs no luck).
- `macro_roc_auc`: BirdCLEF 2024/2025. Macro ROC-AUC over the classes that have at
  least one positive. A class with no negatives makes ROC-AUC undefined (the official
  formula raises on it); it is skipped here too, and reported in `per_class_table`.

Both take `labels` (n, classes) in {0, 1} (soft labels are thresholded at 0.5) and
`scores` (n, classes) in any monotone scale (probabilities or logits).
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import scipy.stats
from sklearn.metrics import average_precision_score, roc_auc_score


def _binary(labels) -> np.ndarray:
    return (np.asarray(labels) >= 0.5).astype(np.int64)


def padded_cmap(labels, scores, padding_factor: int = 5) -> float:
    """sklearn's `average_precision_score(average="macro")` of the padded arrays, in
    numpy (the same value, ~20x faster: fast enough to bootstrap)."""
    labels, scores = _binary(labels), np.asarray(scores, dtype=np.float64)
    pad = np.ones((padding_factor, labels.shape[1]))
    labels, scores = np.concatenate([labels, pad]), np.concatenate([scores, pad])
    return float(np.mean([_average_precision(labels[:, k], scores[:, k])
                          for k in range(labels.shape[1])]))


def _average_precision(y: np.ndarray, s: np.ndarray) -> float:
    """AP as sklearn computes it: sum over distinct thresholds (ties together) of the
    recall gained times the precision there."""
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last row of each tie group
    tp = np.cumsum(y)[last]
    precision = tp / (last + 1)
    recall_gain = np.diff(np.r_[0.0, tp]) / tp[-1]
    return float(np.sum(recall_gain * precision))


def scored_classes(labels) -> np.ndarray:
    """Indices of classes with at least one positive and one negative."""
    labels = _binary(labels)
    positives = labels.sum(axis=0)
    return np.flatnonzero((positives > 0) & (positives < labels.shape[0]))


def macro_roc_auc(labels, scores) -> float:
    """sklearn's `roc_auc_score(average="macro")` over the scored classes, computed from
    ranks (Mann-Whitney U, ties averaged) for every class at once: the same value, fast
    enough to bootstrap (birdkeras.uncertainty)."""
    labels, scores = _binary(labels), np.asarray(scores, dtype=np.float64)
    columns = scored_classes(labels)
    if len(columns) == 0:
        return float("nan")
    labels, scores = labels[:, columns], scores[:, columns]
    ranks = scipy.stats.rankdata(scores, axis=0)
    positives = labels.sum(axis=0)
    negatives = len(labels) - positives
    u = (ranks * labels).sum(axis=0) - positives * (positives + 1) / 2
    return float(np.mean(u / (positives * negatives)))


def per_class_table(labels, scores, class_names) -> pd.DataFrame:
    """AP, ROC-AUC and support per class; NaN where a metric is undefined."""
    labels, scores = _binary(labels), np.asarray(scores, dtype=np.float64)
    rows = []
    for k, name in enumerate(class_names):
        positives = int(labels[:, k].sum())
        defined = 0 < positives < len(labels)
        rows.append({
            "class": name, "support": positives,
            "ap": float(average_precision_score(labels[:, k], scores[:, k])) if positives else np.nan,
            "roc_auc": float(roc_auc_score(labels[:, k], scores[:, k])) if defined else np.nan,
        })
    return pd.DataFrame(rows)


def weight_grid(count: int, step: float) -> np.ndarray:
    """Every weight vector of `count` members on the simplex with spacing `step` (the
    grid blends are tuned on: `birdkeras.infer.blend`, the route's head blend)."""
    units = int(round(1 / step))
    if units < 1 or abs(units * step - 1) > 1e-9:
        raise ValueError(f"blend step {step} must divide 1 (0.1, 0.05, 0.25, ...)")
    rows = [c for c in itertools.product(range(units + 1), repeat=count - 1)
            if sum(c) <= units]
    return np.array([[*c, units - sum(c)] for c in rows], dtype=np.float64) / units

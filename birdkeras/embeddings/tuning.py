"""What the embedding route's out-of-fold predictions decide (`birdkeras.embeddings.fit`).

Scores of each head, per-taxon temperatures (the cross-entropy minimum), the weight of
a site/hour prior (each fold's prior built from the other folds only), per-class
thresholds (the F1 maximum) and the weight of a fused CNN (the macro ROC-AUC maximum).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import expit

from birdkeras import metrics, postprocess


def sigmoid(x):
    """The logistic function, overflow-free (scipy's expit)."""
    return expit(x)


def _score(y, p) -> dict:
    rows = ~np.isnan(p).any(axis=1) & ~np.isnan(y).any(axis=1)
    if not rows.any() or not len(metrics.scored_classes(y[rows])):
        return {"windows": int(rows.sum()), "macro_auc": float("nan"), "padded_cmap": float("nan")}
    return {"windows": int(rows.sum()), "macro_auc": metrics.macro_roc_auc(y[rows], p[rows]),
            "padded_cmap": metrics.padded_cmap(y[rows], p[rows])}


def prior_table(y, sites, hours, rows, smoothing: float = 5.0) -> dict:
    """{site: {hour: class frequencies}} of the labelled `rows`, shrunk to the overall
    frequency with `smoothing` pseudo-windows (the site/hour prior).

    Args:
        y: targets (n, classes).
        sites: site per window.
        hours: hour per window (-1 unknown).
        rows: the labelled windows the table learns from.
        smoothing: pseudo-windows of the overall frequency added to each cell.

    Returns:
        {"overall": frequencies, "table": {site: {hour: frequencies}}}.
    """
    overall = y[rows].mean(axis=0)
    table = {}
    frame = pd.DataFrame({"site": sites[rows], "hour": hours[rows], "row": rows})
    for (site, hour), group in frame.groupby(["site", "hour"]):
        members = group["row"].to_numpy()
        table.setdefault(site, {})[int(hour)] = (
            (y[members].sum(axis=0) + smoothing * overall) / (len(members) + smoothing)).tolist()
    return {"overall": overall.tolist(), "table": table}


def prior_of(prior: dict, site: str, hour: int) -> np.ndarray:
    by_hour = prior["table"].get(site, {})
    return np.asarray(by_hour.get(hour, by_hour.get(str(hour), prior["overall"])), np.float32)


def tune(w, oof: dict, folds, taxa, rcfg, cnn_probs) -> dict:
    """What the out-of-fold predictions decide: scores per head, taxon temperatures,
    the prior weight (fold-safe priors), per-class thresholds, the CNN fusion weight.

    Args:
        w: the route's windows.
        oof: out-of-fold logits per head.
        folds: each window's fold (-1: not labelled).
        taxa: each class's taxon.
        rcfg: `route` settings.
        cnn_probs: a CNN's probabilities per window, or None.

    Returns:
        The tuned values (scores, temperatures, prior, thresholds, CNN weight).
    """
    labelled = np.flatnonzero(w.labelled)
    scores = {name: _score(w.targets, sigmoid(logits)) for name, logits in oof.items()}
    head = rcfg.head if not np.isnan(scores.get(rcfg.head, {}).get("macro_auc", np.nan)) else "probe"
    logits = oof[head]
    rows = labelled[~np.isnan(logits[labelled]).any(axis=1)]
    # Per-taxon temperature: the one that minimises the cross-entropy of the taxon's classes.
    temperatures = {}
    for taxon in sorted({t for t in taxa if t}):
        cols = [k for k, t in enumerate(taxa) if t == taxon]
        best = min((0.5, 0.75, 1.0, 1.5, 2.0, 3.0), key=lambda t: _bce(
            w.targets[np.ix_(rows, cols)], logits[np.ix_(rows, cols)] / t))
        temperatures[taxon] = best
    probs = sigmoid(postprocess.taxon_temperature(logits, taxa, temperatures))
    # The prior weight, with each fold's priors from the other folds only.
    fold_prior = np.full(w.targets.shape, np.nan, np.float32)
    for k in np.unique(folds[rows]):
        table = prior_table(w.targets, w.sites, w.hours, labelled[folds[labelled] != k])
        for r in rows[folds[rows] == k]:
            fold_prior[r] = prior_of(table, w.sites[r], int(w.hours[r]))
    prior_weight = max((0.0, 0.1, 0.2, 0.3, 0.5), key=lambda a: _score(
        w.targets[rows], (1 - a) * probs[rows] + a * fold_prior[rows])["macro_auc"])
    # Per-class thresholds: the cut that maximises each class's F1 out of fold.
    cut = np.array([_best_cut(w.targets[rows, k], probs[rows, k]) for k in range(w.targets.shape[1])])
    tuned = {"oof_scores": scores, "temperatures": temperatures, "prior_weight": prior_weight,
             "prior": prior_table(w.targets, w.sites, w.hours, labelled), "thresholds": cut.tolist(),
             "cnn_weight": 0.0}
    if cnn_probs is not None:
        tuned["cnn_weight"] = max([k / 10 for k in range(11)], key=lambda a: _score(
            w.targets[rows], a * cnn_probs[rows] + (1 - a) * probs[rows])["macro_auc"])
    return tuned


def _bce(y, logits) -> float:
    p = np.clip(sigmoid(logits), 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _best_cut(y, p) -> float:
    if y.sum() == 0:
        return 0.0
    best, cut = -1.0, 0.0
    for t in np.unique(np.round(p, 3)):
        pred = p >= t
        f1 = 2 * (pred & (y > 0.5)).sum() / max(pred.sum() + (y > 0.5).sum(), 1)
        if f1 > best:
            best, cut = f1, float(t)
    return cut

"""What the embedding route's out-of-fold predictions decide (`birdkeras.embeddings.fit`).

Scores of each head, per-taxon temperatures (the cross-entropy minimum), the weight of
a layered site/hour prior (each fold's prior built from the other folds only),
per-class thresholds (the F1 maximum), the weight of a fused CNN and the strengths of
the cross-window steps (adaptive smoothing, file top-k and rank-aware scaling; each the
macro ROC-AUC maximum, 0 where none helps; with `route.cross_window_by_taxon`, per taxon).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import expit

from birdkeras import metrics, postprocess
from birdkeras.datasets import soundscapes


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
    """Class frequencies of the labelled `rows` per site and hour, per site, and per hour,
    each cell shrunk to the overall frequency with `smoothing` pseudo-windows (the
    layered site/hour prior; `prior_of` picks the most specific cell it has).

    Args:
        y: targets (n, classes).
        sites: site per window ("" unknown).
        hours: hour per window (-1 unknown).
        rows: the labelled windows the table learns from.
        smoothing: pseudo-windows of the overall frequency added to each cell.

    Returns:
        {"overall": frequencies, "table": {site: {hour: frequencies}},
         "sites": {site: frequencies}, "hours": {hour: frequencies}}.
    """
    overall = y[rows].mean(axis=0)
    frame = pd.DataFrame({"site": sites[rows], "hour": hours[rows], "row": rows})

    def shrunk(members):
        return ((y[members].sum(axis=0) + smoothing * overall) / (len(members) + smoothing)).tolist()

    table = {}
    for (site, hour), group in frame[(frame.site != "") & (frame.hour >= 0)].groupby(["site", "hour"]):
        table.setdefault(site, {})[str(int(hour))] = shrunk(group["row"].to_numpy())
    by_site = {site: shrunk(g["row"].to_numpy())
               for site, g in frame[frame.site != ""].groupby("site")}
    by_hour = {str(int(hour)): shrunk(g["row"].to_numpy())
               for hour, g in frame[frame.hour >= 0].groupby("hour")}
    return {"overall": overall.tolist(), "table": table, "sites": by_site, "hours": by_hour}


def prior_of(prior: dict, site: str, hour: int) -> np.ndarray:
    """The prior of a file at `site` and `hour` (-1: unknown; 0 is midnight): its
    site x hour cell, else its site's, else its hour's (an unseen site), else overall."""
    hour = str(int(hour))
    cells = (prior["table"].get(site, {}).get(hour), prior.get("sites", {}).get(site),
             prior.get("hours", {}).get(hour), prior["overall"])
    return np.asarray(next(c for c in cells if c is not None), np.float32)


def file_context(name: str) -> tuple[str, int]:
    """(site, hour) of a soundscape file name as the prior reads them ("" and -1 unknown;
    a file started at 00:xx is hour 0)."""
    meta = soundscapes.parse_name(name)
    return meta["site"] or "", -1 if meta["hour"] is None else meta["hour"]


def temporal_features(emb: np.ndarray, files, starts) -> np.ndarray:
    """The 2026 notebook's probe features: each window's embedding, the mean and the
    maximum of its neighbours' (the windows before and after it in its file; a file's
    first and last window count themselves in a missing neighbour's place), and its
    position in its file (0 first, 1 last).

    Args:
        emb: (n, dim) embeddings.
        files: each window's file.
        starts: each window's start (the order within a file).

    Returns:
        (n, 3 x dim + 1) features.
    """
    emb = np.asarray(emb, np.float32)
    out = np.zeros((len(emb), 3 * emb.shape[1] + 1), np.float32)
    files, starts = np.asarray(files), np.asarray(starts)
    for name in dict.fromkeys(files.tolist()):
        rows = np.flatnonzero(files == name)
        rows = rows[np.argsort(starts[rows], kind="stable")]
        x = emb[rows]
        before, after = np.concatenate([x[:1], x[:-1]]), np.concatenate([x[1:], x[-1:]])
        position = np.arange(len(rows)) / max(len(rows) - 1, 1)
        out[rows] = np.concatenate([x, 0.5 * (before + after), np.maximum(before, after),
                                    position[:, None]], axis=1)
    return out


def taxon_columns(taxa) -> dict:
    """{taxon: the column indices of its classes}, taxa in sorted order."""
    return {taxon: [k for k, t in enumerate(taxa) if t == taxon] for taxon in sorted(set(taxa))}


# The cross-window steps' strengths tried out of fold (0: off), in the order they apply.
CROSS_WINDOW = {"adaptive_smoothing": (0.0, 0.15, 0.3, 0.5),
                "file_topk_power": (0.0, 0.25, 0.5, 1.0),
                "rank_power": (0.0, 0.25, 0.5, 1.0)}
TOP_K = 3


def cross_window(probs: np.ndarray, steps: dict, by_taxon: dict | None = None,
                 taxa=None) -> np.ndarray:
    """One file's (windows, classes) probabilities through the tuned cross-window steps:
    `steps` for every class, or with `by_taxon` ({taxon: steps}) each taxon's classes
    (`taxa`: each class's taxon) through their own (`steps` for a taxon it lacks). Each
    step works class by class, so a taxon's columns alone give the same values.

    Args:
        probs: one file's probabilities, windows in start order.
        steps: {step name: strength} (`CROSS_WINDOW`'s names; missing: 0).
        by_taxon: {taxon: steps}, or None.
        taxa: each class's taxon (with `by_taxon`).

    Returns:
        The probabilities after the steps.
    """
    if by_taxon:
        out = np.array(probs, np.float32, copy=True)
        for taxon, cols in taxon_columns(taxa).items():
            out[:, cols] = cross_window(probs[:, cols], by_taxon.get(taxon, steps))
        return out
    probs = postprocess.adaptive_smooth(probs, steps.get("adaptive_smoothing", 0.0))
    probs = postprocess.file_topk_scale(probs, TOP_K, steps.get("file_topk_power", 0.0))
    return postprocess.rank_scale(probs, steps.get("rank_power", 0.0))


def tune_cross_window(y, probs, files, starts, rows) -> dict:
    """Each cross-window step's strength, in turn, where it raises the out-of-fold macro
    ROC-AUC of `rows` (each file's rows in start order); 0 where nothing does.

    Args:
        y: targets (n, classes).
        probs: out-of-fold probabilities (n, classes).
        files: file per window (the steps work within a file).
        starts: start per window (the order within a file).
        rows: the windows to tune on.

    Returns:
        {step name: strength}, in `CROSS_WINDOW`'s order.
    """
    frame = pd.DataFrame({"file": files[rows], "start": starts[rows], "row": rows})
    per_file = [g["row"].to_numpy() for _, g in frame.sort_values(["file", "start"]).groupby(
        "file", sort=False)]
    order = np.concatenate(per_file) if per_file else rows

    def score(steps):
        out = np.concatenate([cross_window(probs[r], steps) for r in per_file])
        return _score(y[order], out)["macro_auc"]

    steps = {name: 0.0 for name in CROSS_WINDOW}
    best = score(steps)
    for name, grid in CROSS_WINDOW.items():
        for value in grid[1:]:
            trial = score({**steps, name: value})
            if trial > best + 1e-9:
                best, steps[name] = trial, value
    return steps


def tune_cross_window_by_taxon(y, probs, files, starts, rows, taxa) -> dict:
    """`tune_cross_window` for each taxon's classes on their own ({taxon: steps}): the
    smoothing that suits insect and amphibian choruses need not suit bird calls. Macro
    ROC-AUC averages classes, so each taxon's best is the whole's best; a taxon without
    a scored class keeps every step off.

    Args:
        y: targets (n, classes).
        probs: out-of-fold probabilities (n, classes).
        files: file per window.
        starts: start per window.
        rows: the windows to tune on.
        taxa: each class's taxon.

    Returns:
        {taxon: {step name: strength}}.
    """
    by_taxon = {}
    for taxon, cols in taxon_columns(taxa).items():
        if len(metrics.scored_classes(y[np.ix_(rows, cols)])):
            by_taxon[taxon] = tune_cross_window(y[:, cols], probs[:, cols], files, starts, rows)
        else:
            by_taxon[taxon] = {name: 0.0 for name in CROSS_WINDOW}
    return by_taxon


def tune_head_blend(y, oof: dict, rows, step: float = 0.1) -> tuple[dict, np.ndarray]:
    """The heads' blend: weights on their logits (a simplex grid, `step`) with the best
    out-of-fold macro ROC-AUC over the `rows` every head scored (the sequence head
    scores soundscape windows only).

    Args:
        y: targets (n, classes).
        oof: out-of-fold logits per head (NaN where a head did not score a window).
        rows: the labelled windows.
        step: the grid's spacing.

    Returns:
        ({head: weight}, the blend's out-of-fold logits: NaN where a head with weight
        is NaN).
    """
    names = [h for h in sorted(oof) if not np.isnan(oof[h][rows]).all()]
    scored = rows[np.all([~np.isnan(oof[h][rows]).any(axis=1) for h in names], axis=0)]
    if not len(scored) or not len(metrics.scored_classes(y[scored])):
        weights = {h: float(h == "probe") for h in names}
    else:
        heads = {h: oof[h][scored] for h in names}
        best = max(metrics.weight_grid(len(names), step), key=lambda ws: _score(
            y[scored], blend_heads(heads, dict(zip(names, ws))))["macro_auc"])
        weights = {h: round(float(wt), 6) for h, wt in zip(names, best)}
    return weights, blend_heads(oof, weights)


def blend_heads(logits: dict, weights: dict) -> np.ndarray:
    """The weighted sum of the heads' logits (heads with weight 0 are not read).

    Args:
        logits: per head, logits (n, classes).
        weights: {head: weight}, summing to 1.

    Returns:
        The blended logits.
    """
    return sum(wt * logits[h] for h, wt in weights.items() if wt > 0)


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
    for taxon, cols in taxon_columns(taxa).items():
        if not taxon:
            continue
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
    space = rcfg.prior_space
    prior_weight = _prior_weight(w.targets[rows], probs[rows], fold_prior[rows], space)
    # Per-class thresholds: the cut that maximises each class's F1 out of fold.
    cut = np.array([_best_cut(w.targets[rows, k], probs[rows, k]) for k in range(w.targets.shape[1])])
    tuned = {"oof_scores": scores, "temperatures": temperatures, "prior_weight": prior_weight,
             "prior_space": space,
             "prior": prior_table(w.targets, w.sites, w.hours, labelled), "thresholds": cut.tolist(),
             "cnn_weight": 0.0}
    weights = np.full(len(taxa), prior_weight)
    if rcfg.prior_by_taxon:  # each taxon's weight on its own classes (default: the global)
        tuned["prior_weight_by_taxon"] = by_taxon = {}
        for taxon, cols in taxon_columns(taxa).items():
            if len(metrics.scored_classes(w.targets[np.ix_(rows, cols)])):
                by_taxon[taxon] = _prior_weight(w.targets[np.ix_(rows, cols)],
                                                probs[np.ix_(rows, cols)],
                                                fold_prior[np.ix_(rows, cols)], space)
        weights = prior_weights(taxa, prior_weight, by_taxon)
    fused = postprocess.prior_fusion(probs, fold_prior, weights, space)
    if cnn_probs is not None:
        tuned["cnn_weight"] = max([k / 10 for k in range(11)], key=lambda a: _score(
            w.targets[rows], a * cnn_probs[rows] + (1 - a) * fused[rows])["macro_auc"])
        fused = tuned["cnn_weight"] * cnn_probs + (1 - tuned["cnn_weight"]) * fused
    # The cross-window steps last, on what the runner has by then (prior and CNN fused).
    tuned["cross_window"] = tune_cross_window(w.targets, fused, w.files, w.starts, rows)
    if rcfg.cross_window_by_taxon:
        tuned["cross_window_by_taxon"] = tune_cross_window_by_taxon(
            w.targets, fused, w.files, w.starts, rows, taxa)
    return tuned


PRIOR_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5)  # the prior weights tried out of fold


def _prior_weight(y, probs, prior, space: str) -> float:
    """The prior weight with the best macro ROC-AUC of the prior fused in `space`
    (`postprocess.prior_fusion`); `prior` one row per window."""
    return max(PRIOR_WEIGHTS, key=lambda a: _score(
        y, postprocess.prior_fusion(probs, prior, a, space))["macro_auc"])


def prior_weights(taxa, weight: float, by_taxon: dict | None) -> np.ndarray:
    """Each class's prior weight: its taxon's (`by_taxon`), else the global `weight`.

    Args:
        taxa: each class's taxon.
        weight: the global weight.
        by_taxon: {taxon: weight}, or None.

    Returns:
        (classes,) weights.
    """
    return np.array([(by_taxon or {}).get(t, weight) for t in taxa], np.float32)


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

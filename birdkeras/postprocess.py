"""Post-processing of one file's window probabilities `(windows, classes)`: pure numpy.

Each step is a switch in the config's `infer` section, off by default, and measured in
`benchmarks/postprocessing.py`.
"""

from __future__ import annotations

import numpy as np


def smooth(probs: np.ndarray, weights) -> np.ndarray:
    """Weighted average over neighbouring windows, renormalised at the file's ends."""
    if not len(weights) or len(probs) == 1:
        return probs
    weights = np.asarray(weights, dtype=np.float64)
    half = len(weights) // 2
    padded = np.pad(probs, ((half, half), (0, 0)))
    present = np.pad(np.ones(len(probs)), (half, half))
    total = sum(w * padded[i:i + len(probs)] for i, w in enumerate(weights))
    norm = sum(w * present[i:i + len(probs)] for i, w in enumerate(weights))
    return (total / norm[:, None]).astype(np.float32)


def file_scale(probs: np.ndarray, mode: str, weight: float, top_k: int) -> np.ndarray:
    """Blends each window with the file's max (or top-k mean) per class.

    Args:
        probs: (windows, classes).
        mode: "none", "max" or "topk".
        weight: w.
        top_k: k of the top-k mean.

    Returns:
        (1 - w) p + w (file max | top-k mean), per class.
    """
    if mode == "none" or weight == 0:
        return probs
    if mode == "max":
        summary = probs.max(axis=0)
    else:
        k = min(top_k, len(probs))
        summary = np.sort(probs, axis=0)[-k:].mean(axis=0)
    return ((1 - weight) * probs + weight * summary[None]).astype(np.float32)


def apply(probs: np.ndarray, icfg) -> np.ndarray:
    """Every configured cross-window step of `icfg` (an `InferConfig`), in order."""
    probs = smooth(probs, icfg.smoothing)
    probs = adaptive_smooth(probs, icfg.adaptive_smoothing)
    probs = file_scale(probs, icfg.file_scaling, icfg.file_scaling_weight,
                       icfg.file_scaling_top_k)
    probs = file_topk_scale(probs, icfg.file_scaling_top_k, icfg.file_topk_power)
    return rank_scale(probs, icfg.rank_power)


# ----------------------------------------------------------------------------------
# The embedding route's steps (birdkeras.route), each tuned or fitted on out-of-fold
# predictions. Macro ROC-AUC and padded cmAP rank each class's windows on their own, so a
# monotone per-class transform (a temperature, a threshold) cannot move them by itself;
# the steps that share information across windows, files or models can.


def taxon_temperature(logits: np.ndarray, taxa: list[str], temperatures: dict) -> np.ndarray:
    """Logits divided by their class's taxon temperature (e.g. {"Insecta": 2.0})."""
    scale = np.array([temperatures.get(t, 1.0) for t in taxa], dtype=np.float32)
    return logits / scale


def file_topk_scale(probs: np.ndarray, top_k: int, power: float) -> np.ndarray:
    """Multiplicative file-level confidence: p * (mean of the file's top-k of the class)^power."""
    if power == 0:
        return probs
    k = min(top_k, len(probs))
    top = np.sort(probs, axis=0)[-k:].mean(axis=0)
    return (probs * top[None] ** power).astype(np.float32)


def rank_scale(probs: np.ndarray, power: float) -> np.ndarray:
    """Rank-aware scaling: p * (the file's maximum of the class)^power."""
    if power == 0:
        return probs
    return (probs * probs.max(axis=0, keepdims=True) ** power).astype(np.float32)


def adaptive_smooth(probs: np.ndarray, strength: float) -> np.ndarray:
    """Confidence-adaptive delta-shift smoothing: each window moves towards the mean of
    its neighbours by strength x (1 - p), so confident windows move least."""
    if strength == 0 or len(probs) < 2:
        return probs
    padded = np.pad(probs, ((1, 1), (0, 0)), mode="edge")
    neighbours = 0.5 * (padded[:-2] + padded[2:])
    return (probs + strength * (1 - probs) * (neighbours - probs)).astype(np.float32)


def thresholds(probs: np.ndarray, cut: np.ndarray, mode: str = "zero",
               power: float = 2.0) -> np.ndarray:
    """Per-class thresholds. `zero`: probabilities below their class's cut become 0
    (ties: the ranking below the cut is lost). `sharpen`: below the cut p becomes
    cut x (p / cut)^power, pushed down but in the same order, continuous at the cut
    (every per-class ranking metric unchanged).

    Args:
        probs: (windows, classes) probabilities.
        cut: each class's threshold.
        mode: "zero" or "sharpen".
        power: sharpen's exponent (>= 1).

    Returns:
        The thresholded probabilities.
    """
    cut = np.asarray(cut, np.float64)[None]
    below = probs < cut
    if mode == "zero":
        return np.where(below, 0.0, probs).astype(np.float32)
    if mode != "sharpen" or power < 1:
        raise ValueError(f"threshold mode {mode!r} (zero | sharpen), power {power} (>= 1)")
    safe = np.where(cut > 0, cut, 1.0)
    return np.where(below, safe * (probs / safe) ** power, probs).astype(np.float32)


PRIOR_SPACES = ("probability", "logit")
PRIOR_CLIP = 1e-4  # a logit-space prior of 0 or 1 is clipped to this distance from them


def prior_fusion(probs: np.ndarray, prior: np.ndarray, weight,
                 space: str = "probability") -> np.ndarray:
    """The prior (classes,) of the file's site and hour fused into the probabilities.

    "probability": (1 - weight) p + weight prior. "logit" (the 2026 notebook's):
    sigmoid(logit(p) + weight logit(prior)), the prior clipped to [1e-4, 1 - 1e-4]: a
    class rare at the site is pushed down in proportion to its log-odds there, and the
    order within a class at one site is kept. A NaN prior leaves that class unchanged.

    Args:
        probs: (windows, classes) probabilities.
        prior: (classes,) the file's prior, or one row per window.
        weight: one number or one per class.
        space: "probability" or "logit".

    Returns:
        The fused probabilities.
    """
    if space not in PRIOR_SPACES:
        raise ValueError(f"prior space must be one of {PRIOR_SPACES}. Received: {space!r}")
    prior = np.asarray(prior, np.float64)
    prior = prior[None] if prior.ndim == 1 else prior
    weight = np.broadcast_to(np.asarray(weight, np.float64), prior.shape)
    known = ~np.isnan(prior)
    weight, prior = np.where(known, weight, 0.0), np.where(known, prior, 0.5)
    if not weight.any():
        return probs
    if space == "probability":
        return ((1 - weight) * probs + weight * prior).astype(np.float32)
    p = np.clip(np.asarray(probs, np.float64), 1e-7, 1 - 1e-7)
    q = np.clip(prior, PRIOR_CLIP, 1 - PRIOR_CLIP)
    logits = np.log(p / (1 - p)) + weight * np.log(q / (1 - q))
    return (1 / (1 + np.exp(-logits))).astype(np.float32)

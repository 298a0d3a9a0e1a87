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
    """Blends each window with the file's max (or top-k mean) per class."""
    if mode == "none" or weight == 0:
        return probs
    if mode == "max":
        summary = probs.max(axis=0)
    else:
        k = min(top_k, len(probs))
        summary = np.sort(probs, axis=0)[-k:].mean(axis=0)
    return ((1 - weight) * probs + weight * summary[None]).astype(np.float32)


def apply(probs: np.ndarray, icfg) -> np.ndarray:
    """Every configured step of `icfg` (an `InferConfig`), in order."""
    probs = smooth(probs, icfg.smoothing)
    return file_scale(probs, icfg.file_scaling, icfg.file_scaling_weight,
                      icfg.file_scaling_top_k)

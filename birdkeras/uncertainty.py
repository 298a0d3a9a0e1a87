"""How sure a score is: 95 % intervals over held-out files and over seeds.

A benchmark scores each setting on the held-out windows of one synthetic world per
seed. Two sources of doubt, reported apart:

- **files**: the held-out files are a sample. `bootstrap` resamples whole files (a
  file's windows share its site, hour and background, so they are not independent)
  with replacement and recomputes the metric; the interval is the replicates'
  2.5-97.5 percentiles, moved by the replicates' median bias (see `_percentile`).
- **seeds**: another seed is another world and another training run.
  `seed_interval` is Student's t over the per-seed scores (needs two seeds or more).

`compare` tables every setting against a baseline over all seeds: the mean, both
intervals, and the *paired* difference from the baseline (the same resampled files for
both settings in each replicate, so what the two share cancels), and says whether the
difference is resolved (its interval excludes 0) and whether the two settings'
file intervals overlap.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import scipy.stats

LEVEL = 0.95


@dataclasses.dataclass(frozen=True)
class Interval:
    """An estimate and its interval."""

    mean: float
    low: float
    high: float

    def overlaps(self, other: Interval) -> bool:
        return self.low <= other.high and other.low <= self.high

    def excludes(self, value: float) -> bool:
        return not self.low <= value <= self.high

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"


@dataclasses.dataclass(frozen=True)
class Scored:
    """One setting's held-out predictions in one seed's world: labels and scores
    (windows x classes) and each window's file."""

    labels: np.ndarray
    scores: np.ndarray
    files: Sequence[str]


def resamples(files: Sequence[str], n_boot: int, seed: int = 0) -> list[np.ndarray]:
    """`n_boot` row-index arrays, each the rows of len(unique files) files drawn with
    replacement. The same `seed` gives the same draws: pass it to every setting scored
    on these files to pair them."""
    files = np.asarray(files)
    names, which = np.unique(files, return_inverse=True)
    rows = [np.flatnonzero(which == k) for k in range(len(names))]
    rng = np.random.default_rng(seed)
    return [np.concatenate([rows[k] for k in rng.integers(0, len(names), len(names))])
            for _ in range(n_boot)]


def bootstrap(metric: Callable, scored: Scored, n_boot: int = 1000, seed: int = 0,
              level: float = LEVEL) -> Interval:
    """`metric(labels, scores)` on all windows, and its percentile interval over
    `n_boot` resamples of the files.

    Args:
        metric: (labels, scores) -> float, e.g. metrics.macro_roc_auc.
        scored: the held-out predictions.
        n_boot: resamples.
        seed: the resampling's seed.
        level: the interval's coverage.

    Returns:
        The estimate on all windows and its interval.
    """
    replicates = _replicates(metric, scored, resamples(scored.files, n_boot, seed))
    return _percentile(metric(scored.labels, scored.scores), replicates, level)


def seed_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean of the per-seed values and Student's t interval (NaN bounds for one seed)."""
    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        return Interval(mean, float("nan"), float("nan"))
    half = scipy.stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(
        len(values))
    return Interval(mean, float(mean - half), float(mean + half))


def compare(results: dict[str, list[Scored]], metric: Callable, baseline: str,
            n_boot: int = 1000, level: float = LEVEL) -> pd.DataFrame:
    """One row per setting: its mean over seeds with the files' and the seeds'
    intervals, and its paired difference from `baseline`.

    Args:
        results: setting -> its `Scored` per seed (the same seeds, in the same order,
            for every setting; a seed's settings share its held-out files).
        metric: (labels, scores) -> float, e.g. metrics.macro_roc_auc.
        baseline: the setting the others are compared with.
        n_boot: bootstrap replicates per seed.
        level: the intervals' coverage.

    Returns:
        One row per setting: mean, files_low/high, seeds_low/high, diff, diff_low/high,
        resolved, overlaps_baseline, per_seed.
    """
    seeds = len(results[baseline])
    for name, per_seed in results.items():
        if len(per_seed) != seeds or any(
                list(s.files) != list(b.files) for s, b in zip(per_seed, results[baseline])):
            raise ValueError(f"setting {name!r} was not scored on {baseline!r}'s seeds and "
                             "held-out windows, in the same order: they cannot be paired")
    draws = [resamples(results[baseline][i].files, n_boot, seed=i) for i in range(seeds)]
    values = {name: np.array([metric(s.labels, s.scores) for s in per_seed])
              for name, per_seed in results.items()}
    # Replicate b of the seed-mean: each seed's metric on its b-th resample, averaged.
    boots = {name: np.mean([_replicates(metric, s, draws[i]) for i, s in enumerate(per_seed)],
                           axis=0)
             for name, per_seed in results.items()}
    base_files = _percentile(values[baseline].mean(), boots[baseline], level)
    rows = []
    for name in results:
        files = _percentile(values[name].mean(), boots[name], level)
        seeds_iv = seed_interval(values[name], level)
        diff = _percentile(values[name].mean() - values[baseline].mean(),
                           boots[name] - boots[baseline], level)
        rows.append({
            "setting": name, "mean": files.mean, "files_low": files.low,
            "files_high": files.high, "seeds_low": seeds_iv.low, "seeds_high": seeds_iv.high,
            "diff": diff.mean, "diff_low": diff.low, "diff_high": diff.high,
            "resolved": name != baseline and diff.excludes(0.0),
            "overlaps_baseline": files.overlaps(base_files),
            "per_seed": " ".join(f"{v:.3f}" for v in values[name]),
        })
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame, metric_name: str) -> str:
    """`compare`'s table as Markdown, one line per setting."""
    lines = [f"| setting | {metric_name} (95 % files) | 95 % seeds | vs first (paired 95 %) "
             "| resolved | intervals overlap | per seed |", "|---|---|---|---|---|---|---|"]
    for i, r in enumerate(table.itertuples()):
        seeds = ("—" if np.isnan(r.seeds_low) else f"[{r.seeds_low:.3f}, {r.seeds_high:.3f}]")
        versus = ("—" if i == 0 else
                  f"{r.diff:+.3f} [{r.diff_low:+.3f}, {r.diff_high:+.3f}]")
        lines.append(
            f"| {r.setting} | {r.mean:.3f} [{r.files_low:.3f}, {r.files_high:.3f}] | {seeds} "
            f"| {versus} | {'—' if i == 0 else ('yes' if r.resolved else 'no')} "
            f"| {'—' if i == 0 else ('yes' if r.overlaps_baseline else 'no')} | {r.per_seed} |")
    return "\n".join(lines)


def _replicates(metric: Callable, scored: Scored, draws: list[np.ndarray]) -> np.ndarray:
    labels, scores = np.asarray(scored.labels), np.asarray(scored.scores)
    return np.array([metric(labels[rows], scores[rows]) for rows in draws])


def _percentile(estimate: float, replicates: np.ndarray, level: float) -> Interval:
    """The replicates' percentile interval, moved by their median's bias: resampling
    files duplicates windows, which raises average precision (duplicated positives tie)
    so a plain percentile interval of padded cmAP can miss its own estimate; ROC-AUC
    and means are unbiased, and barely move."""
    replicates = replicates[np.isfinite(replicates)]
    tail = 100 * (1 - level) / 2
    low, middle, high = np.percentile(replicates, [tail, 50, 100 - tail])
    bias = middle - estimate
    return Interval(float(estimate), float(low - bias), float(high - bias))

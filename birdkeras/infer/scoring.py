"""Scoring files with runners: the one way `predict`, pseudo-labels and checks turn a
file's windows into probabilities.

Files are decoded ahead in threads, in parts (`birdkeras.audio.windows`); each part's
windows (and their TTA shifts) are scored by every runner of an ensemble as they come,
averaged, and each file's probabilities post-processed (`birdkeras.postprocess`) at its
end; a runner that reads a file's windows together (an embedding route) gets them at
once with the file's name. `TimeBudget` drops
optional work when a run would pass its wall-clock budget.
"""

from __future__ import annotations

import time

import numpy as np
from tqdm.auto import tqdm

from birdkeras import config as config_lib
from birdkeras import postprocess
from birdkeras.audio import windows
from birdkeras.infer.submission import Scored


def iter_scored(files, runners, icfg: config_lib.InferConfig, progress: bool = False,
                budget: TimeBudget | None = None, desc: str = "predict"):
    """Scores each file as `predict` does, in file order, decoding ahead in threads.

    Yields, per file, a `Scored` (the mean over every (TTA shift, model) pair,
    post-processed by `icfg`'s cross-window steps), or a dict with `path`, `error` and
    `duration_s` for a file that could not be decoded (or was skipped for time).

    Args:
        files: audio files.
        runners: the ensemble.
        icfg: inference settings (hop, batch, TTA, post-processing, decode threads).
        progress: a progress bar.
        budget: a `TimeBudget` (None: no budget).
        desc: the progress bar's label.
    """
    model = runners[0]
    budget = budget or TimeBudget(None, 1 + len(icfg.tta_shifts_s), len(runners), 0)
    shifts = (0.0, *icfg.tta_shifts_s)
    bar = tqdm(total=len(files), unit="file", desc=desc, disable=not progress)
    decoded = windows.decode_ahead(files, icfg.workers, sample_rate_hz=model.sample_rate_hz,
                                   window_s=model.window_s, hop_s=icfg.hop_s, shifts_s=shifts,
                                   transform=shared_front_end(runners))
    # Runners that read a file's windows together (routes) get them joined at its end;
    # the others score each part as it comes, so memory does not grow with the file.
    whole = any(hasattr(r, "score_file") for r in runners)
    k, first = -1, True
    for item in decoded:
        if first:
            k += 1
            bar.update()
            wanted = "error" in item or budget.plan(k, [str(r.path) for r in runners])
            starts, probs, parts = [], [], []
        first = item["last"]
        if "error" in item:  # undecodable (any part scored before it is void)
            yield {key: item[key] for key in ("path", "error", "duration_s")}
            continue
        if not wanted:
            if item["last"]:
                yield {"path": item["path"], "error": "time budget: not scored",
                       "skipped": True, "duration_s": item["duration_s"]}
            continue
        if whole:
            parts.append(item)
            if not item["last"]:
                continue
            item = {**windows.whole_file(parts), "last": True}
        probs.append(score_file(runners[:budget.models], item["windows"][:budget.shifts],
                                item["path"].name, icfg.batch_size))
        starts.append(item["starts"])
        budget.done(len(probs[-1]), budget.models * min(budget.shifts, len(item["windows"])))
        if item["last"]:
            yield Scored(item["path"], np.concatenate(starts),
                         postprocess.apply(np.concatenate(probs), icfg))
    bar.close()


def score_file(runners, shifted_windows, name: str, batch_size: int) -> np.ndarray:
    """One file's probabilities: the mean over every (shift, model) pair of `runners`
    on `shifted_windows` (each class over the members that score it: a specialist
    scores a subset of the first model's classes) (per TTA shift, the windows: audio, or `FrontEnds`' features
    by front end): TTA and ensembling in one step. `name` is the file's name (an
    embedding route reads site and hour in it).

    Args:
        runners: the ensemble.
        shifted_windows: per TTA shift, an array of windows or a `FrontEnds` dict.
        name: the file's name.
        batch_size: windows per runner call.

    Returns:
        (windows, classes) probabilities.
    """
    classes = runners[0].classes
    total, count = None, np.zeros(len(classes))
    for clips in shifted_windows:
        for runner in runners:
            probs = score(runner, FrontEnds.input_of(runner, clips), batch_size, name)
            # A specialist's columns land on the first model's columns of its classes.
            columns = (slice(None) if runner.classes == classes
                       else [classes.index(c) for c in runner.classes])
            if total is None:
                total = np.zeros((len(probs), len(classes)), np.float64)
            total[:, columns] += probs
            count[columns] += 1
    return (total / count).astype(np.float32)


class FrontEnds:
    """The distinct numpy front ends of an ensemble, each computed once per window in
    the decode threads (members that share sample rate, window and mel settings share
    one log-mel); a member without one (a SavedModel, a route) takes the audio.

    Called on a part's windows (audio), returns {front end key: features, None: audio}.
    """

    def __init__(self, runners):
        self.ends = {}
        for runner in runners:
            end = getattr(runner, "front_end", None)
            if end is not None:
                self.ends.setdefault(end.key, end)
        self.audio = any(getattr(r, "front_end", None) is None for r in runners)

    def __call__(self, clips: np.ndarray) -> dict:
        out = {key: end(clips) for key, end in self.ends.items()}
        if self.audio:
            out[None] = clips
        return out

    @staticmethod
    def input_of(runner, windows):
        """What `runner` takes from a part's windows (an array, or a `FrontEnds` dict)."""
        if not isinstance(windows, dict):
            return windows
        end = getattr(runner, "front_end", None)
        return windows[None if end is None else end.key]


def shared_front_end(runners) -> FrontEnds | None:
    """The transform the decode threads run for `runners` (None: no member has a
    numpy front end, all take audio)."""
    ends = FrontEnds(runners)
    return ends if ends.ends else None


def score(runner, clips: np.ndarray, batch_size: int, name: str = "") -> np.ndarray:
    """`runner` over `clips` in batches of `batch_size` (a runner that reads a file's
    windows together, as an embedding route's sequence head does, gets them at once).

    Args:
        runner: a runner.
        clips: (windows, samples) or log-mel frames.
        batch_size: windows per call.
        name: the file's name.

    Returns:
        (windows, classes) probabilities.
    """
    if hasattr(runner, "score_file"):
        return runner.score_file(clips, name)
    return np.concatenate([runner(clips[i:i + batch_size])
                           for i in range(0, len(clips), batch_size)])




class TimeBudget:
    """Decides, before each file, how much work still fits in the wall-clock budget.

    Cost model: a window scored with S shifts by M models costs S x M units; seconds
    per unit are measured as the run goes (decoding overlaps scoring and is included).
    Before each file the rest of the run is projected at the current level; while the
    projection passes the budget, the level drops: TTA shifts first (S = 1), then the
    last ensemble member, one at a time (M >= 1). At S = M = 1, a file is scored only
    if it still fits; the rest are filled with the mean prediction.

    Args:
        budget_s: the run's wall-clock budget (None: none).
        shifts: TTA passes (1 + shifts).
        models: ensemble members.
        windows_per_file: windows of each file, from the headers.
        clock: a seconds clock (tests pass a fake one).
    """

    def __init__(self, budget_s: float | None, shifts: int, models: int,
                 windows_per_file: list[int], clock=time.perf_counter):
        self.budget_s, self.shifts, self.models = budget_s, shifts, models
        self.windows_per_file, self.clock = windows_per_file, clock
        self.start, self.units_done, self.events = clock(), 0, []

    def done(self, windows_scored: int, passes: int) -> None:
        self.units_done += windows_scored * passes

    def plan(self, index: int, model_names: list[str]) -> bool:
        """Whether to score file `index`; may lower `shifts` and `models` first."""
        if self.budget_s is None or not self.units_done:
            return True  # nothing measured yet: the first file is the measurement
        elapsed = self.clock() - self.start
        per_unit = elapsed / self.units_done
        left = sum(self.windows_per_file[index:])
        while elapsed + left * self.shifts * self.models * per_unit > self.budget_s:
            projected = elapsed + left * self.shifts * self.models * per_unit
            if self.shifts > 1:
                self._drop(index, elapsed, projected, "tta_shifts")
                self.shifts = 1
            elif self.models > 1:
                self.models -= 1
                self._drop(index, elapsed, projected, f"model {model_names[self.models]}")
            else:
                fits = elapsed + self.windows_per_file[index] * per_unit <= self.budget_s
                if not fits and not any(e["dropped"] == "scoring" for e in self.events):
                    self._drop(index, elapsed, projected, "scoring")
                return fits
        return True

    def _drop(self, index: int, elapsed: float, projected: float, what: str) -> None:
        self.events.append({"before_file": index, "elapsed_s": round(elapsed, 2),
                            "projected_s": round(projected, 2), "dropped": what})

    def report(self) -> dict:
        return {"budget_s": self.budget_s, "dropped": self.events,
                "final_shifts": self.shifts, "final_models": self.models}

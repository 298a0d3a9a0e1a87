"""Soundscape inference: audio files -> 5 s windows -> probabilities -> submission.

    birdkeras predict --model work/demo/export --runtime onnx \
        --audio data/test_soundscapes --out submission.csv

`predict` scores every file (decoded ahead in threads: `birdkeras.windows`; by one
model or an ensemble in one runtime: `birdkeras.runtimes`; post-processed:
`birdkeras.postprocess`), then writes the outputs (`birdkeras.submission`) and
`predict_report.json`. It always writes a complete, valid submission:

- a file that cannot be decoded is reported and still gets its rows (its header's
  duration, else `infer.broken_file_duration_s`), filled with each class's mean
  probability over the run's other windows;
- no audio at all (Kaggle runs a submission notebook once with an empty
  `test_soundscapes/`) gives the header in the class order; a dry run on a few files of
  another folder (`dry_run_audio`) estimates how long the hidden run will take;
- with `infer.time_budget_s`, optional work is dropped when the projected time passes
  the budget (TTA shifts, then later ensemble members), and as a last resort the
  remaining files are filled like broken ones; the report says what and when.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from birdkeras import audio, postprocess, runtimes, soundscapes, submission, windows
from birdkeras import config as config_lib
from birdkeras.submission import Scored

REPORT = "predict_report.json"


def predict(model_paths, inputs, out_csv, runtime: str = "tf",
            icfg: config_lib.InferConfig = config_lib.InferConfig(), long_csv=None,
            raven_dir=None, progress: bool = True, threads: int = 0,
            dry_run_audio=None, report_path=None) -> dict:
    """Writes the submission (and optional long CSV / Raven tables); returns a report."""
    with runtimes.single_threaded_blas():
        return _predict(model_paths, inputs, out_csv, runtime, icfg, long_csv, raven_dir,
                        progress, threads, dry_run_audio, report_path)


def _predict(model_paths, inputs, out_csv, runtime, icfg, long_csv, raven_dir, progress,
             threads, dry_run_audio, report_path) -> dict:
    files = windows.list_audio(inputs, allow_empty=True)
    paths = model_paths if isinstance(model_paths, (list, tuple)) else [model_paths]
    runners = runtimes.load_runners(paths, runtime, icfg.activation, threads, icfg.sed_output,
                                    icfg)
    model = runners[0]
    columns = submission.class_columns(icfg.class_order, model.classes)
    for runner in runners:  # warm up (graph tracing, allocation) before the clock starts
        runner(np.zeros((icfg.batch_size, model.window_samples), dtype=np.float32))

    start = time.perf_counter()
    budget = TimeBudget(icfg.time_budget_s, 1 + len(icfg.tta_shifts_s), len(runners),
                        expected_windows(files, model.window_s, icfg.hop_s))
    scored, broken, skipped = score_files(files, runners, icfg, progress, budget)
    elapsed = time.perf_counter() - start
    windows_scored = sum(len(s.probs) for s in scored)
    scored += fill(broken + skipped, scored, model, icfg)
    order = {path: i for i, path in enumerate(files)}
    scored.sort(key=lambda s: order[s.path])

    out_csv = Path(out_csv)
    rows = write_outputs(scored, model, columns, out_csv, icfg, long_csv, raven_dir)
    report = {
        "files": len(files), "rows": len(rows), "windows_scored": windows_scored,
        "broken_files": [{"file": str(b["path"]), "error": b["error"]} for b in broken],
        "models": [str(r.path) for r in runners], "runtime": runtime,
        "classes_filled_with_zero": sorted(set(columns) - set(model.classes)),
        "model_classes_not_in_submission": sorted(set(model.classes) - set(columns)),
        "seconds": round(elapsed, 2),
        "windows_per_s": round(budget.units_done / max(elapsed, 1e-9), 1),
        "time_budget": budget.report(),
        # Where and when each file was recorded, as its name says (BirdCLEF+ 2026 names).
        "recordings": [{"file": s.path.name, **soundscapes.parse_name(s.path.name),
                        "windows": len(s.probs)} for s in scored],
        "infer": config_lib.to_dict(icfg),
        "submission": str(out_csv),
    }
    if not files:
        report["note"] = ("no test audio: wrote the header only (Kaggle's save run; the "
                          "hidden run has the test soundscapes)")
        if dry_run_audio is not None:
            report["dry_run"] = dry_run(runners, dry_run_audio, icfg)
    Path(report_path or out_csv.parent / REPORT).write_text(json.dumps(report, indent=1) + "\n")
    return report


def predict_sharded(model_paths, inputs, out_dir, runtime: str = "tf",
                    icfg: config_lib.InferConfig = config_lib.InferConfig(),
                    files_per_part: int = 256, threads: int = 0, runner: str = "local",
                    beam_args=()) -> dict:
    """Very large folders: one submission part per `files_per_part` files
    (`part-00003-of-00120.csv` + its report), locally or on Beam workers.

    A part is written to a temporary name and renamed, so a retried Beam bundle leaves
    one complete part; a part already there is not redone (a rerun finishes the rest).
    Broken files are filled with the mean of their own part's windows. `parts.json`
    lists the parts and their rows.
    """
    files = windows.list_audio(inputs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chunks = [files[i:i + files_per_part] for i in range(0, len(files), files_per_part)]
    names = [f"part-{i:05d}-of-{len(chunks):05d}" for i in range(len(chunks))]
    paths = tuple(str(p) for p in (model_paths if isinstance(model_paths, (list, tuple))
                                   else [model_paths]))
    jobs = [(str(out), name, [str(f) for f in chunk], paths, runtime, icfg, threads)
            for name, chunk in zip(names, chunks) if not (out / f"{name}.csv").is_file()]
    from birdkeras import beamrun  # noqa: PLC0415

    beamrun.run_jobs(jobs, write_part, runner, beam_args, "predict")
    parts = [{"part": f"{n}.csv", **{k: v for k, v in json.loads(
        (out / f"{n}.report.json").read_text()).items() if k in ("files", "rows")}}
        for n in names]
    summary = {"parts": parts, "files": len(files), "rows": sum(p["rows"] for p in parts)}
    (out / "parts.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def write_part(job) -> None:
    """One part of `predict_sharded` (idempotent: temporary names, then renames)."""
    import uuid  # noqa: PLC0415

    out, name, files, model_paths, runtime, icfg, threads = job
    tag = uuid.uuid4().hex[:8]
    tmp_csv, tmp_report = Path(out) / f".{name}.{tag}.csv", Path(out) / f".{name}.{tag}.json"
    predict(list(model_paths), files, tmp_csv, runtime, icfg, progress=False, threads=threads,
            report_path=tmp_report)
    tmp_report.replace(Path(out) / f"{name}.report.json")
    tmp_csv.replace(Path(out) / f"{name}.csv")  # last: a part's CSV means it is done


def score_files(files, runners, icfg: config_lib.InferConfig, progress: bool = True,
                budget: TimeBudget | None = None):
    """Scores every decodable file: (scored files, broken files, files skipped for time)."""
    model = runners[0]
    budget = budget or TimeBudget(None, 1 + len(icfg.tta_shifts_s), len(runners), 0)
    shifts = (0.0, *icfg.tta_shifts_s)
    scored, broken, skipped = [], [], []
    bar = None
    if progress:
        from tqdm.auto import tqdm  # noqa: PLC0415

        bar = tqdm(total=len(files), unit="file", desc="predict")
    for k, item in enumerate(windows.decoded(files, icfg.workers,
                                             sample_rate_hz=model.sample_rate_hz,
                                             window_s=model.window_s, hop_s=icfg.hop_s,
                                             shifts_s=shifts, transform=shared_front_end(runners))):
        if "error" in item:
            broken.append(item)
        elif not budget.plan(k, [str(r.path) for r in runners]):
            skipped.append({**item, "error": "time budget: not scored"})
        else:
            passes = [(clips, runner) for clips in item["windows"][:budget.shifts]
                      for runner in runners[:budget.models]]
            # The mean over every (shift, model) pair: TTA and ensembling in one step.
            probs = np.mean([score(runner, clips, icfg.batch_size, item["path"].name)
                             for clips, runner in passes], axis=0)
            scored.append(Scored(item["path"], item["starts"], postprocess.apply(probs, icfg)))
            budget.done(len(probs), len(passes))
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    return scored, broken, skipped


def shared_front_end(runners):
    """The numpy front end every runner takes (the decode threads then run it), or None."""
    ends = [getattr(r, "front_end", None) for r in runners]
    if ends[0] is not None and all(e is not None and e.key == ends[0].key for e in ends):
        return ends[0]
    return None


def score(runner, clips: np.ndarray, batch_size: int, name: str = "") -> np.ndarray:
    """`runner` over `clips` in batches of `batch_size` (a runner that reads a file's
    windows together, as an embedding route's sequence head does, gets them at once)."""
    if hasattr(runner, "score_file"):
        return runner.score_file(clips, name)
    return np.concatenate([runner(clips[i:i + batch_size])
                           for i in range(0, len(clips), batch_size)])


def fill(unscored, scored, model, icfg: config_lib.InferConfig) -> list[Scored]:
    """Rows for files not scored (broken, or skipped for time): each class's mean
    prediction over the scored windows. Their length is the header's duration, or
    `icfg.broken_file_duration_s` when even the header is unreadable."""
    mean = (np.concatenate([s.probs for s in scored]).mean(axis=0) if scored
            else np.zeros(len(model.classes), dtype=np.float32))
    filled = []
    for item in unscored:
        duration = item["duration_s"] or icfg.broken_file_duration_s
        starts = windows.window_starts(duration, model.window_s, icfg.hop_s)
        filled.append(Scored(item["path"], starts, np.tile(mean, (len(starts), 1))))
    return filled


def write_outputs(scored, model, columns, out_csv: Path, icfg, long_csv=None,
                  raven_dir=None):
    """The submission CSV (returned as a table), and the optional long CSV and Raven
    tables."""
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    rows = submission.table(scored, model.classes, columns, model.window_s)
    rows.to_csv(out_csv, index=False)
    if long_csv is not None:
        submission.long_table(scored, model.classes, model.window_s,
                              icfg.long_min_score).to_csv(long_csv, index=False)
    if raven_dir is not None:
        submission.write_raven(scored, model.classes, model.window_s, icfg.raven_min_score,
                               Path(raven_dir), model.sample_rate_hz / 2)
    return rows


def expected_windows(files, window_s: float, hop_s: float) -> list[int]:
    """Windows per file from the headers (0 for an unreadable one): what the budget
    projects from."""
    counts = []
    for path in files:
        try:
            duration = audio.info(path).duration
        except audio.AudioError:
            duration = 0.0
        counts.append(len(windows.window_starts(duration, window_s, hop_s)) if duration else 0)
    return counts


def dry_run(runners, folder, icfg: config_lib.InferConfig) -> dict:
    """Times `icfg.dry_run_files` files of `folder` as the hidden run will score them,
    and projects the hidden run (`icfg.hidden_test_files` files like these)."""
    files = windows.list_audio(folder)[:icfg.dry_run_files]
    start = time.perf_counter()
    scored, broken, _ = score_files(files, runners, icfg, progress=False)
    seconds = time.perf_counter() - start
    per_file = seconds / max(len(scored), 1)
    return {"folder": str(folder), "files": len(files), "broken": len(broken),
            "windows": sum(len(s.probs) for s in scored), "seconds": round(seconds, 2),
            "seconds_per_file": round(per_file, 3),
            "hidden_test_files": icfg.hidden_test_files,
            "projected_hidden_run_s": round(per_file * icfg.hidden_test_files, 1)}


class TimeBudget:
    """Decides, before each file, how much work still fits in the wall-clock budget.

    Cost model: a window scored with S shifts by M models costs S x M units; seconds
    per unit are measured as the run goes (decoding overlaps scoring and is included).
    Before each file the rest of the run is projected at the current level; while the
    projection passes the budget, the level drops: TTA shifts first (S = 1), then the
    last ensemble member, one at a time (M >= 1). At S = M = 1, a file is scored only
    if it still fits; the rest are filled with the mean prediction.
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

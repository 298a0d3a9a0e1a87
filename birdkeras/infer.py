"""Soundscape inference: audio files -> 5 s windows -> probabilities -> submission.

    birdkeras predict --model work/demo/export --runtime onnx \
        --audio data/test_soundscapes --out submission.csv

`predict` scores every file (decoded ahead in threads: `birdkeras.windows`; by one
model or an ensemble in one runtime: `birdkeras.runtimes`; post-processed:
`birdkeras.postprocess`), then writes the outputs (`birdkeras.submission`) and
`predict_report.json`. A file that cannot be decoded is reported and skipped; it still
gets its rows (see `infer.broken_file_duration_s`), filled with the mean probability
of each class over all other windows of the run, so a Kaggle submission stays complete.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from birdkeras import config as config_lib
from birdkeras import postprocess, runtimes, submission, windows
from birdkeras.submission import Scored

REPORT = "predict_report.json"


def predict(model_paths, inputs, out_csv, runtime: str = "tf",
            icfg: config_lib.InferConfig = config_lib.InferConfig(), long_csv=None,
            raven_dir=None, progress: bool = True, threads: int = 0) -> dict:
    """Writes the submission (and optional long CSV / Raven tables); returns a report."""
    files = windows.list_audio(inputs)
    paths = model_paths if isinstance(model_paths, (list, tuple)) else [model_paths]
    runners = runtimes.load_runners(paths, runtime, icfg.activation, threads)
    model = runners[0]
    columns = submission.class_columns(icfg.class_order, model.classes)
    for runner in runners:  # warm up (graph tracing, allocation) before the clock starts
        runner(np.zeros((icfg.batch_size, model.window_samples), dtype=np.float32))

    start = time.perf_counter()
    scored, broken = score_files(files, runners, icfg, progress)
    elapsed = time.perf_counter() - start
    windows_scored = sum(len(s.probs) for s in scored)
    scored += fill_broken(broken, scored, model, icfg)
    order = {path: i for i, path in enumerate(files)}
    scored.sort(key=lambda s: order[s.path])

    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    rows = submission.table(scored, model.classes, columns, model.window_s)
    rows.to_csv(out_csv, index=False)
    if long_csv is not None:
        submission.long_table(scored, model.classes, model.window_s,
                              icfg.long_min_score).to_csv(long_csv, index=False)
    if raven_dir is not None:
        submission.write_raven(scored, model.classes, model.window_s, icfg.raven_min_score,
                               Path(raven_dir), model.sample_rate_hz / 2)
    passes = (1 + len(icfg.tta_shifts_s)) * len(runners)
    report = {
        "files": len(files), "rows": len(rows), "windows_scored": windows_scored,
        "broken_files": [{"file": str(b["path"]), "error": b["error"]} for b in broken],
        "models": [str(r.path) for r in runners], "runtime": runtime,
        "classes_filled_with_zero": sorted(set(columns) - set(model.classes)),
        "model_classes_not_in_submission": sorted(set(model.classes) - set(columns)),
        "seconds": round(elapsed, 2),
        "windows_per_s": round(windows_scored * passes / max(elapsed, 1e-9), 1),
        "infer": config_lib.to_dict(icfg), "submission": str(out_csv),
    }
    (out_csv.parent / REPORT).write_text(json.dumps(report, indent=1) + "\n")
    return report


def score_files(files, runners, icfg: config_lib.InferConfig, progress: bool = True):
    """Scores every decodable file: (scored files, broken files with their error)."""
    model = runners[0]
    shifts = (0.0, *icfg.tta_shifts_s)
    scored, broken = [], []
    bar = None
    if progress:
        from tqdm.auto import tqdm  # noqa: PLC0415

        bar = tqdm(total=len(files), unit="file", desc="predict")
    for item in windows.decoded(files, icfg.workers, sample_rate_hz=model.sample_rate_hz,
                                window_s=model.window_s, hop_s=icfg.hop_s, shifts_s=shifts):
        if "error" in item:
            broken.append(item)
        else:
            # The mean over every (shift, model) pair: TTA and ensembling in one step.
            probs = np.mean([score(runner, clips, icfg.batch_size)
                             for clips in item["windows"] for runner in runners], axis=0)
            scored.append(Scored(item["path"], item["starts"], postprocess.apply(probs, icfg)))
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    return scored, broken


def score(runner, clips: np.ndarray, batch_size: int) -> np.ndarray:
    """`runner` over `clips` in batches of `batch_size`."""
    return np.concatenate([runner(clips[i:i + batch_size])
                           for i in range(0, len(clips), batch_size)])


def fill_broken(broken, scored, model, icfg: config_lib.InferConfig) -> list[Scored]:
    """Rows for files that could not be decoded: the mean prediction of each class.

    Their length is the header's duration, or `icfg.broken_file_duration_s` when even
    the header is unreadable.
    """
    fill = (np.concatenate([s.probs for s in scored]).mean(axis=0) if scored
            else np.zeros(len(model.classes), dtype=np.float32))
    filled = []
    for item in broken:
        duration = item["duration_s"] or icfg.broken_file_duration_s
        starts = windows.window_starts(duration, model.window_s, icfg.hop_s)
        filled.append(Scored(item["path"], starts, np.tile(fill, (len(starts), 1))))
    return filled

"""Soundscape inference: audio files -> 5 s windows -> probabilities -> submission.

    birdkeras predict --model work/demo/export --runtime onnx \
        --audio data/test_soundscapes --out submission.csv

`predict` scores every file (`birdkeras.infer.scoring`: decoded ahead in threads, by
one model or an ensemble in one runtime, post-processed), then writes the outputs
(`birdkeras.infer.submission`) and `predict_report.json`. It always writes a complete, valid submission:

- a file that cannot be decoded is reported and still gets its rows (its header's
  duration, else `infer.broken_file_duration_s`), filled with each class's mean
  probability over the run's other windows;
- no audio at all (Kaggle runs a submission notebook once with an empty
  `test_soundscapes/`) gives the header in the class order; a dry run on a few files of
  another folder (`dry_run_audio`) estimates how long the hidden run will take;
- a blend card (`birdkeras blend tune`'s JSON) as the one model: each member predicts
  with an equal share of the time budget, then their submissions are blended with the
  card's weights (`birdkeras.infer.blend`);
- with `infer.time_budget_s`, optional work is dropped when the projected time passes
  the budget (TTA shifts, then later ensemble members), and as a last resort the
  remaining files are filled like broken ones; the report says what and when.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
import uuid
from pathlib import Path

import numpy as np

from birdkeras import config as config_lib
from birdkeras.audio import io as audio_io
from birdkeras.audio import windows
from birdkeras.datasets import soundscapes
from birdkeras.errors import PredictError
from birdkeras.export.runtime import single_threaded_blas
from birdkeras.infer import blend, submission
from birdkeras.infer.runners import load_runners
from birdkeras.infer.scoring import TimeBudget, iter_scored
from birdkeras.infer.submission import Scored
from birdkeras.records import jobs

REPORT = "predict_report.json"


def predict(model_paths, inputs, out_csv, runtime: str = "tf",
            icfg: config_lib.InferConfig = config_lib.InferConfig(), long_csv=None,
            raven_dir=None, progress: bool = True, threads: int = 0,
            dry_run_audio=None, report_path=None, birdnet_csv=None) -> dict:
    """Writes the submission (and optional long CSV / Raven tables); returns a report.

    Args:
        model_paths: one model path or several (an ensemble): export folders, `.keras`
            models, embedding route folders, k-fold folders; or one blend card.
        inputs: audio files and/or folders (searched recursively).
        out_csv: the submission to write.
        runtime: "tf", "tflite", "onnx" or "openvino".
        icfg: the inference settings (post-processing, outputs, time budget).
        long_csv: also write `file,start,end,label,score` here.
        raven_dir: also write one Raven selection table per file here.
        progress: a progress bar.
        threads: the runtime's intra-op threads (0: its default).
        dry_run_audio: with no test audio, time a few files of this folder.
        report_path: where `predict_report.json` goes (default: beside `out_csv`).
        birdnet_csv: also write the detections in BirdNET-Analyzer's CSV layout here.

    Returns:
        The report (also written as JSON).
    """
    paths = model_paths if isinstance(model_paths, (list, tuple)) else [model_paths]
    if any(blend.is_card(p) for p in paths):
        if len(paths) != 1 or long_csv or raven_dir or birdnet_csv:
            raise PredictError("a blend card is the only --model of its predict, and writes "
                               "a submission only (blended ranks are not probabilities: no "
                               "long CSV, Raven or BirdNET tables)")
        return _predict_blend(paths[0], inputs, out_csv, runtime, icfg, progress, threads,
                              dry_run_audio, report_path)
    with single_threaded_blas():
        return _predict(model_paths, inputs, out_csv, runtime, icfg, long_csv, raven_dir,
                        progress, threads, dry_run_audio, report_path, birdnet_csv)


def _predict_blend(card_path, inputs, out_csv, runtime, icfg, progress, threads,
                   dry_run_audio, report_path) -> dict:
    """Each member of the blend card predicts (an equal share of the time budget), then
    their submissions are blended; the report lists the members' reports."""
    card = blend.read_card(card_path)
    members = blend.member_paths(card, card_path)
    out_csv = Path(out_csv)
    share = None if icfg.time_budget_s is None else icfg.time_budget_s / len(members)
    member_icfg = dataclasses.replace(icfg, time_budget_s=share)
    csvs, reports = [], []
    for k, member in enumerate(members):
        csv = out_csv.parent / f"{out_csv.stem}.member{k}.csv"
        reports.append(predict(member, inputs, csv, runtime, member_icfg, progress=progress,
                               threads=threads, dry_run_audio=dry_run_audio,
                               report_path=out_csv.parent / f"{out_csv.stem}.member{k}.json"))
        csvs.append(csv)
    blended = blend.apply(card, csvs, out_csv)
    seconds = sum(r["seconds"] for r in reports)
    first = reports[0]
    report = {"blend": str(card_path), "method": card["method"], "weights": card["weights"],
              "files": first["files"], "rows": len(blended), "submission": str(out_csv),
              "seconds": round(seconds, 2),
              "windows_per_s": round(sum(r["windows_scored"] for r in reports)
                                     / max(seconds, 1e-9), 1),
              "time_budget": {"dropped": [e for r in reports for e in r["time_budget"]["dropped"]]},
              "broken_files": first["broken_files"],
              "classes_filled_with_zero": first["classes_filled_with_zero"],
              **{k: first[k] for k in ("note", "dry_run") if k in first},
              "members": reports}
    Path(report_path or out_csv.parent / REPORT).write_text(json.dumps(report, indent=1) + "\n")
    return report


def _predict(model_paths, inputs, out_csv, runtime, icfg, long_csv, raven_dir, progress,
             threads, dry_run_audio, report_path, birdnet_csv=None) -> dict:
    files = audio_io.list_audio(inputs, allow_empty=True)
    check_unique_stems(files)
    paths = model_paths if isinstance(model_paths, (list, tuple)) else [model_paths]
    runners = load_runners(paths, runtime, icfg, threads)
    model = runners[0]
    kept, unknown_species = (submission.species_list(icfg.species_list, model.classes)
                             if icfg.species_list else (None, []))
    columns = submission.class_columns(icfg.class_order, model.classes if kept is None else
                                       [model.classes[k] for k in kept])
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
    rows = write_outputs(scored, model, columns, out_csv, icfg, long_csv, raven_dir, kept,
                         birdnet_csv)
    report = {
        "files": len(files), "rows": len(rows), "windows_scored": windows_scored,
        "broken_files": [{"file": str(b["path"]), "error": b["error"]} for b in broken],
        "models": [str(r.path) for r in runners], "runtime": runtime,
        "precision": {"requested": icfg.precision, "int8": icfg.int8,
                      "used": sorted({r.precision_used for r in runners}),
                      **runtime_versions(runtime)}, "cpu": cpu_capabilities(),
        "classes_filled_with_zero": sorted(set(columns) - set(model.classes)),
        "species_list_not_in_model": unknown_species,
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

    Args:
        model_paths: one model or an ensemble.
        inputs: audio files and/or folders.
        out_dir: the folder of parts.
        runtime: the runtime.
        icfg: inference settings.
        files_per_part: files per part.
        threads: runtime threads (0: default).
        runner: "local" or "beam".
        beam_args: Beam pipeline options.

    Returns:
        {parts, files, rows} (also parts.json).
    """
    files = audio_io.list_audio(inputs)
    check_unique_stems(files)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chunks = [files[i:i + files_per_part] for i in range(0, len(files), files_per_part)]
    names = [f"part-{i:05d}-of-{len(chunks):05d}" for i in range(len(chunks))]
    paths = tuple(str(p) for p in (model_paths if isinstance(model_paths, (list, tuple))
                                   else [model_paths]))
    work = [(str(out), name, [str(f) for f in chunk], paths, runtime, icfg, threads)
            for name, chunk in zip(names, chunks) if not (out / f"{name}.csv").is_file()]
    jobs.run_jobs(work, write_part, runner, beam_args, "predict")
    parts = [{"part": f"{n}.csv", **{k: v for k, v in json.loads(
        (out / f"{n}.report.json").read_text()).items() if k in ("files", "rows")}}
        for n in names]
    summary = {"parts": parts, "files": len(files), "rows": sum(p["rows"] for p in parts)}
    (out / "parts.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def write_part(job) -> None:
    """One part of `predict_sharded` (idempotent: temporary names, then renames)."""
    out, name, files, model_paths, runtime, icfg, threads = job
    tag = uuid.uuid4().hex[:8]
    tmp_csv, tmp_report = Path(out) / f".{name}.{tag}.csv", Path(out) / f".{name}.{tag}.json"
    predict(list(model_paths), files, tmp_csv, runtime, icfg, progress=False, threads=threads,
            report_path=tmp_report)
    tmp_report.replace(Path(out) / f"{name}.report.json")
    tmp_csv.replace(Path(out) / f"{name}.csv")  # last: a part's CSV means it is done


def score_files(files, runners, icfg: config_lib.InferConfig, progress: bool = True,
                budget: TimeBudget | None = None):
    """Scores every decodable file: (scored files, broken files, files skipped for time).

    Args:
        files: audio files.
        runners: the ensemble.
        icfg: inference settings.
        progress: a progress bar.
        budget: a `TimeBudget` (None: no budget).
    """
    scored, broken, skipped = [], [], []
    for item in iter_scored(files, runners, icfg, progress, budget):
        if isinstance(item, Scored):
            scored.append(item)
        else:
            (skipped if item.get("skipped") else broken).append(item)
    return scored, broken, skipped


def check_unique_stems(files) -> None:
    """Two files with one stem would write the same row_ids: an error naming the stem."""
    stems = [Path(f).stem for f in files]
    repeated = sorted({s for s in stems if stems.count(s) > 1})
    if repeated:
        raise PredictError(f"two files share the stem {repeated[0]!r}: row_ids would collide")


def runtime_versions(runtime: str) -> dict:
    """The version of the package that runs `runtime` (what the report records)."""
    module = {"tf": "tensorflow", "tflite": "tensorflow", "onnx": "onnxruntime",
              "openvino": "openvino"}[runtime]
    try:
        from importlib.metadata import version  # noqa: PLC0415 - standard library

        return {"package": module, "version": version(module)}
    except Exception:  # noqa: BLE001 - a missing distribution only leaves the version out
        return {"package": module, "version": None}


def cpu_capabilities() -> dict:
    """This CPU's model and the instruction sets that decide int8/bf16 speed and defaults."""
    flags, model = set(), platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16",
              "amx_int8", "avx512_fp16")
    return {"model": model, "flags": [f for f in wanted if f in flags]}


def fill(unscored, scored, model, icfg: config_lib.InferConfig) -> list[Scored]:
    """Rows for files not scored (broken, or skipped for time): each class's mean
    prediction over the scored windows. Their length is the header's duration, or
    `icfg.broken_file_duration_s` when even the header is unreadable.

    Args:
        unscored: the broken or skipped files.
        scored: the scored files.
        model: a runner (classes, window).
        icfg: inference settings.

    Returns:
        A `Scored` per unscored file.
    """
    mean = (np.concatenate([s.probs for s in scored]).mean(axis=0) if scored
            else np.zeros(len(model.classes), dtype=np.float32))
    filled = []
    for item in unscored:
        duration = item["duration_s"] or icfg.broken_file_duration_s
        starts = windows.window_starts(duration, model.window_s, icfg.hop_s)
        filled.append(Scored(item["path"], starts, np.tile(mean, (len(starts), 1))))
    return filled


def write_outputs(scored, model, columns, out_csv: Path, icfg, long_csv=None,
                  raven_dir=None, kept=None, birdnet_csv=None):
    """The submission CSV (returned as a table), and the optional long CSV and Raven
    tables.

    Args:
        scored: every file, scored or filled.
        model: a runner (classes, window, rate).
        columns: the submission's class columns.
        out_csv: the submission.
        icfg: inference settings.
        long_csv: the long table (None: not written).
        raven_dir: the Raven tables' folder (None: not written).
        kept: the model's classes a species list keeps (indices; None: all).
        birdnet_csv: a BirdNET-Analyzer-style CSV of the detections >= the Raven tables'
            min score (None: not written).
    """
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    classes, common = model.classes, getattr(model, "common_names", None)
    if kept is not None:
        classes = [classes[k] for k in kept]
        common = common and [common[k] for k in kept]
        scored = [Scored(s.path, s.starts_s, s.probs[:, kept]) for s in scored]
    rows = submission.table(scored, classes, columns, model.window_s)
    rows.to_csv(out_csv, index=False)
    if long_csv is not None:
        submission.long_table(scored, classes, model.window_s,
                              icfg.long_min_score).to_csv(long_csv, index=False)
    if raven_dir is not None:
        submission.write_raven(scored, classes, model.window_s, icfg.raven_min_score,
                               Path(raven_dir), model.sample_rate_hz / 2, common,
                               icfg.merge_consecutive)
    if birdnet_csv is not None:
        submission.birdnet_csv(scored, classes, model.window_s, icfg.raven_min_score,
                               common, icfg.merge_consecutive).to_csv(birdnet_csv, index=False)
    return rows


def expected_windows(files, window_s: float, hop_s: float) -> list[int]:
    """Windows per file from the headers (0 for an unreadable one): what the budget
    projects from."""
    counts = []
    for path in files:
        try:
            duration = audio_io.info(path).duration
        except audio_io.AudioError:
            duration = 0.0
        counts.append(len(windows.window_starts(duration, window_s, hop_s)) if duration else 0)
    return counts


def dry_run(runners, folder, icfg: config_lib.InferConfig) -> dict:
    """Times `icfg.dry_run_files` files of `folder` as the hidden run will score them,
    and projects the hidden run (`icfg.hidden_test_files` files like these)."""
    files = audio_io.list_audio(folder)[:icfg.dry_run_files]
    start = time.perf_counter()
    scored, broken, _ = score_files(files, runners, icfg, progress=False)
    seconds = time.perf_counter() - start
    per_file = seconds / max(len(scored), 1)
    return {"folder": str(folder), "files": len(files), "broken": len(broken),
            "windows": sum(len(s.probs) for s in scored), "seconds": round(seconds, 2),
            "seconds_per_file": round(per_file, 3),
            "hidden_test_files": icfg.hidden_test_files,
            "projected_hidden_run_s": round(per_file * icfg.hidden_test_files, 1)}

"""Recordings of any length: peak memory and throughput of `birdkeras predict`.

    python benchmarks/long_recordings.py [--model EXPORT_DIR] [--hours 6] [--work DIR]

Files made from the real 120 s soundscape (`../shared/data/real/birdnet/`), tiled, as
OGG at 32 kHz: 1, 10 and 60 minutes and `--hours` hours, and 90 files of one minute.
Each is scored by `birdkeras predict` in a process of its own (ONNX Runtime, the
default decode thread); the table gives its peak RSS (the process's maximum resident
set, from getrusage), the windows per second predict reports (decoding and scoring,
after start-up) and the whole process's time. The model: `--model`, else an untrained
EfficientNetB0 at b0_ft.yaml's front end (128 mels x 313 frames), exported to ONNX
here (its weights do not change the cost).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parent.parent
SOUNDSCAPE = REPO.parent / "shared" / "data" / "real" / "birdnet" / "soundscape_120s.ogg"


def _model(work: Path) -> Path:
    from birdkeras import config as config_lib  # noqa: PLC0415
    from birdkeras.export import convert  # noqa: PLC0415
    from birdkeras.model import classifier, run_files  # noqa: PLC0415

    out = work / "export128"
    if (out / "model.onnx").is_file():
        return out
    cfg = config_lib.load_config(REPO / "configs" / "b0_ft.yaml", ["model.weights=null"])
    classes = {f"class{i:03d}": i for i in range(234)}  # BirdCLEF+ 2026's count
    run_files.write(work / "b0_128", cfg, classes)
    classifier.build_model(cfg, len(classes)).save(work / "b0_128" / "model.keras")
    convert.export(str(work / "b0_128" / "model.keras"), str(out), formats=("onnx",))
    return out


def _audio(work: Path, minutes: float, name: str) -> Path:
    import numpy as np  # noqa: PLC0415

    from birdkeras.audio import io as audio_io  # noqa: PLC0415

    path = work / "audio" / name
    if path.is_file():
        return path
    wave = audio_io.load(SOUNDSCAPE, 32000)
    reps = int(np.ceil(minutes * 60 / 120))
    path.parent.mkdir(parents=True, exist_ok=True)
    import soundfile as sf  # noqa: PLC0415

    tmp = path.with_suffix(".tmp.ogg")
    # Written in blocks of 2^16 frames, as recorders write (and as libsndfile's Vorbis
    # encoder needs: one long write can crash it).
    with sf.SoundFile(str(tmp), "w", samplerate=32000, channels=1, format="OGG",
                      subtype="VORBIS") as f:
        whole = np.tile(wave, reps)[: int(minutes * 60 * 32000)]
        for start in range(0, len(whole), 1 << 16):
            f.write(whole[start:start + (1 << 16)])
    tmp.rename(path)
    return path


def _predict(model: Path, audio: list[Path], out: Path) -> dict:
    """One `birdkeras predict` in a child process: its peak RSS and its wall time."""
    probe = (
        "import resource, subprocess, sys, time\n"
        "start = time.perf_counter()\n"
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "assert done.returncode == 0, done.stderr[-2000:]\n"
        "print(time.perf_counter() - start, "
        "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    cmd = [sys.executable, "-c", probe, sys.executable, "-m", "birdkeras", "predict",
           "--model", str(model), "--runtime", "onnx", "--out", str(out), "--quiet",
           "--audio", *map(str, audio)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    seconds, kib = done.stdout.split()
    report = json.loads((out.parent / "predict_report.json").read_text())
    # windows/s: predict's own figure (decoding and scoring, after start-up).
    return {"process_s": float(seconds), "peak_rss_mb": int(kib) / 1024,
            "windows": report["windows_scored"], "windows_per_s": report["windows_per_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="an export folder (default: untrained B0 128 x 313)")
    parser.add_argument("--hours", type=float, default=6.0)
    parser.add_argument("--work", help="reuse/keep files here")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bk_long_"))
    model = Path(args.model) if args.model else _model(work)
    cases = [("1 min", [_audio(work, 1, "m001.ogg")]),
             ("10 min", [_audio(work, 10, "m010.ogg")]),
             ("60 min", [_audio(work, 60, "m060.ogg")]),
             ("90 min", [_audio(work, 90, "m090.ogg")]),
             (f"{args.hours:g} h", [_audio(work, args.hours * 60, "long.ogg")]),
             ("90 files of 1 min", [_audio(work, 1, f"short{i:02d}.ogg") for i in range(90)])]
    results = {}
    for name, audio in cases:
        began = time.perf_counter()
        results[name] = _predict(model, audio, work / "out.csv")
        print(name, json.dumps(results[name]), f"({time.perf_counter() - began:.0f} s)",
              flush=True)
    base = results["90 files of 1 min"]["windows_per_s"]
    print(f"\n{os.cpu_count()} cores; model {model}\n")
    print("| audio | windows | peak RSS | windows/s | vs 90 files of 1 min | process (with start-up) |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['windows']:,} | {r['peak_rss_mb']:,.0f} MB | "
              f"{r['windows_per_s']:.1f} | {r['windows_per_s'] / base:.2f} | "
              f"{r['process_s']:.0f} s |")


if __name__ == "__main__":
    main()

"""CPU inference throughput: one EfficientNetB0 in each runtime, side by side.

    python benchmarks/inference.py [--files 16] [--threads 0]

The model is configs/b0_ft.yaml's (32 kHz, 128 mels x 313 frames per 5 s window, 182
classes, random weights: speed does not depend on them), exported with
`birdkeras export`. Soundscapes: `--files` synthetic 60 s OGG files (12 windows each).
For each runtime, in the same run:
  (a) windows/s on decoded windows (decode excluded), batch `infer.batch_size`;
  (b) windows/s of `birdkeras predict` from the OGG files (decode included, decode
      threads overlapping inference), submission written.
Decode alone (soundfile + soxr, one thread) is timed too. Ratios are against Keras
(the training model's FFT front end under tf.function). The Kaggle estimate scales (b)
by 4/2 cores (an assumption: inference scales about linearly with cores here) for 700
soundscapes of 60 s. Target: >= 150 windows/s from raw audio on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def _soundscapes(folder: Path, count: int, sr: int) -> list[Path]:
    from birdkeras import audio  # noqa: PLC0415

    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        t = np.arange(60 * sr) / sr
        chirps = np.sin(2 * np.pi * (2000 + 1500 * np.sin(2 * np.pi * 0.7 * t + i)) * t)
        wave = 0.05 * rng.standard_normal(len(t)) + 0.2 * chirps * (np.sin(t * (i + 1)) > 0.6)
        paths.append(audio.write(folder / f"bench_{i:03d}.ogg", wave.astype(np.float32), sr))
    return paths


def _rate(fn, windows, batch, repeats=2) -> float:
    fn(windows[:batch])
    start = time.perf_counter()
    for _ in range(repeats):
        for i in range(0, len(windows), batch):
            fn(windows[i:i + batch])
    return repeats * len(windows) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="runtime threads (0: default)")
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()

    from birdkeras import audio, export, infer, models, runtimes  # noqa: PLC0415
    from birdkeras import windows as windows_lib  # noqa: PLC0415
    from birdkeras import config as config_lib  # noqa: PLC0415

    work = Path(tempfile.mkdtemp(prefix="bk_infer_bench_"))
    cfg = config_lib.load_config(REPO / "configs" / "b0_ft.yaml",
                                 ["train.mixed_precision=false", "train.jit_compile=false"])
    run = work / "run"
    run.mkdir()
    models.build_model(cfg, 182).save(run / "best.keras")
    config_lib.save_config(cfg, run / "config.yaml")
    (run / "name2label.json").write_text(json.dumps({f"sp{i:03d}": i for i in range(182)}))
    t0 = time.perf_counter()
    export.export(run / "best.keras", work / "export")
    print(f"export (SavedModel + TFLite + ONNX): {time.perf_counter() - t0:.0f} s")

    sr = cfg.audio.sample_rate_hz
    files = _soundscapes(work / "audio", args.files, sr)
    t0 = time.perf_counter()
    windows = np.concatenate([windows_lib.cut(audio.load(p, sr), sr, np.arange(0, 60, 5.0), 5.0)
                              for p in files])
    decode_rate = len(windows) / (time.perf_counter() - t0)
    print(f"{len(files)} soundscapes, {len(windows)} windows; decode + cut alone "
          f"(1 thread): {decode_rate:.0f} windows/s")

    icfg = config_lib.InferConfig(batch_size=args.batch, workers=1)
    rows = []
    for name, model, runtime in (("Keras (FFT front end)", run / "best.keras", "tf"),
                                 ("SavedModel", work / "export", "tf"),
                                 ("TFLite", work / "export", "tflite"),
                                 ("ONNX Runtime", work / "export", "onnx")):
        runner = runtimes.Runner(model, runtime, threads=args.threads)
        model_only = _rate(runner, windows, args.batch)
        report = infer.predict([model], work / "audio", work / f"{runtime}_{len(rows)}.csv",
                               runtime, icfg, progress=False, threads=args.threads)
        rows.append((name, model_only, report["windows_per_s"]))
    base = rows[0]
    print(f"\n| runtime | windows/s, decode excluded | vs Keras | windows/s from OGG | "
          f"vs Keras | 700 x 60 s on 4 cores (min) |")
    print("|---|---|---|---|---|---|")
    for name, model_only, end_to_end in rows:
        minutes = 700 * 12 / (end_to_end * 2) / 60
        print(f"| {name} | {model_only:.1f} | {model_only / base[1]:.2f}x | {end_to_end:.1f} | "
              f"{end_to_end / base[2]:.2f}x | {minutes:.1f} |")
    best = max(r[2] for r in rows)
    print(f"\nbest from raw audio: {best:.1f} windows/s (target >= 150: "
          f"{'met' if best >= 150 else 'NOT met'})")


if __name__ == "__main__":
    main()

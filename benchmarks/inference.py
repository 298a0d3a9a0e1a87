"""CPU inference throughput, every runtime side by side, at the configuration users train.

    make demo                         # trains the 64-mel model this also measures
    python benchmarks/inference.py [--files 16] [--threads 0] [--batch 8]

Models: (1) a B0 at configs/b0_ft.yaml's front end (32 kHz, 128 mels x 313 frames per
5 s window), fine-tuned briefly on the synthetic BirdCLEF+ 2026 from the demo's
pretrained backbone (cached under --work), so int8 can be checked on a trained model;
(2) the demo's trained model (64 mels x 157 frames), if `make demo` has run. Each is
exported (ONNX, OpenVINO, int8 of both calibrated on its training records).

For each runtime and front end, in the same run, over `--files` synthetic 60 s OGG
soundscapes (12 windows each):
  ceiling   the CNN alone: log-mel frames in (numpy front end) or windows in (whole
            graphs), batch `--batch`, one thread feeding it;
  windows   decoded windows in, front end + CNN (decode excluded);
  from OGG  `birdkeras predict` end to end: decode threads (which also run the numpy
            front end) overlapping inference, submission written.
  peer      the pipeline public BirdCLEF inference notebooks use, on the same exported
            CNN, runtime and threads: each file loaded with `librosa.load` (soxr_hq),
            its 5 s windows' log-mel computed by librosa in one call per file (htk, no
            norm, reflect padding, power_to_db with top_db: birdkeras' front end), the
            frames batched into the CNN, file after file in one thread. Its ratio
            (birdkeras from OGG / peer) isolates what birdkeras' pipeline adds (decode
            threads overlapping inference, its front end, batching); the peer's
            probabilities are checked against predict's (max difference printed).
Ratios are against Keras (the training model under tf.function). The int8 rows also
give the macro ROC-AUC change on the held-out synthetic labelled soundscapes. Each row
also gives its stage costs in CPU seconds per window, each on one thread (decode +
resample; the numpy front end; the CNN on a one-thread runtime), the rate they allow on the machine's cores
(cores / their sum), and the from-OGG figure's ratio to it (target >= 0.85). Targets
(2 cores, 128 x 313): >= 150 windows/s from OGG in float32, >= 250 in int8 with a
macro ROC-AUC loss <= 0.005; >= 1.3x the peer.
`--quick`: only the numpy-front-end rows of ONNX Runtime and OpenVINO and their peers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
YEAR = "birdclef-2026"


def _soundscapes(folder: Path, count: int, sr: int) -> list[Path]:
    from birdkeras.audio import io as audio_io  # noqa: PLC0415

    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        t = np.arange(60 * sr) / sr
        chirps = np.sin(2 * np.pi * (2000 + 1500 * np.sin(2 * np.pi * 0.7 * t + i)) * t)
        wave = 0.05 * rng.standard_normal(len(t)) + 0.2 * chirps * (np.sin(t * (i + 1)) > 0.6)
        paths.append(audio_io.write(folder / f"bench_{i:03d}.ogg", wave.astype(np.float32), sr))
    return paths


def _rate(fn, inputs, batch, repeats=2) -> float:
    fn(inputs[:batch])
    start = time.perf_counter()
    for _ in range(repeats):
        for i in range(0, len(inputs), batch):
            fn(inputs[i:i + batch])
    return repeats * len(inputs) / (time.perf_counter() - start)


def _cost(fn, inputs, batch) -> float:
    """CPU seconds (all of this process's threads) per input item of `fn` over `inputs`."""
    fn(inputs[:batch])
    start = time.process_time()
    for i in range(0, len(inputs), batch):
        fn(inputs[i:i + batch])
    return (time.process_time() - start) / len(inputs)


def trained_128(work: Path, demo: Path) -> Path:
    """B0 at b0_ft.yaml's front end, fine-tuned on the demo's synthetic 2026 records."""
    from birdkeras import config as config_lib  # noqa: PLC0415
    from birdkeras.datasets import manifest  # noqa: PLC0415
    from birdkeras.records import shards  # noqa: PLC0415
    from birdkeras import train  # noqa: PLC0415

    best = work / "model128" / "best.keras"
    if best.is_file():
        return best
    front = ["audio.num_mel_bins=128", "audio.hop_length=512"]
    cfg = config_lib.load_config(REPO / "configs" / "demo_ft.yaml", [
        f"data.root={demo / 'data'}", "data.corrupt_files=corrupt_files.json",
        f"data.manifest_dir={work / 'model128' / 'manifest'}",
        f"tfrecords.dir={work / 'model128' / 'tfrecords'}", "wandb.mode=disabled",
        "train.val_soundscapes=null", f"train.init_from={demo / 'pre' / 'train' / 'best.keras'}",
        *front])
    table, name2label, report = manifest.build(cfg)
    manifest.save(cfg.data.manifest_dir, table, name2label, report)
    shards.build(table, name2label, cfg, progress=False)
    train.run(cfg, work / "model128")
    return best


def measure(name: str, model: Path, work: Path, args, demo: Path) -> list[tuple]:
    from birdkeras.audio import io as audio_io  # noqa: PLC0415
    from birdkeras.export import convert  # noqa: PLC0415
    from birdkeras import infer  # noqa: PLC0415
    from birdkeras.export import runtime as export_runtime  # noqa: PLC0415
    from birdkeras.audio import windows  # noqa: PLC0415
    from birdkeras import config as config_lib  # noqa: PLC0415
    from birdkeras.export import card as card_lib  # noqa: PLC0415
    from birdkeras.infer import evaluate  # noqa: PLC0415

    out = work / f"export_{name}"
    if not (out / card_lib.CARD).is_file():
        convert.export(model, out, ("savedmodel", "tflite", "onnx", "openvino"), int8=True)
    card = card_lib.read_export_card(out)
    sr = card["sample_rate_hz"]
    folder = work / f"audio_{sr}"
    files = sorted(folder.glob("*.ogg")) or _soundscapes(folder, args.files, sr)
    began = time.process_time()
    clips = np.concatenate([windows.cut(audio_io.load(p, sr), sr, np.arange(0, 60, 5.0), 5.0)
                            for p in files])
    decode_cost = (time.process_time() - began) / len(clips)  # CPU s per window
    rows = []
    icfg = config_lib.InferConfig(batch_size=args.batch, workers=1)
    cases = [("Keras (training model)", model, "tf", "graph", False),
             ("SavedModel", out, "tf", "graph", False), ("TFLite", out, "tflite", "graph", False),
             ("ONNX Runtime, whole graph", out, "onnx", "graph", False),
             ("ONNX Runtime, numpy front end", out, "onnx", "numpy", False),
             ("OpenVINO, whole graph", out, "openvino", "graph", False),
             ("OpenVINO, numpy front end", out, "openvino", "numpy", False),
             ("ONNX Runtime int8", out, "onnx", "numpy", True),
             ("OpenVINO int8", out, "openvino", "numpy", True)]
    if args.quick:
        cases = [c for c in cases if c[3] == "numpy" and not c[4]]
    for label, path, runtime, front_end, int8 in cases:
        runner = export_runtime.Runner(path, runtime, threads=args.threads, front_end=front_end,
                                 int8=int8)
        inputs = runner.front_end(clips) if runner.front_end is not None else clips
        ceiling = _rate(runner, inputs, args.batch)
        # Stage costs in CPU seconds per window, each on one thread (a runtime's idle
        # threads spinning would count as cost), and the rate they allow on the cores:
        # cores / (decode + front end + CNN).
        front_cost = (_cost(runner.front_end, clips, args.batch)
                      if runner.front_end is not None else 0.0)
        single = export_runtime.Runner(path, runtime, threads=1, front_end=front_end,
                                       int8=int8)
        costs = (decode_cost, front_cost, _cost(single, inputs, args.batch))
        limit = (os.cpu_count() or 1) / sum(costs)
        decoded = _rate(runner, clips, args.batch)
        case_cfg = dataclasses.replace(icfg, front_end=front_end, int8=int8)
        report = infer.predict([path], folder, work / f"{name}_{len(rows)}.csv", runtime,
                               case_cfg, progress=False, threads=args.threads)
        auc = None
        if int8:
            check = (evaluate.precision_check(out, demo / "data", YEAR, runtime, "int8")
                     if demo.is_dir() else None)
            auc = check and (check["f32_macro_auc"], check["delta"])
        rows.append((name, label, ceiling, decoded, report["windows_per_s"], auc, costs, limit))
        print(rows[-1], flush=True)
        if front_end == "numpy" and not int8:
            peer, diff = _peer(runner, files, card, args.batch,
                               work / f"{name}_{len(rows) - 1}.csv")
            rows.append((name, f"peer (librosa) on {label}", None, None, peer,
                         ("peer", report["windows_per_s"] / peer, diff), None, None))
            print(rows[-1], flush=True)
    return rows


def _peer(runner, files, card: dict, batch: int, birdkeras_csv: Path) -> tuple[float, float]:
    """The public notebooks' pipeline on `runner`'s CNN: (windows/s, the largest
    difference of its probabilities from birdkeras predict's in `birdkeras_csv`)."""
    import librosa  # noqa: PLC0415 - the peer's own library
    import pandas as pd  # noqa: PLC0415

    fe = card["front_end"]
    sr = card["sample_rate_hz"]
    window = round(card["window_s"] * sr)

    def windows_of(path):
        y, _ = librosa.load(path, sr=sr)
        y = np.pad(y, (0, -len(y) % window)).reshape(-1, window)
        mel = librosa.feature.melspectrogram(
            y=y, sr=sr, n_fft=fe["fft_length"], hop_length=fe["hop_length"],
            n_mels=fe["num_mel_bins"], fmin=fe["fmin_hz"], fmax=fe["fmax_hz"], htk=True,
            norm=None, center=True, pad_mode="reflect", power=2.0)
        db = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)
        if fe.get("top_db") is not None:
            db = np.maximum(db, db.max(axis=(1, 2), keepdims=True) - fe["top_db"])
        return db[..., None].astype(np.float32)

    runner(windows_of(files[0])[:batch])  # warm-up: librosa's first calls compile (numba)
    start, probs = time.perf_counter(), []
    for path in files:
        frames = windows_of(path)
        probs += [runner(frames[i:i + batch]) for i in range(0, len(frames), batch)]
    rate = sum(len(p) for p in probs) / (time.perf_counter() - start)
    ours = pd.read_csv(birdkeras_csv).drop(columns="row_id").to_numpy()
    return rate, float(np.abs(np.concatenate(probs) - ours).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="runtime threads (0: default)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--work", default="work/bench_inference")
    parser.add_argument("--demo", default="work/demo", help="the make demo workdir")
    parser.add_argument("--quick", action="store_true",
                        help="only the numpy-front-end rows and the peers")
    args = parser.parse_args()
    work, demo = Path(args.work), Path(args.demo)
    work.mkdir(parents=True, exist_ok=True)
    if not (demo / "ft" / "train" / "best.keras").is_file():
        raise SystemExit(f"{demo} has no trained models: run `make demo` first")
    rows = measure("128x313", trained_128(work, demo), work, args, demo)
    rows += measure("64x157 (demo)", demo / "ft" / "train" / "best.keras", work, args, demo)
    print(f"\n{args.files} synthetic 60 s OGG soundscapes ({args.files * 12} windows), batch "
          f"{args.batch}, {os.cpu_count()} cores\n")
    print("| model | runtime | CNN ceiling | vs Keras | windows, decode excluded | vs Keras "
          "| from OGG | vs Keras | int8 macro ROC-AUC change |")
    print("|---|---|---|---|---|---|---|---|---|")
    peers = [r for r in rows if r[5] and r[5][0] == "peer"]
    rows = [r for r in rows if r not in peers]
    for model in dict.fromkeys(r[0] for r in rows):
        mine = [r for r in rows if r[0] == model]
        base = mine[0]
        for _, label, ceiling, decoded, end, auc, *_ in mine:
            print(f"| {model} | {label} | {ceiling:.0f} | {ceiling / base[2]:.2f}x | "
                  f"{decoded:.0f} | {decoded / base[3]:.2f}x | {end:.0f} | {end / base[4]:.2f}x | "
                  + (f"{auc[1]:+.4f} (float32 {auc[0]:.4f})" if auc else "") + " |")
    for model in dict.fromkeys(r[0] for r in rows):
        mine = [r for r in rows if r[0] == model]
        fp32 = max(r[4] for r in mine if "int8" not in r[1])
        int8 = max([r[4] for r in mine if "int8" in r[1]], default=0.0)
        print(f"{model}: best from OGG float32 {fp32:.0f} windows/s (target >= 150: "
              f"{'met' if fp32 >= 150 else 'NOT met'}), int8 {int8:.0f} (target >= 250: "
              f"{'met' if int8 >= 250 else 'NOT met'})")
    print("\nStage costs (CPU ms per window) and the limit they imply on "
          f"{os.cpu_count()} cores (cores / sum of costs), against the from-OGG figure:\n")
    print("| model | runtime | decode | front end | CNN | limit (windows/s) | from OGG | "
          "from OGG / limit (target >= 0.85) |")
    print("|---|---|---|---|---|---|---|---|")
    for model, label, _, _, end, _, costs, limit in rows:
        ratio = end / limit
        print(f"| {model} | {label} | " + " | ".join(f"{1000 * c:.1f}" for c in costs)
              + f" | {limit:.0f} | {end:.0f} | {ratio:.2f} "
              f"({'met' if ratio >= 0.85 else 'NOT met'}) |")
    print("\n| model | peer pipeline (librosa, same CNN and runtime) | peer windows/s | "
          "birdkeras from OGG / peer | max probability difference |")
    print("|---|---|---|---|---|")
    for model, label, _, _, rate, (_, ratio, diff), *_ in peers:
        print(f"| {model} | {label.removeprefix('peer (librosa) on ')} | {rate:.0f} | "
              f"{ratio:.2f}x (target >= 1.3: {'met' if ratio >= 1.3 else 'NOT met'}) | "
              f"{diff:.4f} |")
    (work / "results.json").write_text(json.dumps(rows + peers, indent=1))


if __name__ == "__main__":
    main()

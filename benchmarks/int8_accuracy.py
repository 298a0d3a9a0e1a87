"""int8 and bf16 against float32: each quantisation option's speed and ROC-AUC change.

    make demo                         # trains the 64-mel model this also measures
    python benchmarks/int8_accuracy.py [--files 16] [--batch 8]

Models: the two of `benchmarks/inference.py` (a B0 at 128 mels x 313 frames fine-tuned
briefly, cached under --work, and the demo's 64 x 157 model). Each is exported once in
float32 (ONNX + OpenVINO); each int8 variant is quantised from the same `cnn.onnx`
(`birdkeras.export.int8.Int8Options`):

  default            `--int8`: up to 300 windows of the run's own training records
                     (the demo's hold fewer: all of them), weights per output channel
  30 windows         fewer calibration windows
  per tensor         one weight scale per tensor
  ends float32       the first convolution and the classifier kept float32
  older years        calibrated on up to 1000 windows of the 2021-2025 training audio
                     (the pretraining data: more and more varied windows)
  ends + older       both

OpenVINO bf16 (where the CPU has avx512_bf16/AMX; else OpenVINO runs float32 and the row
says so) is measured beside them. For each: the CNN ceiling (log-mel frames in, batch
`--batch`, windows/s) in ONNX Runtime and OpenVINO, its ratio to float32 in the same
runtime, and the macro ROC-AUC change on the synthetic labelled soundscapes
(`birdkeras.infer.evaluate.precision_check`, OpenVINO). The CPU flags that the reduced
precisions use (avx512_vnni / avx_vnni / amx_int8 for int8, avx512_bf16 / amx_bf16 for
bf16) are printed with the table: a figure holds for CPUs with the same flags.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import inference  # noqa: E402

YEAR = inference.YEAR
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "avx512_bf16", "amx_bf16")


def cpu_flags() -> list[str]:
    """The FLAGS this CPU has (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    have = set(next((line for line in text.splitlines() if line.startswith("flags")),
                    "").split())
    return [f for f in FLAGS if f in have]


def variants(demo: Path):
    """(label, options, calibration source: None = the run's records, else audio)."""
    from birdkeras.export.int8 import Int8Options  # noqa: PLC0415

    older = [d for y in range(2021, 2026) for d in (demo / "data" / f"birdclef-{y}").glob(
        "train*audio") if d.is_dir()]  # train_short_audio (2021), train_audio
    return [("default: the run's records, per channel", Int8Options(), None),
            ("30 calibration windows", Int8Options(calibration_windows=30), None),
            ("per-tensor weights", Int8Options(per_channel=False), None),
            ("first conv + classifier float32", Int8Options(keep_float="ends"), None),
            ("older years' audio, up to 1000 windows", Int8Options(calibration_windows=1000),
             older),
            ("ends float32 + older years' audio", Int8Options(calibration_windows=1000,
                                                              keep_float="ends"), older)]


def measure(name: str, model: Path, work: Path, args, demo: Path) -> list[dict]:
    from birdkeras.audio import io as audio_io  # noqa: PLC0415
    from birdkeras.audio import windows  # noqa: PLC0415
    from birdkeras.export import card as card_lib  # noqa: PLC0415
    from birdkeras.export import convert  # noqa: PLC0415
    from birdkeras.export import runtime as export_runtime  # noqa: PLC0415
    from birdkeras.infer import evaluate  # noqa: PLC0415
    from birdkeras.model import run_files  # noqa: PLC0415

    base = work / f"int8_{name.split()[0]}" / "float32"
    if not (base / card_lib.CARD).is_file():
        convert.export(model, base, ("onnx", "openvino"))
    card = card_lib.read_export_card(base)
    sr = card["sample_rate_hz"]
    folder = work / f"audio_{sr}"
    files = sorted(folder.glob("*.ogg")) or inference._soundscapes(folder, args.files, sr)
    clips = np.concatenate([windows.cut(audio_io.load(p, sr), sr, np.arange(0, 60, 5.0), 5.0)
                            for p in files])

    def ceilings(out, runtimes=("onnx", "openvino"), **kw):
        found = {}
        for runtime in runtimes:
            runner = export_runtime.Runner(out, runtime, front_end="numpy", **kw)
            found[runtime] = inference._rate(runner, runner.front_end(clips), args.batch)
            found[f"{runtime}_used"] = runner.precision_used
        return found

    f32 = ceilings(base)
    rows = [{"model": name, "precision": "float32", **f32, "delta": 0.0, "auc": None}]
    cfg, _ = run_files.read(model)
    for label, options, calibration in variants(demo):
        out = base.parent / f"v{len(rows)}"
        if not (out / card_lib.CARD).is_file() or "int8" not in card_lib.read_export_card(out):
            shutil.copytree(base, out, dirs_exist_ok=True)
            convert.write_export_card(out, convert.add_int8(
                out, card_lib.read_export_card(out), cfg, calibration, options))
        found = card_lib.read_export_card(out)["int8"]["calibration_windows"]
        check = evaluate.precision_check(out, demo / "data", YEAR, "openvino", "int8")
        rows.append({"model": name, "precision": f"int8: {label} ({found} windows)",
                     **ceilings(out, int8=True),
                     "delta": check["delta"], "auc": check["f32_macro_auc"]})
        print(rows[-1], flush=True)
    check = evaluate.precision_check(base, demo / "data", YEAR, "openvino", "bf16")
    found = ceilings(base, ("openvino",), precision="bf16")
    found["onnx"] = np.nan  # ONNX Runtime's CPU provider has no bf16 execution
    rows.append({"model": name, "precision": f"bf16 (OpenVINO ran {found['openvino_used']})",
                 **found, "delta": check["delta"], "auc": check["f32_macro_auc"]})
    print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--work", default="work/bench_inference")
    parser.add_argument("--demo", default="work/demo", help="the make demo workdir")
    args = parser.parse_args()
    work, demo = Path(args.work), Path(args.demo)
    work.mkdir(parents=True, exist_ok=True)
    if not (demo / "ft" / "train" / "best.keras").is_file():
        raise SystemExit(f"{demo} has no trained models: run `make demo` first")
    rows = measure("128x313", inference.trained_128(work, demo), work, args, demo)
    rows += measure("64x157 (demo)", demo / "ft" / "train" / "best.keras", work, args, demo)
    print(f"\nCPU flags: {', '.join(cpu_flags()) or 'unknown'}; {os.cpu_count()} cores, "
          f"batch {args.batch}, CNN ceiling in windows/s (log-mel frames in)\n")
    print("| model | precision | ONNX Runtime | vs float32 | OpenVINO | vs float32 | "
          "macro ROC-AUC change (OpenVINO) | within 0.005 |")
    print("|---|---|---|---|---|---|---|---|")
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        f32 = mine[0]
        for r in mine:
            onnx = ("-" if np.isnan(r["onnx"]) else
                    f"{r['onnx']:.0f} | {r['onnx'] / f32['onnx']:.2f}x")
            onnx = onnx if "|" in onnx else f"{onnx} | -"
            auc = "" if r["auc"] is None else f" (float32 {r['auc']:.4f})"
            print(f"| {model} | {r['precision']} | {onnx} | {r['openvino']:.0f} | "
                  f"{r['openvino'] / f32['openvino']:.2f}x | {r['delta']:+.4f}{auc} | "
                  f"{'yes' if abs(r['delta']) <= 0.005 else 'no'} |")


if __name__ == "__main__":
    main()

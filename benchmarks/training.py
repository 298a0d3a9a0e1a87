"""Training throughput per Keras backend, and whether the input pipeline keeps up.

    python benchmarks/training.py [--backends tensorflow,jax] [--batch 16] [--steps 20]
        [--mixed-precision auto] [--work work/bench_training]

EfficientNetB0 at the front end users train (32 kHz, 5 s windows, 128 mels x 313
frames), the demo's training configuration otherwise, on TFRecords of the synthetic
BirdCLEF tree (built once under --work). Each backend runs in its own process
(`KERAS_BACKEND` is read when Keras is imported) through the trainer's own steps
(`prepare`: devices and datasets, `initial_model`, compile), and reports, after a
compiled warm-up:

  real data     samples/s of `fit` on the tf.data pipeline (decode, crop, mixup, ...)
  cached batch  samples/s of `fit` on one batch held in memory, repeated
  input bound   real / cached step time: ~1.0 means the pipeline keeps the devices
                busy; above 1 it is the bottleneck

`input.batch_size` is per device (global batch = batch x devices). `--mixed-precision
auto` is the configs' `true` (bfloat16 on TPU, float16 on GPU, float32 on CPU). On a
CPU, `XLA_FLAGS=--xla_force_host_platform_device_count=8` makes JAX split each batch
over 8 host devices as on a v5e-8 (the figures then measure the split, not a TPU).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _records(work: Path) -> list[str]:
    """Config overrides naming the benchmark's records (built on first use)."""
    from birdkeras import synth  # noqa: PLC0415
    from birdkeras.config import load_config  # noqa: PLC0415
    from birdkeras.datasets import manifest  # noqa: PLC0415
    from birdkeras.records import shards  # noqa: PLC0415

    overrides = [f"data.root={work / 'data'}", "data.corrupt_files=null",
                 "data.sources=[birdclef-2021, birdclef-2022, birdclef-2023]",
                 "data.num_folds=3", f"data.manifest_dir={work / 'manifest'}",
                 f"tfrecords.dir={work / 'shards'}"]
    if not (work / "shards" / "dataset_card.json").is_file():
        synth.generate(work / "data", synth.SynthSpec(
            seed=5, num_birds=8, num_textures=1, target_species=3, clips_per_species=6,
            target_clips_per_species=1, median_duration_s=8.0, max_duration_s=20.0,
            labelled_soundscapes=0, unlabelled_soundscapes=0, broken_fraction=0.0))
        cfg = load_config(REPO / "configs" / "demo_pre.yaml", overrides)
        table, name2label, report = manifest.build(cfg)
        manifest.save(cfg.data.manifest_dir, table, name2label, report)
        shards.build(table, name2label, cfg, progress=False)
    return overrides


def measure(overrides: list[str], steps: int) -> dict:
    """In this process, on its backend: samples/s on real data and on a cached batch."""
    import keras  # noqa: PLC0415 - after KERAS_BACKEND is set

    from birdkeras.config import load_config  # noqa: PLC0415
    from birdkeras.train import trainer  # noqa: PLC0415

    cfg = load_config(REPO / "configs" / "demo_pre.yaml", overrides)
    prepared = trainer.prepare(cfg, Path(cfg.workdir))
    with prepared.placement.scope():
        model, _ = trainer.initial_model(prepared)
        trainer._compile(prepared, model, offset_steps=0)  # noqa: SLF001 - the trainer's own
        cached = prepared.train_ds.take(1).cache().repeat()
        rates = {}
        for name, data in (("cached", cached), ("real", prepared.train_ds)):
            model.fit(data, epochs=1, steps_per_epoch=2, verbose=0)  # compile, warm up
            start = time.perf_counter()
            model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0)
            rates[name] = steps * prepared.global_batch / (time.perf_counter() - start)
    return {"backend": keras.backend.backend(), "placement": prepared.placement.describe(),
            "policy": keras.mixed_precision.global_policy().name,
            "global_batch": prepared.global_batch, "real_samples_s": rates["real"],
            "cached_samples_s": rates["cached"],
            "input_bound": rates["cached"] / rates["real"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="tensorflow,jax")
    parser.add_argument("--batch", type=int, default=16, help="per device")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--mixed-precision", default="auto",
                        choices=["auto", "off", "bfloat16", "float16"])
    parser.add_argument("--work", type=Path, default=REPO / "work" / "bench_training")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(json.loads(args.child), args.steps)))
        return
    policy = {"auto": "true", "off": "false"}.get(args.mixed_precision, args.mixed_precision)
    overrides = [*_records(args.work.resolve()), "audio.num_mel_bins=128", "audio.hop_length=512",
                 f"input.batch_size={args.batch}", f"train.mixed_precision={policy}",
                 "wandb.mode=disabled", f"workdir={args.work.resolve() / 'run'}"]
    rows = []
    for backend in args.backends.split(","):
        out = subprocess.run(
            [sys.executable, __file__, "--steps", str(args.steps), "--child",
             json.dumps([*overrides, f"train.backend={backend}"])],
            env={**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"},
            capture_output=True, text=True, check=False)
        if out.returncode:
            sys.exit(f"{backend} failed:\n{out.stderr[-3000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    first = rows[0]["real_samples_s"]
    print("| backend | devices | policy | global batch | samples/s real data | samples/s cached "
          "batch | input bound (cached/real) | vs first row |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['backend']} | {r['placement']} | {r['policy']} | {r['global_batch']} | "
              f"{r['real_samples_s']:.1f} | {r['cached_samples_s']:.1f} | "
              f"{r['input_bound']:.2f} | {r['real_samples_s'] / first:.2f}x |")


if __name__ == "__main__":
    main()

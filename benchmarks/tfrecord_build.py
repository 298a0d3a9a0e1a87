"""TFRecord build throughput vs the decode+resample limit, in the same run.

    make bench            (or: python benchmarks/tfrecord_build.py [--median-s 20])

Makes a synthetic tree with a realistic length mix (median ~20 s, some of minutes),
then measures over the same files:
  limit   : a plain loop that only decodes and resamples (soundfile + soxr), 1 process;
  build/1 : `birdkeras tfrecords build` with 1 worker (decode, resample, int16, encode,
            frame, write, rename);
  build/2 : the same with 2 workers.
Throughput is audio-seconds per CPU-second (per worker) and per wall-second. Targets:
build/1 >= 70% of the limit per CPU-second; build/2 wall throughput near 2x build/1.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import shutil
import tempfile
import time
from pathlib import Path

import soundfile as sf

from birdkeras import audio, manifest, shards, synth
from birdkeras.config import load_config


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _duration(path: Path) -> float:
    try:
        return sf.info(str(path)).duration
    except sf.LibsndfileError:
        return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--median-s", type=float, default=20.0)
    parser.add_argument("--clips", type=int, default=10, help="clips per species per source")
    parser.add_argument("--keep", help="reuse/keep the synthetic tree in this folder")
    args = parser.parse_args()

    work = Path(args.keep or tempfile.mkdtemp(prefix="bk_bench_"))
    spec = dataclasses.replace(synth.BENCHMARK, clips_per_species=args.clips,
                               median_duration_s=args.median_s)
    root = synth.ensure(work / "data", spec)
    base = [f"data.root={root}", "data.sources=[birdclef-2021, birdclef-2022, birdclef-2023]",
            "data.num_folds=2", "tfrecords.shard_size_mb=16"]
    cfg = load_config(None, base)
    table, name2label, _ = manifest.build(cfg)
    paths = [root / p for p in table["path"]]

    cpu0, wall0 = time.process_time(), time.perf_counter()
    audio_s = 0.0
    for p in paths:
        try:
            audio_s += len(audio.load(p, 32000)) / 32000
        except audio.AudioError:
            pass  # broken files cost the build a failed decode too
    limit_cpu, limit_wall = time.process_time() - cpu0, time.perf_counter() - wall0

    results = {}
    for workers in (1, 2):
        out = work / f"tfrec_{workers}"
        shutil.rmtree(out, ignore_errors=True)
        run_cfg = load_config(None, [*base, f"tfrecords.dir={out}", f"tfrecords.workers={workers}"])
        cpu0, wall0 = _children_cpu(), time.perf_counter()
        card = shards.build(table, name2label, run_cfg, progress=False)
        results[workers] = (_children_cpu() - cpu0, time.perf_counter() - wall0, card)

    durations = sorted(table["path"].map(lambda p: _duration(root / p)))
    print(f"\n{len(paths)} files, {audio_s / 60:.1f} audio minutes, median "
          f"{durations[len(durations) // 2]:.1f} s, longest {durations[-1]:.0f} s\n")
    print("| run | audio-s per CPU-s | audio-s per wall-s | vs limit (per CPU-s) | vs build/1 (wall) |")
    print("|---|---|---|---|---|")
    limit = audio_s / limit_cpu
    print(f"| decode+resample only (limit) | {limit:.0f} | {audio_s / limit_wall:.0f} | 1.00 | |")
    one_wall = audio_s / results[1][1]
    for workers, (cpu, wall, card) in results.items():
        print(f"| build, {workers} worker{'s' * (workers > 1)} | {audio_s / cpu:.0f} | "
              f"{audio_s / wall:.0f} | {audio_s / cpu / limit:.2f} | {audio_s / wall / one_wall:.2f} |")
    print(f"\nshards hold {results[1][2]['records']} records; worker start-up "
          "is included in build wall and CPU time.")
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()

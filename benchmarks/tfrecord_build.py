"""TFRecord build throughput vs the decode+resample limit, in the same run.

    make bench            (or: python benchmarks/tfrecord_build.py [--median-s 20])

Makes a synthetic tree with a realistic length mix (median ~20 s, some of minutes),
then measures over the same files:
  limit   : a plain loop that only decodes and resamples (soundfile + soxr), 1 process;
  build/1 : `birdkeras tfrecords build` with 1 worker (decode, resample, int16, encode,
            frame, write, rename);
  build/2 : the same with 2 workers;
  beam/2  : the same build on Apache Beam's local runner, 2 worker processes
            (`--runner beam`; the same shards), and Beam's fixed start-up cost alone
            (a pipeline of two no-op jobs).
Throughput is audio-seconds per CPU-second (the build's processes and the driver's) and
per wall-second. Targets: build/1 >= 70% of the limit per CPU-second; build/2 wall
throughput near 2x build/1; Beam's overhead is reported, not targeted.
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

from birdkeras.audio import io as audio_io
from birdkeras.records import jobs
from birdkeras.datasets import manifest
from birdkeras.records import shards
from birdkeras import synth
from birdkeras.config import load_config


def _cpu() -> float:
    """CPU seconds of this process and its finished children (build workers, Beam's)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime + time.process_time()


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
            audio_s += len(audio_io.load(p, 32000)) / 32000
        except audio_io.AudioError:
            pass  # broken files cost the build a failed decode too
    limit_cpu, limit_wall = time.process_time() - cpu0, time.perf_counter() - wall0

    results = {}
    for label, workers, runner in (("build, 1 worker", 1, "local"),
                                   ("build, 2 workers", 2, "local"),
                                   ("Beam local runner, 2 workers", 2, "beam")):
        out = work / f"tfrec_{runner}_{workers}"
        shutil.rmtree(out, ignore_errors=True)
        run_cfg = load_config(None, [*base, f"tfrecords.dir={out}", f"tfrecords.workers={workers}"])
        cpu0, wall0 = _cpu(), time.perf_counter()
        card = shards.build(table, name2label, run_cfg, progress=False, runner=runner)
        results[label] = (_cpu() - cpu0, time.perf_counter() - wall0, card)
    cpu0, wall0 = _cpu(), time.perf_counter()
    jobs.run_beam([b"", b""], len, workers=2, name="no-op")
    beam_start = (_cpu() - cpu0, time.perf_counter() - wall0)

    durations = sorted(table["path"].map(lambda p: _duration(root / p)))
    print(f"\n{len(paths)} files, {audio_s / 60:.1f} audio minutes, median "
          f"{durations[len(durations) // 2]:.1f} s, longest {durations[-1]:.0f} s\n")
    print("| run | audio-s per CPU-s | audio-s per wall-s | vs limit (per CPU-s) | vs build/1 (wall) |")
    print("|---|---|---|---|---|")
    limit = audio_s / limit_cpu
    print(f"| decode+resample only (limit) | {limit:.0f} | {audio_s / limit_wall:.0f} | 1.00 | |")
    one_wall = audio_s / results["build, 1 worker"][1]
    for label, (cpu, wall, card) in results.items():
        print(f"| {label} | {audio_s / cpu:.0f} | {audio_s / wall:.0f} | "
              f"{audio_s / cpu / limit:.2f} | {audio_s / wall / one_wall:.2f} |")
    (local_cpu, local_wall, card), (beam_cpu, beam_wall, beam_card) = (
        results["build, 2 workers"], results["Beam local runner, 2 workers"])
    assert beam_card["records"] == card["records"] and beam_card["shards"] == card["shards"]
    print(f"\nshards hold {card['records']} records (the same shards from every run); worker "
          "start-up is included in wall and CPU time.")
    print(f"Beam vs the local 2-worker build: {beam_wall / local_wall:.2f}x the wall time, "
          f"{beam_cpu / local_cpu:.2f}x the CPU time; Beam's start-up alone (2 no-op jobs): "
          f"{beam_start[1]:.1f} s wall, {beam_start[0]:.1f} CPU-s.")
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()

"""Input pipeline and front end vs the public PyTorch notebooks' way, in the same run.

    python benchmarks/input_pipeline.py [--seconds 20]

(a) Five-second training clips per second delivered by `birdkeras.data.make_dataset`
    from TFRecords, beside a per-file loader written as the public notebooks write it
    (`librosa.load(path, sr=32000)` of the source file + a random 5 s crop) in a
    2-process pool. Both read the same recordings: a synthetic set with a realistic
    length mix (median ~20 s, some of minutes, 22.05-48 kHz, ogg/mp3/flac/wav).
(b) Log-mel of the same 5 s clips: the in-model `LogMelSpectrogram` layer (batch 16)
    vs `librosa.feature.melspectrogram` + `power_to_db` per clip, with the same settings.
Targets: (a) >= 20x the peer and >= 1,000 clips/s on 2 cores; (b) >= 3x.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

WINDOW_S, SR = 5.0, 32000


def _peer_clip(args):
    import librosa  # noqa: PLC0415

    path, seed = args
    y, _ = librosa.load(path, sr=SR)
    n = int(WINDOW_S * SR)
    if len(y) < n:
        y = np.pad(y, (0, n - len(y)))
    start = np.random.default_rng(seed).integers(0, len(y) - n + 1)
    return y[start:start + n].shape[0]


def _records(work: Path):
    """The benchmark tree's TFRecords; the recordings both sides read (failures removed)."""
    import pandas as pd  # noqa: PLC0415

    from birdkeras.datasets import manifest  # noqa: PLC0415
    from birdkeras.records import shards  # noqa: PLC0415
    from birdkeras import synth  # noqa: PLC0415
    from birdkeras.config import load_config  # noqa: PLC0415

    root = synth.ensure(work / "data", synth.BENCHMARK)
    cfg = load_config(None, [
        f"data.root={root}", "data.sources=[birdclef-2021, birdclef-2022, birdclef-2023]",
        "data.num_folds=2", f"tfrecords.dir={work / 'pipeline_shards'}",
        "tfrecords.shard_size_mb=16", "input.batch_size=64"])
    table, name2label, _ = manifest.build(cfg)
    shards.build(table, name2label, cfg, progress=False)
    failed = set(pd.read_csv(Path(cfg.tfrecords.dir) / shards.FAILURES)["recording_id"])
    return cfg, name2label, root, table[~table["recording_id"].isin(failed)]


def _peer_rate(files: list[str], seconds: float) -> float:
    """Per-file loader, 2 processes, over the files in random order, repeated."""
    rng = np.random.default_rng(0)
    with multiprocessing.get_context("fork").Pool(2) as pool:
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            order = rng.permutation(len(files))[:16]
            count += len(pool.map(_peer_clip, [(files[i], int(i)) for i in order]))
        return count / (time.perf_counter() - start)


def _front_end_rates(clips: np.ndarray, seconds: float) -> tuple[float, float]:
    """Log-mel clips/s: our layer (batch of `clips`) and librosa (one clip at a time)."""
    import librosa  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    from birdkeras.model.frontend import LogMelSpectrogram  # noqa: PLC0415

    layer = LogMelSpectrogram()
    call = tf.function(layer.call, jit_compile=False)
    call(tf.constant(clips))
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        call(tf.constant(clips))
        reps += 1
    layer_rate = reps * len(clips) / (time.perf_counter() - start)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for y in clips:
            s = librosa.feature.melspectrogram(
                y=y, sr=SR, n_fft=2048, hop_length=512, n_mels=128, fmin=50.0, fmax=14000.0,
                htk=True, norm=None, power=2.0, center=True, pad_mode="reflect")
            librosa.power_to_db(s, ref=1.0, amin=1e-10, top_db=80.0)
            n += 1
    return layer_rate, n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="time per measurement")
    parser.add_argument("--keep", help="reuse/keep data in this folder")
    args = parser.parse_args()

    work = Path(args.keep or tempfile.mkdtemp(prefix="bk_pipe_"))
    cfg, name2label, root, table = _records(work)
    files = [str(root / p) for p in table["path"]]
    seconds = table["path"].map(lambda p: __import__("soundfile").info(str(root / p)).duration)

    # (a) clips/s: the peer's per-file loader, then our tf.data pipeline.
    peer = _peer_rate(files, args.seconds)
    from birdkeras.records import pipeline  # noqa: PLC0415

    it = iter(pipeline.make_dataset(cfg, len(name2label), training=True))
    for _ in range(5):
        next(it)  # warm up: fill the shuffle buffer
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        count += int(next(it)[0].shape[0])
    ours = count / (time.perf_counter() - start)

    # (b) front end on the same clips; batch 16 is the fastest batch for the layer here.
    layer_rate, librosa_rate = _front_end_rates(next(it)[0].numpy()[:16], args.seconds / 2)

    print(f"\n{len(files)} recordings, {seconds.sum() / 60:.0f} audio min, median "
          f"{seconds.median():.1f} s, longest {seconds.max():.0f} s; {os.cpu_count()} cores\n")
    print("| measurement | birdkeras | peer | ratio | target |")
    print("|---|---|---|---|---|")
    print(f"| 5 s training clips/s | {ours:.0f} (tf.data from TFRecords) | {peer:.1f} "
          f"(librosa.load + crop, 2 processes) | {ours / peer:.0f}x | >= 20x, >= 1000/s |")
    print(f"| log-mel clips/s | {layer_rate:.0f} (LogMelSpectrogram, batch 16) | "
          f"{librosa_rate:.0f} (librosa, per clip) | {layer_rate / librosa_rate:.1f}x | >= 3x |")


if __name__ == "__main__":
    main()

"""TFRecords on gs://: build, verify and train through TensorFlow's own GCS filesystem,
against a GCS emulator on 127.0.0.1 (see tests/gcs_loopback.py for how TF reaches it)."""

import numpy as np
import pytest

from birdkeras import storage
from birdkeras.records import pipeline
from birdkeras.datasets import manifest
from birdkeras.records import shards
from birdkeras.records import format as record_format
from birdkeras import train
from birdkeras.config import load_config

from conftest import REPO
from gcs_loopback import gcs_emulator

pytestmark = pytest.mark.slow  # trains or runs whole workflows: `make test-fast` skips

TOKEN = "loopback-test-token"


@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
    with gcs_emulator(tmp_path_factory.mktemp("gcs")) as root:
        yield root


def _cfg(synth_root, tmp_path, shards_dir):
    return load_config(REPO / "configs" / "demo_pre.yaml", [
        f"data.root={synth_root}", "data.sources=[birdclef-2021, birdclef-2022]",
        "data.num_folds=2", "data.balance.filter_min_samples=0",
        "data.balance.upsample_min_samples=0",
        f"data.corrupt_files={synth_root / 'corrupt_files.json'}",
        f"data.manifest_dir={tmp_path / 'manifest'}", f"tfrecords.dir={shards_dir}",
        "tfrecords.shard_size_mb=1", "tfrecords.workers=2", "audio.num_mel_bins=32",
        "input.batch_size=4", "train.epochs=1", "train.steps_per_epoch=2",
        "train.checkpoint_every_steps=2", "wandb.mode=disabled"])


def test_build_verify_read_and_train_from_gcs(bucket, synth_root, tmp_path):
    shards_dir = f"{bucket}/demo/pre"
    cfg = _cfg(synth_root, tmp_path, shards_dir)
    table, name2label, report = manifest.build(cfg)
    manifest.save(cfg.data.manifest_dir, table, name2label, report)

    card = shards.build(table, name2label, cfg, progress=False)
    names = record_format.list_shards(shards_dir)
    assert names and all(n.startswith(f"{shards_dir}/") for n in names)
    assert len(names) == len(card["shards"])
    assert storage.exists(f"{shards_dir}/{shards.CARD}")
    assert shards.verify(table, name2label, cfg)["records"] == card["records"]

    # The training pipeline reads the same gs:// shards.
    x, y, *_ = next(iter(pipeline.make_dataset(cfg, len(name2label), training=True)))
    assert x.shape == (4, int(cfg.audio.window_s * cfg.audio.sample_rate_hz))
    assert np.isfinite(x.numpy()).all() and y.shape == (4, len(name2label))
    summary = train.run(cfg, tmp_path / "run")
    assert (tmp_path / "run" / "best.keras").is_file() and summary["workdir"]

    # A second build finds every shard done on GCS and does nothing.
    again = shards.build(table, name2label, cfg, progress=False)
    assert again["records"] == card["records"]

    # The (fake) bearer token is in no file birdkeras wrote, on GCS or locally.
    from tensorflow.io import gfile  # noqa: PLC0415

    remote = [f"{shards_dir}/{n}" for n in gfile.listdir(shards_dir)]
    for path in remote + [str(p) for p in tmp_path.rglob("*") if p.is_file()]:
        with storage.open_file(path, "rb") as f:
            assert TOKEN.encode() not in f.read(), path


def test_beam_workers_build_the_same_shards_on_gcs(bucket, synth_root, tmp_path):
    # Beam's worker processes write to gs:// themselves (they inherit the loopback setup).
    local = _cfg(synth_root, tmp_path / "a", f"{bucket}/beam/local")
    table, name2label, _ = manifest.build(local)
    card = shards.build(table, name2label, local, progress=False)
    beam_cfg = _cfg(synth_root, tmp_path / "b", f"{bucket}/beam/runner")
    beam_card = shards.build(table, name2label, beam_cfg, progress=False, runner="beam")
    assert beam_card["shards"] == card["shards"] and beam_card["records"] == card["records"]
    assert shards.verify(table, name2label, beam_cfg)["records"] == card["records"]
    for name in (shard["name"] for shard in card["shards"]):
        with storage.open_file(f"{local.tfrecords.dir}/{name}", "rb") as a, \
                storage.open_file(f"{beam_cfg.tfrecords.dir}/{name}", "rb") as b:
            assert a.read() == b.read(), name

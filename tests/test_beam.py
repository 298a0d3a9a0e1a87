"""Apache Beam runs (local runner, 2 worker processes): the same shards as the local
builders, exactly once under a failed or duplicated bundle, the same failures."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from birdkeras.records import jobs
from birdkeras.embeddings import extract
from birdkeras import infer
from birdkeras.datasets import manifest
from birdkeras.selftrain import pseudolabel
from birdkeras.records import shards
from birdkeras.records import format as record_format
from birdkeras.config import load_config

from conftest import REPO

pytestmark = pytest.mark.slow  # trains or runs whole workflows: `make test-fast` skips

SOURCES = "[birdclef-2020, birdclef-2021, birdclef-2022, birdclef-2023, xeno-canto]"


def _cfg(synth_root, out):
    return load_config(None, [f"data.root={synth_root}", f"data.sources={SOURCES}",
                              "data.num_folds=2", f"tfrecords.dir={out}", "tfrecords.workers=2",
                              "tfrecords.shard_size_mb=1"])


def _records(folder) -> dict:
    records = {}
    for shard in record_format.list_shards(str(folder)):
        for ex in tf.data.TFRecordDataset(shard).map(record_format.parse_example):
            rid = ex[record_format.RECORDING_ID].numpy().decode()
            assert rid not in records, f"{rid} is in two shards"
            records[rid] = (int(ex[record_format.LABEL]), ex[record_format.AUDIO].numpy().tobytes(),
                            os.path.basename(shard))
    return records


@pytest.fixture(scope="module")
def local_build(synth_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    cfg = _cfg(synth_root, out)
    table, name2label, _ = manifest.build(cfg)
    card = shards.build(table, name2label, cfg, progress=False)
    return cfg, table, name2label, card


def test_beam_build_gives_the_local_builds_shards(local_build, synth_root, tmp_path):
    cfg, table, name2label, card = local_build
    beam_cfg = _cfg(synth_root, tmp_path)
    beam_card = shards.build(table, name2label, beam_cfg, progress=False, runner="beam")
    assert _records(tmp_path) == _records(cfg.tfrecords.dir)  # ids, labels, audio, shards
    assert {k: v for k, v in beam_card.items() if k != "config"} == {
        k: v for k, v in card.items() if k != "config"}
    assert (tmp_path / record_format.FAILURES).read_text() == (
        (cfg.tfrecords.dir if isinstance(cfg.tfrecords.dir, str) else cfg.tfrecords.dir)
        and open(os.path.join(cfg.tfrecords.dir, record_format.FAILURES)).read())
    assert card["failures"] > 0  # bad audio is there, and lands the same way
    shards.verify(table, name2label, beam_cfg)


def test_audio_read_through_tfs_filesystems_gives_the_same_shards(local_build, synth_root,
                                                                  tmp_path):
    # On Dataflow the workers read audio from data.root=gs://...; any URL goes through
    # tf.io.gfile (headers by ranged reads when planning shards, whole files to decode).
    cfg, table, name2label, card = local_build
    url_cfg = load_config(None, [f"data.root=file://{synth_root}", f"data.sources={SOURCES}",
                                 "data.num_folds=2", f"tfrecords.dir={tmp_path}",
                                 "tfrecords.workers=1", "tfrecords.shard_size_mb=1"])
    url_card = shards.build(table, name2label, url_cfg, progress=False)
    assert _records(tmp_path) == _records(cfg.tfrecords.dir)  # same shards, same records
    assert url_card["failures"] == card["failures"] > 0
    assert f"file://{synth_root}" in (tmp_path / record_format.FAILURES).read_text()


def test_a_failed_bundle_retried_leaves_every_recording_once(local_build, synth_root,
                                                             tmp_path, monkeypatch):
    import beam_flaky

    _, table, name2label, _ = local_build
    cfg = _cfg(synth_root, tmp_path / "out")
    victim = shards.plan_shards(table, name2label, cfg)[1].name
    monkeypatch.setenv("BIRDKERAS_TEST_FAIL_SHARD", victim)
    monkeypatch.setenv("BIRDKERAS_TEST_FAIL_MARKER", str(tmp_path / "failed"))
    tests = str(REPO / "tests")  # the Beam workers import the flaky writer from here
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]))
    try:
        shards.build(table, name2label, cfg, progress=False, runner="beam",
                     write=beam_flaky.write_failing_once)
    except Exception:  # noqa: BLE001 - the local runner fails the job; a rerun retries it
        shards.build(table, name2label, cfg, progress=False, runner="beam",
                     write=beam_flaky.write_failing_once)
    assert (tmp_path / "failed").is_file(), "the failure was not injected"
    failed = set(pd.read_csv(tmp_path / "out" / record_format.FAILURES)["recording_id"])
    assert set(_records(tmp_path / "out")) == set(table["recording_id"]) - failed


def test_a_bundle_run_twice_writes_its_shard_once(local_build, synth_root, tmp_path):
    cfg, table, name2label, _ = local_build
    out = tmp_path / "out"
    out.mkdir()
    job = shards.plan_shards(table, name2label, cfg)[0]
    args = (job, str(synth_root), str(out), 32000, None)
    jobs.run_beam([args, args, args], shards._write_shard, workers=2, name="twice")
    records = _records(out)  # asserts that no recording is there twice
    assert set(records) <= {row["recording_id"] for row in job.rows}
    assert (out / job.name).read_bytes() == (
        __import__("pathlib").Path(cfg.tfrecords.dir) / job.name).read_bytes()


def test_pseudolabels_embeddings_and_predictions_on_beam_equal_local(synth_root, tmp_path):
    from test_soundscape_training import _teacher
    classes = list(pd.read_csv(synth_root / "birdclef-2026" / "sample_submission.csv",
                               nrows=0).columns[1:])
    teacher = _teacher(tmp_path / "t", classes, 1)
    audio = [synth_root / "birdclef-2026" / "train_soundscapes"]
    cfg = load_config(None, [f"data.root={synth_root}", "pseudo.files_per_shard=1",
                             "pseudo.threshold=0.2"])
    for runner in ("local", "beam"):
        pseudolabel.run([teacher], audio, str(tmp_path / f"pl_{runner}"), cfg, progress=False,
                        runner=runner)
        extract.run(teacher, str(tmp_path / f"emb_{runner}"), audio=audio, files_per_shard=1,
                  progress=False, runner=runner)
        infer.predict_sharded([teacher], audio, tmp_path / f"pred_{runner}", files_per_part=1,
                              runner=runner)
    for kind in ("pl", "emb"):
        names = sorted(p.name for p in (tmp_path / f"{kind}_local").glob("*.tfrec"))
        assert names and names == sorted(p.name for p in (tmp_path / f"{kind}_beam").glob("*.tfrec"))
        for name in names:
            assert ((tmp_path / f"{kind}_local" / name).read_bytes()
                    == (tmp_path / f"{kind}_beam" / name).read_bytes()), (kind, name)
    local = json.loads((tmp_path / "pred_local" / "parts.json").read_text())
    assert local == json.loads((tmp_path / "pred_beam" / "parts.json").read_text())
    for part in local["parts"]:
        a = pd.read_csv(tmp_path / "pred_local" / part["part"])
        b = pd.read_csv(tmp_path / "pred_beam" / part["part"])
        np.testing.assert_allclose(a[classes], b[classes], atol=1e-6)


def test_without_apache_beam_the_error_says_how_to_install_it(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_beam(name, *args, **kwargs):
        if name == "apache_beam":
            raise ImportError("No module named 'apache_beam'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_beam)
    with pytest.raises(jobs.BeamError, match=r"pip install 'birdkeras\[beam\]'"):
        jobs.run_beam([1], print)

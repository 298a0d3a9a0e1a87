"""Faults a real training run meets: damaged shards, divergence, interrupted checkpoint
writes (numbers written as people write them: test_config.py)."""

import json
import os
import shutil
import re
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pandas as pd
import pytest

from birdkeras import train
from birdkeras.config import load_config
from birdkeras.records import pipeline
from birdkeras.train import callbacks

from conftest import REPO

SMALL = ["audio.num_mel_bins=32", "audio.hop_length=1024", "input.batch_size=8",
         "train.steps_per_epoch=3", "train.epochs=1", "train.checkpoint_every_steps=0",
         "wandb.mode=disabled"]


@pytest.fixture(scope="module")
def built(demo_records):
    overrides, _, folder = demo_records
    return overrides, folder


def _copy(built, tmp_path):
    """The built records copied, and the overrides reading the copy."""
    overrides, folder = built
    copy = tmp_path / "shards"
    shutil.copytree(folder, copy)
    return [*overrides, f"tfrecords.dir={copy}", *SMALL], copy


def _train_shards(folder):
    return sorted(p for p in folder.glob("*.tfrec") if not p.name.startswith("fold0"))


def test_truncated_and_deleted_shards_are_named_before_any_step(built, tmp_path):
    overrides, copy = _copy(built, tmp_path)
    truncated, deleted = _train_shards(copy)[:2]
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    deleted.unlink()
    args = [sys.executable, "-m", "birdkeras", "train", "--cfg",
            str(REPO / "configs" / "demo_pre.yaml"), "--workdir", str(tmp_path / "run")]
    for item in overrides:
        args += ["--set", item]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert f"shard {truncated} is {truncated.stat().st_size:,} bytes but its build wrote" \
        in done.stderr
    assert f"shard {deleted} is missing" in done.stderr
    assert "birdkeras tfrecords build" in done.stderr and "skip_damaged_shards" in done.stderr
    assert not (tmp_path / "run" / "ckpt").exists()  # stopped before the model was built


def test_skip_damaged_trains_on_the_rest_and_reports_what_it_left_out(built, tmp_path):
    overrides, copy = _copy(built, tmp_path)
    truncated = _train_shards(copy)[0]
    truncated.write_bytes(truncated.read_bytes()[:1000])
    cfg = load_config(REPO / "configs" / "demo_pre.yaml",
                      [*overrides, "input.skip_damaged_shards=true"])
    assert str(truncated) not in pipeline.fold_files(cfg, training=True)
    summary = train.run(cfg, tmp_path / "run")
    assert summary["global_step"] == 3
    report = json.loads((tmp_path / "run" / "run_report.json").read_text())
    assert report["status"] == "completed"
    assert list(report["skipped_shards"]) == [str(truncated)]
    assert "1,000 bytes" in report["skipped_shards"][str(truncated)]


def test_a_diverged_run_stops_keeps_its_checkpoint_and_resumes_once_the_rate_is_fixed(
        built, tmp_path):
    overrides, _ = _copy(built, tmp_path)
    workdir = tmp_path / "run"
    # One good epoch; then the user continues it with an absurd learning rate.
    train.run(load_config(REPO / "configs" / "demo_pre.yaml", overrides), workdir)
    good = (workdir / "ckpt" / "last.keras").read_bytes()
    args = [sys.executable, "-m", "birdkeras", "train", "--cfg",
            str(REPO / "configs" / "demo_pre.yaml"), "--workdir", str(workdir)]
    for item in [*overrides, "train.epochs=2", "train.lr_max=1e30", "train.warmup_epochs=0",
                 "train.checkpoint_every_steps=1"]:
        args += ["--set", item]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "sklearn" not in done.stderr
    assert "training diverged: " in done.stderr and "at epoch 1, step " in done.stderr
    assert re.search(r"learning rate [0-9.]+e\+(28|29|30) there", done.stderr)
    assert "lower train.lr_max" in done.stderr
    # The checkpoint is the good one, untouched; the run says it diverged.
    assert (workdir / "ckpt" / "last.keras").read_bytes() == good
    assert json.loads((workdir / "run_report.json").read_text())["status"] == "diverged"
    history = pd.read_csv(workdir / "history.csv")
    assert history["epoch"].tolist() == [0, 1] and np.isnan(history["loss"].iloc[-1])
    # The rate fixed, the same run resumes from the good checkpoint and ends.
    summary = train.run(load_config(REPO / "configs" / "demo_pre.yaml",
                                    [*overrides, "train.epochs=2"]), workdir)
    assert summary["global_step"] == 6 and np.isfinite(summary["val_macro_auc"])
    final = keras.models.load_model(workdir / "final.keras")
    assert float(keras.ops.convert_to_numpy(final.optimizer.learning_rate)) < 1
    assert json.loads((workdir / "run_report.json").read_text())["status"] == "completed"


class _FullDisk(Exception):
    pass


def test_a_checkpoint_write_that_dies_leaves_the_previous_one_resumable(tmp_path, monkeypatch):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.ones((8, 4)), np.ones((8, 2)), epochs=1, verbose=0)
    saver = callbacks.StepCheckpoint(tmp_path, every_steps=2, steps_per_epoch=10)
    saver.set_model(model)
    saver.on_train_batch_end(1)  # step 2: saved, committed once step 3's loss is seen
    assert callbacks.resume_state(tmp_path) == (None, None)
    saver.on_train_batch_end(2, {"loss": 0.5})
    first = callbacks.resume_state(tmp_path)[0]
    assert first == {"epoch": 0, "step_in_epoch": 2, "global_step": 1}

    def dies_half_way(self, path, *args, **kwargs):  # out of disk in the middle of a write
        with open(path, "wb") as f:
            f.write(b"PK\x03\x04 half a zip")
        raise _FullDisk(path)

    monkeypatch.setattr(keras.Model, "save", dies_half_way)
    with pytest.raises(_FullDisk):
        saver.on_train_batch_end(3)  # step 4
    monkeypatch.undo()
    state, path = callbacks.resume_state(tmp_path)
    assert state == first and path == tmp_path / "last.keras"
    assert zipfile.is_zipfile(path)
    np.testing.assert_array_equal(keras.models.load_model(path).get_weights()[0],
                                  model.get_weights()[0])

"""Training: schedule, init_from, strategies, early failures, resume, learning, W&B."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from birdkeras.train import trainer
from birdkeras.train import callbacks
from birdkeras.records import pipeline
from birdkeras.train import distribute
from birdkeras.model import classifier
from birdkeras.train import optimization
from birdkeras.records import format as record_format
from birdkeras.selftrain import stages
from birdkeras import train
from birdkeras.config import load_config
from birdkeras.errors import MissingPathError

from conftest import REPO, kill_when, mid_epoch

pytestmark = pytest.mark.slow  # trains or runs whole workflows: `make test-fast` skips

# The demo configuration's structure, shrunk for a test.
SMALL = ["audio.num_mel_bins=32", "audio.hop_length=1024", "input.batch_size=8",
         "train.steps_per_epoch=6", "train.epochs=2", "train.checkpoint_every_steps=2",
         "wandb.mode=offline"]


@pytest.fixture(scope="module")
def records(demo_records):
    overrides, name2label, _ = demo_records
    return overrides, name2label


def test_warmup_then_cosine_per_step():
    schedule = optimization.WarmupCosine(1e-5, 1e-3, 1e-6, warmup_steps=10, total_steps=110)
    values = [float(schedule(s)) for s in (0, 5, 10, 60, 110, 200)]
    np.testing.assert_allclose(values, [1e-5, 5.05e-4, 1e-3, 5.005e-4, 1e-6, 1e-6], rtol=1e-4)
    cfg = load_config(None, ["train.lr_max_per_sample=0.00001", "train.epochs=2"])
    optimizer = optimization.make_optimizer(cfg.train, global_batch=64, steps_per_epoch=50)
    assert float(optimizer.learning_rate) == pytest.approx(1e-5)
    # The peak, at the end of the warmup: lr_max_per_sample x the global batch.
    optimizer.iterations.assign(int(cfg.train.warmup_epochs * 50))
    assert float(optimizer.learning_rate) == pytest.approx(64e-5)


def test_init_from_loads_all_but_the_head_and_names_mismatches(tmp_path):
    cfg = load_config(None, ["audio.num_mel_bins=32"])
    source = classifier.build_model(cfg, 5)
    source.save(tmp_path / "pre.keras")
    target = classifier.build_model(cfg, 3)
    report = trainer.init_from(target, str(tmp_path / "pre.keras"))
    assert "logits" in report["skipped"] and "efficientnetb0" in report["loaded"]
    backbone = target.get_layer("efficientnetb0").get_weights()
    for mine, theirs in zip(backbone, source.get_layer("efficientnetb0").get_weights()):
        np.testing.assert_array_equal(mine, theirs)
    with pytest.raises(trainer.InitError, match="layer 'logits' has weights of shapes"):
        trainer.init_from(target, str(tmp_path / "pre.keras"), skip=())


def test_mirrored_strategy_matches_one_device():
    out = subprocess.run([sys.executable, str(REPO / "tests" / "mirrored_check.py"), "6"],
                         capture_output=True, text=True, timeout=600, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])

    def per_step(running):  # Keras logs the running mean of the epoch's losses
        return [k * m - (k - 1) * p for k, (m, p) in enumerate(zip(running, [0] + running), 1)]

    one, two = per_step(result["one"]), per_step(result["mirrored"])
    assert len(one) == len(two) == 6
    # Same losses within 1e-4 relative (float summation order differs across replicas).
    np.testing.assert_allclose(two, one, rtol=1e-4)
    assert one[-1] != one[0]  # the model did train


def test_mixed_precision_policy_is_restored_after_a_run(monkeypatch, tmp_path):
    before = keras.mixed_precision.global_policy().name

    def fails_half_way(cfg, workdir, placement=None):
        keras.mixed_precision.set_global_policy("mixed_bfloat16")  # as a TPU run does
        raise RuntimeError("stop here")

    monkeypatch.setattr(trainer, "prepare", fails_half_way)
    with pytest.raises(RuntimeError, match="stop here"):
        train.run(load_config(None, ["train.mixed_precision=true"]), tmp_path)
    assert keras.mixed_precision.global_policy().name == before


def test_compiled_validation_equals_an_eager_loop(records):
    overrides, name2label = records
    cfg = load_config(REPO / "configs" / "demo_pre.yaml", [*overrides, *SMALL])
    model = classifier.build_model(cfg, len(name2label))
    val = pipeline.make_dataset(cfg, len(name2label), training=False)
    results = []
    for eager in (False, True):
        validation = callbacks.ValidationMetrics(val, optimization.make_loss(cfg.train), eager)
        validation.set_model(model)
        results.append((validation.evaluate(), validation.last))
    (compiled, (labels, logits)), (eager, (eager_labels, eager_logits)) = results
    np.testing.assert_array_equal(labels, eager_labels)  # labels stay with their windows
    np.testing.assert_allclose(logits, eager_logits, atol=1e-4)
    assert compiled["val_macro_auc"] == pytest.approx(eager["val_macro_auc"], abs=1e-6)


def test_bad_inputs_fail_before_training(records, tmp_path):
    overrides, _ = records
    with pytest.raises(record_format.RecordsError, match="dataset_card.json not found"):
        train.run(load_config(REPO / "configs" / "demo_pre.yaml",
                              [*overrides, f"tfrecords.dir={tmp_path / 'none'}"]), tmp_path / "a")
    other = tmp_path / "other_manifest"
    other.mkdir()
    (other / "name2label.json").write_text(json.dumps({"someone": 0}))
    with pytest.raises(pipeline.DataError, match="label map .* differs"):
        train.run(load_config(REPO / "configs" / "demo_pre.yaml",
                              [*overrides, f"data.manifest_dir={other}"]), tmp_path / "b")
    assert not (tmp_path / "b" / "ckpt").exists()


def _train_cmd(overrides, workdir):
    args = [sys.executable, "-m", "birdkeras", "train", "--cfg",
            str(REPO / "configs" / "demo_pre.yaml"), "--workdir", str(workdir)]
    for item in [*SMALL, *overrides]:
        args += ["--set", item]
    return args


def test_killed_training_resumes_where_it_was(records, tmp_path):
    overrides, _ = records
    workdir = tmp_path / "run"
    env = {**os.environ, "WANDB_API_KEY": "secret-key-must-not-leak"}
    state_path = workdir / "ckpt" / "state.json"
    kill_when(_train_cmd(overrides, workdir), mid_epoch(workdir), timeout_s=400, env=env)
    killed_at = json.loads(state_path.read_text())

    done = subprocess.run(_train_cmd(overrides, workdir), capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (f"resuming from {workdir / 'ckpt' / 'last.keras'}: epoch {killed_at['epoch']}, "
            f"step {killed_at['step_in_epoch']}") in done.stderr  # the log
    final = keras.models.load_model(workdir / "final.keras")
    # Exactly epochs x steps optimizer steps in all: not restarted from scratch, not redone.
    assert int(final.optimizer.iterations.numpy()) == 2 * 6
    history = pd.read_csv(workdir / "history.csv")
    assert history["epoch"].tolist()[-1] == 1
    # Output to a file gets one line per epoch, not Keras' progress bars.
    assert "━" not in done.stdout and "\x08" not in done.stdout and "\r" not in done.stdout
    assert done.stdout.count(" - loss: ") >= 1
    for path in workdir.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert b"secret-key-must-not-leak" not in path.read_bytes(), path


def test_demo_configuration_learns_and_logs_to_wandb_offline(learnable, tmp_path):
    cfg = load_config(REPO / "configs" / "demo_pre.yaml", [
        *learnable, "input.batch_size=16", "train.epochs=4", "train.steps_per_epoch=25",
        "wandb.mode=offline", "train.checkpoint_every_steps=0"])
    summary = train.run(cfg, tmp_path / "learn")
    # 6 species; chance is 0.5.
    assert summary["val_macro_auc"] > 0.8, summary
    for name in ("best.keras", "best.weights.h5", "final.keras", "history.csv", "history.png",
                 "per_class.csv", "config.yaml", "name2label.json"):
        assert (tmp_path / "learn" / name).is_file(), name
    runs = list((tmp_path / "learn" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1
    logged = runs[0].read_bytes()
    for key in (b"epoch/val_macro_auc", b"train/loss", b"train/lr", b"examples/log_mel",
                b"validation/worst_clips"):
        assert key in logged, key
    assert list((tmp_path / "learn" / "tb").rglob("events.out.tfevents*"))


def test_stages_chain_and_a_frozen_backbone_stays_put(records, tmp_path, monkeypatch):
    overrides, name2label = records
    base = [*overrides, *SMALL, "train.steps_per_epoch=3", "wandb.mode=disabled",
            "train.checkpoint_every_steps=0"]
    start = classifier.build_model(load_config(REPO / "configs" / "demo_pre.yaml", base),
                               len(name2label))
    start.save(tmp_path / "start.keras")

    # Two stages in one command: the first starts from train.init_from, the second from
    # the first's best model with its backbone frozen for its one epoch (head loaded
    # too, so a head that did not train would show). Both run under the strategy the
    # command was given (a TPU is initialised once).
    stage_files = []
    for name, train_ in (("stage_ce", "{loss: cce}"),
                         ("stage_bce", "{loss: bce, freeze_backbone_epochs: 1, init_skip: []}")):
        path = tmp_path / f"{name}.yaml"
        lines = [f"base: {REPO / 'configs' / 'demo_pre.yaml'}", f"name: {name}",
                 f"train: {train_}", "input: {label_mode: multihot}"]
        path.write_text("\n".join(lines) + "\n")
        stage_files.append(str(path))
    staged = load_config(REPO / "configs" / "demo_pre.yaml",
                         [*base, f"train.stages=[{', '.join(stage_files)}]",
                          f"train.init_from={tmp_path / 'start.keras'}"])
    # Stage files hold only what differs; the command's --set values apply to each stage.
    given = distribute.select("default")
    used = []
    real_prepare = trainer.prepare
    monkeypatch.setattr(trainer, "prepare", lambda cfg, workdir, placement=None: (
        used.append(placement) or real_prepare(cfg, workdir, placement)))
    monkeypatch.setattr(distribute, "select", lambda name: pytest.fail("placement made again"))
    summary = stages.run_stages(staged, tmp_path / "staged",
                                stage_overrides=(*base, "train.epochs=1"), placement=given)
    assert used == [given, given]
    assert Path(summary["workdir"]).name == "stage_bce"
    first = tmp_path / "staged" / "stage_ce" / "best.keras"
    assert f"init_from: {tmp_path / 'start.keras'}" in (
        tmp_path / "staged" / "stage_ce" / "config.yaml").read_text()
    assert f"init_from: {first}" in (tmp_path / "staged" / "stage_bce" / "config.yaml").read_text()

    before = keras.models.load_model(first)
    after = keras.models.load_model(Path(summary["workdir"]) / "final.keras")
    backbone = "efficientnetb0"
    moved = [not np.array_equal(a, b) for a, b in zip(
        before.get_layer(backbone).get_weights(), start.get_layer(backbone).get_weights())]
    assert any(moved)  # the first stage trained its backbone
    for a, b in zip(after.get_layer(backbone).get_weights(), before.get_layer(backbone).get_weights()):
        np.testing.assert_array_equal(a, b)  # one frozen epoch: the backbone did not move
    assert not np.array_equal(after.get_layer("logits").get_weights()[0],
                              before.get_layer("logits").get_weights()[0])


def _free_ports(n):
    import socket

    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_process_multiworker_training_on_loopback(records, tmp_path):
    overrides, _ = records
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    args = _train_cmd([*overrides, "train.strategy=multiworker", "train.epochs=1",
                       "train.steps_per_epoch=3", "wandb.mode=disabled",
                       "train.checkpoint_every_steps=0", "input.batch_size=4"],
                      tmp_path / "mw")
    procs = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})}
        procs.append(subprocess.Popen(args, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-3000:]
        outputs.append(err)  # the log
    # (tf.distribute's class for MultiWorkerMirroredStrategy is CollectiveAllReduceStrategy)
    assert ("(CollectiveAllReduceStrategy) with 2 replica(s), float32, global batch 8"
            in outputs[0])
    chief = keras.models.load_model(tmp_path / "mw" / "final.keras")
    other = keras.models.load_model(tmp_path / "mw" / "worker1" / "final.keras")
    # The workers stayed in sync: the same weights after the same number of steps.
    for a, b in zip(chief.get_layer("logits").get_weights(), other.get_layer("logits").get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert int(chief.optimizer.iterations.numpy()) == 3


def test_init_from_a_missing_file_is_named_when_training_starts(tmp_path):
    model = classifier.build_model(load_config(None, ["audio.num_mel_bins=32"]), 3)
    with pytest.raises(MissingPathError, match="train.init_from=.*gone.keras is not a file"):
        trainer.init_from(model, str(tmp_path / "gone.keras"))

"""Keras 3 on JAX: the training path of Kaggle's TPU v5e-8, on 8 forced host devices.

Each JAX run is a process of its own (Keras reads its backend once, at import; this test
process runs TensorFlow). `XLA_FLAGS=--xla_force_host_platform_device_count=8` splits
the CPU into 8 JAX devices, so `DataParallel` shards every batch 8 ways as on the chips.
"""

import json
import os
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

from birdkeras import backend
from birdkeras import train
from birdkeras.config import load_config
from birdkeras.errors import ConfigError
from birdkeras.train import distribute

from conftest import REPO, kill_when


EIGHT_DEVICES = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
                 "TF_CPP_MIN_LOG_LEVEL": "2"}
EPOCHS, STEPS = 4, 12
# The demo configuration, shrunk: 2 windows per device (global batch 16), bfloat16.
JAX_RUN = ["audio.num_mel_bins=32", "input.batch_size=2", f"train.epochs={EPOCHS}",
           f"train.steps_per_epoch={STEPS}", "train.checkpoint_every_steps=4",
           "train.mixed_precision=bfloat16", "wandb.mode=offline"]


def _train_cmd(overrides, workdir, *flags):
    args = [sys.executable, "-m", "birdkeras", "train", "--cfg",
            str(REPO / "configs" / "demo_pre.yaml"), "--workdir", str(workdir), *flags]
    for item in [*JAX_RUN, *overrides]:  # the test's own values last: they win
        args += ["--set", item]
    return args


@pytest.fixture(scope="module")
def jax_run(learnable, tmp_path_factory):
    """A JAX run killed (SIGKILL) mid-epoch, then the same command again to the end."""
    workdir = tmp_path_factory.mktemp("jax") / "run"
    state_path = workdir / "ckpt" / "state.json"

    def mid_epoch():
        try:
            return json.loads(state_path.read_text())["step_in_epoch"] > 0
        except (FileNotFoundError, json.JSONDecodeError):
            return False

    # The backend comes from the command line once, from the config the second time.
    kill_when(_train_cmd(learnable, workdir, "--backend", "jax"), mid_epoch, timeout_s=600,
              env=EIGHT_DEVICES)
    killed_at = json.loads(state_path.read_text())
    done = subprocess.run(_train_cmd([*learnable, "train.backend=jax"], workdir),
                          capture_output=True, text=True, env=EIGHT_DEVICES, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return workdir, killed_at, done


@pytest.mark.slow  # trains under JAX: `make test-fast` skips
def test_trains_on_8_jax_devices_in_bfloat16_and_learns(jax_run):
    workdir, _, done = jax_run
    assert ("jax on 8 CPU device(s) (DataParallel) with 8 replica(s), mixed_bfloat16, "
            "global batch 16") in done.stderr
    auc = float(re.search(r"val macro ROC-AUC ([0-9.]+)", done.stdout).group(1))
    assert auc > 0.7, done.stdout[-2000:]  # 6 species: chance is 0.5
    history = pd.read_csv(workdir / "history.csv")
    assert history["val_macro_auc"].iloc[-1] == pytest.approx(auc, abs=1e-3)
    assert list((workdir / "wandb").glob("offline-run-*/run-*.wandb"))


@pytest.mark.slow  # trains under JAX: `make test-fast` skips
def test_a_killed_jax_run_resumes_where_it_was(jax_run):
    workdir, killed_at, done = jax_run
    assert (f"resuming from {workdir / 'ckpt' / 'last.keras'}: epoch {killed_at['epoch']}, "
            f"step {killed_at['step_in_epoch']}") in done.stderr
    # Saved under JAX, read here under TensorFlow: exactly epochs x steps optimizer steps.
    final = keras.models.load_model(workdir / "final.keras")
    assert int(keras.ops.convert_to_numpy(final.optimizer.iterations)) == EPOCHS * STEPS
    assert pd.read_csv(workdir / "history.csv")["epoch"].tolist() == list(range(EPOCHS))


# Under JAX: the trained model's probabilities, and its export (which runs under
# TensorFlow in a process of its own).
EXPORT_CHECK = textwrap.dedent("""
    import sys
    import keras, numpy as np
    from birdkeras.export import convert
    from birdkeras.model import classifier
    assert keras.backend.backend() == "jax"
    model_path, out = sys.argv[1], sys.argv[2]
    waves = np.random.default_rng(0).uniform(-0.5, 0.5, (4, 160000)).astype("float32")
    logits = classifier.load_keras(model_path).predict(waves, verbose=0)
    np.save(out + "/waves.npy", waves)
    np.save(out + "/jax_probs.npy", 1 / (1 + np.exp(-np.asarray(logits, "float64"))))
    convert.export(model_path, out + "/export", formats=("onnx",))
""")


@pytest.mark.slow  # trains under JAX: `make test-fast` skips
def test_a_jax_trained_model_exports_to_onnx_with_parity(jax_run, tmp_path):
    workdir, _, _ = jax_run
    done = subprocess.run([sys.executable, "-c", EXPORT_CHECK, str(workdir / "final.keras"),
                           str(tmp_path)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "KERAS_BACKEND": "jax"})
    assert done.returncode == 0, done.stderr[-3000:]
    session = ort.InferenceSession(str(tmp_path / "export" / "model.onnx"))
    waves = np.load(tmp_path / "waves.npy")
    onnx_probs = session.run(None, {session.get_inputs()[0].name: waves})[0]
    np.testing.assert_allclose(onnx_probs, np.load(tmp_path / "jax_probs.npy"), atol=1e-4)


def test_a_config_for_the_other_backend_is_refused_before_training(tmp_path):
    assert keras.backend.backend() == "tensorflow"
    with pytest.raises(ConfigError, match="train.backend=jax but Keras runs on tensorflow"):
        train.run(load_config(None, ["train.backend=jax"]), tmp_path)
    with pytest.raises(ConfigError, match="asks for the jax backend .* already imported with "
                                          "tensorflow"):
        backend.use("jax")
    assert backend.use("tensorflow") == "tensorflow"
    assert not list(tmp_path.iterdir())


def test_jax_without_the_tpu_it_was_asked_for_names_the_install(monkeypatch):
    monkeypatch.setattr(distribute, "accelerator_files",
                        lambda: {"tpu": ["/dev/accel0"], "gpu": []})
    with pytest.raises(distribute.DeviceError, match=r"found /dev/accel0.*JAX.*jax\[tpu\]"):
        distribute._select_jax("auto")  # noqa: SLF001 - this process runs TensorFlow
    with pytest.raises(distribute.DeviceError, match=r"TPU .*none found.*jax\[tpu\]"):
        monkeypatch.setattr(distribute, "accelerator_files", lambda: {"tpu": [], "gpu": []})
        distribute._select_jax("tpu")  # noqa: SLF001


@pytest.mark.slow  # trains under JAX: `make test-fast` skips
def test_sed_head_frame_loss_focal_freezing_and_init_from_train_on_jax(jax_run, learnable,
                                                                       tmp_path):
    workdir, _, _ = jax_run
    args = _train_cmd([*learnable, "model.head=sed", "train.sed_frame_loss_weight=0.5",
                       "train.loss=focal", "train.freeze_backbone_epochs=1",
                       f"train.init_from={workdir / 'final.keras'}", "train.epochs=2",
                       "train.steps_per_epoch=2", "wandb.mode=disabled"],
                      tmp_path / "sed", "--backend", "jax")
    done = subprocess.run(args, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})  # one device
    assert done.returncode == 0, done.stderr[-3000:]
    assert "jax on 1 CPU device(s)" in done.stderr
    assert "epoch 0: backbone frozen" in done.stderr and "epoch 1: backbone trainable" in done.stderr
    assert re.search(r"init_from .*final.keras: loaded \[.*'efficientnetb0'", done.stderr)
    history = pd.read_csv(tmp_path / "sed" / "history.csv")
    assert np.isfinite(history["loss"]).all() and len(history) == 2

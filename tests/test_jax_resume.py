"""Keras 3 on JAX, one device: a run killed and resumed, its export under TensorFlow,
and the other heads and losses (test_jax_training.py: 2 devices, learning)."""

import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

from birdkeras.config import load_config
from birdkeras.model import classifier

from conftest import REPO, kill_when, mid_epoch
from test_jax_training import JAX_RUN, ONE_DEVICE, SHORT, _train_cmd

pytestmark = pytest.mark.slow  # trains under JAX: `make test-fast` skips


# Beside the demo configuration's head and loss, the others: a SED head trained on its
# frames' maximum too, focal loss, one frozen-backbone epoch, and a start from a model;
# with EMA of the weights (its average kept in the optimizer across the kill).
OTHER_HEAD = ["model.head=sed", "train.sed_frame_loss_weight=0.5", "train.loss=focal",
              "train.freeze_backbone_epochs=1", "train.ema=true", "train.ema_momentum=0.5"]


@pytest.fixture(scope="module")
def jax_run(learnable, tmp_path_factory):
    """A short JAX run in bfloat16 (the other head and loss, initialised from a model
    built under TensorFlow) killed (SIGKILL) mid-epoch, then the same command again."""
    out = tmp_path_factory.mktemp("jax")
    workdir, start = out / "run", out / "start.keras"
    overrides = [*learnable, *SHORT, *OTHER_HEAD, f"train.init_from={start}"]
    cfg = load_config(REPO / "configs" / "demo_pre.yaml", [*JAX_RUN, *overrides])
    name2label = json.loads((Path(cfg.data.manifest_dir) / "name2label.json").read_text())
    classifier.build_model(dataclasses.replace(cfg, model=dataclasses.replace(
        cfg.model, head="gap")), len(name2label)).save(start)
    state_path = workdir / "ckpt" / "state.json"
    # The backend comes from the command line once, from the config the second time.
    kill_when(_train_cmd(overrides, workdir, "--backend", "jax"), mid_epoch(workdir),
              timeout_s=600, env=ONE_DEVICE)
    killed_at = json.loads(state_path.read_text())
    done = subprocess.run(_train_cmd([*overrides, "train.backend=jax"], workdir),
                          capture_output=True, text=True, env=ONE_DEVICE, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return workdir, killed_at, done


def test_a_killed_jax_run_resumes_where_it_was(jax_run):
    workdir, killed_at, done = jax_run
    assert "jax on 1 CPU device(s)" in done.stderr
    assert (f"resuming from {workdir / 'ckpt' / 'last.keras'}: epoch {killed_at['epoch']}, "
            f"step {killed_at['step_in_epoch']}") in done.stderr
    # Saved under JAX, read here under TensorFlow. Unfreezing after epoch 0 started a
    # new optimizer: 4 steps on it (a restart would have more, a lost epoch fewer).
    final = keras.models.load_model(workdir / "final.keras")
    assert int(keras.ops.convert_to_numpy(final.optimizer.iterations)) == 4
    history = pd.read_csv(workdir / "history.csv")
    assert history["epoch"].tolist() == [0, 1] and np.isfinite(history["loss"]).all()
    # EMA on JAX: final.keras holds the optimizer's average, not the last step's weights.
    averages = final.optimizer._model_variables_moving_average  # noqa: SLF001
    assert len(averages) == len(final.trainable_variables) > 0
    for variable, average in zip(final.trainable_variables, averages):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable),
                                      keras.ops.convert_to_numpy(average))
    assert "ema: true" in (workdir / "config.yaml").read_text()


def test_sed_head_frame_loss_focal_freezing_and_init_from_train_on_jax(jax_run):
    workdir, killed_at, done = jax_run
    assert killed_at["epoch"] == 0  # killed in the frozen epoch: resumed frozen
    assert "epoch 0: backbone frozen" in done.stderr
    assert "epoch 1: backbone trainable" in done.stderr
    history = pd.read_csv(workdir / "history.csv")
    assert {"frame_max_loss", "logits_loss"} <= set(history.columns)
    resolved = (workdir / "config.yaml").read_text()
    assert "head: sed" in resolved and "loss: focal" in resolved and "start.keras" in resolved


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
    logits = logits["logits"] if isinstance(logits, dict) else logits  # SED: the clip's
    np.save(out + "/waves.npy", waves)
    np.save(out + "/jax_probs.npy", 1 / (1 + np.exp(-np.asarray(logits, "float64"))))
    convert.export(model_path, out + "/export", formats=("onnx",))
""")


def test_a_jax_trained_model_exports_to_onnx_with_parity(jax_run, tmp_path):
    workdir, _, _ = jax_run
    done = subprocess.run([sys.executable, "-c", EXPORT_CHECK, str(workdir / "final.keras"),
                           str(tmp_path)], capture_output=True, text=True, timeout=600,
                          env={**ONE_DEVICE, "KERAS_BACKEND": "jax"})
    assert done.returncode == 0, done.stderr[-3000:]
    session = ort.InferenceSession(str(tmp_path / "export" / "model.onnx"))
    waves = np.load(tmp_path / "waves.npy")
    onnx_probs = session.run(None, {session.get_inputs()[0].name: waves})[0]
    np.testing.assert_allclose(onnx_probs, np.load(tmp_path / "jax_probs.npy"), atol=1e-4)

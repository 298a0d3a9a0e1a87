"""Mixed precision: the front end stays float32 (bf16 training hears what f32 inference
hears), on both Keras backends; the logits are float32."""

import os
import subprocess
import sys

import keras
import pytest

from birdkeras.config import load_config
from birdkeras.model import classifier

from conftest import REPO

CHECK = """
import keras, numpy as np
from birdkeras.config import load_config
from birdkeras.model import classifier
cfg = load_config(None, ["audio.num_mel_bins=32", "audio.hop_length=1024"])
x = (0.1 * np.random.default_rng(0).standard_normal((2, 32000 * 5))).astype("float32")
mels = {}
for policy in ("float32", "mixed_bfloat16"):
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(0)
    model = classifier.build_model(cfg, 3)
    mels[policy] = np.asarray(model.get_layer("log_mel")(x), dtype="float32")
    assert str(model.output.dtype).endswith("float32"), model.output.dtype
    logits = model(x)
    assert "float32" in str(logits.dtype), logits.dtype
keras.mixed_precision.set_global_policy("float32")
print(keras.backend.backend(), float(np.abs(mels["float32"] - mels["mixed_bfloat16"]).max()))
"""


@pytest.mark.slow  # a fresh process per backend
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_the_log_mel_under_mixed_bfloat16_equals_float32(backend):
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    name, worst = done.stdout.split()[-2:]
    assert name == backend
    assert float(worst) <= 1e-4  # dB


def test_a_mixed_model_keeps_its_front_end_float32_in_the_saved_file(tmp_path):
    before = keras.mixed_precision.global_policy().name
    try:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        model = classifier.build_model(load_config(None, ["audio.num_mel_bins=32"]), 3)
        assert model.get_layer("log_mel").compute_dtype == "float32"
        assert model.get_layer("efficientnetb0").compute_dtype == "bfloat16"
        model.save(tmp_path / "m.keras")
    finally:
        keras.mixed_precision.set_global_policy(before)
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.get_layer("log_mel").compute_dtype == "float32"

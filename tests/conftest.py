"""Shared fixtures: a small synthetic BirdCLEF tree, made once per test session."""

import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from birdkeras import synth  # noqa: E402
from birdkeras.records import format as record_format  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
REAL = REPO.parent / "shared" / "data" / "real"

# Small, but with every source, quirk and kind of broken file of the demo size.
SMALL = synth.SynthSpec(
    seed=7, num_birds=8, num_textures=2, target_species=4, clips_per_species=2,
    target_clips_per_species=2, median_duration_s=4.0, min_duration_s=1.5,
    max_duration_s=20.0, long_fraction=0.05, labelled_soundscapes=2,
    unlabelled_soundscapes=1, broken_fraction=0.05, workers=2,
)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "data"
    synth.generate(root, SMALL)
    return root


@pytest.fixture(scope="session")
def real_dir() -> Path:
    if not REAL.is_dir():
        pytest.fail(f"real test material not found at {REAL} (shared/ must sit beside the repo)")
    return REAL


@pytest.fixture(scope="session")
def learnable(tmp_path_factory):
    """A tree with more clips per species than the session's, so a short run can learn."""
    from birdkeras.config import load_config  # noqa: PLC0415
    from birdkeras.datasets import manifest  # noqa: PLC0415
    from birdkeras.records import shards  # noqa: PLC0415

    root = tmp_path_factory.mktemp("learnable")
    synth.generate(root / "data", synth.SynthSpec(
        seed=5, num_birds=6, num_textures=1, target_species=3, clips_per_species=6,
        target_clips_per_species=1, median_duration_s=6.0, max_duration_s=20.0,
        labelled_soundscapes=0, unlabelled_soundscapes=0, broken_fraction=0.0))
    overrides = [f"data.root={root / 'data'}", "data.corrupt_files=null",
                 "data.sources=[birdclef-2021, birdclef-2022, birdclef-2023]",
                 "data.num_folds=3", f"data.manifest_dir={root / 'manifest'}",
                 f"tfrecords.dir={root / 'shards'}"]
    cfg = load_config(REPO / "configs" / "demo_pre.yaml", overrides)
    table, name2label, report = manifest.build(cfg)
    manifest.save(cfg.data.manifest_dir, table, name2label, report)
    shards.build(table, name2label, cfg, progress=False)
    return overrides


def write_applications_file(path, backbone="EfficientNetB0"):
    """A weights file in keras.applications' own (legacy HDF5) format, with values the
    test chooses, written under the name keras.applications gives it: the root lists
    `layer_names`; each layer's group lists its `weight_names`, trainable weights first."""
    model = getattr(keras.applications, backbone)(include_top=False, weights=None,
                                                  input_shape=(64, 157, 3))
    rng = np.random.default_rng(1)
    model.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32")
                       for w in model.get_weights()])
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [layer.name.encode() for layer in model.layers]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = keras.__version__.encode()
        for layer in model.layers:
            group = f.create_group(layer.name)
            weights = layer.trainable_weights + layer.non_trainable_weights
            names = [f"{layer.name}/{w.name}:{k}".encode() for k, w in enumerate(weights)]
            group.attrs["weight_names"] = names
            for name, weight in zip(names, weights):
                group.create_dataset(name.decode(), data=np.asarray(weight))
    return model.get_weights()


def read_records(folder) -> dict:
    """Every record of a shard folder, by recording id (asserting none is there twice)."""
    records = {}
    for shard in record_format.list_shards(str(folder)):
        for ex in tf.data.TFRecordDataset(shard).map(record_format.parse_example):
            rid = ex[record_format.RECORDING_ID].numpy().decode()
            assert rid not in records, f"{rid} written twice"
            records[rid] = {k: v.numpy() for k, v in ex.items()}
    return records


# The demo's pretraining sources, minus two years: what the training tests train on.
TRAIN_SOURCES = "[birdclef-2020, birdclef-2021, birdclef-2022, birdclef-2023, xeno-canto]"


@pytest.fixture(scope="session")
def demo_records(synth_root, tmp_path_factory):
    """Shards of the session's tree (TRAIN_SOURCES, 2 folds, 1 MB shards): the overrides
    that read them, their classes and their folder."""
    from birdkeras.config import load_config  # noqa: PLC0415
    from birdkeras.datasets import manifest  # noqa: PLC0415
    from birdkeras.records import shards  # noqa: PLC0415

    out = tmp_path_factory.mktemp("records")
    overrides = [f"data.root={synth_root}", f"data.sources={TRAIN_SOURCES}", "data.num_folds=2",
                 f"data.corrupt_files={synth_root / 'corrupt_files.json'}",
                 f"data.manifest_dir={out / 'manifest'}", f"tfrecords.dir={out / 'shards'}",
                 "tfrecords.shard_size_mb=1"]
    cfg = load_config(REPO / "configs" / "demo_pre.yaml", overrides)
    table, name2label, report = manifest.build(cfg)
    manifest.save(cfg.data.manifest_dir, table, name2label, report)
    shards.build(table, name2label, cfg, progress=False)
    return overrides, name2label, out / "shards"


def mid_epoch(workdir):
    """A `kill_when` condition: the run's step checkpoint is inside an epoch."""
    state_path = Path(workdir) / "ckpt" / "state.json"

    def ready():
        try:
            return json.loads(state_path.read_text())["step_in_epoch"] > 0
        except (FileNotFoundError, json.JSONDecodeError):
            return False

    return ready


def kill_when(args, ready, timeout_s: float, env=None) -> None:
    """Runs the command `args` in its own process group and kills the whole group
    (SIGKILL: no clean-up, as a preempted machine) as soon as `ready()` is true. Fails,
    with the command's stderr, if it ends by itself or `ready()` never comes."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(args, start_new_session=True, env=env,
                                stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.time() + timeout_s
        while not ready():
            if proc.poll() is not None or time.time() > deadline:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                err.seek(0)
                pytest.fail(f"{args[:4]}... ended (code {proc.returncode}) before the point "
                            f"to kill it at: {err.read().decode()[-2000:]}")
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# `make test` runs two processes, each taking whole files (--dist loadfile) in collection
# order: the longest files go first, so the short ones fill in at the end.
LONGEST_FIRST = ("test_notebooks.py", "test_jax_training.py", "test_jax_resume.py",
                 "test_train.py", "test_infer.py",
                 "test_training_faults.py", "test_soundscape_training.py", "test_embedding_route.py", "test_beam.py",
                 "test_gcs.py")


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order inside a file is kept

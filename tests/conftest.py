"""Shared fixtures: a small synthetic BirdCLEF tree, made once per test session."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from birdkeras import synth  # noqa: E402

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


def write_applications_file(path, backbone="EfficientNetB0"):
    """A weights file in keras.applications' own (legacy HDF5) format, with values the
    test chooses, written under the name keras.applications gives it."""
    import h5py
    import keras
    import numpy as np
    from keras.src.legacy.saving import legacy_h5_format

    model = getattr(keras.applications, backbone)(include_top=False, weights=None,
                                                  input_shape=(64, 157, 3))
    rng = np.random.default_rng(1)
    model.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32")
                       for w in model.get_weights()])
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    return model.get_weights()


# `make test` runs two processes, each taking whole files (--dist loadfile) in collection
# order: the longest files go first, so the short ones fill in at the end.
LONGEST_FIRST = ("test_train.py", "test_infer.py", "test_notebooks.py",
                 "test_soundscape_training.py", "test_embedding_route.py", "test_beam.py",
                 "test_gcs.py")


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order inside a file is kept

"""Both Kaggle notebooks, executed top to bottom on CPU on the synthetic demo data."""

import json
import nbformat
import numpy as np
import pandas as pd
import pytest
from nbclient import NotebookClient

from birdkeras.datasets import manifest
from birdkeras.records import shards
from birdkeras.config import load_config

from conftest import REPO, write_applications_file

pytestmark = pytest.mark.slow  # trains or runs whole workflows: `make test-fast` skips

# Values shrunk for CPU; the structure stays the shipped configs' (b0_pre.yaml: 2020-2025
# + XC, ImageNet start; b0_ft.yaml: BirdCLEF+ 2026, competition classes, background noise
# under data.root, validation on the labelled soundscapes).
TINY = ["input.batch_size=8", "train.epochs=1", "train.steps_per_epoch=3",
        "train.checkpoint_every_steps=3", "audio.num_mel_bins=32", "train.jit_compile=false",
        "data.num_folds=2", "data.balance.filter_min_samples=0",
        "data.balance.upsample_min_samples=0", "tfrecords.workers=2", "tfrecords.shard_size_mb=1"]


def _records(stage, synth_root, out):
    cfg = load_config(REPO / "configs" / f"b0_{stage}.yaml", [
        f"data.root={synth_root}", "data.corrupt_files=corrupt_files.json",
        f"data.manifest_dir={out / stage / 'manifest'}", f"tfrecords.dir={out / stage / 'shards'}",
        *TINY])
    table, name2label, report = manifest.build(cfg)
    manifest.save(cfg.data.manifest_dir, table, name2label, report)
    shards.build(table, name2label, cfg, progress=False)
    return cfg.tfrecords.dir


def _execute(name, parameters: dict, workdir):
    nb = nbformat.read(REPO / "notebooks" / name, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{name} needs exactly one cell tagged 'parameters'"
    cells[0].source = "\n".join(f"{k} = {v!r}" for k, v in parameters.items())
    NotebookClient(nb, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO)}}).execute()
    nbformat.write(nb, workdir / name)  # executed copy, for looking at after a failure
    return nb


def _outputs(nb) -> str:
    return "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                     for o in c.get("outputs", []))


def test_notebooks_hold_no_core_logic():
    for name in ("train_tpu.ipynb", "infer_cpu.ipynb"):
        nb = nbformat.read(REPO / "notebooks" / name, as_version=4)
        code = [c.source for c in nb.cells if c.cell_type == "code"]
        assert all("def " not in src and "class " not in src for src in code), name
        assert sum(len(src.splitlines()) for src in code) < 55, name


@pytest.fixture(scope="module")
def trained(synth_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("notebooks")
    pre = _records("pre", synth_root, out)
    ft = _records("ft", synth_root, out)
    # b0_pre starts from ImageNet: Keras' cache is pre-seeded (nothing is downloaded).
    keras_home = out / "keras"
    write_applications_file(keras_home / "models" / "efficientnetb0_notop.h5")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("KERAS_HOME", str(keras_home))  # the kernel inherits it
        # As on a TPU v5e-8: Keras on JAX, each batch split over 8 devices (one window each).
        env.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
        nb = _execute("train_tpu.ipynb", {
            "PRE_CFG": "configs/b0_pre.yaml", "FT_CFG": "configs/b0_ft.yaml",
            "DATA_ROOT": str(synth_root), "PRE_DATASET": "unused", "PRE_LOCAL": pre,
            "FT_DATASET": "unused", "FT_LOCAL": ft, "WORKDIR": str(out / "work"),
            "INSTALL": False, "BIRDKERAS_SOURCE": None, "BACKEND": "jax",
            "FOLDS": [0, 1],  # k-fold fine-tuning: both folds in the session, one strategy
            # No manifest beside the records (as on Kaggle): the records' card is the truth.
            "OVERRIDES": [*TINY, "input.batch_size=1",
                          f"data.manifest_dir={out / 'no_manifest'}"]}, out)
    return out, nb


def test_train_notebook_trains_and_shows_curves(trained):
    out, nb = trained
    text = _outputs(nb)
    assert "jax on 8 CPU device(s) (DataParallel) with 8 replica(s)" in text
    assert "wandb: offline" in text
    assert "pretrain: val macro ROC-AUC" in text and "fine-tune: val macro ROC-AUC" in text
    assert "validating on 24 labelled soundscape windows of birdclef-2026" in text
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 2  # training curves and spectrograms
    ft = out / "work" / "ft"
    assert f"-> {ft}\n" in text  # the fine-tuned model is the folder: the folds' ensemble
    assert (out / "work" / "spectrograms.png").is_file()
    oof = pd.read_csv(ft / "oof.csv")
    assert sorted(oof["fold"].unique()) == [0, 1]
    for k in (0, 1):  # each fold trained in the one session, from the pretraining
        assert (ft / f"fold{k}" / "best.keras").is_file()
        assert list((ft / f"fold{k}" / "wandb").glob("**/offline-run-*"))
        ft_config = (ft / f"fold{k}" / "config.yaml").read_text()
        assert f"init_from: {out / 'work' / 'pre' / 'best.keras'}" in ft_config
        assert f"val_fold: {k}" in ft_config
        history = pd.read_csv(ft / f"fold{k}" / "history.csv")
        assert history["val_soundscape_macro_auc"].between(0, 1).all()
    # The export is the ensemble: each fold, and ensemble.json over them.
    export = out / "work" / "export"
    assert json.loads((export / "ensemble.json").read_text())["members"] == ["fold0", "fold1"]
    assert (export / "fold0" / "birdkeras_export.json").is_file()


@pytest.fixture(scope="module")
def exported(trained):
    out, _ = trained
    return out / "work" / "export"  # the training notebook exported it (ONNX + OpenVINO)


def _submission_params(exported, synth_root, soundscapes, out_csv):
    year = synth_root / "birdclef-2026"
    return {"COMPETITION": str(year), "MODEL": str(exported), "SOUNDSCAPES": str(soundscapes),
            "DRY_RUN": str(year / "train_soundscapes"),
            "SAMPLE_SUBMISSION": str(year / "sample_submission.csv"), "OUT": str(out_csv),
            "RUNTIME": "auto", "TIME_BUDGET_S": 600, "OVERRIDES": [], "INSTALL": False}


def test_infer_notebook_in_kaggles_save_run_writes_a_valid_empty_submission(
        trained, exported, synth_root):
    out, _ = trained
    empty = synth_root / "birdclef-2026" / "test_soundscapes"
    assert not list(empty.iterdir())
    nb = _execute("infer_cpu.ipynb", _submission_params(exported, synth_root, empty,
                                                        out / "save_run.csv"), out)
    sample = synth_root / "birdclef-2026" / "sample_submission.csv"
    submission = pd.read_csv(out / "save_run.csv")
    assert list(submission.columns) == list(pd.read_csv(sample, nrows=0).columns)
    assert len(submission) == 0
    text = _outputs(nb)
    assert "0 rows from 0 files" in text and "projected_hidden_run_s" in text


def test_infer_notebook_writes_a_valid_submission(trained, exported, synth_root):
    out, _ = trained
    sample = synth_root / "birdclef-2026" / "sample_submission.csv"
    soundscapes = synth_root / "birdclef-2026" / "train_soundscapes"
    nb = _execute("infer_cpu.ipynb", _submission_params(exported, synth_root, soundscapes,
                                                        out / "submission.csv"), out)
    submission = pd.read_csv(out / "submission.csv")
    assert list(submission.columns) == list(pd.read_csv(sample, nrows=0).columns)
    assert len(submission) == 12 * len(list(soundscapes.iterdir()))
    assert submission["row_id"].is_unique
    values = submission.drop(columns="row_id").to_numpy()
    assert np.isfinite(values).all() and ((values >= 0) & (values <= 1)).all()
    assert "rows from" in _outputs(nb)
    assert "runtime: openvino (openvino: the fastest available)" in _outputs(nb)

"""k-fold training: resumable per fold, out-of-fold predictions from unseen recordings,
one ensemble for predict."""

import dataclasses
import subprocess

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from birdkeras import train
from birdkeras.config import load_config
from birdkeras.errors import ConfigError
from birdkeras.infer import runners
from birdkeras.model import classifier
from birdkeras.records import format as record_format
from birdkeras.records import pipeline
from birdkeras.train import folds

from conftest import kill_when, mid_epoch
from test_train import SMALL, _train_cmd

pytestmark = pytest.mark.slow


def _recordings_per_fold(folder) -> dict:
    """The recording ids each fold's shards hold, read from the shards themselves."""
    card = record_format.read_dataset_card(folder)
    per_fold = {}
    for shard in card["shards"]:
        ds = tf.data.TFRecordDataset(str(folder / shard["name"])).map(
            record_format.parse_example)
        ids = {ex[record_format.RECORDING_ID].numpy().decode() for ex in ds}
        per_fold.setdefault(record_format.shard_fold(shard["name"]), set()).update(ids)
    return per_fold


def _outputs(folder) -> dict:
    """A run's files and their modification times, but W&B's own logs (its service
    process may still append to a killed run's debug log)."""
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*")
            if p.is_file() and "wandb" not in p.relative_to(folder).parts}


def test_a_kfold_run_killed_in_its_last_fold_resumes_there_with_unseen_oof(demo_records,
                                                                          tmp_path):
    overrides, name2label, records_dir = demo_records
    workdir = tmp_path / "kfold"
    args = [*_train_cmd([*overrides, "train.epochs=1"], workdir), "--folds", "0,1"]
    kill_when(args, mid_epoch(workdir / "fold1"), timeout_s=500)
    fold0 = _outputs(workdir / "fold0")
    assert workdir / "fold0" / "oof.csv" in fold0 and not (workdir / "oof.csv").exists()

    done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "fold 0: completed before" in done.stderr
    assert f"resuming from {workdir / 'fold1' / 'ckpt' / 'last.keras'}" in done.stderr
    assert _outputs(workdir / "fold0") == fold0  # fold 0 untouched

    # Each fold's out-of-fold windows are its validation recordings, every one of them,
    # and none its model trained on.
    oof = pd.read_csv(workdir / "oof.csv")
    per_fold = _recordings_per_fold(records_dir)
    for k in (0, 1):
        seen_by_model_k = set().union(*(ids for f, ids in per_fold.items() if f != k))
        scored = set(oof.loc[oof["fold"] == k, "recording_id"])
        assert scored == per_fold[k] and not scored & seen_by_model_k
    # ... scored by that fold's best model.
    cfg = load_config(None, [*SMALL, *overrides, "input.val_fold=1"])
    names = sorted(name2label, key=name2label.get)
    clips, _, ids, starts = next(iter(pipeline.identified_windows(
        cfg, len(names), pipeline.fold_files(cfg, False), 4)))
    model = classifier.load_keras(workdir / "fold1" / "best.keras")
    want = np.asarray(keras.ops.sigmoid(model(clips, training=False)))
    first = oof[oof["fold"] == 1].head(4)
    assert list(first["recording_id"]) == [i.decode() for i in ids.numpy()]
    np.testing.assert_allclose(first[names].to_numpy(), want, atol=1e-5)
    scores = folds.oof_metrics(oof)
    assert set(scores["per_fold"]) == {"0", "1"} and 0 <= scores["pooled"]["macro_auc"] <= 1

    # The folder is one model for predict: an ensemble of the folds' best models.
    members = runners.load_runners([str(workdir)], "tf")
    assert [str(r.path) for r in members] == [str(workdir / f"fold{k}" / "best.keras")
                                         for k in (0, 1)]
    with pytest.raises(ConfigError, match=r"hold folds \[0, 1\], not \[7\]"):
        folds.run_folds(cfg, tmp_path / "bad", folds=[0, 7])
    with pytest.raises(ConfigError, match=r"lists train.folds \[0, 1\]: run it with .*run_folds"):
        train.run(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, folds=(0, 1))),
                  tmp_path / "bad")


def test_exporting_a_kfold_folder_exports_each_fold_beside_one_ensemble(tmp_path,
                                                                       monkeypatch):
    from birdkeras.export import convert  # noqa: PLC0415
    from birdkeras.model import run_files  # noqa: PLC0415

    for k in (0, 1):
        (tmp_path / "run" / f"fold{k}").mkdir(parents=True)
        (tmp_path / "run" / f"fold{k}" / "best.keras").write_bytes(b"")
    run_files.write_ensemble(tmp_path / "run", ["fold0/best.keras", "fold1/best.keras"])
    whole, exported = convert.export, []

    def member_export(model_path, out_dir, *args):  # each fold: recorded, not converted
        if model_path == tmp_path / "run":
            return whole(model_path, out_dir, *args)
        exported.append((model_path, out_dir))
        out_dir.mkdir(parents=True)
        return {"classes": ["a"], "artifacts": {}}

    monkeypatch.setattr(convert, "export", member_export)
    card = convert.export(tmp_path / "run", tmp_path / "out", ("onnx",))
    assert exported == [(str(tmp_path / "run" / f"fold{k}" / "best.keras"),
                         tmp_path / "out" / f"fold{k}") for k in (0, 1)]
    assert card["members"] == ["fold0", "fold1"]
    assert run_files.ensemble_members(tmp_path / "out") == [
        str(tmp_path / "out" / "fold0"), str(tmp_path / "out" / "fold1")]
    (tmp_path / "run" / "fold1" / "best.keras").unlink()
    with pytest.raises(run_files.RunFilesError, match="fold1/best.keras, which is missing"):
        run_files.ensemble_members(tmp_path / "run")

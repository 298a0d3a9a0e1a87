"""Embedding distillation: a teacher's embeddings of the training windows, crops cut at
them, the projection head, its loss, and its absence from exports."""

import json

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from birdkeras.config import load_config
from birdkeras.datasets import manifest
from birdkeras.embeddings import extract, frozen
from birdkeras.export import convert
from birdkeras.model import classifier
from birdkeras.records import pipeline
from birdkeras.records import teacher as teacher_lib
from birdkeras.train import trainer
from birdkeras.train.optimization import EmbeddingDistance

from conftest import REPO
from test_embedding_route import make_standin_perch

TINY = ["audio.num_mel_bins=32", "audio.hop_length=1024", "model.backbone=MobileNetV3Small"]


@pytest.fixture(scope="module")
def teacher_folder(demo_records, tmp_path_factory):
    """A stand-in Perch's embeddings of the demo records' training clips, as
    `birdkeras embed --manifest` writes them (3 windows per clip)."""
    overrides, name2label, _ = demo_records
    cfg = load_config(REPO / "configs" / "demo_pre.yaml", overrides)
    clips, _ = manifest.load(cfg.data.manifest_dir)
    tmp = tmp_path_factory.mktemp("teacher")
    perch = make_standin_perch(tmp / "perch", [f"species {k}" for k in range(5)], dim=24)
    out = tmp / "emb"
    extract.run(perch, str(out), clips=clips, root=cfg.data.root,
                classes=sorted(name2label, key=name2label.get), max_windows=3,
                files_per_shard=8, progress=False)
    return overrides, str(out), perch


def _model(head="gap", dim=6):
    cfg = load_config(None, [*TINY, f"model.head={head}"])
    model = classifier.build_model(cfg, 4)
    if head == "sed":
        model = classifier.with_frame_max(model)
    return classifier.with_teacher_projection(model, dim)


@pytest.mark.parametrize("head", ["gap", "sed"])
def test_the_loss_is_zero_on_the_teacher_and_its_gradient_reaches_the_backbone(head):
    model = _model(head)
    waves = tf.random.stateless_normal([3, 32000 * 5], seed=[1, 2]) * 0.1
    projection = model(waves, training=False)["teacher"]
    loss = EmbeddingDistance("cosine")
    # The projection itself, and any positive multiple of it: zero; mse likewise.
    assert float(loss(projection, projection)) == pytest.approx(0.0, abs=1e-6)
    assert float(loss(3.0 * projection, projection)) == pytest.approx(0.0, abs=1e-6)
    assert float(EmbeddingDistance("mse")(projection, projection)) == pytest.approx(0, abs=1e-9)
    # Rows without a teacher embedding (zeros) add nothing.
    masked = tf.concat([projection[:1], tf.zeros_like(projection[1:])], axis=0)
    assert float(loss(masked, -projection)) == pytest.approx(2.0 / 3, rel=1e-5)

    teacher = tf.random.stateless_normal(projection.shape, seed=[3, 4])
    backbone = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    with tf.GradientTape() as tape:
        value = loss(teacher, model(waves, training=False)["teacher"])
    grads = tape.gradient(value, backbone.trainable_variables)
    assert float(value) > 0.1
    assert sum(float(tf.reduce_sum(tf.abs(g))) for g in grads if g is not None) > 0
    assert sum(g is not None for g in grads) == len(backbone.trainable_variables)


def test_the_projection_head_is_absent_from_the_export(tmp_path):
    model = _model("gap")
    model.save(tmp_path / "distilled.keras")
    loaded = classifier.load_keras(tmp_path / "distilled.keras")
    assert classifier.TEACHER_PROJECTION in [layer.name for layer in loaded.layers]
    exported = convert.inference_model(loaded)
    names = [layer.name for layer in exported.layers]
    assert classifier.TEACHER_PROJECTION not in names
    waves = np.random.default_rng(0).normal(0, 0.1, (2, 32000 * 5)).astype(np.float32)
    logits = loaded(waves, training=False)["logits"]
    np.testing.assert_allclose(exported(waves, training=False), tf.sigmoid(logits),
                               atol=1e-5)
    assert exported.output.shape[-1] == 4


def test_crops_carry_the_embedding_of_their_own_window(teacher_folder, demo_records):
    overrides, folder, perch = teacher_folder
    _, name2label, _ = demo_records
    cfg = load_config(REPO / "configs" / "demo_pre.yaml",
                      [*overrides, "input.batch_size=16", f"train.distill_embedding.teacher={folder}"])
    teacher = teacher_lib.load(folder)
    teacher_lib.check(teacher, cfg)
    assert teacher.dim == 24
    ds = pipeline.make_dataset(cfg, len(name2label), True, teacher=teacher)
    model = frozen.load(perch)
    checked = 0
    for clips, _, embeddings in ds.take(4):
        own, _ = model(clips.numpy())
        carried = embeddings.numpy()
        has = np.abs(carried).sum(axis=1) > 0
        assert has.all()  # every training clip of the demo records has teacher windows
        # Each crop's own embedding (int16 records vs decoded files: not bit-exact) is
        # the carried one, and no other window of the teacher is as close.
        np.testing.assert_allclose(own, carried, rtol=0.02, atol=0.02)
        distances = ((own[:, None, :] - teacher.embeddings[None]) ** 2).sum(-1)
        nearest = teacher.embeddings[distances.argmin(axis=1)]
        np.testing.assert_allclose(nearest, carried, atol=1e-6)
        checked += len(clips)
    assert checked == 64
    # Without a teacher the same pipeline gives (clips, labels) as before.
    assert len(next(iter(pipeline.make_dataset(cfg, len(name2label), True)))) == 2


def test_a_teacher_missing_recordings_or_of_another_size_is_refused(teacher_folder, tmp_path):
    overrides, folder, _ = teacher_folder
    cfg = load_config(REPO / "configs" / "demo_pre.yaml",
                      [*overrides, f"train.distill_embedding.teacher={folder}"])
    teacher = teacher_lib.load(folder)
    wrong = load_config(REPO / "configs" / "demo_pre.yaml",
                        [*overrides, f"train.distill_embedding.teacher={folder}",
                         "train.distill_embedding.dim=1536"])
    with pytest.raises(teacher_lib.TeacherError, match=r"dim=1536.*gives 24-d"):
        teacher_lib.check(teacher, wrong)
    # A teacher that lacks two training recordings names them.
    table, _ = manifest.load(cfg.data.manifest_dir)
    training = table[table["start_s"].isna() & (table["fold"] != cfg.input.val_fold)]
    dropped = sorted(training["recording_id"].astype(str))[:2]
    keep = [k for k, r in enumerate(teacher.recordings) if r not in dropped]
    partial = teacher_lib.Teacher(
        recordings=[teacher.recordings[k] for k in keep], first=teacher.first[keep],
        count=teacher.count[keep], starts=teacher.starts, embeddings=teacher.embeddings,
        model=teacher.model, folder=folder)
    with pytest.raises(teacher_lib.TeacherError,
                       match=rf"no windows of 2 of the {len(training)} training recordings: "
                             rf"{dropped[0]}, {dropped[1]}\. Embed"):
        teacher_lib.check(partial, cfg)
    with pytest.raises(teacher_lib.TeacherError, match="not found; write the teacher"):
        teacher_lib.load(str(tmp_path / "nowhere"))


@pytest.mark.slow
def test_a_sed_model_trains_with_distillation_and_exports_without_the_head(teacher_folder,
                                                                           tmp_path):
    overrides, folder, _ = teacher_folder
    cfg = load_config(REPO / "configs" / "demo_pre.yaml", [
        *overrides, *TINY, "model.head=sed", "train.sed_frame_loss_weight=0.5",
        "input.batch_size=8", "train.steps_per_epoch=3", "train.epochs=1",
        "wandb.mode=disabled", f"train.distill_embedding.teacher={folder}",
        "train.distill_embedding.weight=1.0"])
    summary = trainer.run(cfg, tmp_path / "run")
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert {"teacher_loss", "logits_loss", "frame_max_loss"} <= set(history.columns)
    assert 0 < history["teacher_loss"].iloc[-1] <= 2
    best = classifier.load_keras(summary["best"])
    assert set(best.output) == {"logits", "frame_max", "teacher"}
    exported = convert.inference_model(best)
    assert classifier.TEACHER_PROJECTION not in [layer.name for layer in exported.layers]
    report = json.loads((tmp_path / "run" / trainer.REPORT).read_text())
    assert report["status"] == "completed"


def test_windows_the_teacher_lacks_carry_zeros_and_mixed_sources_keep_the_structure(
        teacher_folder, demo_records):
    overrides, folder, _ = teacher_folder
    _, name2label, shards_dir = demo_records
    teacher = teacher_lib.load(folder)
    # A teacher without half the recordings: their crops carry zeros (no distillation).
    keep = np.arange(0, len(teacher.recordings), 2)
    half = teacher_lib.Teacher(
        recordings=[teacher.recordings[k] for k in keep], first=teacher.first[keep],
        count=teacher.count[keep], starts=teacher.starts, embeddings=teacher.embeddings,
        model=teacher.model, folder=folder)
    # The records mixed into themselves (a mix folder of the same label map): one
    # element structure for both sources.
    cfg = load_config(REPO / "configs" / "demo_pre.yaml", [
        *overrides, "input.batch_size=16", f"input.mix_dirs=[{shards_dir}]",
        "input.mix_weights=[0.3]", "input.mix_loss_cap=0.5"])
    ds = pipeline.make_dataset(cfg, len(name2label), True, teacher=half)
    clips, labels, embeddings, weights = next(iter(ds))
    present = np.abs(embeddings.numpy()).sum(axis=1) > 0
    assert 0 < present.sum() < len(present)
    assert embeddings.shape == (16, teacher.dim) and weights.shape == (16,)

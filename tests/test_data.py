"""tf.data pipeline over real shards built from the synthetic tree."""

import numpy as np
import pytest
import tensorflow as tf

from birdkeras.records import pipeline
from birdkeras.datasets import manifest
from birdkeras.records import shards
from birdkeras.records import format as record_format
from birdkeras.config import load_config

SOURCES = "[birdclef-2021, birdclef-2022, birdclef-2023]"


@pytest.fixture(scope="module")
def built(synth_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline")
    overrides = [f"data.root={synth_root}", f"data.sources={SOURCES}", "data.num_folds=2",
                 f"tfrecords.dir={out}", "tfrecords.shard_size_mb=0.5", "input.batch_size=8",
                 "input.shuffle_buffer=64"]
    cfg = load_config(None, overrides)
    table, name2label, _ = manifest.build(cfg)
    shards.build(table, name2label, cfg, progress=False)
    records = {}
    for shard in record_format.list_shards(str(out)):
        for ex in tf.data.TFRecordDataset(shard).map(record_format.parse_example):
            records[ex[record_format.RECORDING_ID].numpy().decode()] = {
                k: v.numpy() for k, v in ex.items()}
    return overrides, name2label, records


def _cfg(built, *extra):
    return load_config(None, [*built[0], *extra])


def test_training_batches_are_windows_of_the_records(built):
    overrides, name2label, records = built
    cfg = _cfg(built)
    window = 5 * 32000
    x, y = next(iter(pipeline.make_dataset(cfg, len(name2label), training=True)))
    assert tuple(x.shape) == (8, window) and tuple(y.shape) == (8, len(name2label))
    np.testing.assert_allclose(y.numpy().sum(axis=1), 1.0)
    # Each window is a contiguous slice of a record whose label matches (or, for short
    # records, the record repeated to fill the window).
    for wave, label in zip(x.numpy(), y.numpy().argmax(axis=1)):
        matches = []
        for rec in records.values():
            audio = rec[record_format.AUDIO]
            if len(audio) < window:
                audio = np.tile(audio, window // len(audio) + 1)
            starts = np.arange(len(audio) - window + 1)
            hits = starts[(audio[starts] == wave[0]) & (audio[starts + 1] == wave[1])
                          & (audio[starts + window // 2] == wave[window // 2])]
            if any(np.array_equal(audio[h:h + window], wave) for h in hits):
                matches.append(rec[record_format.LABEL])
        assert label in matches


def test_validation_is_deterministic_and_only_the_val_fold(built):
    overrides, name2label, records = built
    cfg = _cfg(built, "input.eval_windows=2")
    ds = pipeline.make_dataset(cfg, len(name2label), training=False)
    first = [(x.numpy(), y.numpy()) for x, y in ds]
    second = [(x.numpy(), y.numpy()) for x, y in ds]
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    val = [r for r in records.values() if r[record_format.FOLD] == 0]
    expected = sum(min(max(len(r[record_format.AUDIO]) // 160000, 1), 2) for r in val)
    assert sum(len(x) for x, _ in first) == expected


def test_multihot_labels_carry_secondary_labels_at_their_weight(built):
    overrides, name2label, records = built
    cfg = _cfg(built, "input.label_mode=multihot", "input.secondary_label_weight=0.3",
               "input.eval_windows=1")
    # Evaluation windows start at 0: a window's first samples name its record.
    by_start = {rec[record_format.AUDIO][:256].tobytes(): rec for rec in records.values()}
    with_secondary = 0
    for x, y in pipeline.make_dataset(cfg, len(name2label), training=False):
        for clip, labels in zip(x.numpy(), y.numpy()):
            rec = by_start[clip[:256].tobytes()]
            expected = np.zeros(len(name2label), np.float32)
            expected[list(rec[record_format.SECONDARY_LABELS])] = 0.3
            expected[rec[record_format.LABEL]] = 1.0
            np.testing.assert_allclose(labels, expected, rtol=1e-6)
            with_secondary += len(rec[record_format.SECONDARY_LABELS]) > 0
    assert with_secondary > 0


def test_sample_weights_follow_the_rating_formula(built):
    overrides, name2label, records = built
    cfg = _cfg(built, "input.sample_weight_from_rating=true")
    # Evaluation windows start at 0: a window's first samples name its record.
    rating = {rec[record_format.AUDIO][:256].tobytes(): float(rec[record_format.RATING])
              for rec in records.values()}
    got, expected = [], []
    for x, _, w in pipeline.make_dataset(cfg, len(name2label), training=False):
        for clip, weight in zip(x.numpy(), w.numpy()):
            r = rating[clip[:256].tobytes()]
            got.append(weight)
            expected.append(max(r / 5.0, 0.2) if r > 0 else 1.0)  # unrated: weight 1
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert len(set(np.round(expected, 3))) >= 3  # several ratings, so the formula is seen
    x, y, w = next(iter(pipeline.make_dataset(cfg, len(name2label), training=True)))
    assert tuple(w.shape) == (8,)


@pytest.mark.parametrize("mode", ["zeros", "repeat"])
def test_short_clips_are_padded(mode):
    clip = tf.constant(np.arange(1, 4, dtype=np.float32))
    out = pipeline.pad_to(clip, 8, mode).numpy()
    assert len(out) >= 8  # at least one window; longer audio is cropped later
    expected = [1, 2, 3, 0, 0, 0, 0, 0] if mode == "zeros" else [1, 2, 3, 1, 2, 3, 1, 2]
    assert out[:8].tolist() == expected


def test_records_at_another_rate_fail_before_training(built):
    _, name2label, _ = built
    cfg = _cfg(built, "audio.sample_rate_hz=22050", "audio.fmax_hz=11000")
    with pytest.raises(pipeline.DataError, match="at 32000 Hz but audio.sample_rate_hz=22050"):
        pipeline.make_dataset(cfg, len(name2label), training=True)
    with pytest.raises(pipeline.DataError, match="label map .* differs"):
        pipeline.check_card(record_format.read_dataset_card(_cfg(built).tfrecords.dir), _cfg(built), {"other": 0})


def test_missing_shards_are_a_clear_error(tmp_path):
    cfg = load_config(None, [f"tfrecords.dir={tmp_path}"])
    with pytest.raises(record_format.RecordsError, match="dataset_card.json not found"):
        pipeline.make_dataset(cfg, 3, training=True)


def test_batch_augmentation_runs_in_training_only(built, synth_root):
    _, name2label, _ = built
    cfg = _cfg(built, "augment.mixup_probability=1.0", "augment.noise_probability=0.5",
               "augment.background_probability=0.5",
               "augment.background_dir=birdclef-2026/train_soundscapes")  # under data.root
    x, y = next(iter(pipeline.make_dataset(cfg, len(name2label), training=True)))
    np.testing.assert_allclose(y.numpy().sum(axis=1), 1.0, atol=1e-5)
    assert (y.numpy().max(axis=1) < 0.999).any()  # labels were mixed
    plain = _cfg(built)
    evaluated = [y.numpy() for _, y in pipeline.make_dataset(cfg, len(name2label), training=False)]
    reference = [y.numpy() for _, y in pipeline.make_dataset(plain, len(name2label), training=False)]
    assert all(np.array_equal(a, b) for a, b in zip(evaluated, reference))
    assert all(set(np.unique(a)) <= {0.0, 1.0} for a in evaluated)

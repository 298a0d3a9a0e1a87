"""TFRecord shards: round trip, kill-and-resume, corruption, real audio_io."""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import tensorflow as tf

from birdkeras.audio import io as audio_io
from birdkeras.datasets import manifest
from birdkeras.records import shards
from birdkeras.records import format as record_format
from birdkeras.config import load_config

from conftest import REPO, kill_when, read_records

SOURCES = "[birdclef-2020, birdclef-2021, birdclef-2022, birdclef-2023, xeno-canto]"


def _cfg(synth_root, out, *extra):
    return load_config(None, [
        f"data.root={synth_root}", f"data.sources={SOURCES}", "data.num_folds=2",
        f"tfrecords.dir={out}", "tfrecords.workers=2", "tfrecords.shard_size_mb=1",
        *extra,
    ])


@pytest.fixture(scope="module")
def built(synth_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    cfg = _cfg(synth_root, out, "audio.max_duration_s=15")
    table, name2label, _ = manifest.build(cfg)
    card = shards.build(table, name2label, cfg, progress=False)
    return cfg, table, name2label, card


def test_build_verify_and_read_back(built):
    cfg, table, name2label, card = built
    result = shards.verify(table, name2label, cfg)
    records = read_records(cfg.tfrecords.dir)
    assert result["records"] == card["records"] == len(records) == len(table) - card["failures"]
    rows = table.set_index("recording_id")
    for rid, rec in records.items():
        row = rows.loc[rid]
        assert rec[record_format.LABEL] == name2label[row["primary_label"]]
        assert sorted(rec[record_format.SECONDARY_LABELS]) == sorted(
            name2label[s] for s in row["secondary_labels"])
        assert rec[record_format.FOLD] == row["fold"] and rec[record_format.REPEATS] == row["repeats"]
        assert rec[record_format.SAMPLE_RATE] == 32000
        assert rec[record_format.NUM_SAMPLES] == len(rec[record_format.AUDIO]) <= 15 * 32000
        # The stored audio is the decoded file, resampled, as int16.
        expected = audio_io.load(Path(cfg.data.root) / row["path"], 32000, 15)
        np.testing.assert_allclose(rec[record_format.AUDIO], expected, atol=1 / 32768 + 1e-6)


def test_shards_are_grouped_by_fold_and_the_card_counts_them(built):
    cfg, table, name2label, card = built
    for shard in card["shards"]:
        path = str(Path(cfg.tfrecords.dir) / shard["name"])
        folds = {int(ex[record_format.FOLD]) for ex in
                 tf.data.TFRecordDataset(path).map(record_format.parse_example)}
        prefix = shard["name"].split("-")[0]
        assert folds <= ({-1} if prefix == "train" else {int(prefix[4:])}), shard["name"]
    counted = sum(sum(per_fold.values()) for per_fold in card["counts_per_class_per_fold"].values())
    assert counted == card["records"]
    assert card["bytes_per_audio_hour"] == 32000 * 2 * 3600
    assert card["name2label"] == name2label and card["config"]["audio"]["max_duration_s"] == 15


def test_unlisted_broken_files_are_skipped_and_reported(built, synth_root):
    cfg, table, _, card = built
    failures = pd.read_csv(Path(cfg.tfrecords.dir) / shards.FAILURES)
    assert len(failures) == card["failures"] > 0
    assert set(failures["recording_id"]) <= set(table["recording_id"])
    assert failures["error"].str.contains("0 samples|all zeros|cannot decode|truncated").all()


def test_a_second_build_skips_finished_shards(built):
    cfg, table, name2label, card = built
    before = {p: os.path.getmtime(p) for p in record_format.list_shards(cfg.tfrecords.dir)}
    again = shards.build(table, name2label, cfg, progress=False)
    assert again["records"] == card["records"]
    assert {p: os.path.getmtime(p) for p in record_format.list_shards(cfg.tfrecords.dir)} == before


def test_a_corrupted_shard_is_named(built, tmp_path):
    cfg, table, name2label, card = built
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(cfg.tfrecords.dir, copy)
    victim = copy / card["shards"][0]["name"]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    bad = load_config(None, [f"{k}={v}" for k, v in {
        "data.root": cfg.data.root, "data.sources": SOURCES, "data.num_folds": 2,
        "tfrecords.dir": copy, "audio.max_duration_s": 15}.items()])
    with pytest.raises(shards.ShardError, match=f"shard .*{victim.name} is corrupted"):
        shards.verify(table, name2label, bad)


@pytest.mark.parametrize("kill_after_shards", [0, 3])
def test_killed_build_resumes_with_every_recording_exactly_once(synth_root, tmp_path,
                                                                kill_after_shards):
    out = tmp_path / "shards"
    overrides = [f"data.root={synth_root}", f"data.sources={SOURCES}", "data.num_folds=2",
                 f"data.manifest_dir={tmp_path / 'manifest'}", f"tfrecords.dir={out}",
                 "tfrecords.workers=1", "tfrecords.shard_size_mb=0.3"]
    cfg = load_config(None, overrides)
    table, name2label, report = manifest.build(cfg)
    manifest.save(cfg.data.manifest_dir, table, name2label, report)
    args = [sys.executable, "-m", "birdkeras", "tfrecords", "build", "--quiet",
            "--cfg", str(REPO / "configs" / "demo_pre.yaml")]
    for item in overrides:
        args += ["--set", item]

    def ready():
        done = list(out.glob("*.done.json")) if out.exists() else []
        started = list(out.glob("*.tmp-*")) if out.exists() else []
        return len(done) > kill_after_shards or (kill_after_shards == 0 and started)

    kill_when(args, ready, timeout_s=120)  # the build and its workers, mid-shard
    total = len(shards.plan_shards(table, name2label, cfg))
    assert len(list(out.glob("*.done.json"))) < total, "the build finished before the kill"

    card = shards.build(table, name2label, cfg, progress=False)
    records = read_records(out)  # asserts no recording is in two shards
    failed = set(pd.read_csv(out / shards.FAILURES)["recording_id"])
    assert set(records) == set(table["recording_id"]) - failed
    assert card["records"] == len(records)
    shards.verify(table, name2label, cfg)


def _real_audio(real_dir):
    return sorted(p for p in real_dir.rglob("*") if p.suffix in (".wav", ".mp3", ".ogg", ".flac"))


def test_every_real_file_decodes_to_mono_at_the_target_rate(real_dir):
    files = _real_audio(real_dir)
    assert len(files) >= 25
    for path in files:
        info = sf.info(str(path))
        if info.frames == 0:
            with pytest.raises(audio_io.AudioError, match="0 samples"):
                audio_io.load(path, 32000)
            continue
        try:
            wave = audio_io.load(path, 32000)
        except audio_io.AudioError as err:
            assert "all zeros" in str(err) and "silence" in path.name, err
            continue
        assert wave.ndim == 1 and wave.dtype == np.float32
        # Resampling keeps the decoded length exactly (to one sample at the target rate).
        native = sf.read(str(path), dtype="float32")[0]
        assert abs(len(wave) - len(native) * 32000 / info.samplerate) <= 1, path.name
        # The decoded length agrees with the header to one frame, except that libsndfile's
        # MP3 frame count is an estimate (ScreamingPiha2.mp3: header 34.12 s, decodes to
        # 33.99 s; XC135601: 11 MP3 frames apart), so MP3s get 0.5 s of slack.
        slack = 0.5 * info.samplerate if path.suffix == ".mp3" else 1
        assert abs(len(native) - info.frames) <= slack, path.name


def test_building_from_real_files_reports_zero_sample_files(real_dir, tmp_path):
    files = _real_audio(real_dir)
    table = pd.DataFrame([{
        "source": "birdclef-2023", "recording_id": f"real/{p.name}", "xc_id": None,
        "primary_label": "x", "secondary_labels": [], "rating": 5.0, "author": "",
        "latitude": np.nan, "longitude": np.nan, "path": str(p.relative_to(real_dir)),
        "duration_s": np.nan, "cv": False, "fold": -1, "repeats": 1} for p in files])
    cfg = load_config(None, [f"data.root={real_dir}", f"tfrecords.dir={tmp_path}",
                             "audio.max_duration_s=30"])
    card = shards.build(table, {"x": 0}, cfg, progress=False)
    failures = pd.read_csv(tmp_path / shards.FAILURES)
    zero = {f"real/{p.name}" for p in files if sf.info(str(p)).frames == 0}
    assert zero and zero <= set(failures["recording_id"])
    assert card["records"] == len(files) - len(failures)
    assert shards.verify(table, {"x": 0}, cfg)["records"] == card["records"]


def test_a_class_whose_every_file_fails_stops_the_build_naming_it(real_dir, tmp_path):
    rows = [("ok", "xeno_canto/XC13742_Vermivora_chrysoptera.mp3"),
            ("dud", "opensoundscape/empty_2c.wav")]  # 0 samples: every file of 'dud' fails
    table = pd.DataFrame([{
        "source": "birdclef-2023", "recording_id": f"real/{p}", "xc_id": None,
        "primary_label": label, "secondary_labels": [], "rating": 5.0, "author": "",
        "latitude": np.nan, "longitude": np.nan, "path": p, "duration_s": np.nan,
        "cv": False, "fold": -1, "repeats": 1} for label, p in rows])
    cfg = load_config(None, [f"data.root={real_dir}", f"tfrecords.dir={tmp_path}"])
    with pytest.raises(shards.ShardError, match=r"no record after the build.*\['dud'\]"):
        shards.build(table, {"dud": 0, "ok": 1}, cfg, progress=False)
    card = json.loads((tmp_path / record_format.CARD).read_text())
    assert card["classes_without_records"] == ["dud"] and card["records"] == 1

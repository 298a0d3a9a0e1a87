"""Your own recordings and labels: Raven, Audacity, CSV and class folders -> the same
labelled windows; overlap rules; folds by recording; bad rows recorded, not crashed on."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from birdkeras.datasets import annotations as ann

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real"

# (start, end, label) of one 20 s recording, "rec.wav".
CALLS = [(0.5, 2.0, "piha"), (4.6, 7.0, "piha"), (6.0, 6.4, "frog"), (9.9, 10.2, "frog"),
         (14.5, 15.0, "piha")]


@pytest.fixture()
def audio(tmp_path):
    folder = tmp_path / "audio"
    folder.mkdir()
    sf.write(folder / "rec.wav", np.zeros(20 * 8000, np.float32), 8000)
    return folder


def _write_all(tmp_path, calls=CALLS):
    raven = tmp_path / "rec.Table.1.selections.txt"
    rows = ["Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\t"
            "High Freq (Hz)\tSpecies"]
    for n, (b, e, label) in enumerate(calls, start=1):
        rows.append(f"{n}\tSpectrogram 1\t1\t{b}\t{e}\t0\t4000\t{label}")
        rows.append(f"{n}\tWaveform 1\t1\t{b}\t{e}\t0\t4000\t{label}")  # Raven's second view
    raven.write_text("\n".join(rows) + "\n")
    audacity = tmp_path / "rec.txt"
    audacity.write_text("".join(f"{b}\t{e}\t{label}\n\\\t100.0\t4000.0\n"
                                for b, e, label in calls))
    plain = tmp_path / "plain.csv"
    pd.DataFrame(calls, columns=["start", "end", "label"]).assign(file="rec.wav").to_csv(
        plain, index=False)
    pyha = tmp_path / "pyha.csv"
    pd.DataFrame({"IN FILE": "rec.wav", "OFFSET": [c[0] for c in calls],
                  "DURATION": [round(c[1] - c[0], 6) for c in calls],
                  "MANUAL ID": [c[2] for c in calls]}).to_csv(pyha, index=False)
    return raven, audacity, plain, pyha


def test_every_format_gives_the_same_windows_and_labels(tmp_path, audio):
    raven, audacity, plain, pyha = _write_all(tmp_path)
    results = []
    for path, options in ((raven, {}), (audacity, {}), (plain, {}),
                          (pyha, {"file_column": "IN FILE", "start_column": "OFFSET",
                                  "duration_column": "DURATION", "label_column": "MANUAL ID"})):
        table, problems = ann.read(path, **options)
        assert problems == [] and len(table) == len(CALLS), path
        windows, problems = ann.windows(table, audio, window_s=5.0, hop_s=5.0)
        assert problems == []
        results.append(windows[["file", "start_s", "labels"]])
    for other in results[1:]:
        pd.testing.assert_frame_equal(results[0], other)
    # Window 0: the 4.6-7.0 call has only 0.4 s (17 %) in it; window 2: the 9.9-10.2
    # call has 67 % in it and 14.5-15.0 its whole 0.5 s; window 3: nothing.
    assert results[0]["labels"].tolist() == [["piha"], ["frog", "piha"], ["frog", "piha"], []]


def test_overlap_rules_at_window_boundaries(tmp_path, audio):
    table = pd.DataFrame([("rec.wav", b, e, label, "t", n) for n, (b, e, label) in enumerate([
        (4.6, 7.0, "a"),    # 0.4 s in window 0 (17 %), 2.0 s in window 1
        (4.5, 5.0, "b"),    # 0.5 s in window 0: exactly min_overlap_s
        (9.9, 10.2, "c"),   # a 0.3 s call cut by a boundary: 0.1 | 0.2 s (67 %)
        (14.8, 15.3, "d"),  # 0.2 | 0.3 s of 0.5 s: 60 % in window 3 only
    ])], columns=ann.COLUMNS)
    windows, _ = ann.windows(table, audio, 5.0, 5.0, min_overlap_s=0.5, min_fraction=0.5)
    assert windows["labels"].tolist() == [["b"], ["a"], ["c"], ["d"]]
    # With hop < window, a call counts in every window holding enough of it.
    windows, _ = ann.windows(table, audio, 5.0, 2.5)
    assert windows["start_s"].tolist() == [0, 2.5, 5, 7.5, 10, 12.5, 15]
    assert windows["labels"].tolist()[:5] == [["b"], ["a", "b"], ["a"], ["c"], ["c"]]


def test_a_recording_is_never_split_across_folds():
    groups = np.repeat([f"rec{i}" for i in range(7)], [30, 2, 9, 9, 14, 1, 5])
    folds = ann.group_folds(groups, 3, seed=1)
    for g in np.unique(groups):
        assert len(set(folds[groups == g])) == 1
    assert set(folds) == {0, 1, 2}
    with pytest.raises(ann.AnnotationError, match="2 recordings"):
        ann.group_folds(np.array(["a", "b"]), 3)


def test_bad_rows_are_recorded_with_their_line_and_the_rest_kept(tmp_path, audio):
    bad = tmp_path / "bad.csv"
    bad.write_text("file,start,end,label\n"
                   "rec.wav,1.0,2.0,piha\n"        # line 2: fine
                   "rec.wav,3.0,2.0,piha\n"        # line 3: ends before it starts
                   "rec.wav,25.0,26.0,piha\n"      # line 4: past the end of the file
                   "rec.wav,18.0,21.0,piha\n"      # line 5: runs past the end: cut, noted
                   "rec.wav,5.0,6.0,owl\n"         # line 6: not a class
                   "gone.wav,1.0,2.0,piha\n"       # line 7: no such recording
                   "rec.wav,x,2.0,piha\n")         # line 8: not a number
    table, problems = ann.read(bad)
    windows, more = ann.windows(table, audio, 5.0, 5.0, classes=["piha"])
    reasons = {p["line"]: p["reason"] for p in problems + more}
    assert sorted(reasons) == [3, 4, 5, 6, 7, 8]
    assert "before it starts" in reasons[3] and "starts at 25 s, past the end" in reasons[4]
    assert "cut there" in reasons[5] and "'owl' is not a class" in reasons[6]
    assert "gone.wav is not in" in reasons[7] and "not numbers" in reasons[8]
    assert windows["labels"].tolist() == [["piha"], [], [], ["piha"]]


def test_a_raven_table_without_the_columns_names_the_ones_it_needs(tmp_path):
    path = tmp_path / "x.selections.txt"
    path.write_text("Selection\tBegin Time (s)\tEnd Time (s)\tWho\n1\t0\t1\towl\n")
    with pytest.raises(ann.AnnotationError, match=r"needs the columns.*'Species'.*lacks"):
        ann.read_raven(path)
    table, _ = ann.read_raven(path, label_column="Who")
    assert table["file"].tolist() == ["x"] and table["label"].tolist() == ["owl"]


def test_class_folders_label_whole_recordings_and_noise_is_negative(tmp_path):
    for name, seconds in (("piha/a.wav", 4), ("piha/b.wav", 12), ("noise/n.wav", 6)):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        sf.write(tmp_path / name, np.zeros(seconds * 8000, np.float32), 8000)
    table, problems = ann.read(tmp_path)
    assert problems == [] and sorted(table["label"]) == ["piha", "piha"]
    windows, _ = ann.windows(table, tmp_path, 5.0, 5.0,
                             negative_files=table.attrs["negative_files"])
    by_file = windows.groupby("file")["labels"].apply(list).to_dict()
    assert by_file == {"a.wav": [["piha"]], "b.wav": [["piha"]] * 3, "n.wav": [[], []]}


def test_real_annotations_read_without_loss():
    # PyHa's hand labels of two Screaming Piha recordings (mp3: 44.1 kHz stereo, 22 kHz).
    table, problems = ann.read(REAL / "pyha" / "ScreamingPiha_Manual_Labels.csv",
                               file_column="IN FILE", start_column="OFFSET",
                               duration_column="DURATION", label_column="MANUAL ID")
    assert problems == []
    windows, problems = ann.windows(table, REAL / "pyha", 3.0, 1.0)
    # Only Piha2 and Piha3 are here: every other file's rows are recorded, not dropped.
    assert {p["reason"].split(" ")[1] for p in problems} == set(table["file"]) - {
        "ScreamingPiha2.wav", "ScreamingPiha3.wav"}
    assert sorted(windows["file"].unique()) == ["ScreamingPiha2.mp3", "ScreamingPiha3.mp3"]
    assert windows["labels"].map(bool).sum() > 0 and (~windows["labels"].map(bool)).sum() > 0
    # scikit-maad's Audacity file (with its frequency lines) for spinetail.wav.
    table, problems = ann.read(REAL / "maad" / "spinetail.txt")
    assert problems == [] and set(table["label"]) == {"CRER", "SP"}
    windows, problems = ann.windows(table, REAL / "maad", 2.0, 1.0)
    assert problems == [] and windows["file"].unique().tolist() == ["spinetail.wav"]


def _own_config(root, tmp_path, *extra):
    from birdkeras.config import load_config  # noqa: PLC0415

    return load_config(None, [
        f"data.root={root}", "data.sources=[]", "data.drop_target_xc_ids=false",
        "data.num_folds=2", f"data.manifest_dir={tmp_path / 'manifest'}",
        f"tfrecords.dir={tmp_path / 'shards'}", "audio.sample_rate_hz=16000",
        "audio.num_mel_bins=32", "audio.fft_length=1024", "audio.hop_length=512",
        "audio.fmax_hz=8000", *extra])


def test_real_annotations_become_labelled_records(tmp_path):
    """scikit-maad's Audacity labels of spinetail.wav -> manifest windows -> TFRecords
    whose targets are the windows' labels, bad rows recorded in the ingest report."""
    from birdkeras.datasets import manifest  # noqa: PLC0415
    from birdkeras.records import shards  # noqa: PLC0415
    from conftest import read_records  # noqa: PLC0415

    bad = tmp_path / "bad.csv"  # a recording that is not there: recorded, not fatal
    bad.write_text("file,start,end,label\nmissing.wav,0,1,SP\n")
    cfg = _own_config(REAL, tmp_path, "data.annotations.tables=[maad/spinetail.txt, "
                      f"{bad}]", "data.annotations.audio_dir=maad", "audio.window_s=2.0")
    table, name2label, report = manifest.build(cfg)
    assert sorted(name2label) == ["CRER", "SP"]
    assert report["read"]["own"] == len(table) and (table["source"] == "own").all()
    assert [r["reason"] for r in report["rejected"]] == [
        f"recording missing.wav is not in {REAL / 'maad'}"]
    expected, _ = ann.windows(ann.read(REAL / "maad" / "spinetail.txt")[0], REAL / "maad",
                              2.0, 2.0)
    assert len(table) == len(expected) and table["group"].nunique() == 1
    manifest.save(cfg.data.manifest_dir, table, name2label, report)
    shards.build(table, name2label, cfg, progress=False)
    records = read_records(cfg.tfrecords.dir)
    assert len(records) == len(expected)
    for row in expected.to_dict("records"):
        record = records[f"own/spinetail.wav@{row['start_s']:g}"]
        assert record["start_s"] == pytest.approx(row["start_s"])
        assert [name for name, k in sorted(name2label.items(), key=lambda kv: kv[1])
                if record["targets"][k]] == row["labels"]
        assert len(record["audio"]) == 2 * 16000


@pytest.mark.slow
def test_a_cnn_trains_on_your_own_annotated_recordings(tmp_path):
    from birdkeras import train  # noqa: PLC0415
    from birdkeras.datasets import manifest  # noqa: PLC0415
    from birdkeras.records import shards  # noqa: PLC0415

    root = tmp_path / "project"
    (root / "recordings").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for k in range(4):  # four 20 s recordings, a tone per label where annotated
        t = np.arange(20 * 16000) / 16000
        wave = 0.01 * rng.standard_normal(len(t))
        for start, end, label in CALLS:
            part = (t >= start) & (t < end)
            wave[part] += 0.3 * np.sin(2 * np.pi * (2000 if label == "piha" else 600) * t[part])
            rows.append({"file": f"rec{k}.wav", "start": start, "end": end, "label": label})
        sf.write(root / "recordings" / f"rec{k}.wav", wave.astype(np.float32), 16000)
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    cfg = _own_config(root, tmp_path, "data.annotations.tables=[labels.csv]",
                      "data.annotations.audio_dir=recordings", "train.loss=bce",
                      "train.label_smoothing=0", "input.batch_size=4", "train.epochs=1",
                      "train.steps_per_epoch=2", "wandb.mode=disabled",
                      "model.backbone=MobileNetV3Small")
    table, name2label, report = manifest.ingest(cfg)[:3]
    assert sorted(name2label) == ["frog", "piha"]
    assert sorted(table["fold"].unique()) == [0, 1]  # two recordings per fold, never split
    assert table.groupby("path")["fold"].nunique().max() == 1
    shards.build(table, name2label, cfg, progress=False)
    summary = train.run(cfg, tmp_path / "run")
    assert 0 <= summary["val_macro_auc"] <= 1 and Path(summary["best"]).is_file()

"""Labelled soundscapes in both of Kaggle's forms, file names, evaluation against them."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from birdkeras.audio import io as audio_io
from birdkeras.infer import evaluate
from birdkeras.datasets import soundscapes
from birdkeras.errors import MissingPathError

from conftest import SMALL


def _calls(root):
    return pd.read_csv(root / "soundscape_calls.csv")


def _placed(calls, name, start, end):
    inside = calls[(calls["path"].map(lambda p: Path(p).name) == name)
                   & (calls["start_s"] < end) & (calls["end_s"] > start)]
    return sorted(set(inside["species"].astype(str)))


@pytest.mark.parametrize("source,windows", [("birdclef-2026", SMALL.labelled_soundscapes * 12),
                                            ("birdclef-2021", 12)])
def test_both_label_forms_read_as_the_calls_placed(synth_root, source, windows):
    table = soundscapes.read_labels(synth_root, source)
    assert len(table) == windows  # 2026: rows of one window merged
    calls = _calls(synth_root)
    for row in table.to_dict("records"):
        assert row["end_s"] - row["start_s"] == 5.0 and Path(row["path"]).is_file()
        assert sorted(row["labels"]) == _placed(calls, row["file"], row["start_s"], row["end_s"])
    assert any(len(labels) > 1 for labels in table["labels"])  # multi-label windows
    assert any(not labels for labels in table["labels"])  # and empty ones


def test_file_names_say_site_date_and_hour(synth_root):
    assert soundscapes.parse_name("BC2026_Train_0001_S05_20250312_053000.ogg") == {
        "site": "S05", "date": "20250312", "hour": 5}
    assert soundscapes.parse_name("BC2026_Test_0042_S13_20250101_231500") == {
        "site": "S13", "date": "20250101", "hour": 23}
    assert soundscapes.parse_name("7019_COR_20190904.ogg") == {
        "site": "COR", "date": "20190904", "hour": None}
    assert soundscapes.parse_name("soundscape_120s.flac") == {
        "site": None, "date": None, "hour": None}
    table = soundscapes.read_labels(synth_root, "birdclef-2026")
    assert table["site"].str.fullmatch(r"S\d\d").all() and table["hour"].between(0, 23).all()


def test_labelled_windows_are_the_audio_and_targets_of_each_window(synth_root):
    classes = ["nobody", *sorted({c for ls in soundscapes.read_labels(
        synth_root, "birdclef-2026")["labels"] for c in ls})]
    waves, targets, table = soundscapes.labelled_windows(synth_root, "birdclef-2026", classes,
                                                         16000)
    assert waves.shape == (len(table), 80000) and targets.shape == (len(table), len(classes))
    for i in (0, 7, len(table) - 1):
        row = table.iloc[i]
        wave = audio_io.load(row["path"], 16000)
        start = int(row["start_s"] * 16000)
        np.testing.assert_array_equal(waves[i], wave[start:start + 80000])
        assert [classes[k] for k in np.flatnonzero(targets[i])] == sorted(row["labels"])
    assert targets[:, 0].sum() == 0


@pytest.mark.parametrize("source", ["birdclef-2026", "birdclef-2021"])
def test_evaluate_scores_a_perfect_submission_one_in_either_form(synth_root, source, tmp_path):
    calls, rows = _calls(synth_root), []
    folder = synth_root / source / "train_soundscapes"
    species = sorted(set(calls["species"].astype(str)))
    for path in sorted(folder.iterdir()):
        for end in range(5, 65, 5):
            placed = set(_placed(calls, path.name, end - 5, end))
            rows.append({"row_id": f"{path.stem}_{end}", **{s: float(s in placed)
                                                              for s in species}})
    pd.DataFrame(rows).to_csv(tmp_path / "perfect.csv", index=False)
    result = evaluate.evaluate(tmp_path / "perfect.csv", synth_root, source)
    assert result["macro_auc"] == 1.0 and result["padded_cmap"] == 1.0


def test_malformed_label_files_are_named(synth_root, tmp_path):
    folder = tmp_path / "birdclef-2026"
    (folder / "train_soundscapes").mkdir(parents=True)
    (folder / "train_soundscapes" / "a.ogg").write_bytes(b"")
    labels = folder / "train_soundscapes_labels.csv"
    labels.write_text("filename,start,end,primary_label\na.ogg,00:00:00,five,x\n")
    with pytest.raises(soundscapes.SoundscapeError, match="end='five' is not a time"):
        soundscapes.read_labels(tmp_path, "birdclef-2026")
    labels.write_text("filename,start,end,primary_label\nb.ogg,0,5,x\n")
    with pytest.raises(MissingPathError, match=r"no audio in .* for \['b.ogg'\]"):
        soundscapes.read_labels(tmp_path, "birdclef-2026")
    labels.write_text("filename,begin,end,primary_label\na.ogg,0,5,x\n")
    with pytest.raises(soundscapes.SoundscapeError, match="has no column 'start'"):
        soundscapes.read_labels(tmp_path, "birdclef-2026")
    with pytest.raises(MissingPathError, match="no labelled soundscapes for birdclef-2024"):
        soundscapes.read_labels(synth_root, "birdclef-2024")

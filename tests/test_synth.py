"""The synthetic generator: real headers and quirks, learnable audio, broken files, seeds."""

import csv
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from birdkeras.audio import io as audio_io
from birdkeras import synth
from birdkeras.config import catalog
from birdkeras.synth import voices

from conftest import SMALL


def _header(path: Path, encoding="utf-8") -> list[str]:
    with open(path, newline="", encoding=encoding) as f:
        return next(csv.reader(f))


@pytest.mark.parametrize("folder,name,real_name", [
    ("birdclef-2022", "train_metadata.csv", "birdclef2022_train_metadata.head40.csv"),
    ("birdclef-2023", "train_metadata.csv", "birdclef2023_train_metadata.head40.csv"),
    ("birdclef-2024", "train_metadata.csv", "birdclef2024_train_metadata.head4.csv"),
    ("birdclef-2025", "train.csv", "birdclef2025_train.head_transcribed.csv"),
    ("birdclef-2021", "train_soundscape_labels.csv",
     "birdclef2021_train_soundscape_labels.selected.csv"),
    ("birdclef-2022", "sample_submission.csv", "birdclef2022_sample_submission.csv"),
])
def test_headers_match_the_real_files(synth_root, real_dir, folder, name, real_name):
    assert _header(synth_root / folder / name) == _header(real_dir / "metadata" / real_name)


def test_ebird_taxonomy_starts_with_a_bom_like_the_real_one(synth_root, real_dir):
    real = real_dir / "metadata" / "birdclef2022-2024_eBird_Taxonomy_v2021.head30.csv"
    for year in (2022, 2023, 2024):
        ours = synth_root / f"birdclef-{year}" / "eBird_Taxonomy_v2021.csv"
        assert ours.read_bytes()[:3] == real.read_bytes()[:3] == b"\xef\xbb\xbf"
        assert _header(ours, "utf-8-sig") == _header(real, "utf-8-sig")


def test_each_year_has_its_columns_and_folders(synth_root):
    assert len(_header(synth_root / "birdclef-2021" / "train_metadata.csv")) == 14
    assert "ebird_code" in _header(synth_root / "birdsong-recognition" / "train.csv")
    assert "class_name" in _header(synth_root / "birdclef-2025" / "taxonomy.csv")
    assert _header(synth_root / "xeno-canto-extended" / "train_extended.csv") == list(
        catalog.COLUMNS_2020)
    assert any((synth_root / "xeno-canto-extended" / half).is_dir() for half in ("A-M", "N-Z"))
    for source in catalog.SOURCES.values():
        if source.name != "xeno-canto":
            assert (synth_root / source.folder / "sample_submission.csv").is_file(), source.name
    # 2022+ file names include the label folder; 2021's do not.
    with open(synth_root / "birdclef-2022" / "train_metadata.csv") as f:
        assert all("/" in row["filename"] for row in csv.DictReader(f))
    with open(synth_root / "birdclef-2021" / "train_metadata.csv") as f:
        assert all("/" not in row["filename"] for row in csv.DictReader(f))


def test_value_quirks_are_present(synth_root):
    text_2025 = (synth_root / "birdclef-2025" / "train.csv").read_text()
    assert "['']" in text_2025 and ",None," in text_2025
    assert " ,"  in text_2025  # a trailing space in a name
    with open(synth_root / "birdclef-2023" / "train_metadata.csv") as f:
        rows = list(csv.DictReader(f))
    assert any(r["latitude"] == "" for r in rows)
    assert any(r["secondary_labels"].startswith("['") for r in rows)
    assert any(r["secondary_labels"] == "[]" for r in rows)
    text_2020 = (synth_root / "birdsong-recognition" / "train.csv").read_text()
    assert "Not specified" in text_2020 and "(Hz)" in text_2020


def test_every_intact_file_decodes_with_its_claimed_duration(synth_root):
    truth = synth.read_truth(synth_root)
    assert {r["broken"] for r in truth} >= {"", "truncated", "empty", "silent"}
    kinds = {(int(r["sample_rate_hz"]), int(r["channels"]), Path(r["path"]).suffix)
             for r in truth if not r["broken"]}
    assert {k[0] for k in kinds} == set(synth.SAMPLE_RATES)
    assert {k[1] for k in kinds} == {1, 2}
    for row in truth:
        if row["broken"]:
            continue
        info = sf.info(str(synth_root / row["path"]))
        assert info.samplerate == int(row["sample_rate_hz"])
        assert info.channels == int(row["channels"])
        # MP3 adds encoder padding; within one codec frame (1152 samples) of the plan.
        assert abs(info.frames - int(row["frames"])) <= 1152 * 2, row["path"]
        assert abs(info.duration - float(row["duration_s"])) < 0.1


def test_metadata_durations_match_the_decoded_audio(synth_root):
    broken = {r["path"] for r in synth.read_truth(synth_root) if r["broken"]}
    checked = 0
    for source in ("birdclef-2020", "xeno-canto"):
        src = catalog.SOURCES[source]
        with open(synth_root / src.folder / src.metadata) as f:
            for row in csv.DictReader(f):
                path = catalog.audio_path(source, row["ebird_code"], row["filename"])
                if path in broken:
                    continue
                wave, rate = sf.read(str(synth_root / path), dtype="float32")
                # The metadata rounds to whole seconds, as 2020's does.
                assert abs(int(row["duration"]) - len(wave) / rate) <= 0.55, path
                checked += 1
    assert checked >= 10


def test_broken_files_are_broken(synth_root):
    truth = synth.read_truth(synth_root)
    for row in truth:
        path = synth_root / row["path"]
        if row["broken"] in ("empty", "silent"):
            with pytest.raises(audio_io.AudioError):
                audio_io.load(path, 32000)
        elif row["broken"] == "truncated":
            # Cut to a third of its bytes: it fails to decode, or decodes far too short.
            try:
                decoded = len(sf.read(str(path), dtype="float32")[0])
            except (sf.LibsndfileError, RuntimeError):
                continue
            assert decoded < 0.5 * int(row["frames"]), row["path"]
    listed = json.loads((synth_root / "corrupt_files.json").read_text())
    broken = {r["path"] for r in truth if r["broken"]}
    assert listed and set(listed) < broken  # some broken files are listed, not all


def test_species_overlap_so_pretraining_can_help(synth_root):
    truth = synth.read_truth(synth_root)
    target = {r["primary_label"] for r in truth if r["source"] == "birdclef-2026"}
    older = {r["primary_label"] for r in truth if r["source"] != "birdclef-2026"}
    assert target and target <= older
    xc = [r["xc_id"] for r in truth if r["xc_id"]]
    sources_per_id = {}
    for r in truth:
        if r["xc_id"]:
            sources_per_id.setdefault(r["xc_id"], set()).add(r["source"])
    assert len(xc) > len(set(xc))  # the same xc_id recurs ...
    assert any(len(s) > 1 for s in sources_per_id.values())  # ... across years


def _placed(calls, name, end):
    """Species with a call inside the window ending at `end` of soundscape `name`."""
    return sorted({c["species"] for c in calls if Path(c["path"]).name == name
                   and float(c["start_s"]) < end and float(c["end_s"]) > end - 5})


def test_2026_soundscape_labels_match_where_calls_were_placed(synth_root):
    with open(synth_root / "soundscape_calls.csv") as f:
        calls = list(csv.DictReader(f))
    with open(synth_root / "birdclef-2026" / "train_soundscapes_labels.csv") as f:
        rows = list(csv.DictReader(f))
    # The 2026 form's quirks: HH:MM:SS times, ';'-joined labels, and windows spread
    # over several rows (split per species, or written twice) that readers must merge.
    keys = [(r["filename"], r["start"], r["end"]) for r in rows]
    assert len(set(keys)) == SMALL.labelled_soundscapes * 12 < len(keys)
    assert any(";" in r["primary_label"] for r in rows) and rows[0]["end"] == "00:00:05"
    merged = {}
    for r in rows:
        merged.setdefault((r["filename"], r["end"]), set()).update(
            x for x in r["primary_label"].split(";") if x)
    species = voices.make_species(SMALL.num_birds, SMALL.num_textures,
                                  np.random.default_rng(SMALL.seed), SMALL.num_mammals)
    f0 = {s.code: s.f0_hz for s in species}
    windows = []  # (power spectrum, frequencies, species placed) per labelled window
    for (name, clock), labels in sorted(merged.items()):
        end = int(clock[-2:]) + 60 * int(clock[3:5])
        assert sorted(labels) == _placed(calls, name, end), (name, end)
        path = synth_root / "birdclef-2026" / "train_soundscapes" / name
        y, sr = sf.read(str(path), start=(end - 5) * 32000, stop=end * 32000)
        windows.append((np.abs(np.fft.rfft(y)) ** 2, np.fft.rfftfreq(len(y), 1 / sr), labels))
    # The calls are really in the audio: in a labelled window, each species' band holds
    # far more energy than the same band in windows where nobody calls.
    quiet = [w for w in windows if not w[2]]
    assert quiet and len(quiet) < len(windows)
    for power, freqs, placed in windows:
        for code in placed:
            band = (freqs > 0.7 * f0[code]) & (freqs < 2.2 * f0[code])
            background = max(q[0][band].sum() for q in quiet)
            assert power[band].sum() > 3 * background, code


def test_2021_soundscape_labels_match_where_calls_were_placed(synth_root):
    with open(synth_root / "soundscape_calls.csv") as f:
        calls = list(csv.DictReader(f))
    with open(synth_root / "birdclef-2021" / "train_soundscape_labels.csv") as f:
        rows = list(csv.DictReader(f))
    files = {p.name.split("_")[0]: p.name
             for p in (synth_root / "birdclef-2021" / "train_soundscapes").iterdir()}
    assert len(rows) == 12 and {r["audio_id"] for r in rows} <= set(files)
    for r in rows:
        placed = _placed(calls, files[r["audio_id"]], int(r["seconds"]))
        assert (" ".join(placed) or "nocall") == r["birds"]


def test_current_year_classes_clips_and_soundscapes(synth_root):
    taxonomy = list(csv.DictReader(open(synth_root / "birdclef-2026" / "taxonomy.csv")))
    classes = [r["primary_label"] for r in taxonomy]
    sample = _header(synth_root / "birdclef-2026" / "sample_submission.csv")
    assert sample == ["row_id", *classes]
    assert {r["class_name"] for r in taxonomy} == {"Aves", "Amphibia", "Insecta", "Mammalia"}
    with open(synth_root / "birdclef-2026" / "train.csv") as f:
        with_clips = {r["primary_label"] for r in csv.DictReader(f)}
    with open(synth_root / "soundscape_calls.csv") as f:
        heard = {c["species"] for c in csv.DictReader(f) if "birdclef-2026" in c["path"]}
    # One taxon only heard in soundscapes, one class only in the taxonomy.
    assert len(heard - with_clips) == 1 and len(set(classes) - with_clips - heard) == 1
    names = sorted(p.name for p in (synth_root / "birdclef-2026" / "train_soundscapes").iterdir())
    assert len(names) == SMALL.labelled_soundscapes + SMALL.unlabelled_soundscapes
    assert all(re.fullmatch(r"BC2026_Train_\d{4}_S\d{2}_\d{8}_\d{6}\.ogg", n) for n in names)
    assert not list((synth_root / "birdclef-2026" / "test_soundscapes").iterdir())


def _digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes(tmp_path):
    tiny = synth.SynthSpec(seed=3, num_birds=4, num_textures=1, target_species=2,
                           clips_per_species=1, target_clips_per_species=1,
                           median_duration_s=2.0, max_duration_s=5.0, labelled_soundscapes=1,
                           unlabelled_soundscapes=0, soundscape_s=10.0, workers=1)
    synth.generate(tmp_path / "a", tiny)
    synth.generate(tmp_path / "b", tiny)
    a, b = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert a == b and any(k.endswith(".ogg") for k in a) and any(k.endswith(".mp3") for k in a)
    synth.generate(tmp_path / "c", tiny.__class__(**{**tiny.__dict__, "seed": 4}))
    assert _digest(tmp_path / "c") != a


def test_spec_validation():
    with pytest.raises(ValueError, match="target_species=9 must be < num_birds=4"):
        synth.SynthSpec(num_birds=4, target_species=9)

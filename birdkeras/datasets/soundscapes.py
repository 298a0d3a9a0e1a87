"""Labelled soundscapes, in both of Kaggle's label forms, and soundscape file names.

    2021 form  train_soundscape_labels.csv   row_id,site,audio_id,seconds,birds
               one row per 5 s window ending at `seconds`; `birds` space-separated
               codes or "nocall"; the file is `{audio_id}_{site}_{date}.ogg`
    2026 form  train_soundscapes_labels.csv  filename,start,end,primary_label
               `start`/`end` as HH:MM:SS (or seconds); `primary_label` ';'-separated;
               several rows per window (annotators), merged here

`read_labels` returns both as one table: one row per labelled window, with the audio
`path`, `start_s`, `end_s`, the list of `labels`, and the site, date and hour the
file name carries. File names of the current competitions say where and when:

    BC2026_Train_0001_S05_20250312_053000.ogg   site S05, 2025-03-12, 05:30:00
    7019_COR_20190904.ogg                       (2021) site COR, 2019-09-04
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from birdkeras.audio import io as audio_io
from birdkeras.audio.windows import cut
from birdkeras.config import catalog
from birdkeras.errors import MissingPathError, UserError

FORM_2021 = "train_soundscape_labels.csv"
FORM_2026 = "train_soundscapes_labels.csv"
COLUMNS = ("path", "file", "start_s", "end_s", "labels", "site", "date", "hour")
_NAME_2026 = re.compile(r"_S(?P<site>\d+)_(?P<date>\d{8})_(?P<time>\d{6})$")
_NAME_2021 = re.compile(r"^(?P<audio_id>\d+)_(?P<site>[A-Z]+)_(?P<date>\d{8})$")


class SoundscapeError(UserError):
    """A soundscape label file is malformed; the message names the file and row."""


def parse_name(name: str) -> dict:
    """{'site', 'date', 'hour'} from a soundscape file name (None where it says nothing)."""
    stem = Path(name).stem
    match = _NAME_2026.search(stem)
    if match:
        return {"site": f"S{match['site']}", "date": match["date"],
                "hour": int(match["time"][:2])}
    match = _NAME_2021.match(stem)
    if match:
        return {"site": match["site"], "date": match["date"], "hour": None}
    return {"site": None, "date": None, "hour": None}


def label_file(root: str | Path, source: str) -> Path:
    """The source's soundscape label file (either form), or a clear error."""
    folder = Path(root) / catalog.SOURCES[source].folder
    for name in (FORM_2026, FORM_2021):
        if (folder / name).is_file():
            return folder / name
    raise MissingPathError(f"{folder} has neither {FORM_2026} nor {FORM_2021}: no labelled "
                           f"soundscapes for {source}")


def read_labels(root: str | Path, source: str) -> pd.DataFrame:
    """One row per labelled window of `source` (see the module docstring)."""
    path = label_file(root, source)
    audio_dir = path.parent / "train_soundscapes"
    table = _read_2026(path, audio_dir) if path.name == FORM_2026 else _read_2021(path, audio_dir)
    names = pd.DataFrame([parse_name(p) for p in table["file"]], index=table.index)
    return table.assign(**{c: names[c] for c in ("site", "date", "hour")})[list(COLUMNS)]


def _read_2021(path: Path, audio_dir: Path) -> pd.DataFrame:
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    _require(raw, path, ("audio_id", "site", "seconds", "birds"))
    # The 2021 file names add a date the labels do not carry: match on id and site.
    found = audio_io.list_audio(audio_dir, allow_empty=True) if audio_dir.is_dir() else []
    files = {"_".join(p.stem.split("_")[:2]): p for p in found}
    keys = raw["audio_id"] + "_" + raw["site"]
    missing = sorted(set(keys) - set(files))
    if missing:
        raise MissingPathError(f"{path}: no audio in {audio_dir} for {missing[:5]}")
    end = raw["seconds"].map(lambda v: _seconds(v, path, "seconds"))
    return pd.DataFrame({
        "path": [str(files[k]) for k in keys], "file": [files[k].name for k in keys],
        "start_s": end - 5.0, "end_s": end,
        "labels": raw["birds"].map(lambda b: [] if b.strip() == "nocall" else b.split()),
    })


def _read_2026(path: Path, audio_dir: Path) -> pd.DataFrame:
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    _require(raw, path, ("filename", "start", "end", "primary_label"))
    raw = raw.assign(start_s=[_seconds(v, path, "start") for v in raw["start"]],
                     end_s=[_seconds(v, path, "end") for v in raw["end"]])
    missing = sorted({f for f in raw["filename"] if not (audio_dir / f).is_file()})
    if missing:
        raise MissingPathError(f"{path}: no audio in {audio_dir} for {missing[:5]}")
    # Several rows may label one window (one per annotator or species): merge them.
    merged = raw.groupby(["filename", "start_s", "end_s"], sort=True)["primary_label"].agg(
        lambda cells: sorted({label.strip() for cell in cells for label in cell.split(";")
                              if label.strip()}))
    merged = merged.reset_index()
    return pd.DataFrame({
        "path": [str(audio_dir / f) for f in merged["filename"]], "file": merged["filename"],
        "start_s": merged["start_s"], "end_s": merged["end_s"],
        "labels": merged["primary_label"],
    })


def _require(raw: pd.DataFrame, path: Path, columns) -> None:
    missing = [c for c in columns if c not in raw.columns]
    if missing:
        raise SoundscapeError(f"{path} has no column {missing[0]!r}; columns are "
                              f"{list(raw.columns)}")


def _seconds(value: str, path: Path, column: str) -> float:
    """'HH:MM:SS', 'MM:SS' or plain seconds, as float seconds."""
    text = str(value).strip()
    try:
        parts = [float(p) for p in text.split(":")]
    except ValueError:
        raise SoundscapeError(f"{path}: {column}={text!r} is not a time "
                              "(HH:MM:SS or seconds)") from None
    seconds = 0.0
    for part in parts:
        seconds = seconds * 60 + part
    return seconds


def labelled_windows(root: str | Path, source: str, class_names: list[str],
                     sample_rate_hz: int, window_s: float = 5.0):
    """Every labelled window of `source` as audio and 0/1 targets over `class_names`.

    Returns (windows (n, samples) float32, targets (n, classes) float32, the label
    table). Each file is decoded once; labels that are not in `class_names` are left
    out of the targets (the table keeps them).

    Args:
        root: the data root.
        source: a source with labelled soundscapes (either label form).
        class_names: the classes of the targets, in order.
        sample_rate_hz: the rate to decode at.
        window_s: window length.

    Returns:
        (windows (n, samples) float32, targets (n, classes) float32, the label table).
    """
    table = read_labels(root, source)
    index = {name: k for k, name in enumerate(class_names)}
    waves, targets = [], np.zeros((len(table), len(class_names)), dtype=np.float32)
    for path, rows in table.groupby("path", sort=False):
        wave = audio_io.load(path, sample_rate_hz, allow_silence=True)
        waves.append(cut(wave, sample_rate_hz, rows["start_s"].to_numpy(), window_s))
    order = np.concatenate([rows.index.to_numpy()
                            for _, rows in table.groupby("path", sort=False)])
    for i, labels in zip(table.index, table["labels"]):
        for label in labels:
            if label in index:
                targets[i, index[label]] = 1.0
    return np.concatenate(waves)[np.argsort(order)], targets, table

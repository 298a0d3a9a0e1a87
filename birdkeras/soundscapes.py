"""Labelled soundscapes (the 2021 `train_soundscape_labels.csv` form): the table of
windows, their audio files and their birds ("nocall" -> no bird).

`birdkeras.evaluate` scores submissions against them.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from birdkeras import layout


def read_labels(root: str | Path, source: str) -> pd.DataFrame:
    folder = Path(root) / layout.SOURCE_DIRS[source]
    path = folder / "train_soundscape_labels.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: no labelled soundscapes for {source}")
    labels = pd.read_csv(path, dtype={"audio_id": str, "site": str})
    files = {p.name.split("_")[0] + "_" + p.name.split("_")[1]: p
             for p in (folder / "train_soundscapes").glob("*") if p.is_file()}
    labels["path"] = (labels["audio_id"] + "_" + labels["site"]).map(files)
    missing = labels["path"].isna()
    if missing.any():
        raise FileNotFoundError(f"{path}: no audio in train_soundscapes/ for "
                                f"{sorted(set(labels.loc[missing, 'audio_id']))[:5]}")
    labels["birds"] = labels["birds"].map(lambda b: [] if b == "nocall" else b.split())
    return labels

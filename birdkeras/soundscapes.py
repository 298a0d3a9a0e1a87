"""Scoring a model on labelled soundscapes (the 2021 `train_soundscape_labels.csv` form).

Each soundscape is cut into consecutive `window_s` windows (the last one padded), scored
by the model, and compared with the per-window labels with the official metrics. Classes
the labels name that the model does not know are ignored; "nocall" windows count as
negatives for every class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from birdkeras import audio, metrics
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


def window_scores(model, path: Path, seconds: list[int], sample_rate_hz: int,
                  window_s: float) -> np.ndarray:
    """Logits for the windows ending at `seconds` in the soundscape at `path`."""
    wave = audio.load(path, sample_rate_hz)
    window = int(window_s * sample_rate_hz)
    end = max(seconds) * sample_rate_hz
    wave = np.pad(wave, (0, max(0, end - len(wave))))
    clips = np.stack([wave[(s * sample_rate_hz) - window:(s * sample_rate_hz)] for s in seconds])
    return np.asarray(model.predict(clips, batch_size=16, verbose=0))


def evaluate(model, root, source: str, class_names: list[str], sample_rate_hz: int,
             window_s: float = 5.0) -> dict:
    labels = read_labels(root, source)
    index = {name: k for k, name in enumerate(class_names)}
    truth, scores = [], []
    for path, rows in labels.groupby("path", sort=True):
        scores.append(window_scores(model, path, rows["seconds"].tolist(), sample_rate_hz,
                                    window_s))
        y = np.zeros((len(rows), len(class_names)))
        for i, birds in enumerate(rows["birds"]):
            for bird in birds:
                if bird in index:
                    y[i, index[bird]] = 1
        truth.append(y)
    truth, scores = np.concatenate(truth), np.concatenate(scores)
    return {"windows": len(truth), "macro_auc": metrics.macro_roc_auc(truth, scores),
            "padded_cmap": metrics.padded_cmap(truth, scores),
            "scored_classes": len(metrics.scored_classes(truth))}

"""Outputs of inference: the Kaggle submission, a long detection table, Raven tables.

Each takes the scored files, `Scored(path, starts_s, probs)` with `probs` of shape
(windows, model classes), and the model's class names.
"""

from __future__ import annotations

import typing
from pathlib import Path

import numpy as np
import pandas as pd

from birdkeras.errors import PredictError


class Scored(typing.NamedTuple):
    """One scored file: its path, window starts (seconds) and probabilities."""

    path: Path
    starts_s: np.ndarray
    probs: np.ndarray  # (windows, model classes)


def class_columns(path: str | None, model_classes: list[str]) -> list[str]:
    """The submission's class columns, from a sample submission or a taxonomy.

    None: the model's classes in label order.
    """
    if path is None:
        return list(model_classes)
    if not Path(path).is_file():
        raise PredictError(f"infer.class_order={path} is not a file")
    header = pd.read_csv(path, nrows=0).columns
    if "row_id" in header:
        columns = [c for c in header if c != "row_id"]
    elif "primary_label" in header:
        columns = pd.read_csv(path, usecols=["primary_label"], dtype=str)["primary_label"].tolist()
    else:
        raise PredictError(f"{path}: expected a sample submission (row_id + class columns) "
                           "or a taxonomy (primary_label column)")
    if len(set(columns)) != len(columns):
        raise PredictError(f"{path}: class names repeat")
    return columns


def row_id(path: Path, end_s: float) -> str:
    """`{file stem}_{end second}` (an integer when it is one, as Kaggle's row_ids)."""
    end = f"{end_s:g}" if float(end_s).is_integer() else f"{end_s:.3f}".rstrip("0")
    return f"{Path(path).stem}_{end}"


def table(scored: list[Scored], model_classes, columns, window_s: float) -> pd.DataFrame:
    """The submission: `row_id` then `columns`; a column the model lacks is all 0.

    Args:
        scored: the scored files.
        model_classes: the model's classes (columns of `probs`).
        columns: the submission's class columns.
        window_s: the window length (row_id ends).

    Returns:
        The submission table.
    """
    index = {name: k for k, name in enumerate(model_classes)}
    row_ids, blocks = [], []
    for path, starts, probs in scored:
        row_ids += [row_id(path, s + window_s) for s in starts]
        block = np.zeros((len(probs), len(columns)), dtype=np.float32)
        for j, name in enumerate(columns):
            if name in index:
                block[:, j] = probs[:, index[name]]
        blocks.append(block)
    values = np.concatenate(blocks) if blocks else np.zeros((0, len(columns)), np.float32)
    frame = pd.DataFrame(values, columns=columns)
    frame.insert(0, "row_id", row_ids)
    return frame


def detections(scored: list[Scored], classes, window_s: float, min_score: float):
    """(path, begin, end, label, score) for every window-class at or above `min_score`.

    Args:
        scored: the scored files.
        classes: the model's classes.
        window_s: the window length.
        min_score: the lowest score kept.
    """
    for path, starts, probs in scored:
        rows, cols = np.nonzero(probs >= min_score)
        for i, k in zip(rows, cols):
            yield path, float(starts[i]), float(starts[i] + window_s), classes[k], float(probs[i, k])


def long_table(scored, classes, window_s: float, min_score: float) -> pd.DataFrame:
    """`file,start,end,label,score`, one row per detection.

    Args:
        scored: the scored files.
        classes: the model's classes.
        window_s: the window length.
        min_score: the lowest score kept.

    Returns:
        The table.
    """
    rows = [(Path(p).name, b, e, label, s)
            for p, b, e, label, s in detections(scored, classes, window_s, min_score)]
    return pd.DataFrame(rows, columns=["file", "start", "end", "label", "score"])


def write_raven(scored, classes, window_s: float, min_score: float, folder: Path,
                high_hz: float) -> None:
    """One Raven Pro selection table per file (tab-separated), detections >= min_score.

    Args:
        scored: the scored files.
        classes: the model's classes.
        window_s: the window length.
        min_score: the lowest score kept.
        folder: where the tables go.
        high_hz: the selections' upper frequency (Nyquist).
    """
    folder.mkdir(parents=True, exist_ok=True)
    header = ["Selection", "View", "Channel", "Begin Time (s)", "End Time (s)",
              "Low Freq (Hz)", "High Freq (Hz)", "Species", "Score"]
    for one in scored:
        lines = ["\t".join(header)]
        for n, (_, begin, end, label, score) in enumerate(
                detections([one], classes, window_s, min_score), start=1):
            lines.append("\t".join([str(n), "Spectrogram 1", "1", f"{begin:.3f}", f"{end:.3f}",
                                    "0", f"{high_hz:g}", label, f"{score:.4f}"]))
        (folder / f"{one.path.stem}.BirdKeras.selection.table.txt").write_text(
            "\n".join(lines) + "\n")

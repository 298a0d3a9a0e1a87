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


def species_list(path: str, classes: list[str]) -> tuple[list[int], list[str]]:
    """The classes a species list keeps, as indices into `classes`, and its lines that
    name none of them.

    Each line is a class name, a scientific name, or BirdNET's "Scientific name_Common
    name" (BirdNET-Analyzer's species lists); case and surrounding spaces do not matter.
    """
    if not Path(path).is_file():
        raise PredictError(f"infer.species_list={path} is not a file")
    lines = [x.strip() for x in Path(path).read_text(encoding="utf-8").splitlines()]
    lookup = {c.strip().lower(): k for k, c in enumerate(classes)}
    keep, unknown = set(), []
    for line in filter(None, lines):
        hits = {lookup[key] for key in (line.lower(), line.split("_", 1)[0].strip().lower())
                if key in lookup}
        keep |= hits
        if not hits:
            unknown.append(line)
    if not keep:
        raise PredictError(f"infer.species_list={path}: none of its {len(lines)} lines names one "
                           f"of the model's {len(classes)} classes (e.g. {classes[:3]})")
    return sorted(keep), unknown


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


def merged(found, max_windows: int):
    """Detections (path, begin, end, label, score) with up to `max_windows` consecutive
    or overlapping windows of one label in one file joined into one, its score their
    maximum (BirdNET-Analyzer's `--merge_consecutive`); 1 leaves them as they are.

    Args:
        found: detections, e.g. from `detections`.
        max_windows: the most windows one merged detection spans.

    Returns:
        The detections, per file and label in time order, merged.
    """
    found = list(found)
    if max_windows <= 1:
        return found
    out = []
    for (path, label), group in pd.DataFrame(found, columns=["path", "begin", "end", "label",
                                                             "score"]).groupby(
            ["path", "label"], sort=False):
        run = None
        for begin, end, score in group.sort_values("begin")[["begin", "end", "score"]].itertuples(
                index=False):
            if run and begin <= run[2] + 1e-6 and run[4] < max_windows:
                run = [run[0], run[1], max(run[2], end), max(run[3], score), run[4] + 1]
            else:
                if run:
                    out.append((path, run[1], run[2], label, run[3]))
                run = [path, begin, end, score, 1]
        out.append((path, run[1], run[2], label, run[3]))
    return sorted(out, key=lambda d: (str(d[0]), d[1], d[3]))


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
                high_hz: float, common_names=None, merge: int = 1) -> None:
    """One Raven Pro selection table per file (tab-separated), detections >= min_score.

    Args:
        scored: the scored files.
        classes: the model's classes.
        window_s: the window length.
        min_score: the lowest score kept.
        folder: where the tables go.
        high_hz: the selections' upper frequency (Nyquist).
        common_names: per class, a "Common Name" column (BirdNET's labels); None: none.
        merge: join up to this many consecutive windows of one label (`merged`).
    """
    folder.mkdir(parents=True, exist_ok=True)
    header = ["Selection", "View", "Channel", "Begin Time (s)", "End Time (s)",
              "Low Freq (Hz)", "High Freq (Hz)", "Species",
              *(["Common Name"] if common_names else []), "Score", "Begin Path",
              "File Offset (s)"]
    common = dict(zip(classes, common_names or []))
    for one in scored:
        lines = ["\t".join(header)]
        for n, (path, begin, end, label, score) in enumerate(
                merged(detections([one], classes, window_s, min_score), merge), start=1):
            lines.append("\t".join([str(n), "Spectrogram 1", "1", f"{begin:.3f}", f"{end:.3f}",
                                    "0", f"{high_hz:g}", label,
                                    *([common[label]] if common_names else []),
                                    f"{score:.4f}", str(path), f"{begin:.3f}"]))
        (folder / f"{one.path.stem}.BirdKeras.selection.table.txt").write_text(
            "\n".join(lines) + "\n")


def birdnet_csv(scored, classes, window_s: float, min_score: float,
                common_names=None, merge: int = 1) -> pd.DataFrame:
    """BirdNET-Analyzer's CSV layout, one row per detection.

    Args:
        scored: the scored files.
        classes: the model's classes (scientific names for BirdNET).
        window_s: the window length.
        min_score: the lowest score kept.
        common_names: per class (None: the class name again).
        merge: join up to this many consecutive windows of one label (`merged`).

    Returns:
        `Start (s),End (s),Scientific name,Common name,Confidence,File`.
    """
    common = dict(zip(classes, common_names or classes))
    rows = [(b, e, label, common[label], round(score, 4), str(p))
            for p, b, e, label, score in merged(detections(scored, classes, window_s, min_score),
                                                merge)]
    return pd.DataFrame(rows, columns=["Start (s)", "End (s)", "Scientific name", "Common name",
                                       "Confidence", "File"])

"""Your own recordings and labels: annotation tables and class folders -> labelled windows.

Four ways to say what is where, each read into one table of annotations (`file`,
`start`, `end`, `label`, plus where it came from: `table` and `line`):

- **Raven selection tables** (`read_raven`): tab-separated, `Begin Time (s)`,
  `End Time (s)`, a label column (`Species` by default: Raven has no fixed name for it),
  and the recording from `Begin Path`, a file column you name, or else the table's own
  name (`XC123.Table.1.selections.txt` -> the recording whose stem is `XC123`). Several
  tables per recording are fine.
- **Audacity label files** (`read_audacity`): `start<TAB>end<TAB>label` lines (spectral
  selections add `\\<TAB>low<TAB>high` lines, skipped); the recording is the file's stem.
- **CSV** (`read_csv`): `file,start,end,label` by default, or your own column names,
  with a duration column instead of an end (PyHa's `IN FILE,OFFSET,DURATION,MANUAL ID`).
- **A folder per class** (`read_class_folders`, BirdNET-Analyzer's training layout):
  every recording in `root/<class>/` is that class from start to end; folders named as
  negatives (`noise`, `background`, ...) hold recordings of no class.

`windows` cuts the recordings into windows (length and hop yours; the last one reaches
past the end and is zero-padded, as `predict` windows a file) and labels each with
the annotations overlapping it by at least `min_overlap_s` or by at least
`min_fraction` of the annotation's own length (so a short call cut by a boundary labels
the window holding most of it); unannotated stretches of an annotated recording are
negatives.
`group_folds` assigns folds by recording (or site), never splitting one.

Bad rows (end before start, a time past the recording's end, a label not in your class
list, a recording that is not there) are returned with their table, line and reason,
and skipped; nothing else is lost.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from birdkeras.audio import io as audio_io
from birdkeras.audio import windows as audio_windows
from birdkeras.errors import UserError

COLUMNS = ("file", "start", "end", "label", "table", "line")
RAVEN_TIMES = ("Begin Time (s)", "End Time (s)")
NEGATIVE_FOLDERS = ("noise", "background", "negative", "other")


class AnnotationError(UserError):
    """An annotation table cannot be read at all; the message names what it needs."""


def _problem(table, line, reason) -> dict:
    return {"table": str(table), "line": int(line), "reason": reason}


def read_raven(path, label_column: str = "Species", file_column: str | None = None):
    """A Raven selection table -> (annotations, problems).

    Args:
        path: the table (tab-separated).
        label_column: the column holding the class.
        file_column: the column naming the recording (None: `Begin Path`, else `Begin
            File`, else the table's name up to its first dot).

    Returns:
        (DataFrame with `COLUMNS`, list of {table, line, reason}).
    """
    path = Path(path)
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    needed = [*RAVEN_TIMES, label_column]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise AnnotationError(f"{path}: a Raven selection table needs the columns {needed} "
                              f"(label column: label_column=...); it lacks {missing} and has "
                              f"{list(frame.columns)}")
    if file_column is None:
        file_column = next((c for c in ("Begin Path", "Begin File") if c in frame.columns), None)
    elif file_column not in frame.columns:
        raise AnnotationError(f"{path}: no file column {file_column!r}; it has "
                              f"{list(frame.columns)}")
    files = (frame[file_column].map(lambda p: Path(p.replace("\\", "/")).name)
             if file_column else pd.Series([path.name.split(".")[0]] * len(frame)))
    if "View" in frame.columns:  # Raven writes a selection once per view (waveform too)
        keep = ~frame["View"].str.startswith("Waveform")
        frame, files = frame[keep], files[keep]
    return _annotations(path, files, frame[RAVEN_TIMES[0]], frame[RAVEN_TIMES[1]],
                        frame[label_column], frame.index + 2)


def read_audacity(path):
    """An Audacity label file -> (annotations, problems); the recording is its stem."""
    path = Path(path)
    starts, ends, labels, lines = [], [], [], []
    for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip() or text.startswith("\\"):
            continue  # a spectral selection's frequency line
        parts = text.split("\t")
        starts.append(parts[0])
        ends.append(parts[1] if len(parts) > 1 else "")
        labels.append(parts[2] if len(parts) > 2 else "")
        lines.append(n)
    files = pd.Series([path.stem] * len(starts))
    return _annotations(path, files, pd.Series(starts), pd.Series(ends), pd.Series(labels),
                        pd.Series(lines))


def read_csv(path, file_column="file", start_column="start", end_column="end",
             label_column="label", duration_column: str | None = None):
    """A CSV of annotations -> (annotations, problems).

    Args:
        path: the CSV.
        file_column, start_column, label_column: its columns.
        end_column: the end time's column (unused with `duration_column`).
        duration_column: a duration column instead of an end (end = start + duration).

    Returns:
        (DataFrame with `COLUMNS`, list of {table, line, reason}).
    """
    path = Path(path)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    needed = [file_column, start_column, duration_column or end_column, label_column]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise AnnotationError(f"{path}: an annotation CSV needs the columns {needed}; it lacks "
                              f"{missing} and has {list(frame.columns)}")
    starts = frame[start_column]
    if duration_column:
        ends = pd.to_numeric(starts, errors="coerce") + pd.to_numeric(
            frame[duration_column], errors="coerce")
        ends = ends.map(lambda x: "" if pd.isna(x) else repr(float(x)))
    else:
        ends = frame[end_column]
    files = frame[file_column].map(lambda p: Path(p.replace("\\", "/")).name)
    return _annotations(path, files, starts, ends, frame[label_column], frame.index + 2)


def read_class_folders(root, negatives=NEGATIVE_FOLDERS):
    """A folder of class folders -> (annotations covering each recording, problems).

    Each recording's annotation spans [0, its duration); a recording of a negatives
    folder gets none (a negative throughout). Unreadable recordings are problems.
    """
    root = Path(root)
    if not root.is_dir():
        raise AnnotationError(f"{root} is not a folder of class folders")
    rows, problems, negative_files = [], [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for line, path in enumerate(audio_io.list_audio([folder], allow_empty=True), start=1):
            if folder.name.lower() in {n.lower() for n in negatives}:
                negative_files.append(str(path))
                continue
            try:
                duration = audio_io.info(path).duration
            except audio_io.AudioError as error:
                problems.append(_problem(folder, line, f"{path.name}: {error}"))
                continue
            rows.append({"file": str(path.relative_to(root)), "start": 0.0, "end": duration,
                         "label": folder.name, "table": str(folder), "line": line})
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame.attrs["negative_files"] = [str(Path(p).relative_to(root)) for p in negative_files]
    return frame, problems


def _annotations(table, files, starts, ends, labels, lines):
    rows, problems = [], []
    for file, start, end, label, line in zip(files, starts, ends, labels, lines):
        try:
            start_s, end_s = float(start), float(end)
        except ValueError:
            problems.append(_problem(table, line, f"times {start!r}, {end!r} are not numbers"))
            continue
        if not str(label).strip():
            problems.append(_problem(table, line, "no label"))
        elif end_s <= start_s:
            problems.append(_problem(table, line, f"ends ({end_s:g} s) before it starts "
                                                  f"({start_s:g} s)"))
        elif start_s < 0:
            problems.append(_problem(table, line, f"starts before 0 s ({start_s:g})"))
        else:
            rows.append({"file": str(file), "start": start_s, "end": end_s,
                         "label": str(label).strip(), "table": str(table), "line": int(line)})
    return pd.DataFrame(rows, columns=COLUMNS), problems


def read(paths, kind: str = "auto", **options):
    """Annotation tables of one kind (or each by its look, `auto`) -> one table + problems.

    `auto`: a folder is a class-folder layout, `*.selections.txt` / a table with Raven's
    time columns is Raven, other `.txt` Audacity, `.csv` CSV.
    """
    frames, problems = [], []
    for path in map(Path, paths if isinstance(paths, (list, tuple)) else [paths]):
        this = kind if kind != "auto" else _kind_of(path)
        reader = {"raven": read_raven, "audacity": read_audacity, "csv": read_csv,
                  "folders": read_class_folders}.get(this)
        if reader is None:
            raise AnnotationError(f"annotation kind {this!r}: one of raven, audacity, csv, "
                                  "folders, auto")
        frame, bad = reader(path, **options)
        frames.append(frame)
        problems += bad
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
    table.attrs["negative_files"] = sum((f.attrs.get("negative_files", []) for f in frames), [])
    return table, problems


def _kind_of(path: Path) -> str:
    if path.is_dir():
        return "folders"
    if path.suffix.lower() == ".csv":
        return "csv"
    with open(path, encoding="utf-8", errors="replace") as f:
        header = f.readline()
    return "raven" if all(t in header for t in RAVEN_TIMES) else "audacity"


def windows(annotations: pd.DataFrame, audio_dir, window_s: float, hop_s: float,
            min_overlap_s: float = 0.5, min_fraction: float = 0.5,
            classes: list[str] | None = None, negative_files=()):
    """Every window of the annotated recordings, with its labels -> (windows, problems).

    Args:
        annotations: from `read` (file names relative to `audio_dir`, or bare names
            found anywhere under it by stem).
        audio_dir: where the recordings are.
        window_s: window length.
        hop_s: seconds between window starts.
        min_overlap_s: an annotation labels a window it overlaps by at least this much,
        min_fraction: or by at least this fraction of itself (a short call cut by a
            window boundary labels the window holding most of it).
        classes: the classes kept (None: every label seen, sorted); an annotation with
            another label is a problem.
        negative_files: recordings (relative to `audio_dir`) with no annotations that
            are negatives throughout.

    Returns:
        (DataFrame `path`, `file`, `start_s`, `end_s`, `labels` (list), `group`;
         problems as {table, line, reason}).
    """
    audio_dir = Path(audio_dir)
    found = {}
    for path in audio_io.list_audio([audio_dir], allow_empty=True):
        found.setdefault(str(path.relative_to(audio_dir)), path)
        found.setdefault(path.name, path)
        found.setdefault(path.stem, path)
    classes = sorted(set(annotations["label"])) if classes is None else list(classes)
    problems, rows = [], []
    by_file = {}
    for row in annotations.to_dict("records"):
        path = found.get(row["file"]) or found.get(Path(row["file"]).stem)
        if path is None:
            problems.append(_problem(row["table"], row["line"],
                                     f"recording {row['file']} is not in {audio_dir}"))
        elif row["label"] not in classes:
            problems.append(_problem(row["table"], row["line"],
                                     f"label {row['label']!r} is not a class"))
        else:
            by_file.setdefault(path, []).append(row)
    for name in negative_files:
        if name in found:
            by_file.setdefault(found[name], [])
    for path, rows_of_file in sorted(by_file.items()):
        try:
            duration = audio_io.info(path).duration
        except audio_io.AudioError as error:
            for row in rows_of_file:
                problems.append(_problem(row["table"], row["line"], f"{path.name}: {error}"))
            continue
        kept = []
        for row in rows_of_file:
            if row["start"] >= duration:
                problems.append(_problem(row["table"], row["line"],
                                         f"starts at {row['start']:g} s, past the end of "
                                         f"{path.name} ({duration:.3f} s)"))
                continue
            if row["end"] > duration + 1e-3:
                problems.append(_problem(row["table"], row["line"],
                                         f"ends at {row['end']:g} s, past the end of "
                                         f"{path.name} ({duration:.3f} s): cut there"))
            kept.append({**row, "end": min(row["end"], duration)})
        for start in audio_windows.window_starts(duration, window_s, hop_s):
            end = start + window_s
            labels = sorted({a["label"] for a in kept if _labels(a, start, end, min_overlap_s,
                                                                 min_fraction)})
            rows.append({"path": str(path), "file": path.name, "start_s": float(start),
                         "end_s": float(end), "labels": labels,
                         "group": str(path.relative_to(audio_dir))})
    table = pd.DataFrame(rows, columns=["path", "file", "start_s", "end_s", "labels", "group"])
    table.attrs["classes"] = classes
    return table, problems


def _labels(annotation, start, end, min_overlap_s, min_fraction) -> bool:
    overlap = min(annotation["end"], end) - max(annotation["start"], start)
    length = annotation["end"] - annotation["start"]
    return overlap > 0 and (overlap >= min_overlap_s - 1e-9
                            or overlap >= min_fraction * length - 1e-9)


def multi_hot(labels, classes: list[str]) -> np.ndarray:
    """(windows, classes) float32 targets from per-window label lists."""
    index = {c: k for k, c in enumerate(classes)}
    y = np.zeros((len(labels), len(classes)), np.float32)
    for i, names in enumerate(labels):
        y[i, [index[n] for n in names]] = 1.0
    return y


def group_folds(groups, folds: int, seed: int = 0) -> np.ndarray:
    """A fold per row, every group (recording or site) whole in one fold; groups are
    spread over folds by size (largest first), ties broken by a seeded shuffle."""
    groups = np.asarray(groups)
    names, counts = np.unique(groups, return_counts=True)
    if len(names) < folds:
        raise AnnotationError(f"{len(names)} recordings (groups) cannot fill {folds} folds")
    order = np.random.default_rng(seed).permutation(len(names))
    order = order[np.argsort(-counts[order], kind="stable")]
    load, fold_of = np.zeros(folds), {}
    for k in order:
        target = int(np.argmin(load))
        fold_of[names[k]] = target
        load[target] += counts[k]
    return np.array([fold_of[g] for g in groups])

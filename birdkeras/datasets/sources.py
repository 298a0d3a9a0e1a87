"""Readers for each Kaggle download's metadata, into one normalised table.

Every reader returns the same columns (`COLUMNS`), whatever the year's own columns,
folder conventions and quirks (2020's 'Scientific_Common' secondary labels and "Not
specified" coordinates, 2021's label folders, 2025's `['']`, `None` coordinates,
trailing spaces and non-XC collections). Nothing is dropped or changed silently:

- rows that cannot be used (no label, no file name, a header row repeated in the middle
  of the file, as concatenated CSVs have) are returned with their line and reason;
- values that had to be coerced (a rating `abc` or `nan`, a longitude `1e999`, a
  malformed `secondary_labels` list) are kept as NaN / the parsed list and returned
  with their line, column, text and why.

Empty cells and the usual "no value" markers (`None`, `Not specified`) are plain
missing values, not coercions.
"""

from __future__ import annotations

import ast
import math
import os
import re
from pathlib import Path

import pandas as pd

from birdkeras.config import catalog
from birdkeras.datasets import soundscapes
from birdkeras.errors import UserError

COLUMNS = ("source", "recording_id", "xc_id", "primary_label", "secondary_labels", "rating",
           "author", "latitude", "longitude", "path", "duration_s",
           # Soundscape windows (empty for focal recordings): where the window starts, its
           # multi-hot labels, and where and when it was recorded (from the file name).
           "start_s", "labels", "site", "date", "hour",
           # Rows of one group never straddle folds: a recording, or a soundscape's site
           # (its file when the name has no site).
           "group")
_XC_IN_NAME = re.compile(r"XC(\d+)", re.IGNORECASE)
_XC_IN_URL = re.compile(r"xeno-canto\.org/(\d+)")


class SourceError(UserError):
    """A source's metadata is missing or unusable; the message names the file."""


def parse_list(text) -> list[str]:
    """Python-literal list ("['a', 'b']", "[]", "['']") or plain text to clean strings."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return []
    text = str(text).strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            values = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            values = text.strip("[]").replace("'", "").split(",")
    else:
        values = re.split(r"[,\s]+", text)
    return [str(v).strip() for v in values if str(v).strip()]


def parse_float(value) -> float:
    """Numbers as floats; '', 'None', 'Not specified' and the like as NaN."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


_MISSING = {"", "none", "not specified", "null"}
# Valid ranges of the numeric columns; a value outside is coerced to NaN and reported.
_RANGES = {"rating": (0.0, 5.0), "latitude": (-90.0, 90.0), "longitude": (-180.0, 180.0),
           "duration": (0.0, math.inf)}


class Coercions:
    """Reads a row's values, recording every one it had to coerce."""

    def __init__(self, source: str):
        self.source, self.items = source, []

    def _record(self, line: int, column: str, text: str, result, why: str) -> None:
        self.items.append({"source": self.source, "line": line, "column": column,
                           "value": text, "as": str(result), "why": why})

    def number(self, rec: dict, line: int, column: str) -> float:
        text = str(rec.get(column, "")).strip()
        if text.lower() in _MISSING:
            return math.nan
        value = parse_float(text)
        low, high = _RANGES.get(column, (-math.inf, math.inf))
        why = ("not a number" if math.isnan(value) and text.lower() != "nan"
               else "NaN" if math.isnan(value)
               else "not finite" if math.isinf(value)
               else f"outside [{low:g}, {high:g}]" if not low <= value <= high else None)
        if why:
            self._record(line, column, text, math.nan, why)
            return math.nan
        return value

    def labels(self, rec: dict, line: int, column: str) -> list[str]:
        text = str(rec.get(column, "")).strip()
        values = parse_list(text)
        if text.startswith("["):
            try:
                ok = isinstance(ast.literal_eval(text), (list, tuple))
            except (ValueError, SyntaxError):
                ok = False
            if not ok:
                self._record(line, column, text, values, "malformed list")
        return values


def parse_xc_id(filename: str, url: str = "") -> int | None:
    for pattern, text in ((_XC_IN_NAME, filename), (_XC_IN_URL, url)):
        match = pattern.search(str(text or ""))
        if match:
            return int(match.group(1))
    return None


def read_source(root: str | Path, source: str):
    """Reads one source under the data root.

    Returns (normalised rows, rejected rows with line and reason, coerced values with
    line, column, text and why), three DataFrames.
    """
    if source in catalog.SOUNDSCAPE_SOURCES:
        return read_soundscape_windows(root, source)
    src = catalog.SOURCES[source]
    meta_path = Path(root) / src.folder / src.metadata
    raw = _read_metadata(meta_path, source, root)
    for col in (src.label_column, "filename"):
        if col not in raw.columns:
            raise SourceError(f"{source}: {meta_path} has no column {col!r}; "
                              f"columns are {list(raw.columns)}")
    # 2020 and XC name secondary species 'Scientific_Common'; map them to codes.
    name_to_code = sci_common_to_code(root, raw) if src.label_column == "ebird_code" else {}
    coerce = Coercions(source)
    rows, rejected = [], []
    for line, rec in enumerate(raw.to_dict("records"), start=2):
        label = rec[src.label_column].strip()
        filename = rec["filename"].strip()
        reason = None
        if label == src.label_column and filename == "filename":
            reason = "repeated header row"
        elif not label or not filename:
            reason = "empty primary label or filename"
        if reason:
            rejected.append({"source": source, "line": line, "path": filename,
                             "reason": reason})
            continue
        rows.append(_normalised_row(source, rec, line, label, filename, name_to_code, coerce))
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["xc_id"] = table["xc_id"].astype("Int64")
    return (table, pd.DataFrame(rejected, columns=("source", "line", "path", "reason")),
            pd.DataFrame(coerce.items, columns=("source", "line", "column", "value", "as",
                                                "why")))


def _read_metadata(path: Path, source: str, root) -> pd.DataFrame:
    if not path.is_file():
        raise SourceError(f"{source}: metadata file not found: {path} (is data.root={root} "
                          f"the folder holding {catalog.SOURCES[source].folder}/?)")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise SourceError(f"{source}: cannot parse {path}: {err}") from err


def _normalised_row(source: str, rec: dict, line: int, label: str, filename: str,
                    name_to_code: dict, coerce: Coercions) -> dict:
    secondaries = [name_to_code.get(s, s) for s in coerce.labels(rec, line, "secondary_labels")]
    # 2025's non-Xeno-Canto collections (iNat, CSA) have no xc_id, whatever the URL says.
    from_xc = rec.get("collection", "XC") == "XC"
    return {
        "source": source,
        "recording_id": f"{source}/{filename}",
        "xc_id": parse_xc_id(filename, rec.get("url", "")) if from_xc else None,
        "primary_label": label,
        "secondary_labels": [s for s in secondaries if s != label],
        "rating": coerce.number(rec, line, "rating"),
        "author": rec.get("author", "").strip(),
        "latitude": coerce.number(rec, line, "latitude"),
        "longitude": coerce.number(rec, line, "longitude"),
        "path": _audio_path(source, label, filename),
        "duration_s": coerce.number(rec, line, "duration"),
        "start_s": math.nan, "labels": [], "site": None,
        "date": rec.get("date", "").strip() or None, "hour": _hour(rec.get("time", "")),
        "group": f"{source}/{filename}",
    }


def _hour(text: str) -> int | None:
    """The hour of a metadata `time` ("07:30", "7:30 am"), or None."""
    match = re.match(r"\s*(\d{1,2})[:h]", str(text))
    return int(match.group(1)) if match and int(match.group(1)) < 24 else None


def read_soundscape_windows(root: str | Path, source: str):
    """A labelled-soundscape source (`catalog.SOUNDSCAPE_SOURCES`): one row per labelled
    window, its labels multi-hot, its site/date/hour from the file name; the same three
    tables as `read_source` (a malformed label file raises instead of rejecting rows)."""
    table = soundscapes.read_labels(root, catalog.SOUNDSCAPE_SOURCES[source])
    rows = [_window_row(source, root, r, r["file"], f"{source}/{r['site'] or r['file']}",
                        r["site"], r["date"], None if pd.isna(r["hour"]) else int(r["hour"]))
            for r in table.to_dict("records")]
    return _window_tables(rows, [])


def _window_row(source: str, root, r: dict, name: str, group: str, site=None, date=None,
                hour=None) -> dict:
    """A manifest row of one labelled window `r` (path, start_s, end_s, labels) of the
    recording `name`."""
    return {
        "source": source, "recording_id": f"{source}/{name}@{r['start_s']:g}",
        "xc_id": None, "primary_label": "", "secondary_labels": [], "rating": math.nan,
        "author": "", "latitude": math.nan, "longitude": math.nan,
        "path": Path(os.path.relpath(r["path"], root)).as_posix(),
        "duration_s": r["end_s"] - r["start_s"], "start_s": r["start_s"],
        "labels": list(r["labels"]), "site": site, "date": date, "hour": hour,
        "group": group,
    }


def _window_tables(rows: list[dict], rejected: list[dict]):
    """`read_source`'s three tables for window rows and their rejected inputs."""
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["xc_id"] = frame["xc_id"].astype("Int64")
    return (frame, pd.DataFrame(rejected, columns=("source", "line", "path", "reason")),
            pd.DataFrame(columns=("source", "line", "column", "value", "as", "why")))


OWN = "own"  # the source name of `data.annotations`' windows


def read_annotation_windows(root: str | Path, acfg, window_s: float):
    """Your own annotated recordings (`data.annotations`, an `AnnotationsConfig`): one
    row per window (every `hop_s`) of each annotated recording, its labels multi-hot
    (unannotated stretches: negatives), grouped by recording; the same three tables as
    `read_source`, an annotation that cannot be used (unknown recording, past the end,
    unreadable audio) a rejected row with its table and line."""
    from birdkeras.datasets import annotations  # noqa: PLC0415 - only for own data

    root = Path(root)
    audio_dir = root / acfg.audio_dir
    if not audio_dir.is_dir():
        raise SourceError(f"data.annotations.audio_dir={acfg.audio_dir}: {audio_dir} is not "
                          "a folder")
    tables = [Path(t) if Path(t).is_absolute() else root / t for t in acfg.tables]
    for table in tables:
        if not table.exists():
            raise SourceError(f"data.annotations.tables: {table} does not exist")
    found, problems = annotations.read(tables, acfg.format)
    cut, more = annotations.windows(found, audio_dir, window_s, acfg.hop_s or window_s,
                                    acfg.min_overlap_s,
                                    negative_files=found.attrs.get("negative_files", ()))
    rejected = [{"source": OWN, "line": p["line"], "path": str(p["table"]),
                 "reason": p["reason"]} for p in problems + more]
    rows = [_window_row(OWN, root, r, r["group"], f"{OWN}/{r['group']}")
            for r in cut.to_dict("records")]
    return _window_tables(rows, rejected)


def sci_common_to_code(root: str | Path, raw: pd.DataFrame) -> dict[str, str]:
    """'Scientific name_Common Name' -> eBird code.

    From every eBird taxonomy under the data root (2021-2024 ship one) and from the
    file's own (primary_label, ebird_code) pairs, so that a secondary species that is
    nobody's primary in this file still maps to its code.
    """
    mapping = {}
    for src in catalog.SOURCES.values():
        path = Path(root) / src.folder / (src.taxonomy or "")
        if src.taxonomy and src.taxonomy.startswith("eBird") and path.is_file():
            taxonomy = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
            if {"SCI_NAME", "PRIMARY_COM_NAME", "SPECIES_CODE"} <= set(taxonomy.columns):
                mapping.update(zip(taxonomy["SCI_NAME"].str.strip() + "_"
                                   + taxonomy["PRIMARY_COM_NAME"].str.strip(),
                                   taxonomy["SPECIES_CODE"].str.strip()))
    if "primary_label" in raw.columns:
        mapping.update(zip(raw["primary_label"].str.strip(), raw["ebird_code"].str.strip()))
    return mapping


def _audio_path(source: str, label: str, filename: str) -> str:
    """Audio path relative to the data root, by each source's folder convention."""
    if Path(filename).is_absolute() or filename.startswith("\\"):
        return filename  # kept as given, so that the manifest rejects and records it
    return catalog.audio_path(source, label, filename)


def specialist_classes(root: str | Path, source: str, column: str, values) -> list[str]:
    """The competition's classes (`read_classes`, in order) whose taxonomy `column` is one
    of `values` (a specialist's classes, e.g. class_name in [Amphibia, Insecta]).

    Args:
        root: the data root.
        source: the competition.
        column: a taxonomy column.
        values: the values kept.

    Returns:
        The classes, in the competition's order.
    """
    table, taxonomy = read_taxonomy(root, source, "data.specialist")
    if column not in table.columns or "primary_label" not in table.columns:
        raise SourceError(f"data.specialist_column={column!r}: {taxonomy} has columns "
                          f"{list(table.columns)}")
    unknown = sorted(set(values) - set(table[column]))
    if unknown:
        raise SourceError(f"data.specialist: {unknown} are not values of {column} in "
                          f"{taxonomy} (it has {sorted(set(table[column]))})")
    wanted = set(table.loc[table[column].isin(set(values)), "primary_label"].str.strip())
    classes = [c for c in read_classes(root, source) if c in wanted]
    if not classes:
        raise SourceError(f"data.specialist={list(values)}: none of the competition's "
                          f"classes has {column} among them in {taxonomy}")
    return classes


def read_taxonomy(root: str | Path, source: str, needed_by: str) -> tuple[pd.DataFrame, Path]:
    """A competition's taxonomy table (strings) and its path; missing: an error saying
    what (`needed_by`) needs it."""
    folder = Path(root) / catalog.SOURCES[source].folder
    taxonomy = folder / (catalog.SOURCES[source].taxonomy or "taxonomy.csv")
    if not taxonomy.is_file():
        raise SourceError(f"{needed_by} needs {source}'s taxonomy: {taxonomy} is missing")
    return pd.read_csv(taxonomy, dtype=str, keep_default_na=False, encoding="utf-8-sig"), taxonomy


def read_classes(root: str | Path, source: str) -> list[str]:
    """The competition's class list: its sample submission's columns, in order (else its
    taxonomy's `primary_label` rows, in order)."""
    folder = Path(root) / catalog.SOURCES[source].folder
    sample = folder / "sample_submission.csv"
    if sample.is_file():
        columns = pd.read_csv(sample, nrows=0, encoding="utf-8-sig").columns
        classes = [c for c in columns if c not in ("row_id", "site", "birds", "target")]
        if not classes:
            raise SourceError(f"{source}: {sample} has no class columns "
                              f"(columns: {list(columns)})")
        return classes
    taxonomy = folder / (catalog.SOURCES[source].taxonomy or "taxonomy.csv")
    if taxonomy.is_file():
        table = pd.read_csv(taxonomy, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        if "primary_label" in table.columns:
            return table["primary_label"].str.strip().tolist()
    raise SourceError(f"{source}: neither {sample} nor a taxonomy with primary_label "
                      f"({taxonomy}): cannot read the competition's classes")

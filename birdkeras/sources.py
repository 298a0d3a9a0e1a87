"""Readers for each Kaggle download's metadata, into one normalised table.

Every reader returns the same columns (`COLUMNS`), whatever the year's own columns,
folder conventions and quirks (2020's 'Scientific_Common' secondary labels and "Not
specified" coordinates, 2021's label folders, 2025's `['']`, `None` coordinates,
trailing spaces and non-XC collections). Rows that cannot be used (no label, no file
name) are returned separately with the reason, never silently dropped.
"""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import pandas as pd

from birdkeras import layout

COLUMNS = ("source", "recording_id", "xc_id", "primary_label", "secondary_labels", "rating",
           "author", "latitude", "longitude", "path", "duration_s")
_XC_IN_NAME = re.compile(r"XC(\d+)", re.IGNORECASE)
_XC_IN_URL = re.compile(r"xeno-canto\.org/(\d+)")


class SourceError(ValueError):
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


def parse_xc_id(filename: str, url: str = "") -> int | None:
    for pattern, text in ((_XC_IN_NAME, filename), (_XC_IN_URL, url)):
        match = pattern.search(str(text or ""))
        if match:
            return int(match.group(1))
    return None


def read_source(root: str | Path, source: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reads one source under the data root: (normalised rows, rejected rows with reason)."""
    folder = Path(root) / layout.SOURCE_DIRS[source]
    meta_path = folder / layout.METADATA_FILES[source]
    if not meta_path.is_file():
        raise SourceError(
            f"{source}: metadata file not found: {meta_path} (is data.root={root} the "
            f"folder holding {layout.SOURCE_DIRS[source]}/?)"
        )
    try:
        raw = pd.read_csv(meta_path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise SourceError(f"{source}: cannot parse {meta_path}: {err}") from err
    label_col = "ebird_code" if source in ("birdclef-2020", "xeno-canto") else "primary_label"
    for col in (label_col, "filename"):
        if col not in raw.columns:
            raise SourceError(f"{source}: {meta_path} has no column {col!r}; "
                              f"columns are {list(raw.columns)}")
    # 2020 and XC name secondary species 'Scientific_Common'; map them to codes.
    name_to_code = {}
    if source in ("birdclef-2020", "xeno-canto"):
        name_to_code = dict(zip(raw["primary_label"].str.strip(), raw["ebird_code"].str.strip()))

    rows, rejected = [], []
    for line, rec in enumerate(raw.to_dict("records"), start=2):
        label = rec[label_col].strip()
        filename = rec["filename"].strip()
        if not label or not filename:
            rejected.append({"source": source, "line": line, "path": filename,
                             "reason": "empty primary label or filename"})
            continue
        secondaries = parse_list(rec.get("secondary_labels", ""))
        if name_to_code:
            secondaries = [name_to_code.get(s, s) for s in secondaries]
        rows.append({
            "source": source,
            "recording_id": f"{source}/{filename}",
            "xc_id": parse_xc_id(filename, rec.get("url", "")) if (
                source != "birdclef-2025" or rec.get("collection", "XC") == "XC") else None,
            "primary_label": label,
            "secondary_labels": [s for s in secondaries if s != label],
            "rating": parse_float(rec.get("rating", "")),
            "author": rec.get("author", "").strip(),
            "latitude": parse_float(rec.get("latitude", "")),
            "longitude": parse_float(rec.get("longitude", "")),
            "path": _audio_path(source, label, filename),
            "duration_s": parse_float(rec.get("duration", "")),
        })
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["xc_id"] = table["xc_id"].astype("Int64")
    return table, pd.DataFrame(rejected, columns=("source", "line", "path", "reason"))


def _audio_path(source: str, label: str, filename: str) -> str:
    """Audio path relative to the data root, by each source's folder convention."""
    if Path(filename).is_absolute() or filename.startswith("\\"):
        return filename  # kept as given, so that the manifest rejects and records it
    folder = layout.SOURCE_DIRS[source]
    if source == "xeno-canto":
        return f"{folder}/{layout.xc_folder(label)}/{label}/{filename}"
    if source in ("birdclef-2020", "birdclef-2021"):
        return f"{folder}/{layout.AUDIO_DIRS[source]}/{label}/{filename}"
    return f"{folder}/{layout.AUDIO_DIRS[source]}/{filename}"


def read_classes(root: str | Path, source: str) -> list[str]:
    """The competition's class list, in its sample submission's column order."""
    path = Path(root) / layout.SOURCE_DIRS[source] / "sample_submission.csv"
    if not path.is_file():
        raise SourceError(f"{source}: sample submission not found: {path}")
    columns = pd.read_csv(path, nrows=0, encoding="utf-8-sig").columns
    classes = [c for c in columns if c not in ("row_id", "site", "birds", "target")]
    if not classes:
        raise SourceError(f"{source}: {path} has no class columns (columns: {list(columns)})")
    return classes

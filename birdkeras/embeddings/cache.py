"""The BirdCLEF+ 2026 notebooks' embedding cache, both ways.

    birdkeras embed-cache export --embeddings work/emb/soundscapes \
        --taxonomy data/kaggle/birdclef-2026/taxonomy.csv --out work/perch_cache
    birdkeras embed-cache import --cache /kaggle/input/perch-meta \
        --classes data/kaggle/birdclef-2026/sample_submission.csv \
        --labels birdclef-2026 --root data/kaggle --out work/emb/soundscapes

The cache is what the public Perch v2 + ProtoSSM notebook and its forks write and read:
`full_perch_meta.parquet`, one row per 5 s window (`row_id` = `<file stem>_<end s>`,
`filename`, `site`, `hour_utc`), and `full_perch_arrays.npz` with `emb_full`
(windows, dim) and `scores_full_raw` (windows, competition classes: the frozen model's
logits mapped to them), rows in the same order. `export` writes an embedding folder
(`birdkeras embed`) as such a cache (the logits mapped by the taxonomy as the route
maps them; birdkeras adds `start_s` and `group` columns, which the notebooks' readers
ignore); `import` turns a cache (a public one, or ours) into an embedding folder that
`birdkeras route` trains on, its windows labelled from a labelled soundscape source.
A route trained on an imported cache does not know its embedding model: give it to
predict as `infer.embedder` (or `import --model`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from birdkeras import storage
from birdkeras.datasets import soundscapes
from birdkeras.embeddings import extract, frozen
from birdkeras.errors import MissingPathError, UserError
from birdkeras.records import format as record_format
from birdkeras.records import shard_writer
from birdkeras.records.format import (
    DATE, EMBEDDING, FILE, GROUP, HOUR, LOGITS, PATH, SITE, START_S, TARGETS)

META = "full_perch_meta.parquet"
ARRAYS = "full_perch_arrays.npz"
EMBEDDINGS, SCORES = "emb_full", "scores_full_raw"
WINDOW_S = 5.0


class CacheError(UserError):
    """A cache that cannot be read or written as asked; the message names what."""


def export(folder: str, out: str | Path, taxonomy: str | Path | None = None) -> dict:
    """An embedding folder as the notebooks' cache in `out`.

    Args:
        folder: a `birdkeras embed` folder.
        out: the cache folder (META and ARRAYS are written there).
        taxonomy: the competition's taxonomy.csv, to map the model's logits to the
            folder's classes; not needed when the model scores those classes already.

    Returns:
        {"windows", "dim", "classes", "scores": whether scores_full_raw was written}.
    """
    table = extract.read(folder)
    card, classes = table.card, table.card["classes"]
    scores = None
    if table.logits is not None and classes:
        if card["model_classes"] == classes:
            scores = table.logits
        elif taxonomy is None:
            raise CacheError(f"{folder}'s model scores {len(card['model_classes'])} classes, "
                             f"not its {len(classes)}: give --taxonomy to map them")
        else:
            competition = pd.read_csv(taxonomy, dtype=str, keep_default_na=False)
            competition = competition.set_index("primary_label").loc[classes].reset_index()
            scores = frozen.mapped_logits(table.logits,
                                          frozen.map_classes(card["model_classes"], competition))
    ends = np.round(table.starts + WINDOW_S).astype(int)
    meta = pd.DataFrame({"row_id": [f"{Path(f).stem}_{e}" for f, e in zip(table.files, ends)],
                         "filename": table.files, "site": table.sites,
                         "hour_utc": table.hours, "start_s": table.starts,
                         "group": table.groups})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta.to_parquet(out / META, index=False)
    arrays = {EMBEDDINGS: table.embeddings}
    if scores is not None:
        arrays[SCORES] = scores.astype(np.float32)
    np.savez(out / ARRAYS, **arrays)
    (out / "classes.json").write_text(json.dumps(classes) + "\n")
    return {"windows": len(meta), "dim": int(table.embeddings.shape[1]), "classes": len(classes),
            "scores": scores is not None}


def import_(cache: str | Path, out: str, classes: list[str], root=None,
            labels_source: str | None = None, model: str | None = None,
            sample_rate_hz: int = 32000, window_s: float = WINDOW_S) -> dict:
    """The notebooks' cache as an embedding folder (`birdkeras embed`'s layout).

    Args:
        cache: the cache folder (META and ARRAYS).
        out: the embedding folder to write.
        classes: the competition's classes, in order (scores_full_raw's columns, targets).
        root: the data root of `labels_source`.
        labels_source: a labelled soundscape source whose labels become the windows'
            targets (e.g. birdclef-2026); None: unlabelled.
        model: the embedding model's path, recorded for predict (None: "cache:<cache>").
        sample_rate_hz: the embedding model's rate (Perch v2: 32,000).
        window_s: its window.

    Returns:
        The folder's card.
    """
    cache = Path(cache)
    for name in (META, ARRAYS):
        if not (cache / name).is_file():
            raise MissingPathError(f"{cache / name} not found: a cache folder holds {META} "
                                   f"and {ARRAYS}")
    meta = pd.read_parquet(cache / META)
    arrays = np.load(cache / ARRAYS)
    if "row_id" not in meta.columns or EMBEDDINGS not in arrays.files:
        raise CacheError(f"{cache} is not an embedding cache: it needs a row_id column in "
                         f"{META} (has {list(meta.columns)}) and {EMBEDDINGS} in {ARRAYS} "
                         f"(has {arrays.files})")
    emb = arrays[EMBEDDINGS].astype(np.float32)
    scores = arrays[SCORES].astype(np.float32) if SCORES in arrays.files else None
    if len(emb) != len(meta) or (scores is not None and len(scores) != len(meta)):
        raise CacheError(f"{cache}: {len(meta)} rows in {META} but {len(emb)} in {EMBEDDINGS}"
                         + ("" if scores is None else f" and {len(scores)} in {SCORES}"))
    if scores is not None and scores.shape[1] != len(classes):
        raise CacheError(f"{cache}: {SCORES} has {scores.shape[1]} classes, the competition "
                         f"{len(classes)}: give the class list the cache was made with")
    windows = _windows(meta, str(cache))
    targets = _targets(windows, classes, root, labels_source) if labels_source else {}
    storage.makedirs(out)
    name = record_format.shard_name(record_format.TRAIN_ONLY_FOLD, 0, 1)
    with shard_writer.shard(out, name) as writer:
        for i, (file, start) in enumerate(windows):
            parsed = soundscapes.parse_name(file)
            site = parsed["site"] or str(meta["site"].iloc[i] if "site" in meta else "")
            hour = parsed["hour"] if parsed["hour"] is not None else int(
                meta["hour_utc"].iloc[i] if "hour_utc" in meta else -1)
            features = {EMBEDDING: emb[i], FILE: file, PATH: "", START_S: float(start),
                        SITE: site, DATE: parsed["date"] or "", HOUR: hour,
                        GROUP: site or file}
            if scores is not None:
                features[LOGITS] = scores[i]
            if (file, start) in targets:
                features[TARGETS] = targets[(file, start)]
            writer.write(record_format.encode_example(features))
        writer.summary = {"failures": []}
    card = {"model": model or f"cache:{cache}", "kind": "cache", "dim": int(emb.shape[1]),
            "model_classes": list(classes) if scores is not None else [],
            "classes": list(classes), "sample_rate_hz": sample_rate_hz,
            "window_samples": int(round(window_s * sample_rate_hz)), "pooling": "none",
            "hop_s": window_s, "annotation_problems": [], "shards": [name],
            "windows": len(windows), "failures": [], "labelled_windows": len(targets)}
    storage.write_text_atomic(storage.join(out, record_format.CARD),
                              json.dumps(card, indent=1) + "\n")
    return card


def _windows(meta: pd.DataFrame, where: str) -> list[tuple[str, float]]:
    """(file name, start s) per row: the file from `filename` (else the row id's stem +
    .ogg), the start from `start_s` (else the row id's end second - 5)."""
    rows = []
    for i, row_id in enumerate(meta["row_id"].astype(str)):
        stem, _, end = row_id.rpartition("_")
        if not stem or not end.isdigit():
            raise CacheError(f"{where}: row_id {row_id!r} (row {i}) is not <file stem>_<end s>")
        file = str(meta["filename"].iloc[i]) if "filename" in meta else f"{stem}.ogg"
        start = float(meta["start_s"].iloc[i]) if "start_s" in meta else float(end) - WINDOW_S
        rows.append((Path(file).name, start))
    return rows


def _targets(windows, classes, root, labels_source) -> dict:
    """{(file, start): multi-hot} for the cache's windows that `labels_source` labels."""
    index = {c: k for k, c in enumerate(classes)}
    wanted = set(windows)
    targets = {}
    table = soundscapes.read_labels(root, labels_source)
    for f, s, labels in zip(table["file"], table["start_s"], table["labels"]):
        key = (Path(f).name, float(s))
        if key in wanted:
            y = np.zeros(len(classes), np.float32)
            y[[index[c] for c in labels if c in index]] = 1.0
            targets[key] = y
    return targets

"""`birdkeras search`: the windows of an embedding set nearest to example clips.

    birdkeras search --embeddings work/emb --query call.wav other.wav:12.5 --top-k 50 \
        --out work/search

As perch-hoplite's and BirdNET-Analyzer's search: each query (a file, or `file:start`
for the window starting there) is embedded by the model that embedded the set (its
path is on the set's card; `--model` replaces it on another machine), a query longer
than one window is the mean of its windows' embeddings, and every window of the set is
ranked by cosine similarity to it. The results are a Raven selection table to review
(`search.selection.table.txt`: Begin Path and File Offset point at each window, so
Raven opens them across files) and `search.csv`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from birdkeras.audio import io as audio_io
from birdkeras.audio import windows as audio_windows
from birdkeras.embeddings import frozen
from birdkeras.embeddings.extract import Table, read
from birdkeras.errors import UserError


class SearchError(UserError):
    """A query or an embedding set cannot be searched; the message says which."""


def parse_query(text: str) -> tuple[Path, float | None]:
    """`file` or `file:start` (seconds) -> (path, start or None)."""
    path, _, start = str(text).rpartition(":") if ":" in str(text) else (text, "", "")
    if start:
        try:
            return Path(path), float(start)
        except ValueError:
            pass
    return Path(text), None


def embed_query(model, text: str) -> np.ndarray:
    """One query's embedding: its window at `start`, or the mean over the file's windows."""
    path, start = parse_query(text)
    if not path.is_file():
        raise SearchError(f"query {path} is not a file")
    window_s = model.window_samples / model.sample_rate_hz
    wave = audio_io.load(path, model.sample_rate_hz, allow_silence=True)
    duration = len(wave) / model.sample_rate_hz
    if start is not None and start >= duration:
        raise SearchError(f"query {text}: starts at {start:g} s, past the end of {path.name} "
                          f"({duration:.2f} s)")
    starts = ([start] if start is not None
              else audio_windows.window_starts(duration, window_s, window_s))
    emb, _ = model(audio_windows.cut(wave, model.sample_rate_hz, starts, window_s))
    return emb.mean(axis=0)


def nearest(table: Table, query: np.ndarray, top_k: int) -> np.ndarray:
    """(rows, cosine similarities) of the `top_k` windows nearest to `query`."""
    unit = table.embeddings / (np.linalg.norm(table.embeddings, axis=1, keepdims=True) + 1e-12)
    scores = unit @ (query / (np.linalg.norm(query) + 1e-12))
    rows = np.argsort(-scores, kind="stable")[:top_k]
    return rows, scores[rows]


def run(embedding_dirs, queries, out, top_k: int = 50, model_path=None) -> pd.DataFrame:
    """Searches the embedding folders for each query; writes the Raven table and CSV.

    Args:
        embedding_dirs: folders of `birdkeras embed` (one model).
        queries: `file` or `file:start` strings.
        out: the results folder.
        top_k: windows kept per query.
        model_path: the embedding model (None: the one on the first folder's card).

    Returns:
        The results: query, rank, file, path, start, end, similarity.
    """
    tables = [read(d) for d in embedding_dirs]
    models = {t.card["model"] for t in tables}
    if len(models) > 1:
        raise SearchError(f"the embedding folders were made by different models: {sorted(models)}")
    card = tables[0].card
    table = tables[0] if len(tables) == 1 else Table.concat(
        tables, None, len(card["classes"]) if all(t.card["classes"] == card["classes"]
                                                   for t in tables) else 0)
    model = frozen.load(model_path or card["model"],
                        card["window_samples"] / card["sample_rate_hz"])
    window_s = card["window_samples"] / card["sample_rate_hz"]
    rows = []
    for text in queries:
        found, scores = nearest(table, embed_query(model, text), top_k)
        for rank, (r, score) in enumerate(zip(found, scores), start=1):
            rows.append({"query": str(text), "rank": rank, "file": table.files[r],
                         "path": table.paths[r], "start": float(table.starts[r]),
                         "end": float(table.starts[r]) + window_s, "similarity": float(score)})
    results = pd.DataFrame(rows)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results.to_csv(out / "search.csv", index=False)
    raven = pd.DataFrame({
        "Selection": np.arange(1, len(results) + 1), "View": "Spectrogram 1", "Channel": 1,
        "Begin Time (s)": results["start"], "End Time (s)": results["end"],
        "Low Freq (Hz)": 0, "High Freq (Hz)": card["sample_rate_hz"] / 2,
        "Query": results["query"], "Rank": results["rank"],
        "Similarity": results["similarity"].round(4), "Begin Path": results["path"],
        "File Offset (s)": results["start"]})
    raven.to_csv(out / "search.selection.table.txt", sep="\t", index=False)
    return results

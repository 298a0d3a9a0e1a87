"""`birdkeras embed`: a frozen model's per-window embeddings, in resumable shards.

    birdkeras embed --model /kaggle/input/perch_v2_cpu/1 \
        --audio data/kaggle/birdclef-2026/train_soundscapes --labels birdclef-2026 \
        --root data/kaggle --out work/emb/train_soundscapes
    birdkeras embed --model work/b0_pre/best.keras --cfg configs/b0_ft.yaml --manifest \
        --out work/emb/clips

Soundscapes (folders of audio) are cut into windows every `hop_s` seconds covering each
file; training clips (the config's manifest) give up to `max_windows` consecutive
windows from their start. Each window's record holds its embedding, the model's logits
(when it has them), its file, start, site, date and hour (from the file name), its
group (site, else file: folds never split one) and, where labels exist (a labelled
soundscape source, or the manifest's primary and secondary labels), its multi-hot
targets over the competition's classes. Shards are written like a TFRecord build
(chunks of files, temporary name, rename, done marker): a killed run started again
redoes only unfinished shards and holds every window once. `read` loads a folder back
as arrays.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd

from birdkeras import storage
from birdkeras.audio import io as audio_io
from birdkeras.audio import windows
from birdkeras.datasets import annotations, soundscapes
from birdkeras.embeddings import frozen
from birdkeras.records import format as record_format
from birdkeras.records import jobs, shard_writer
from birdkeras.records.format import (  # an embedding record's keys
    DATE, EMBEDDING, FILE, GROUP, HOUR, LOGITS, PATH, SITE, START_S, TARGETS)


@dataclasses.dataclass
class Table:
    """Windows with their embeddings: one embedding folder (`read`) in file then start
    order, or several side by side (`concat`), as the route trains on them."""

    embeddings: np.ndarray  # (n, dim)
    logits: np.ndarray | None  # (n, model classes), or mapped to a competition's classes
    targets: np.ndarray | None  # (n, classes) where labelled, NaN rows where not
    files: np.ndarray
    paths: np.ndarray
    starts: np.ndarray
    sites: np.ndarray
    hours: np.ndarray  # -1 where the name has no hour
    groups: np.ndarray
    card: dict

    @property
    def labelled(self) -> np.ndarray:
        return (np.zeros(len(self.files), bool) if self.targets is None
                else ~np.isnan(self.targets).any(axis=1))

    @classmethod
    def concat(cls, tables: list[Table], logits: np.ndarray | None, num_classes: int) -> Table:
        """`tables` one after the other, with `logits` given (e.g. mapped to the
        competition's classes) and a table without targets unlabelled (NaN)."""
        cat = lambda key: np.concatenate([getattr(t, key) for t in tables])  # noqa: E731
        targets = [t.targets if t.targets is not None
                   else np.full((len(t.files), num_classes), np.nan, np.float32) for t in tables]
        return cls(cat("embeddings"), logits, np.concatenate(targets).astype(np.float32),
                   cat("files"), cat("paths"), cat("starts"), cat("sites"), cat("hours"),
                   cat("groups"), tables[0].card)


def run(model_path, out: str, audio=None, clips: pd.DataFrame | None = None, root=None,
        labels_source: str | None = None, classes: list[str] | None = None,
        hop_s: float = 5.0, max_windows: int = 6, files_per_shard: int = 32,
        batch_size: int = 16, progress: bool = True, runner: str = "local",
        beam_args=(), window_s: float | None = None, annotations=None,
        min_overlap_s: float = 0.5, model_runtime: str = "onnx") -> dict:
    """Embeds `audio` (files/folders of soundscapes) or `clips` (manifest rows, paths
    under `root`) into shards in `out`; returns the card. `runner`: "local" or "beam"
    (shards written by Beam workers, each loading the model once).

    Args:
        model_path: the frozen model (a SavedModel folder or a `.keras`).
        out: the shard folder.
        audio: soundscape files and/or folders (or None).
        clips: manifest rows of training clips (or None).
        root: the data root of `clips` and `labels_source`.
        labels_source: a source whose labelled soundscapes label `audio`'s windows.
        classes: the competition's classes (targets' order).
        hop_s: seconds between soundscape windows.
        max_windows: windows per training clip, from its start.
        files_per_shard: files per shard.
        batch_size: windows per model call.
        progress: a progress bar.
        runner: "local" or "beam".
        beam_args: Beam pipeline options.
        window_s: the windows' length for a model that pools its own over longer ones
            (BirdNET's 3 s crops in 5 s windows); None: the model's own.
        annotations: your own labels (`birdkeras.datasets.annotations.read`'s table) for
            the recordings under `audio[0]`: only annotated recordings (and negatives
            folders) are embedded, every window labelled (unannotated stretches are
            negatives), grouped by recording; the classes are `classes` or every label.
        min_overlap_s: an annotation labels a window it overlaps this much (or by half
            of itself).
        model_runtime: an `.onnx` model's runtime: "onnx" or "openvino".

    Returns:
        The folder's card (model, dim, classes, windows, failures).
    """
    model = _embedder(str(model_path), window_s, model_runtime)
    problems = []
    if annotations is not None:
        items, classes, problems = _annotated_items(annotations, audio, model, hop_s,
                                                    min_overlap_s, classes)
    else:
        items = _items(audio, clips, root, labels_source, classes)
    storage.makedirs(out)
    chunks = [items[i:i + files_per_shard] for i in range(0, len(items), files_per_shard)]
    names = [record_format.shard_name(record_format.TRAIN_ONLY_FOLD, i, len(chunks))
             for i in range(len(chunks))]
    todo = set(shard_writer.pending(out, names))
    work = [(out, name, chunk, str(model_path), hop_s, max_windows, batch_size, window_s,
             model_runtime)
            for name, chunk in zip(names, chunks) if name in todo]
    jobs.run_jobs(work, write_job, runner, beam_args, f"embed -> {out}", progress)
    card = {"model": str(model_path), "kind": model.kind, "dim": model.dim,
            "model_classes": model.classes, "classes": classes or [],
            "sample_rate_hz": model.sample_rate_hz, "window_samples": model.window_samples,
            "pooling": getattr(model, "pooling", "none"), "hop_s": hop_s,
            "annotation_problems": problems, "shards": names, "windows": 0, "failures": []}
    for name in names:
        done = shard_writer.read_done(out, name)
        card["windows"] += done["records"]
        card["failures"] += done["failures"]
    storage.write_text_atomic(storage.join(out, record_format.CARD),
                              json.dumps(card, indent=1) + "\n")
    return card


_EMBEDDERS: dict = {}  # per process: a Beam worker loads its model once


def _embedder(path: str, window_s: float | None = None, runtime: str = "onnx"):
    if (path, window_s, runtime) not in _EMBEDDERS:
        _EMBEDDERS[(path, window_s, runtime)] = frozen.load(path, window_s, runtime)
    return _EMBEDDERS[(path, window_s, runtime)]


def write_job(job) -> None:
    """Writes one planned shard (idempotent: see `birdkeras.beamrun`)."""
    out, name, items, model_path, hop_s, max_windows, batch_size, window_s, runtime = job
    _write_shard(out, name, items, _embedder(model_path, window_s, runtime), hop_s, max_windows,
                 batch_size)


def _annotated_items(table, audio, model, hop_s, min_overlap_s, classes):
    """Items (one per annotated recording, a target per window start), the classes and
    the annotations' problems."""
    if not audio or len(audio) != 1 or not Path(audio[0]).is_dir():
        raise annotations.AnnotationError("with annotations, --audio is the one folder the "
                                          "annotated recordings are in")
    cut, problems = annotations.windows(
        table, audio[0], model.window_samples / model.sample_rate_hz, hop_s, min_overlap_s,
        classes=classes, negative_files=table.attrs.get("negative_files", ()))
    classes = cut.attrs["classes"]
    items = []
    for path, rows in cut.groupby("path", sort=True):
        y = annotations.multi_hot(rows["labels"], classes)
        items.append({"path": Path(path), "group": rows["group"].iloc[0], "clip": False,
                      "targets": dict(zip(rows["start_s"].astype(float), y))})
    return items, classes, problems


def _items(audio, clips, root, labels_source, classes) -> list[dict]:
    """What to embed: one dict per file (path, group, targets per start or one for all)."""
    index = {c: k for k, c in enumerate(classes or [])}

    def multi_hot(labels):
        y = np.zeros(len(index), np.float32)
        y[[index[c] for c in labels if c in index]] = 1.0
        return y

    items = []
    if audio is not None:
        labelled = {}
        if labels_source:
            table = soundscapes.read_labels(root, labels_source)
            for f, s, ls in zip(table["file"], table["start_s"], table["labels"]):
                labelled[(f, float(s))] = multi_hot(ls)
        for path in audio_io.list_audio(audio):
            meta = soundscapes.parse_name(path.name)
            items.append({"path": path, "group": meta["site"] or path.name, "clip": False,
                          "targets": {s: y for (f, s), y in labelled.items() if f == path.name}})
    if clips is not None:
        for row in clips.to_dict("records"):
            if pd.notna(row.get("start_s")):
                continue  # a soundscape window of the manifest: its file is not a clip
            labels = [row["primary_label"], *row["secondary_labels"]]
            items.append({"path": Path(root) / row["path"], "group": row["recording_id"],
                          "clip": True, "targets": multi_hot(labels)})
    return items


def _write_shard(out, name, items, model, hop_s, max_windows, batch_size) -> None:
    failures = []
    by_path = {str(item["path"]): item for item in items}
    with shard_writer.shard(out, name) as writer:
        decoded = windows.decode_ahead([item["path"] for item in items], 1,
                                       sample_rate_hz=model.sample_rate_hz,
                                       window_s=model.window_samples / model.sample_rate_hz,
                                       hop_s=hop_s, shifts_s=(0.0,))
        # A file's windows come in parts (a long recording never whole in memory); its
        # records are written at its last part, so a file that fails midway adds none.
        records: list[bytes] = []
        for result in decoded:
            if "error" in result:
                failures.append(record_format.failure(Path(result["path"]).name,
                                                      result["path"], result["error"]))
                records = []
                continue
            item = by_path[str(result["path"])]
            clips, starts = result["windows"][0], result["starts"]
            if item["clip"]:
                room = max(max_windows - len(records), 0)
                clips, starts = clips[:room], starts[:room]
            for i in range(0, len(starts), batch_size):
                emb, logits = model(clips[i:i + batch_size])
                for j, start in enumerate(starts[i:i + batch_size]):
                    records.append(_record(item, result["path"], start, emb[j],
                                           None if logits is None else logits[j]))
            if result["last"]:
                for record in records:
                    writer.write(record)
                records = []
        writer.summary = {"failures": failures}


def _record(item, path: Path, start: float, embedding, logits) -> bytes:
    meta = soundscapes.parse_name(path.name)
    targets = item["targets"] if item["clip"] else item["targets"].get(float(start))
    features = {EMBEDDING: embedding, FILE: path.name, PATH: str(path), START_S: float(start),
                SITE: meta["site"] or "", DATE: meta["date"] or "",
                HOUR: -1 if meta["hour"] is None else int(meta["hour"]), GROUP: item["group"]}
    if logits is not None:
        features[LOGITS] = logits.astype(np.float32)
    if targets is not None:
        features[TARGETS] = targets
    return record_format.encode_example(features)


def read_card(folder: str) -> dict:
    """An embedding folder's card (model, classes, windows), or a clear error."""
    card_path = storage.join(folder, record_format.CARD)
    if not storage.exists(card_path):
        raise frozen.EmbedderError(f"{card_path} not found: run birdkeras embed first")
    return json.loads(storage.read_text(card_path))


def read(folder: str) -> Table:
    """Every window of an embedding folder (see `run`), as arrays."""
    import tensorflow as tf  # noqa: PLC0415 - reading records; embedding needs no TF

    card = read_card(folder)
    spec = {EMBEDDING: tf.io.VarLenFeature(tf.float32), LOGITS: tf.io.VarLenFeature(tf.float32),
            TARGETS: tf.io.VarLenFeature(tf.float32),
            FILE: tf.io.FixedLenFeature([], tf.string), PATH: tf.io.FixedLenFeature([], tf.string),
            START_S: tf.io.FixedLenFeature([], tf.float32),
            SITE: tf.io.FixedLenFeature([], tf.string), DATE: tf.io.FixedLenFeature([], tf.string),
            HOUR: tf.io.FixedLenFeature([], tf.int64), GROUP: tf.io.FixedLenFeature([], tf.string)}
    rows = []
    for name in card["shards"]:
        for raw in tf.data.TFRecordDataset(storage.join(folder, name)):
            ex = tf.io.parse_single_example(raw, spec)
            rows.append({k: (tf.sparse.to_dense(v).numpy() if isinstance(v, tf.SparseTensor)
                             else v.numpy()) for k, v in ex.items()})
    n_classes = len(card["classes"])

    def stack(key, width):
        if not width:
            return None
        return np.stack([r[key] if len(r[key]) else np.full(width, np.nan, np.float32)
                         for r in rows]).astype(np.float32)

    return Table(embeddings=np.stack([r[EMBEDDING] for r in rows]).astype(np.float32),
                 logits=stack(LOGITS, len(card["model_classes"])) if rows and len(
                     rows[0][LOGITS]) else None,
                 targets=stack(TARGETS, n_classes),
                 files=np.array([r[FILE].decode() for r in rows]),
                 paths=np.array([r[PATH].decode() for r in rows]),
                 starts=np.array([r[START_S] for r in rows], np.float32),
                 sites=np.array([r[SITE].decode() for r in rows]),
                 hours=np.array([r[HOUR] for r in rows], np.int64),
                 groups=np.array([r[GROUP].decode() for r in rows]), card=card)

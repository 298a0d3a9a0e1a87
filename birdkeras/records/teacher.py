"""A teacher's embeddings of the training windows, for embedding distillation.

`birdkeras embed --manifest` writes a frozen model's embedding of each training clip's
windows (every `hop_s` from its start, up to `max_windows`) into an embedding folder.
`load` reads it back by recording; `check` refuses a teacher that misses training
recordings (naming them) or whose size is not the configured projection's; `lookup`
is what the input pipeline asks for a record's windows: their starts and embeddings,
so a training crop is cut where the teacher heard it and carries its embedding.

    teacher = load("work/emb/clips")
    check(teacher, cfg)
    starts, embeddings, found = teacher.lookup(record["recording_id"])
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import tensorflow as tf

from birdkeras import config as config_lib
from birdkeras import storage
from birdkeras.datasets import manifest
from birdkeras.records import format as record_format
from birdkeras.records.format import RecordsError


class TeacherError(RecordsError):
    """Teacher embeddings that do not fit the run; the message names what is wrong."""


@dataclasses.dataclass
class Teacher:
    """One teacher's windows, grouped by recording (rows sorted by start)."""

    recordings: list[str]  # recording ids, one per group of rows
    first: np.ndarray  # (recordings,) int64: each recording's first row
    count: np.ndarray  # (recordings,) int64: its windows
    starts: np.ndarray  # (rows,) float32 seconds
    embeddings: np.ndarray  # (rows, dim) float32
    model: str  # what made them (the embedding folder's card)
    folder: str

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def __post_init__(self):
        # Built eagerly, once: a tf.data map reads them (a table cannot be made inside one).
        ids = tf.lookup.KeyValueTensorInitializer(
            tf.constant(self.recordings), tf.range(len(self.recordings), dtype=tf.int64))
        with tf.device("/cpu:0"):
            self._tables = (tf.lookup.StaticHashTable(ids, default_value=-1),
                            tf.constant(self.first), tf.constant(self.count),
                            tf.Variable(self.starts, trainable=False),
                            tf.Variable(self.embeddings, trainable=False))

    def lookup(self, recording_id):
        """(starts in seconds, embeddings, found) of a recording's teacher windows, as
        tensors (a tf.data map calls this); a recording it has none for: one row of
        zeros, found False."""
        table, first, count, starts, embeddings = self._tables
        index = table.lookup(recording_id)
        found = index >= 0
        safe = tf.maximum(index, 0)
        begin = tf.where(found, first[safe], 0)
        size = tf.where(found, count[safe], 1)
        rows = tf.range(begin, begin + size)
        emb = tf.gather(embeddings, rows) * tf.cast(found, tf.float32)
        return tf.gather(starts, rows), emb, found


def load(folder: str) -> Teacher:
    """The embedding folder `folder` (written by `birdkeras embed`), by recording."""
    card_path = storage.join(folder, record_format.CARD)
    if not storage.exists(card_path):
        raise TeacherError(f"train.distill_embedding.teacher: {card_path} not found; write "
                           "the teacher's embeddings of the training clips first: "
                           "birdkeras embed --model TEACHER --cfg CONFIG --manifest --out "
                           f"{folder}")
    card = record_format.read_dataset_card(folder)
    spec = {record_format.EMBEDDING: tf.io.VarLenFeature(tf.float32),
            record_format.GROUP: tf.io.FixedLenFeature([], tf.string),
            record_format.START_S: tf.io.FixedLenFeature([], tf.float32)}
    groups, starts, embeddings = [], [], []
    for name in card["shards"]:
        for raw in tf.data.TFRecordDataset(storage.join(folder, name)):
            ex = tf.io.parse_single_example(raw, spec)
            groups.append(ex[record_format.GROUP].numpy().decode())
            starts.append(float(ex[record_format.START_S]))
            embeddings.append(tf.sparse.to_dense(ex[record_format.EMBEDDING]).numpy())
    if not groups:
        raise TeacherError(f"train.distill_embedding.teacher: {folder} holds no windows")
    order = np.lexsort((np.asarray(starts), np.asarray(groups)))
    groups = np.asarray(groups)[order]
    recordings, first, count = np.unique(groups, return_index=True, return_counts=True)
    return Teacher(recordings=recordings.tolist(), first=first.astype(np.int64),
                   count=count.astype(np.int64),
                   starts=np.asarray(starts, np.float32)[order],
                   embeddings=np.stack(embeddings).astype(np.float32)[order],
                   model=str(card.get("model", "")), folder=folder)


def check(teacher: Teacher, cfg: config_lib.Config) -> None:
    """Refuses a teacher whose size is not `train.distill_embedding.dim` (when set), or
    that lacks a training recording of the manifest (clips outside `input.val_fold`
    the shard build did not skip), naming them."""
    dim = cfg.train.distill_embedding.dim
    if dim and dim != teacher.dim:
        raise TeacherError(f"train.distill_embedding.dim={dim}, but the teacher in "
                           f"{teacher.folder} ({teacher.model}) gives {teacher.dim}-d "
                           "embeddings: set dim to 0 (the teacher's) or to "
                           f"{teacher.dim}")
    table, _ = manifest.load(cfg.data.manifest_dir)
    clips = table[table["start_s"].isna() & (table["fold"] != cfg.input.val_fold)]
    failures = storage.join(cfg.tfrecords.dir, record_format.FAILURES)
    skipped = (set(pd.read_csv(storage.open_file(failures, "r"), dtype=str)["recording_id"].astype(str))
               if storage.exists(failures) else set())
    missing = sorted(set(clips["recording_id"].astype(str)) - skipped - set(teacher.recordings))
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more"
                                           if len(missing) > 10 else "")
        raise TeacherError(
            f"train.distill_embedding.teacher: {teacher.folder} has no windows of "
            f"{len(missing)} of the {len(clips)} training recordings: {shown}. Embed the "
            "manifest these records were built from: birdkeras embed --model TEACHER "
            f"--cfg CONFIG --manifest --out {teacher.folder}")


def crop_starts(teacher: Teacher, recording_id, audio, padded, window: int, crops,
                sample_rate_hz: int):
    """`crops` random teacher windows of a record, cut as the teacher heard them.

    A teacher window is zero-padded past the record's end (`birdkeras embed` pads a
    file's last window so); one that starts past the end (a record cut shorter than
    its file) ends at the end. A record the teacher has no window of gets uniform
    random starts in `padded` and zero embeddings (they add nothing to the loss).

    Args:
        teacher: the loaded teacher.
        recording_id: the record's id (a string tensor).
        audio: the record's audio.
        padded: `audio` padded to a window as `input.pad_mode` says.
        window: samples per crop.
        crops: how many crops.
        sample_rate_hz: the records' rate.

    Returns:
        (the audio to cut from, start samples, embeddings of the crops).
    """
    starts_s, embeddings, found = teacher.lookup(recording_id)
    n = tf.shape(audio, out_type=tf.int64)[0]
    pick = tf.random.uniform([crops], 0, tf.shape(starts_s, out_type=tf.int64)[0],
                             dtype=tf.int64)
    aligned = tf.cast(tf.round(tf.gather(starts_s, pick) * sample_rate_hz), tf.int64)
    aligned = tf.where(aligned < n, aligned, tf.maximum(n - window, 0))
    anywhere = tf.random.uniform([crops], 0, tf.shape(padded, out_type=tf.int64)[0] - window + 1,
                                 dtype=tf.int64)
    source = tf.cond(found, lambda: tf.pad(audio, [[0, window]]), lambda: padded)
    return source, tf.where(found, aligned, anywhere), tf.gather(embeddings, pick)


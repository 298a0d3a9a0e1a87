"""The TFRecord format birdkeras writes and reads: feature keys, encoding, files.

Writing does not import TensorFlow: build workers are plain processes that decode audio
and write records, so they start in milliseconds and scale with cores. Records are
standard `tf.train.Example` protos in standard TFRecord framing (length, masked
CRC-32C, data, masked CRC-32C), read back with `tf.data.TFRecordDataset` and
`tf.io.parse_single_example` (`parse_example` below), which checks both.

Audio is stored as little-endian int16 PCM bytes: 64 KB per second at 32 kHz,
230 MB per audio hour.

A record is a whole focal recording (`label` its primary class, `secondary_labels`)
or a window of a soundscape (`label` -1, `start_s` its start in the file): a labelled
window carries its multi-hot `targets`, a pseudo-labelled one the teachers' averaged
probabilities as `soft_targets` (and `teachers`, the models that made them). The
optional keys were added after the first shards were written; records without them
read as before (empty target vectors, start 0, no teachers).
"""

from __future__ import annotations

import csv
import io
import json
import struct

import google_crc32c
import numpy as np

from birdkeras import storage
from birdkeras.datasets.manifest import TRAIN_ONLY_FOLD
from birdkeras.errors import UserError

# Feature keys, shared by the writer and the reader.
AUDIO = "audio"  # bytes: int16 little-endian PCM, mono
SAMPLE_RATE = "sample_rate_hz"  # int64
NUM_SAMPLES = "num_samples"  # int64
LABEL = "label"  # int64: primary label id (name2label)
SECONDARY_LABELS = "secondary_labels"  # int64 list: secondary label ids
RECORDING_ID = "recording_id"  # bytes
SOURCE = "source"  # bytes
FOLD = "fold"  # int64: -1 means train-only (never validation)
REPEATS = "repeats"  # int64: copies the sampler should draw (class upsampling)
RATING = "rating"  # float
TARGETS = "targets"  # float list (classes) or empty: hard multi-hot targets of a window
SOFT_TARGETS = "soft_targets"  # float list (classes) or empty: teachers' probabilities
START_S = "start_s"  # float: where the record starts in its file (windows)
TEACHERS = "teachers"  # bytes: comma-separated models that made soft_targets

# Embedding shards (`birdkeras embed`): one record per window, with START_S, TARGETS.
EMBEDDING = "embedding"  # float list: the model's embedding of the window
LOGITS = "logits"  # float list or absent: the model's own logits
FILE, PATH = "file", "path"  # bytes: the audio file's name and path
SITE, DATE, HOUR = "site", "date", "hour"  # from the file name (hour -1: none)
GROUP = "group"  # bytes: a training clip's recording id, else the site or file

SHARD_SUFFIX = ".tfrec"
CARD = "dataset_card.json"  # label map, counts, config: written last by a build
FAILURES = "failures.csv"  # recordings a build skipped, with the reason


class RecordsError(UserError):
    """Shards or their card are missing or do not fit the run; the message names them."""


def shard_name(fold: int, index: int, count: int) -> str:
    """`fold{k}-00003-of-00012.tfrec`, or `train-...` for the train-only rows."""
    prefix = "train" if fold == TRAIN_ONLY_FOLD else f"fold{fold}"
    return f"{prefix}-{index:05d}-of-{count:05d}{SHARD_SUFFIX}"


def shard_fold(path: str) -> int:
    """The fold a shard holds, read from its name (see `shard_name`)."""
    prefix = str(path).rsplit("/", 1)[-1].split("-", 1)[0]
    return TRAIN_ONLY_FOLD if prefix == "train" else int(prefix.removeprefix("fold"))


def training_records(card: dict, val_fold: int) -> int:
    """Records of a dataset card outside the validation fold (what a run trains on)."""
    return sum(s["records"] for s in card["shards"] if shard_fold(s["name"]) != val_fold)


# ----------------------------------------------------------------------------------
# Protobuf encoding of tf.train.Example (field numbers from example.proto/feature.proto).


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _feature(value) -> bytes:
    if isinstance(value, (bytes, str)):
        data = value.encode() if isinstance(value, str) else value
        return _field(1, _field(1, data))  # bytes_list { value: data }
    if isinstance(value, float):
        return _field(2, _field(1, struct.pack("<f", value)))  # float_list (packed)
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        return _field(2, _field(1, value.astype("<f4").tobytes()))  # float_list (packed)
    values = [value] if isinstance(value, int) else list(value)
    return _field(3, _field(1, b"".join(_varint(int(v)) for v in values)))  # int64_list


def encode_example(features: dict) -> bytes:
    """Serialises {key: bytes | str | float | int | list[int] | float ndarray} as a
    tf.train.Example."""
    entries = b"".join(
        _field(1, _field(1, key.encode()) + _field(2, _feature(value)))
        for key, value in features.items()
    )
    return _field(1, entries)


# ----------------------------------------------------------------------------------
# TFRecord framing.


def _masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(record: bytes) -> bytes:
    length = struct.pack("<Q", len(record))
    return (length + struct.pack("<I", _masked_crc(length)) + record
            + struct.pack("<I", _masked_crc(record)))


FAILURE_COLUMNS = ("recording_id", "path", "error")


def failure(recording_id: str, path, error) -> dict:
    """One skipped input, as every `failures.csv` records it."""
    return {"recording_id": str(recording_id), "path": str(path), "error": str(error)}


def write_failures(folder: str, failures: list[dict]) -> None:
    """`failures.csv` in `folder`: one row per skipped input (`failure`'s columns)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(FAILURE_COLUMNS))
    writer.writeheader()
    writer.writerows(failures)
    with storage.open_file(storage.join(folder, FAILURES), "w") as f:
        f.write(buf.getvalue())


def list_shards(folder: str, folds=None, exclude_folds=()) -> list[str]:
    """Finished shards in `folder` for the given folds (None: all), sorted; temporary
    files are not listed. Fold -1 (train-only) is named `train-`."""
    names = [n for n in storage.listdir(folder) if n.endswith(SHARD_SUFFIX)]
    return sorted(storage.join(folder, n) for n in names
                  if (folds is None or shard_fold(n) in folds)
                  and shard_fold(n) not in exclude_folds)


def read_dataset_card(folder: str) -> dict:
    """The `dataset_card.json` a shard build (or a pseudo-label run) wrote in `folder`."""
    path = storage.join(folder, CARD)
    if not storage.exists(path):
        raise RecordsError(f"{path} not found: build the TFRecords first "
                           "(birdkeras tfrecords build)")
    return json.loads(storage.read_text(path))


# ----------------------------------------------------------------------------------
# Reading (TensorFlow).


def feature_spec():
    import tensorflow as tf  # noqa: PLC0415 - readers only: writers run without TF

    return {
        AUDIO: tf.io.FixedLenFeature([], tf.string),
        SAMPLE_RATE: tf.io.FixedLenFeature([], tf.int64),
        NUM_SAMPLES: tf.io.FixedLenFeature([], tf.int64),
        LABEL: tf.io.FixedLenFeature([], tf.int64),
        SECONDARY_LABELS: tf.io.VarLenFeature(tf.int64),
        RECORDING_ID: tf.io.FixedLenFeature([], tf.string),
        SOURCE: tf.io.FixedLenFeature([], tf.string),
        FOLD: tf.io.FixedLenFeature([], tf.int64),
        REPEATS: tf.io.FixedLenFeature([], tf.int64),
        RATING: tf.io.FixedLenFeature([], tf.float32),
        # Optional (absent from older shards): defaults keep those readable.
        TARGETS: tf.io.VarLenFeature(tf.float32),
        SOFT_TARGETS: tf.io.VarLenFeature(tf.float32),
        START_S: tf.io.FixedLenFeature([], tf.float32, default_value=0.0),
        TEACHERS: tf.io.FixedLenFeature([], tf.string, default_value=""),
    }


def parse_example(serialized):
    """One serialised record to a dict of tensors; audio as float32 in [-1, 1)."""
    import tensorflow as tf  # noqa: PLC0415 - readers only: writers run without TF

    parsed = tf.io.parse_single_example(serialized, feature_spec())
    parsed[AUDIO] = tf.cast(tf.io.decode_raw(parsed[AUDIO], tf.int16), tf.float32) / 32768.0
    for key in (SECONDARY_LABELS, TARGETS, SOFT_TARGETS):
        parsed[key] = tf.sparse.to_dense(parsed[key])
    return parsed

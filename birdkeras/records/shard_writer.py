"""The one resumable shard writer: temporary name -> rename -> done marker.

Every job that writes shards (a TFRecord build, pseudo-labels, embeddings) writes each
shard through `shard`:

    with shard_writer.shard(out, "train-00003-of-00012.tfrec") as writer:
        for example in examples:
            writer.write(example)            # a serialised tf.train.Example
        writer.summary.update(records=..., failures=[...])

The records go to a temporary name unique to the attempt; when the block ends without
an error the file is renamed over the shard's final name (an atomic replace), and only
then is its done marker (`<name>.done.json`: the summary, the shard's byte size and
record count) written, itself to a temporary name and renamed. A re-run skips shards
whose marker exists (`pending`) and redoes the rest, so a job killed at any point and
started again holds every record exactly once; a shard written twice (a retried Beam
bundle) is replaced by identical bytes under the same name. A block that fails leaves
no shard and no marker.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid

from birdkeras import storage
from birdkeras.records import format as record_format

DONE_SUFFIX = ".done.json"


def done_path(folder: str, name: str) -> str:
    return storage.join(folder, name + DONE_SUFFIX)


def is_done(folder: str, name: str) -> bool:
    return storage.exists(done_path(folder, name))


def pending(folder: str, names) -> list[str]:
    """The shards of `names` that have no done marker yet."""
    return [n for n in names if not is_done(folder, n)]


def read_done(folder: str, name: str) -> dict:
    """A finished shard's done marker (its summary, `bytes` and `records`)."""
    return json.loads(storage.read_text(done_path(folder, name)))


class Writer:
    """Frames and writes records into an open temporary shard file; counts them."""

    def __init__(self, file):
        self._file = file
        self.records, self.bytes = 0, 0
        self.summary: dict = {}

    def write(self, example: bytes) -> None:
        framed = record_format.frame(example)
        self._file.write(framed)
        self.records += 1
        self.bytes += len(framed)


@contextlib.contextmanager
def shard(folder: str, name: str):
    """Writes shard `name` in `folder` resumably (see the module docstring); yields a
    `Writer`, whose `summary` goes into the done marker."""
    final = storage.join(folder, name)
    tmp = f"{final}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with storage.open_file(tmp, "wb") as f:
            writer = Writer(f)
            yield writer
    except BaseException:
        if storage.exists(tmp):
            storage.remove(tmp)
        raise
    storage.rename(tmp, final)
    done = {"shard": name, **writer.summary, "records": writer.records, "bytes": writer.bytes}
    storage.write_text_atomic(done_path(folder, name), json.dumps(done))

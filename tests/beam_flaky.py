"""A shard writer that fails once, mid-shard, as a crashed Beam worker would (imported by
the Beam workers that tests/test_beam.py starts; see its PYTHONPATH)."""

import os
from pathlib import Path

from birdkeras.records import shards


def write_failing_once(job):
    marker = Path(os.environ["BIRDKERAS_TEST_FAIL_MARKER"])
    if job[0].name == os.environ["BIRDKERAS_TEST_FAIL_SHARD"] and not marker.exists():
        marker.write_text("failed once")
        # What a crash leaves: a half-written temporary file, no shard, no done marker.
        Path(job[2], job[0].name + ".tmp-crashed").write_bytes(b"half a shard")
        raise RuntimeError("injected worker failure")
    return shards._write_shard(job)

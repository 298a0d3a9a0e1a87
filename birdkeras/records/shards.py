"""Building and verifying sharded TFRecords from a manifest.

Build: the manifest is split into shards before any audio is decoded (by fold, then
by estimated size, in recording-id order), so the plan is the same on every run. Each
shard is written by one worker process to a temporary name, renamed when complete, and
then marked done by a small JSON sidecar (renamed last). A re-run skips every shard
whose sidecar exists and redoes the rest, so a build killed at any point and started
again holds every good recording exactly once. Files that fail to decode are skipped
and listed with their error in `failures.csv`; one bad file never stops the build.

The shard jobs run in local worker processes, or on Apache Beam (`runner="beam"`:
`birdkeras.beamrun`), which writes the same shards; the driver then writes the card
from the done markers either way. Verify re-reads what build wrote, so both live here
(sharing the plan and the record layout), which is why the module is over 300 lines.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import math
import multiprocessing
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from birdkeras import config as config_lib
from birdkeras import storage
from birdkeras.audio import io as audio_io
from birdkeras.records import format as record_format
from birdkeras.records import jobs, shard_writer
from birdkeras.records.format import RecordsError

CARD, FAILURES = record_format.CARD, record_format.FAILURES
_BYTES_PER_SAMPLE = 2
log = logging.getLogger(__name__)


class ShardError(RecordsError):
    """A shard cannot be built, read, or agree with the manifest; the message names it."""


@dataclasses.dataclass(frozen=True)
class ShardJob:
    """One shard to write: its file name and the manifest rows it holds, in order."""

    name: str
    rows: tuple  # dicts: recording_id, path, label, secondary ids, fold, repeats, rating...


def plan_shards(table: pd.DataFrame, name2label: dict, cfg: config_lib.Config) -> list[ShardJob]:
    """Assigns every manifest row to one shard: grouped by fold, about shard_size_mb each."""
    root = cfg.data.root  # local, or gs:// (a Beam build on Dataflow reads audio there)
    target = cfg.tfrecords.shard_size_mb * 1e6
    jobs = []
    for fold, group in table.sort_values("recording_id").groupby("fold", sort=True):
        shards, current, size = [], [], 0.0
        for rec in group.to_dict("records"):
            est = (_estimated_bytes(_audio_path(root, rec["path"]), cfg.audio)
                   if pd.isna(rec.get("start_s", np.nan))
                   else rec["duration_s"] * cfg.audio.sample_rate_hz * _BYTES_PER_SAMPLE)
            if current and size + est > target:
                shards.append(current)
                current, size = [], 0.0
            current.append(_row(rec, name2label))
            size += est
        if current:
            shards.append(current)
        jobs += [ShardJob(record_format.shard_name(int(fold), i, len(shards)), tuple(rows))
                 for i, rows in enumerate(shards)]
    return jobs


def _audio_path(root: str, path: str) -> str | Path:
    return storage.join(root, path) if storage.is_remote(root) else Path(root) / path


def _estimated_bytes(path: str | Path, audio_cfg) -> float:
    try:
        duration = audio_io.info(path).duration
    except audio_io.AudioError:
        return 0.0  # it will fail properly, and be reported, when the shard is built
    if audio_cfg.max_duration_s:
        duration = min(duration, audio_cfg.max_duration_s)
    return duration * audio_cfg.sample_rate_hz * _BYTES_PER_SAMPLE


def _row(rec: dict, name2label: dict) -> dict:
    # Manifests written before soundscape windows existed have no start_s: recordings.
    window = not pd.isna(rec.get("start_s", np.nan))
    targets = None
    if window:  # a labelled soundscape window: multi-hot targets, no primary label
        targets = np.zeros(len(name2label), dtype=np.float32)
        targets[[name2label[s] for s in rec["labels"] if s in name2label]] = 1.0
    return {
        "recording_id": rec["recording_id"], "path": rec["path"], "source": rec["source"],
        "label": -1 if window else name2label[rec["primary_label"]],
        "targets": targets, "start_s": float(rec["start_s"]) if window else 0.0,
        "secondary": [name2label[s] for s in rec["secondary_labels"] if s in name2label],
        "fold": int(rec["fold"]), "repeats": int(rec["repeats"]),
        "rating": float(rec["rating"]) if not pd.isna(rec["rating"]) else 0.0,
        "duration_s": float(rec["duration_s"]) if not pd.isna(rec["duration_s"]) else None,
    }


def build(table: pd.DataFrame, name2label: dict, cfg: config_lib.Config,
          progress: bool = True, runner: str = "local", beam_args=(), write=None) -> dict:
    """Builds (or finishes building) the shards of `table` in cfg.tfrecords.dir.

    `runner`: "local" (`tfrecords.workers` processes) or "beam" (Apache Beam, with
    `beam_args` its pipeline options; see `birdkeras.beamrun`). Both write the same shards.
    `write`: the function that writes one shard (tests wrap it to inject failures).

    Args:
        table: the manifest.
        name2label: class name -> label id.
        cfg: tfrecords.dir, workers, audio settings.
        progress: a progress bar.
        runner: "local" (tfrecords.workers processes) or "beam" (see
            `birdkeras.records.jobs`).
        beam_args: Beam pipeline options.
        write: writes one shard (tests wrap it to inject failures).

    Returns:
        The dataset card.
    """
    out = cfg.tfrecords.dir
    storage.makedirs(out)
    planned = plan_shards(table, name2label, cfg)
    todo = set(shard_writer.pending(out, [j.name for j in planned]))
    work = [(j, cfg.data.root, out, cfg.audio.sample_rate_hz, cfg.audio.max_duration_s)
            for j in planned if j.name in todo]
    write = write or _write_shard
    if runner == "beam":
        jobs.run_beam(work, write, beam_args, cfg.tfrecords.workers, "tfrecords")
    else:
        _build_locally(work, write, cfg, progress)
    card = write_card(planned, name2label, cfg)
    # A class whose every recording failed would train as a class nobody can predict.
    lost = sorted({label_names(name2label)[label] for job in planned for row in job.rows
                   for label in _classes_of(row)} & set(card["classes_without_records"]))
    if lost:
        raise ShardError(f"{len(lost)} classes have rows in the manifest but no record after "
                         f"the build (every file failed; see {storage.join(out, FAILURES)}): "
                         f"{lost[:10]}. Fix or drop those rows and ingest again.")
    return card


def _build_locally(work, write, cfg: config_lib.Config, progress: bool) -> None:
    bar = tqdm(total=sum(len(w[0].rows) for w in work), unit="rec", disable=not progress,
               desc=f"tfrecords -> {cfg.tfrecords.dir}")
    # Forked workers start in milliseconds; but a parent that holds TensorFlow (its
    # threads do not survive a fork) or writes to gs:// (workers need TensorFlow) spawns.
    spawn = "tensorflow" in sys.modules or storage.is_remote(cfg.tfrecords.dir)
    context = multiprocessing.get_context("spawn" if spawn else "fork")
    with concurrent.futures.ProcessPoolExecutor(cfg.tfrecords.workers, mp_context=context) as pool:
        for done in pool.map(write, work):
            bar.update(done["records"] + len(done["failures"]))
    bar.close()


def label_names(name2label: dict) -> dict:
    """label id -> class name."""
    return {v: k for k, v in name2label.items()}


def _classes_of(row: dict) -> list[int]:
    """The classes a planned record counts for: its primary label, or a window's labels."""
    if row["targets"] is not None:
        return [int(k) for k in np.flatnonzero(row["targets"])]
    return [row["label"]]


def _write_shard(args) -> dict:
    """Writes one shard; returns its done marker (records, durations, failures)."""
    job, root, out, sample_rate_hz, max_duration_s = args
    failures, durations = [], []
    decoded = {}  # the last soundscape decoded: its windows are consecutive rows
    with shard_writer.shard(out, job.name) as writer:
        for row in job.rows:
            try:
                wave = _audio_of(row, str(root), sample_rate_hz, max_duration_s, decoded)
            except (audio_io.AudioError, OSError) as err:
                failures.append(record_format.failure(row["recording_id"], row["path"], err))
                continue
            optional = {}
            if row["targets"] is not None:
                optional = {record_format.TARGETS: row["targets"],
                            record_format.START_S: row["start_s"]}
            writer.write(record_format.encode_example({
                record_format.AUDIO: audio_io.to_int16(wave).tobytes(),
                record_format.SAMPLE_RATE: sample_rate_hz,
                record_format.NUM_SAMPLES: len(wave),
                record_format.LABEL: row["label"],
                record_format.SECONDARY_LABELS: row["secondary"],
                record_format.RECORDING_ID: row["recording_id"],
                record_format.SOURCE: row["source"],
                record_format.FOLD: row["fold"],
                record_format.REPEATS: row["repeats"],
                record_format.RATING: row["rating"],
                **optional,
            }))
            durations.append(len(wave) / sample_rate_hz)
        writer.summary = {"failures": failures, "seconds": durations,
                          "recording_ids": [r["recording_id"] for r in job.rows]}
    return shard_writer.read_done(out, job.name)


def _audio_of(row: dict, root: str, sample_rate_hz: int, max_duration_s, decoded: dict):
    """A recording's audio, or a soundscape window's (its file decoded once per shard)."""
    path = _audio_path(root, row["path"])
    if row["targets"] is None:
        wave = audio_io.load(path, sample_rate_hz, max_duration_s)
        _check_length(wave, sample_rate_hz, row, max_duration_s)
        return wave
    if row["path"] not in decoded:
        decoded.clear()
        decoded[row["path"]] = audio_io.load(path, sample_rate_hz, allow_silence=True)
    start = int(round(row["start_s"] * sample_rate_hz))
    width = int(round(row["duration_s"] * sample_rate_hz))
    window = decoded[row["path"]][start:start + width]
    return np.pad(window, (0, width - len(window)))  # a last window past the file's end


def _check_length(wave, sample_rate_hz, row, max_duration_s) -> None:
    """Flags a file as truncated when it decodes much shorter than its metadata says."""
    expected = row["duration_s"]
    if expected is None or math.isnan(expected):
        return
    if max_duration_s:
        expected = min(expected, max_duration_s)
    got = len(wave) / sample_rate_hz
    if got < expected - 1.5:
        raise audio_io.AudioError(
            f"{row['path']}: truncated: decodes to {got:.1f} s, metadata says {expected:.1f} s")


def write_card(jobs: list[ShardJob], name2label: dict, cfg: config_lib.Config) -> dict:
    """Collects the shards' sidecars into dataset_card.json and failures.csv."""
    out = cfg.tfrecords.dir
    names = label_names(name2label)
    shards, failures, counts, seconds = [], [], {}, []
    for job in jobs:
        done = shard_writer.read_done(out, job.name)
        failed = {x["recording_id"] for x in done["failures"]}
        shards.append({"name": job.name, "records": done["records"],
                       "failures": len(done["failures"]), "bytes": done.get("bytes")})
        failures += done["failures"]
        seconds += done["seconds"]
        for row in job.rows:
            if row["recording_id"] in failed:
                continue
            for label in _classes_of(row):
                per_fold = counts.setdefault(names[label], {})
                per_fold[str(row["fold"])] = per_fold.get(str(row["fold"]), 0) + 1
    total_bytes = sum(seconds) * cfg.audio.sample_rate_hz * _BYTES_PER_SAMPLE
    card = {
        "name2label": name2label,
        "sample_rate_hz": cfg.audio.sample_rate_hz,
        "codec": "int16 little-endian PCM, mono",
        "records": sum(s["records"] for s in shards),
        "failures": len(failures),
        "shards": shards,
        "counts_per_class_per_fold": dict(sorted(counts.items())),
        # Classes of the label map with no record: a competition's classes without
        # clips (reported at ingest), or classes whose every file failed (an error).
        "classes_without_records": sorted(set(name2label) - set(counts)),
        "durations_s": _duration_stats(seconds),
        "bytes_per_audio_hour": cfg.audio.sample_rate_hz * _BYTES_PER_SAMPLE * 3600,
        "approx_total_mb": round(total_bytes / 1e6, 1),
        "config": config_lib.to_dict(cfg),
    }
    storage.write_text_atomic(storage.join(out, CARD), json.dumps(card, indent=1) + "\n")
    record_format.write_failures(out, failures)
    return card


def _duration_stats(seconds: list[float]) -> dict:
    if not seconds:
        return {"total": 0.0}
    arr = np.asarray(seconds)
    return {"total": round(float(arr.sum()), 2), "min": round(float(arr.min()), 2),
            "median": round(float(np.median(arr)), 2), "max": round(float(arr.max()), 2)}


def verify(table: pd.DataFrame, name2label: dict, cfg: config_lib.Config) -> dict:
    """Re-reads every shard; checks counts, labels and lengths against the manifest."""
    import tensorflow as tf  # noqa: PLC0415 - verify only: build workers run without TF

    out = cfg.tfrecords.dir
    card_path = storage.join(out, CARD)
    card = record_format.read_dataset_card(out)
    if card["name2label"] != name2label:
        raise ShardError(f"{card_path}: label map differs from the manifest's name2label.json")
    expected = {r["recording_id"]: r for r in table.to_dict("records")}
    seen: dict[str, str] = {}
    for shard in card["shards"]:
        path = storage.join(out, shard["name"])
        if not storage.exists(path):
            raise ShardError(f"shard {path} is missing")
        count = 0
        try:
            for raw in tf.data.TFRecordDataset(path).map(record_format.parse_example):
                count += 1
                rid = raw[record_format.RECORDING_ID].numpy().decode()
                _check_record(path, rid, raw, expected, name2label, cfg)
                if rid in seen:
                    raise ShardError(f"{rid} is in both {seen[rid]} and {path}")
                seen[rid] = path
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as err:
            raise ShardError(f"shard {path} is corrupted: {err.message.splitlines()[0]}") from err
        if count != shard["records"]:
            raise ShardError(f"shard {path} holds {count} records, the card says "
                             f"{shard['records']}")
    return {"shards": len(card["shards"]), "records": len(seen),
            "failures": card["failures"], "missing": len(expected) - len(seen)}


def _check_record(path, rid, raw, expected, name2label, cfg) -> None:
    row = expected.get(rid)
    if row is None:
        raise ShardError(f"shard {path}: record {rid} is not in the manifest")
    expected_label = name2label[row["primary_label"]] if row["primary_label"] else -1
    if int(raw[record_format.LABEL]) != expected_label:
        raise ShardError(f"shard {path}: {rid} has label {int(raw[record_format.LABEL])}, "
                         f"the manifest says {expected_label}")
    num, stored = int(raw[record_format.NUM_SAMPLES]), int(raw[record_format.AUDIO].shape[0])
    if num != stored or num == 0:
        raise ShardError(f"shard {path}: {rid} stores {stored} samples but num_samples={num}")
    if int(raw[record_format.SAMPLE_RATE]) != cfg.audio.sample_rate_hz:
        raise ShardError(f"shard {path}: {rid} is at {int(raw[record_format.SAMPLE_RATE])} Hz, "
                         f"audio.sample_rate_hz={cfg.audio.sample_rate_hz}")
    if cfg.audio.max_duration_s and num > cfg.audio.max_duration_s * cfg.audio.sample_rate_hz + 1:
        raise ShardError(f"shard {path}: {rid} is longer than audio.max_duration_s")

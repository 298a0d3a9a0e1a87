"""Pseudo-labels: teacher models score soundscapes; their windows become soft-labelled
records in shards, so a student can train on the target domain.

    birdkeras pseudolabel --model work/b0_ft/best.keras [--model ...] \
        --audio data/kaggle/birdclef-2026/train_soundscapes --out work/pseudo/round1 \
        [--cfg configs/b0_ft.yaml] [--set pseudo.threshold=0.5 ...]

Each file is cut into windows (`pseudo.hop_s`) and scored by every teacher exactly as
`predict` scores it (`birdkeras.infer.scoring`: the same runtimes, ensemble mean, the
file's name for an embedding route's site/hour prior and sequence, the config's
cross-window post-processing); their classes must agree. A
window whose top averaged probability is below `pseudo.threshold` is dropped, or kept
as a soft negative (`pseudo.below_threshold`); the targets are the averaged
probabilities raised to `pseudo.power` (sharpening); at most
`pseudo.max_windows_per_file` windows per file are kept, the most confident first.
With `pseudo.cap_model` (Perch v2, BirdNET), each target is at most that model's own
probability of the class (`TeacherCap`), where it has the class.
Where a window also has labels (`pseudo.hard_labels`: a source with labelled
soundscapes), they are stored beside the soft targets, for distillation
(`input.teacher_weight`).

Records (see `birdkeras.tfrecord`) carry the window's audio, `soft_targets`, the
window's start and its teachers (provenance: file, start, models). Shards are written
like a TFRecord build's: files in a fixed order, in chunks of `pseudo.files_per_shard`,
each shard to a temporary name, renamed, then marked done; a killed run started again
redoes only unfinished shards and holds every kept window once. The same teachers on
the same files give the same bytes. `dataset_card.json` (readable by the training
pipeline: `input.mix_dirs`), `failures.csv` (undecodable files) and
`pseudo_report.json` (windows seen and kept; kept windows per class, each counted under
its top class) sit beside the shards.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from birdkeras import config as config_lib
from birdkeras import storage
from birdkeras.audio import io as audio_io
from birdkeras.datasets import soundscapes, sources
from birdkeras.embeddings import frozen
from birdkeras.infer.runners import load_runners
from birdkeras.infer.scoring import iter_scored
from birdkeras.infer.submission import Scored
from birdkeras.records import format as record_format
from birdkeras.audio import windows
from birdkeras.errors import UserError
from birdkeras.records import jobs, shard_writer

REPORT = "pseudo_report.json"


def run(model_paths, audio_dirs, out: str, cfg: config_lib.Config, runtime: str = "tf",
        progress: bool = True, threads: int = 0, runner: str = "local", beam_args=()) -> dict:
    """Pseudo-labels every audio file under `audio_dirs` into shards in `out`.

    Args:
        model_paths: the teachers (export folders, `.keras` models, route folders).
        audio_dirs: soundscape files and/or folders.
        out: the shard folder (local or gs://).
        cfg: its `pseudo` section selects windows; its `infer` section post-processes
            the teachers' scores as `predict` would.
        runtime: the teachers' runtime.
        progress: a progress bar per shard.
        threads: the runtime's intra-op threads (0: its default).
        runner: "local" (this process) or "beam" (shards written by Beam workers, each
            loading the teachers once; see `birdkeras.records.jobs`).
        beam_args: Beam pipeline options.

    Returns:
        The pseudo-label report (windows seen and kept, kept per class).
    """
    pcfg = cfg.pseudo
    model_paths = [str(p) for p in model_paths]
    icfg = teacher_infer_config(cfg)
    teachers = _teachers(tuple(model_paths), runtime, threads, icfg)  # fails early on a mismatch
    files = audio_io.list_audio(audio_dirs)
    hard = _hard_labels(cfg) if pcfg.hard_labels else {}
    storage.makedirs(out)
    chunks = [files[i:i + pcfg.files_per_shard]
              for i in range(0, len(files), pcfg.files_per_shard)]
    names = [record_format.shard_name(record_format.TRAIN_ONLY_FOLD, i, len(chunks))
             for i in range(len(chunks))]
    todo = set(shard_writer.pending(out, names))
    if pcfg.cap_model:  # fails early: an unloadable model, no taxonomy, nothing mapped
        _cap(pcfg.cap_model, tuple(teachers[0].classes), cfg.data.root, cfg.data.target_source)
    work = [(out, name, chunk, tuple(model_paths), runtime, threads, pcfg, icfg, hard,
             (cfg.data.root, cfg.data.target_source))
            for name, chunk in zip(names, chunks) if name in todo]
    jobs.run_jobs(work, write_job, runner, beam_args, f"pseudolabel -> {out}", progress)
    return _write_card(out, names, teachers[0].classes, teachers[0].sample_rate_hz, cfg,
                       ",".join(model_paths))


def teacher_infer_config(cfg: config_lib.Config) -> config_lib.InferConfig:
    """`cfg.infer` with the pseudo-label window hop and batch size, without TTA or a time
    budget: how the teachers score a file (as `predict` would with that config)."""
    return dataclasses.replace(cfg.infer, hop_s=cfg.pseudo.hop_s, batch_size=cfg.pseudo.batch_size,
                               tta_shifts_s=(), time_budget_s=None, workers=1)


_TEACHERS: dict = {}  # per process: a Beam worker loads its teachers once


def _teachers(model_paths: tuple, runtime: str, threads: int, icfg):
    key = (model_paths, runtime, threads, icfg)
    if key not in _TEACHERS:
        _TEACHERS[key] = load_runners(list(model_paths), runtime, icfg, threads)
    return _TEACHERS[key]


def write_job(job) -> None:
    """Writes one planned shard (idempotent: see `birdkeras.records.shard_writer`)."""
    out, name, files, model_paths, runtime, threads, pcfg, icfg, hard, (root, source) = job
    runners = _teachers(model_paths, runtime, threads, icfg)
    cap = (_cap(pcfg.cap_model, tuple(runners[0].classes), root, source)
           if pcfg.cap_model else None)
    _write_shard(out, name, files, runners, pcfg, icfg, hard, ",".join(model_paths), cap)


class TeacherCap:
    """A model's own probabilities of the teachers' classes, per window: the ceiling of
    each pseudo-label (`pseudo.cap_model`).

    A model scoring every one of `classes` is read by name; a frozen model (Perch v2,
    BirdNET) through `frozen.map_classes` on the taxonomy (scientific name, then the
    most probable species of the genus). Classes it cannot map get ceiling 1 (uncapped).

    Args:
        path: the model (anything `load_runners` loads).
        classes: the teachers' classes, in order.
        taxonomy: the competition's taxonomy (primary_label, scientific_name), or None.
    """

    def __init__(self, path: str, classes, taxonomy):
        self.runner = load_runners([path], "tf")[0]
        self.path, self.classes = str(path), list(classes)
        own = {c: k for k, c in enumerate(self.runner.classes)}
        if all(c in own for c in self.classes):
            self.mapping = {"index": np.array([own[c] for c in self.classes]), "proxies": {}}
        else:
            if taxonomy is None:
                raise PseudoError(f"pseudo.cap_model={path} scores other classes than the "
                                  "teachers' and no taxonomy maps them")
            rows = taxonomy.set_index("primary_label").reindex(self.classes).reset_index()
            self.mapping = frozen.map_classes(self.runner.classes, rows.fillna(""))
        self.mapped = (self.mapping["index"] >= 0) | np.isin(
            np.arange(len(self.classes)), list(self.mapping["proxies"]))
        if not self.mapped.any():
            raise PseudoError(f"pseudo.cap_model={path}: none of the teachers' "
                              f"{len(self.classes)} classes maps to its classes")

    def __call__(self, path, starts_s) -> np.ndarray:
        """(windows, classes) ceilings of the windows of `path` at `starts_s`."""
        clips = [part[1][0] for part in windows.stream_windows(
            path, self.runner.sample_rate_hz, self.runner.window_s, starts_s=starts_s)
            if not isinstance(part, float)]
        probs = self.runner(np.concatenate(clips)) if clips else np.zeros((0, 0))
        ceilings = np.ones((len(probs), len(self.classes)), np.float32)
        index = self.mapping["index"]
        ceilings[:, index >= 0] = probs[:, index[index >= 0]]
        for pos, members in self.mapping["proxies"].items():
            ceilings[:, pos] = probs[:, members].max(axis=1)
        return ceilings


class PseudoError(UserError):
    """Pseudo-labelling cannot run as configured; the message says why."""


_CAPS: dict = {}  # per process, like the teachers


def _cap(path: str, classes: tuple, root, source) -> TeacherCap:
    key = (path, classes)
    if key not in _CAPS:
        try:
            taxonomy = sources.read_taxonomy(root, source, "pseudo.cap_model")[0]
        except sources.SourceError:
            taxonomy = None
        _CAPS[key] = TeacherCap(path, classes, taxonomy)
    return _CAPS[key]


def select(probs: np.ndarray, starts: np.ndarray, pcfg) -> tuple[np.ndarray, np.ndarray]:
    """(indices of the windows kept, their soft targets) for one file's averaged
    probabilities `probs` (windows, classes), by the rules of the module docstring."""
    top = probs.max(axis=1)
    keep = np.arange(len(probs))
    if pcfg.below_threshold == "drop":
        keep = keep[top >= pcfg.threshold]
    if pcfg.max_windows_per_file:
        # The most confident first; ties by start, so the choice is reproducible.
        order = np.lexsort((starts[keep], -top[keep]))
        keep = np.sort(keep[order[:pcfg.max_windows_per_file]])
    return keep, (probs[keep] ** pcfg.power).astype(np.float32)


def _write_shard(out, name, files, runners, pcfg, icfg, hard: dict, teachers: str,
                 cap: TeacherCap | None = None) -> None:
    model = runners[0]
    kept = np.zeros(len(model.classes), dtype=np.int64)
    seen, failures = 0, []
    with shard_writer.shard(out, name) as writer:
        for item in iter_scored(files, runners, icfg):
            if not isinstance(item, Scored):
                failures.append(record_format.failure(f"pseudo/{item['path'].name}",
                                                      item["path"], item["error"]))
                continue
            seen += len(item.probs)
            index, targets = select(item.probs, item.starts_s, pcfg)
            if not len(index):
                continue
            if cap is not None:
                targets = np.minimum(targets, cap(item.path, item.starts_s[index]))
            # The kept windows' audio, cut again from the file (scoring kept no audio),
            # block by block: a long recording is never whole in memory.
            done = 0
            for part in windows.stream_windows(item.path, model.sample_rate_hz, model.window_s,
                                               starts_s=item.starts_s[index]):
                if isinstance(part, float):
                    break
                for clip in part[1][0]:
                    i, soft = index[done], targets[done]
                    writer.write(_record(item, i, clip, soft, hard, model, teachers))
                    kept[np.argmax(soft)] += 1
                    done += 1
        writer.summary = {"windows_seen": seen, "failures": failures,
                          "kept_per_class": kept.tolist(), "files": [str(p) for p in files]}


def _record(item: Scored, i, clip, soft, hard, model, teachers) -> bytes:
    start = float(item.starts_s[i])
    features = {
        record_format.AUDIO: audio_io.to_int16(clip).tobytes(),
        record_format.SAMPLE_RATE: model.sample_rate_hz, record_format.NUM_SAMPLES: len(clip),
        record_format.LABEL: -1, record_format.SECONDARY_LABELS: [],
        record_format.RECORDING_ID: f"pseudo/{item.path.name}@{start:g}",
        record_format.SOURCE: "pseudo", record_format.FOLD: record_format.TRAIN_ONLY_FOLD,
        record_format.REPEATS: 1, record_format.RATING: 0.0,
        record_format.SOFT_TARGETS: soft, record_format.START_S: start, record_format.TEACHERS: teachers,
    }
    labels = hard.get((item.path.name, start))
    if labels is not None:
        index = {c: k for k, c in enumerate(model.classes)}
        targets = np.zeros(len(model.classes), dtype=np.float32)
        targets[[index[c] for c in labels if c in index]] = 1.0
        features[record_format.TARGETS] = targets
    return record_format.encode_example(features)


def _hard_labels(cfg: config_lib.Config) -> dict:
    """(file name, start second) -> labels, from `pseudo.hard_labels`' labelled soundscapes."""
    table = soundscapes.read_labels(cfg.data.root, cfg.pseudo.hard_labels)
    return {(f, float(s)): list(labels)
            for f, s, labels in zip(table["file"], table["start_s"], table["labels"])}


def _write_card(out, names, classes, sample_rate_hz, cfg, teachers) -> dict:
    """dataset_card.json, failures.csv and pseudo_report.json from the shards' sidecars."""
    done = [shard_writer.read_done(out, name) for name in names]
    kept = np.sum([d["kept_per_class"] for d in done], axis=0) if done else np.zeros(len(classes))
    failures = [x for d in done for x in d["failures"]]
    report = {
        "teachers": teachers.split(","), "files": sum(len(d["files"]) for d in done),
        "failures": len(failures), "windows_seen": sum(d["windows_seen"] for d in done),
        "windows_kept": sum(d["records"] for d in done),
        "kept_per_class": {c: int(n) for c, n in zip(classes, kept)},
        "pseudo": config_lib.to_dict(cfg.pseudo),
    }
    card = {"name2label": {c: i for i, c in enumerate(classes)},
            "sample_rate_hz": sample_rate_hz, "codec": "int16 little-endian PCM, mono",
            "records": report["windows_kept"], "failures": len(failures),
            "shards": [{"name": d["shard"], "records": d["records"],
                        "failures": len(d["failures"]), "bytes": d.get("bytes")}
                       for d in done],
            "pseudo_labels": report}
    storage.write_text_atomic(storage.join(out, record_format.CARD),
                              json.dumps(card, indent=1) + "\n")
    storage.write_text_atomic(storage.join(out, REPORT), json.dumps(report, indent=1) + "\n")
    record_format.write_failures(out, failures)
    return report

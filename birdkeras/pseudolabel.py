"""Pseudo-labels: teacher models score soundscapes; their windows become soft-labelled
records in shards, so a student can train on the target domain.

    birdkeras pseudolabel --model work/b0_ft/best.keras [--model ...] \
        --audio data/kaggle/birdclef-2026/train_soundscapes --out work/pseudo/round1 \
        [--cfg configs/b0_ft.yaml] [--set pseudo.threshold=0.5 ...]

Each file is cut into windows (`pseudo.hop_s`), scored by every teacher (the same
runtimes as `predict`; their classes must agree) and the probabilities averaged. A
window whose top averaged probability is below `pseudo.threshold` is dropped, or kept
as a soft negative (`pseudo.below_threshold`); the targets are the averaged
probabilities raised to `pseudo.power` (sharpening); at most
`pseudo.max_windows_per_file` windows per file are kept, the most confident first.
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

import json
import uuid

import numpy as np

from birdkeras import audio, beamrun, runtimes, soundscapes, tfrecord, windows
from birdkeras import config as config_lib

REPORT = "pseudo_report.json"


def run(model_paths, audio_dirs, out: str, cfg: config_lib.Config, runtime: str = "tf",
        progress: bool = True, threads: int = 0, runner: str = "local", beam_args=()) -> dict:
    """Pseudo-labels every audio file under `audio_dirs` into shards in `out`.

    `runner`: "local" (this process) or "beam" (shards written by Beam workers, each
    loading the teachers once; see `birdkeras.beamrun`).
    """
    pcfg = cfg.pseudo
    model_paths = [str(p) for p in model_paths]
    runners = _teachers(tuple(model_paths), runtime, threads)  # fails early on a mismatch
    files = windows.list_audio(audio_dirs)
    hard = _hard_labels(cfg) if pcfg.hard_labels else {}
    tfrecord.makedirs(out)
    chunks = [files[i:i + pcfg.files_per_shard]
              for i in range(0, len(files), pcfg.files_per_shard)]
    names = [tfrecord.shard_name(tfrecord.TRAIN_ONLY_FOLD, i, len(chunks))
             for i in range(len(chunks))]
    jobs = [(out, name, chunk, tuple(model_paths), runtime, threads, pcfg, hard)
            for name, chunk in zip(names, chunks) if not tfrecord.exists(_done_path(out, name))]
    beamrun.run_jobs(jobs, write_job, runner, beam_args, f"pseudolabel -> {out}", progress)
    return _write_card(out, names, runners[0].classes, runners[0].sample_rate_hz, cfg,
                       ",".join(model_paths))


_TEACHERS: dict = {}  # per process: a Beam worker loads its teachers once


def _teachers(model_paths: tuple, runtime: str, threads: int):
    key = (model_paths, runtime, threads)
    if key not in _TEACHERS:
        _TEACHERS[key] = runtimes.load_runners(list(model_paths), runtime, "sigmoid", threads)
    return _TEACHERS[key]


def write_job(job) -> None:
    """Writes one planned shard (idempotent: see `birdkeras.beamrun`)."""
    out, name, files, model_paths, runtime, threads, pcfg, hard = job
    _write_shard(out, name, files, _teachers(model_paths, runtime, threads), pcfg, hard,
                 ",".join(model_paths))


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


def _write_shard(out, name, files, runners, pcfg, hard: dict, teachers: str) -> None:
    model = runners[0]
    final = tfrecord.join(out, name)
    tmp = f"{final}.tmp-{uuid.uuid4().hex[:8]}"  # per attempt: a retried bundle writes its own
    kept = np.zeros(len(model.classes), dtype=np.int64)
    seen, records, failures = 0, 0, []
    with tfrecord.open_file(tmp, "wb") as f:
        for item in windows.decoded(files, 1, sample_rate_hz=model.sample_rate_hz,
                                    window_s=model.window_s, hop_s=pcfg.hop_s,
                                    shifts_s=(0.0,)):
            if "error" in item:
                failures.append({"recording_id": f"pseudo/{item['path'].name}",
                                 "path": str(item["path"]), "error": item["error"]})
                continue
            clips = item["windows"][0]
            probs = np.mean([_score(r, clips, pcfg.batch_size) for r in runners], axis=0)
            seen += len(probs)
            index, targets = select(probs, item["starts"], pcfg)
            for i, soft in zip(index, targets):
                f.write(tfrecord.frame(_record(item, i, clips[i], soft, hard, model, teachers)))
                kept[np.argmax(soft)] += 1
                records += 1
    tfrecord.rename(tmp, final)
    done = {"shard": name, "records": records, "windows_seen": seen, "failures": failures,
            "kept_per_class": kept.tolist(), "files": [str(p) for p in files]}
    with tfrecord.open_file(_done_path(out, name) + ".tmp", "w") as f:
        f.write(json.dumps(done))
    tfrecord.rename(_done_path(out, name) + ".tmp", _done_path(out, name))


def _record(item, i, clip, soft, hard, model, teachers) -> bytes:
    start = float(item["starts"][i])
    features = {
        tfrecord.AUDIO: audio.to_int16(clip).tobytes(),
        tfrecord.SAMPLE_RATE: model.sample_rate_hz, tfrecord.NUM_SAMPLES: len(clip),
        tfrecord.LABEL: -1, tfrecord.SECONDARY_LABELS: [],
        tfrecord.RECORDING_ID: f"pseudo/{item['path'].name}@{start:g}",
        tfrecord.SOURCE: "pseudo", tfrecord.FOLD: tfrecord.TRAIN_ONLY_FOLD,
        tfrecord.REPEATS: 1, tfrecord.RATING: 0.0,
        tfrecord.SOFT_TARGETS: soft, tfrecord.START_S: start, tfrecord.TEACHERS: teachers,
    }
    labels = hard.get((item["path"].name, start))
    if labels is not None:
        index = {c: k for k, c in enumerate(model.classes)}
        targets = np.zeros(len(model.classes), dtype=np.float32)
        targets[[index[c] for c in labels if c in index]] = 1.0
        features[tfrecord.TARGETS] = targets
    return tfrecord.encode_example(features)


def _score(runner, clips, batch_size):
    return np.concatenate([runner(clips[i:i + batch_size])
                           for i in range(0, len(clips), batch_size)])


def _hard_labels(cfg: config_lib.Config) -> dict:
    """(file name, start second) -> labels, from `pseudo.hard_labels`' labelled soundscapes."""
    table = soundscapes.read_labels(cfg.data.root, cfg.pseudo.hard_labels)
    return {(f, float(s)): list(labels)
            for f, s, labels in zip(table["file"], table["start_s"], table["labels"])}


def _done_path(out: str, name: str) -> str:
    return tfrecord.join(out, name + ".done.json")


def _write_card(out, names, classes, sample_rate_hz, cfg, teachers) -> dict:
    """dataset_card.json, failures.csv and pseudo_report.json from the shards' sidecars."""
    done = []
    for name in names:
        with tfrecord.open_file(_done_path(out, name), "r") as f:
            done.append(json.loads(f.read()))
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
                        "failures": len(d["failures"])} for d in done],
            "pseudo_labels": report}
    with tfrecord.open_file(tfrecord.join(out, tfrecord.CARD), "w") as f:
        f.write(json.dumps(card, indent=1) + "\n")
    with tfrecord.open_file(tfrecord.join(out, REPORT), "w") as f:
        f.write(json.dumps(report, indent=1) + "\n")
    tfrecord.write_failures(out, failures)
    return report

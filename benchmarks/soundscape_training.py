"""What training on soundscapes brings: labelled windows, then pseudo-label rounds.

    python benchmarks/soundscape_training.py [--seeds 0 1] [--keep DIR]

For each seed: a synthetic tree (`SPEC`: the demo's species, more and unlabelled 2026
soundscapes); its labelled soundscapes are split by site, half to train on, half held
out (moved to `heldout_soundscapes/`, never read by training or pseudo-labelling). One
pretraining (demo_pre.yaml), then, each fine-tuned from it with the same settings
(demo_selftrain.yaml's: BCE, the 2026 classes):

  (a) 2026 clips only;
  (b) + the labelled soundscape windows of the training sites;
  (c) (b), then one pseudo-label round over the training soundscapes (labelled and
      unlabelled) with (b)'s best model, training from it with those windows mixed in;
  (d) (c), then a second round.

Each is scored on the held-out soundscapes (macro ROC-AUC, padded cmAP). The kept
pseudo-labels (soft target >= 0.5) of each round are compared with the generator's
call list on the unlabelled files (`soundscape_calls.csv`, which no stage reads):
precision and recall over (window, class) pairs. Prints one table per seed and the mean.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
YEAR = "birdclef-2026"


def _spec(seed: int):
    from birdkeras import synth  # noqa: PLC0415

    return synth.SynthSpec(seed=seed, labelled_soundscapes=8, unlabelled_soundscapes=12)


def _split_sites(root: Path) -> set[str]:
    """Moves the labelled files of half the sites to heldout_soundscapes/; returns them."""
    labels = pd.read_csv(root / YEAR / "train_soundscapes_labels.csv", dtype=str,
                         keep_default_na=False)
    sites = sorted({name.split("_")[3] for name in labels["filename"]})
    held_sites = set(sites[len(sites) // 2:])
    held = {f for f in labels["filename"] if f.split("_")[3] in held_sites}
    (root / YEAR / "heldout_soundscapes").mkdir(exist_ok=True)
    for name in held:
        shutil.move(root / YEAR / "train_soundscapes" / name,
                    root / YEAR / "heldout_soundscapes" / name)
    labels[labels["filename"].isin(held)].to_csv(root / YEAR / "heldout_labels.csv", index=False)
    labels[~labels["filename"].isin(held)].to_csv(root / YEAR / "train_soundscapes_labels.csv",
                                                  index=False)
    return held


def _score_heldout(model: str, root: Path, work: Path) -> tuple[float, float]:
    from birdkeras import config as config_lib  # noqa: PLC0415
    from birdkeras import infer  # noqa: PLC0415

    sample = root / YEAR / "sample_submission.csv"
    icfg = config_lib.InferConfig(class_order=str(sample))
    infer.predict([model], root / YEAR / "heldout_soundscapes", work / "heldout.csv", "tf",
                  icfg, progress=False)
    return score_submission(work / "heldout.csv", root)


def score_submission(csv: Path, root: Path) -> tuple[float, float]:
    """Macro ROC-AUC and padded cmAP of a submission over the held-out labelled windows."""
    from birdkeras import metrics  # noqa: PLC0415
    from birdkeras.datasets import soundscapes  # noqa: PLC0415

    pred = pd.read_csv(csv).set_index("row_id")
    truth = soundscapes._read_2026(root / YEAR / "heldout_labels.csv",
                                   root / YEAR / "heldout_soundscapes")
    classes = list(pred.columns)
    y = np.zeros((len(truth), len(classes)))
    for i, labels in enumerate(truth["labels"]):
        y[i, [classes.index(c) for c in labels if c in classes]] = 1
    rows = [f"{Path(f).stem}_{int(e)}" for f, e in zip(truth["file"], truth["end_s"])]
    scores = pred.loc[rows, classes].to_numpy()
    return metrics.macro_roc_auc(y, scores), metrics.padded_cmap(y, scores)


def _pseudo_quality(folder: Path, root: Path, labelled: set[str]) -> tuple[float, float]:
    """Precision and recall of the kept pseudo-labels on the unlabelled files."""
    import tensorflow as tf  # noqa: PLC0415

    from birdkeras.records import format as record_format  # noqa: PLC0415

    card = json.loads((folder / record_format.CARD).read_text())
    classes = sorted(card["name2label"], key=card["name2label"].get)
    calls = pd.read_csv(root / "soundscape_calls.csv", dtype={"species": str})
    calls["file"] = calls["path"].map(lambda p: Path(p).name)
    predicted, kept_windows = set(), set()
    for shard in record_format.list_shards(str(folder)):
        for ex in tf.data.TFRecordDataset(shard).map(record_format.parse_example):
            name, start = ex[record_format.RECORDING_ID].numpy().decode()[7:].split("@")
            if name in labelled:
                continue
            kept_windows.add((name, float(start)))
            for k in np.flatnonzero(ex[record_format.SOFT_TARGETS].numpy() >= 0.5):
                predicted.add((name, float(start), classes[k]))
    unlabelled = {p.name for p in (root / YEAR / "train_soundscapes").iterdir()} - labelled
    truth = set()
    for row in calls[calls["file"].isin(unlabelled)].itertuples():
        for start in range(0, 60, 5):
            if row.start_s < start + 5 and row.end_s > start and row.species in classes:
                truth.add((row.file, float(start), row.species))
    hits = len(predicted & truth)
    return hits / max(len(predicted), 1), hits / max(len(truth), 1)


def run_seed(seed: int, work: Path) -> list[dict]:
    from birdkeras import config as config_lib  # noqa: PLC0415
    from birdkeras.datasets import manifest  # noqa: PLC0415
    from birdkeras.selftrain import pseudolabel  # noqa: PLC0415
    from birdkeras.records import shards  # noqa: PLC0415
    from birdkeras import synth  # noqa: PLC0415
    from birdkeras import train  # noqa: PLC0415

    root = work / "data"
    if not (root / YEAR / "heldout_labels.csv").is_file():
        synth.generate(root, _spec(seed))
        _split_sites(root)
    labelled = set(pd.read_csv(root / YEAR / "train_soundscapes_labels.csv")["filename"])
    common = [f"data.root={root}", "data.corrupt_files=corrupt_files.json", f"seed={seed}",
              "wandb.mode=disabled"]

    def records(cfg_path, name, *extra):
        cfg = config_lib.load_config(REPO / "configs" / cfg_path, [
            *common, f"data.manifest_dir={work / name / 'manifest'}",
            f"tfrecords.dir={work / name / 'tfrecords'}", *extra])
        if not (Path(cfg.tfrecords.dir) / "dataset_card.json").is_file():
            table, name2label, report = manifest.build(cfg)
            manifest.save(cfg.data.manifest_dir, table, name2label, report)
            shards.build(table, name2label, cfg, progress=False)
        return cfg

    pre = train.run(records("demo_pre.yaml", "pre"), work / "pre" / "train")
    rows = []
    clips = records("demo_selftrain.yaml", "clips", "data.sources=[birdclef-2026]",
                    "train.stages=[]", "train.val_soundscapes=null")
    windows = records("demo_selftrain.yaml", "windows", "train.stages=[]",
                      "train.val_soundscapes=null")
    previous = pre["best"]
    for name, cfg in (("(a) clips only", clips), ("(b) + labelled windows", windows)):
        start = time.perf_counter()
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, init_from=pre["best"]))
        previous = train.run(cfg, work / name[:3])["best"]
        auc, cmap = _score_heldout(previous, root, work)
        rows.append({"seed": seed, "setting": name, "macro_auc": auc, "padded_cmap": cmap,
                     "precision": np.nan, "recall": np.nan,
                     "seconds": time.perf_counter() - start})
    pcfg = config_lib.load_config(REPO / "configs" / "stages" / "demo_round1.yaml")
    for k, name in enumerate(("(c) + 1 pseudo-label round", "(d) + 2 pseudo-label rounds"), 1):
        start = time.perf_counter()
        out = work / f"pseudo{k}"
        stage = dataclasses.replace(windows, pseudo=dataclasses.replace(
            windows.pseudo, **{f.name: getattr(pcfg.pseudo, f.name)
                               for f in dataclasses.fields(pcfg.pseudo)}))
        pseudolabel.run([previous], [root / YEAR / "train_soundscapes"], str(out), stage,
                        progress=False)
        precision, recall = _pseudo_quality(out, root, labelled)
        cfg = dataclasses.replace(stage, train=dataclasses.replace(stage.train, init_from=previous),
                                  input=dataclasses.replace(stage.input, mix_dirs=(str(out),),
                                                            mix_weights=(stage.pseudo.mix_weight,)))
        previous = train.run(cfg, work / f"round{k}")["best"]
        auc, cmap = _score_heldout(previous, root, work)
        rows.append({"seed": seed, "setting": name, "macro_auc": auc, "padded_cmap": cmap,
                     "precision": precision, "recall": recall,
                     "seconds": time.perf_counter() - start})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--keep", help="reuse/keep the work in this folder")
    args = parser.parse_args()
    base = Path(args.keep or tempfile.mkdtemp(prefix="bk_sc_"))
    rows = []
    for seed in args.seeds:
        rows += run_seed(seed, base / f"seed{seed}")
        table = pd.DataFrame(rows)
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"), flush=True)
    table = pd.DataFrame(rows)
    mean = table.groupby("setting", sort=False)[["macro_auc", "padded_cmap", "precision",
                                                 "recall"]].mean()
    print(f"\nheld-out labelled soundscapes, mean over seeds {args.seeds}\n")
    print("| setting | macro ROC-AUC | vs (a) | padded cmAP | vs (a) | pseudo-label precision | recall |")
    print("|---|---|---|---|---|---|---|")
    first = mean.iloc[0]
    for name, r in mean.iterrows():
        print(f"| {name} | {r.macro_auc:.3f} | {r.macro_auc - first.macro_auc:+.3f} | "
              f"{r.padded_cmap:.3f} | {r.padded_cmap - first.padded_cmap:+.3f} | "
              + ("" if np.isnan(r.precision) else f"{r.precision:.2f}") + " | "
              + ("" if np.isnan(r.recall) else f"{r.recall:.2f}") + " |")
    print("\nper seed:")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()

"""What training on soundscapes brings: labelled windows, then pseudo-label rounds.

    python benchmarks/soundscape_training.py [--seeds 0 1 2] [--profile benchmark] [--keep DIR]

For each seed: a synthetic world (`--profile benchmark`, birdkeras.synth.plan.HARD: 61
current-year classes with confusable twins, rare species, weak labels, 96 soundscapes
at 8 sites with their own backgrounds and species; `demo`: the demo's species with
more soundscapes, the table before 2026-12-02). The current year's soundscapes of half
the sites are held out (moved to `heldout_soundscapes/` with their labels, and their
unlabelled files to `heldout_unlabelled/`: no stage reads either). One pretraining
(demo_pre.yaml), then, each fine-tuned from it with the same settings
(demo_selftrain.yaml's: BCE, the 2026 classes):

  (a) 2026 clips only;
  (b) + the labelled soundscape windows of the training sites;
  (c) (b), then one pseudo-label round over the training sites' soundscapes (labelled
      and unlabelled) with (b)'s best model, training from it with those windows mixed;
  (d) (c), then a second round;
  (e) (b) with half its training steps: a deliberately weakened model, the known effect
      the benchmark must resolve.

Each is scored on the held-out windows (macro ROC-AUC, padded cmAP). The kept
pseudo-labels (soft target >= 0.5) of each round are compared with the generator's call
list on the unlabelled files (`soundscape_calls.csv`, which no stage reads): precision
and recall over (window, class) pairs. The tables (birdkeras.uncertainty): the mean over
seeds with its 95 % interval over held-out files (bootstrap, 1,000 resamples) and over
seeds (Student's t), and each setting's paired difference from (a) with its interval,
resolved or not.
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


PROFILE = "benchmark"


def _spec(seed: int, profile: str | None = None):
    from birdkeras import synth  # noqa: PLC0415

    if (profile or PROFILE) == "demo":
        return synth.SynthSpec(seed=seed, labelled_soundscapes=8, unlabelled_soundscapes=12)
    return dataclasses.replace(synth.PROFILES["benchmark"], seed=seed)


def _split_sites(root: Path) -> set[str]:
    """Moves the files of half the sites out of train_soundscapes/: the labelled ones
    to heldout_soundscapes/ (scored), the others to heldout_unlabelled/ (never read).
    Returns the held-out labelled files."""
    labels = pd.read_csv(root / YEAR / "train_soundscapes_labels.csv", dtype=str,
                         keep_default_na=False)
    sites = sorted({name.split("_")[3] for name in labels["filename"]})
    held_sites = set(sites[len(sites) // 2:])
    held = {f for f in labels["filename"] if f.split("_")[3] in held_sites}
    (root / YEAR / "heldout_soundscapes").mkdir(exist_ok=True)
    (root / YEAR / "heldout_unlabelled").mkdir(exist_ok=True)
    for path in sorted((root / YEAR / "train_soundscapes").iterdir()):
        if path.name.split("_")[3] in held_sites:
            shutil.move(path, root / YEAR / ("heldout_soundscapes" if path.name in held
                                             else "heldout_unlabelled") / path.name)
    labels[labels["filename"].isin(held)].to_csv(root / YEAR / "heldout_labels.csv", index=False)
    labels[~labels["filename"].isin(held)].to_csv(root / YEAR / "train_soundscapes_labels.csv",
                                                  index=False)
    return held


def _score_heldout(model, root: Path, work: Path, name: str):
    """The model's (or an ensemble's: a list) predictions on the held-out windows (kept
    as `<name>.csv`)."""
    from birdkeras import config as config_lib  # noqa: PLC0415
    from birdkeras import infer  # noqa: PLC0415

    sample = root / YEAR / "sample_submission.csv"
    icfg = config_lib.InferConfig(class_order=str(sample))
    csv = work / "heldout" / f"{name}.csv"
    csv.parent.mkdir(exist_ok=True)
    infer.predict(model if isinstance(model, list) else [model],
                  root / YEAR / "heldout_soundscapes", csv, "tf", icfg,
                  progress=False)
    return heldout_scored(csv, root)


def heldout_scored(csv: Path, root: Path):
    """A submission's scores on the held-out labelled windows, with their labels and
    files (birdkeras.uncertainty.Scored)."""
    from birdkeras import uncertainty  # noqa: PLC0415
    from birdkeras.datasets import soundscapes  # noqa: PLC0415

    pred = pd.read_csv(csv).set_index("row_id")
    truth = soundscapes._read_2026(root / YEAR / "heldout_labels.csv",
                                   root / YEAR / "heldout_soundscapes")
    classes = list(pred.columns)
    y = np.zeros((len(truth), len(classes)))
    for i, labels in enumerate(truth["labels"]):
        y[i, [classes.index(c) for c in labels if c in classes]] = 1
    rows = [f"{Path(f).stem}_{int(e)}" for f, e in zip(truth["file"], truth["end_s"])]
    return uncertainty.Scored(y, pred.loc[rows, classes].to_numpy(),
                              [Path(f).name for f in truth["file"]])


def score_submission(csv: Path, root: Path) -> tuple[float, float]:
    """Macro ROC-AUC and padded cmAP of a submission over the held-out labelled windows."""
    from birdkeras import metrics  # noqa: PLC0415

    scored = heldout_scored(csv, root)
    return (metrics.macro_roc_auc(scored.labels, scored.scores),
            metrics.padded_cmap(scored.labels, scored.scores))


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


def world(seed: int, work: Path, profile: str | None = None):
    """One seed's world in `work` (made once): (its data root, `records`), where
    `records(config, name, *overrides)` is the config with its manifest and TFRecords
    in `work/name`, built unless already there. The other benchmarks on this world
    (training_toolkit.py, winners_recipe.py) start here too."""
    from birdkeras import config as config_lib  # noqa: PLC0415
    from birdkeras import synth  # noqa: PLC0415
    from birdkeras.datasets import manifest  # noqa: PLC0415
    from birdkeras.records import shards  # noqa: PLC0415

    root = work / "data"
    if not (root / YEAR / "heldout_labels.csv").is_file():
        synth.generate(root, _spec(seed, profile))
        _split_sites(root)
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

    return root, records


def trained(cfg, folder: Path) -> str:
    """`folder`'s best model, trained from `cfg` unless already there."""
    from birdkeras import train  # noqa: PLC0415

    best = folder / "best.keras"
    return str(best) if best.is_file() else train.run(cfg, folder)["best"]


def run_seed(seed: int, work: Path, profile: str | None = None) -> tuple[list[dict], dict]:
    """One seed's world and settings: (a table row per setting, setting -> its
    held-out `Scored`). A setting whose model is already in `work` is not retrained."""
    from birdkeras import config as config_lib  # noqa: PLC0415
    from birdkeras import metrics  # noqa: PLC0415
    from birdkeras.selftrain import pseudolabel  # noqa: PLC0415

    root, records = world(seed, work, profile)
    labelled = set(pd.read_csv(root / YEAR / "train_soundscapes_labels.csv")["filename"])
    rows, scored = [], {}

    def record(name, model, began, precision=np.nan, recall=np.nan):
        scored[name] = _score_heldout(model, root, work, name[:3].strip("()"))
        s = scored[name]
        rows.append({"seed": seed, "setting": name,
                     "macro_auc": metrics.macro_roc_auc(s.labels, s.scores),
                     "padded_cmap": metrics.padded_cmap(s.labels, s.scores),
                     "precision": precision, "recall": recall,
                     "seconds": time.perf_counter() - began})

    pre = trained(records("demo_pre.yaml", "pre"), work / "pre" / "train")
    clips = records("demo_selftrain.yaml", "clips", "data.sources=[birdclef-2026]",
                    "train.stages=[]", "train.val_soundscapes=null")
    windows = records("demo_selftrain.yaml", "windows", "train.stages=[]",
                      "train.val_soundscapes=null")
    half = dataclasses.replace(windows, train=dataclasses.replace(
        windows.train, steps_per_epoch=max(windows.train.steps_per_epoch // 2, 1)))
    previous = pre
    for name, cfg in (("(a) clips only", clips), ("(b) + labelled windows", windows),
                      ("(e) (b) with half the steps (weakened)", half)):
        began = time.perf_counter()
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, init_from=pre))
        model = trained(cfg, work / name[:3])
        previous = model if name.startswith("(b)") else previous
        record(name, model, began)
    pcfg = config_lib.load_config(REPO / "configs" / "stages" / "demo_round1.yaml")
    for k, name in enumerate(("(c) + 1 pseudo-label round", "(d) + 2 pseudo-label rounds"), 1):
        began = time.perf_counter()
        out = work / f"pseudo{k}"
        stage = dataclasses.replace(windows, pseudo=dataclasses.replace(
            windows.pseudo, **{f.name: getattr(pcfg.pseudo, f.name)
                               for f in dataclasses.fields(pcfg.pseudo)}))
        if not (out / "dataset_card.json").is_file():
            pseudolabel.run([previous], [root / YEAR / "train_soundscapes"], str(out), stage,
                            progress=False)
        precision, recall = _pseudo_quality(out, root, labelled)
        cfg = dataclasses.replace(stage, train=dataclasses.replace(stage.train, init_from=previous),
                                  input=dataclasses.replace(stage.input, mix_dirs=(str(out),),
                                                            mix_weights=(stage.pseudo.mix_weight,)))
        previous = trained(cfg, work / f"round{k}")
        record(name, previous, began, precision, recall)
    order = ["(a)", "(b)", "(c)", "(d)", "(e)"]
    rows.sort(key=lambda r: order.index(r["setting"][:3]))
    return rows, {n: scored[n] for n in sorted(scored, key=lambda n: order.index(n[:3]))}


def seeds_and_tables(run, seeds, work: Path) -> tuple[pd.DataFrame, dict]:
    """`run(seed, work / f"seed{seed}")` per seed (its table rows so far printed after
    each), then each metric's table of every setting against the first (means with
    95 % intervals over held-out files and over seeds, paired differences): (the rows,
    setting -> its `Scored` per seed)."""
    from birdkeras import metrics  # noqa: PLC0415
    from birdkeras import uncertainty  # noqa: PLC0415

    rows, results = [], {}
    for seed in seeds:
        seed_rows, scored = run(seed, work / f"seed{seed}")
        rows += seed_rows
        for name, s in scored.items():
            results.setdefault(name, []).append(s)
        print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3f}"),
              flush=True)
    print(f"\nseeds {list(seeds)}; work in {work}\n")
    for metric, label in ((metrics.macro_roc_auc, "macro ROC-AUC"),
                          (metrics.padded_cmap, "padded cmAP")):
        compared = uncertainty.compare(results, metric, next(iter(results)))
        print(uncertainty.markdown(compared, label) + "\n")
    return pd.DataFrame(rows), results


def main() -> None:
    from birdkeras import metrics  # noqa: PLC0415
    from birdkeras import uncertainty  # noqa: PLC0415

    global PROFILE  # noqa: PLW0603 - the command line's choice, for run_seed's callers
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--profile", choices=["benchmark", "demo"], default=PROFILE)
    parser.add_argument("--keep", help="reuse/keep the work in this folder")
    args = parser.parse_args()
    PROFILE = args.profile
    base = Path(args.keep or tempfile.mkdtemp(prefix="bk_sc_"))
    table, results = seeds_and_tables(run_seed, args.seeds, base)
    windows = len(next(iter(results.values()))[0].files)
    print(f"held-out labelled windows per seed: {windows}; profile {args.profile}\n")
    # The known effect: (e) is (b) with half its steps; it must score lower, resolved.
    b, e = (next(n for n in results if n.startswith(k)) for k in ("(b)", "(e)"))
    known = uncertainty.compare({b: results[b], e: results[e]}, metrics.macro_roc_auc, b)
    print("the known effect, (e) against (b):\n"
          + uncertainty.markdown(known, "macro ROC-AUC") + "\n")
    quality = table.groupby("setting", sort=False)[["precision", "recall", "seconds"]].mean()
    print("pseudo-label precision / recall (mean over seeds), minutes per setting:")
    for name, r in quality.iterrows():
        pr = "" if np.isnan(r.precision) else f"precision {r.precision:.2f}, recall {r.recall:.2f}, "
        print(f"  {name}: {pr}{r.seconds / 60:.1f} min")
    print("\nper seed:")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()

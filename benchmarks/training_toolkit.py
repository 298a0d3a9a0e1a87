"""What the training toolkit brings: one fold vs a 5-fold ensemble, EMA, augmentations.

    python benchmarks/training_toolkit.py [--seeds 0 1] [--keep DIR]

On the soundscape benchmark's world (`benchmarks/soundscape_training.py`: the synthetic
BirdCLEF+ 2026 with half its sites' labelled soundscapes held out and scored), one
pretraining (demo_pre.yaml), then each setting fine-tuned from it on the 2026 clips and
the training sites' labelled windows (its setting (b): demo_selftrain.yaml's BCE,
5 epochs of 25 steps), the records split into 5 folds:

  (a) one fold (validated on fold 0): the baseline;
  (b) (a) with EMA of the weights (`train.ema`, momentum 0.99: the default 0.999 averages
      over ~1,000 steps, more than these 125);
  (c) (a) with the new waveform and spectrogram augmentations on (gain, time shift,
      coloured noise, pitch shift, time stretch, FilterAugment);
  (d) the k-fold ensemble of (a)'s setting over every fold the records hold
      (`birdkeras.train.folds`; `predict` averages the folds' best models). The
      soundscape windows are folded by site and the benchmark trains on 4 sites, so
      the 5 folds asked for hold 4 sites' windows: a 4-fold ensemble, one site each (the
      clips are all train-only: no class has 5 of them).

Training minutes are each setting's wall time from its first config.yaml to its last
run_report.json (k-fold: every fold and the out-of-fold predictions), so a setting
reused from `--keep` keeps its figure.

Each is scored on the held-out windows (macro ROC-AUC, padded cmAP) with its training
minutes; the tables (birdkeras.uncertainty) give each setting's mean with its 95 %
interval over held-out files and over seeds, and its paired difference from (a).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import soundscape_training as base  # noqa: E402

FOLDS = 5
AUGMENTATIONS = ["augment.gain_probability=0.5", "augment.shift_probability=0.5",
                 "augment.coloured_noise_probability=0.3",
                 "augment.pitch_shift_probability=0.3", "augment.time_stretch_probability=0.3",
                 "augment.filter_augment_probability=0.5"]
SETTINGS = {
    "(a) one fold": [],
    "(b) one fold + EMA": ["train.ema=true", "train.ema_momentum=0.99"],
    "(c) one fold + augmentations": AUGMENTATIONS,
    "(d) k-fold ensemble": [],  # (a)'s settings, every fold
}
KFOLD = "(d) k-fold ensemble"


def run_seed(seed: int, work: Path) -> tuple[list[dict], dict]:
    """One seed's world and settings: (a table row per setting, setting -> its held-out
    `Scored`). A setting whose model is already in `work` is not retrained."""
    from birdkeras import metrics  # noqa: PLC0415
    from birdkeras.train import folds  # noqa: PLC0415

    root, records = base.world(seed, work)
    pre = base.trained(records("demo_pre.yaml", "pre"), work / "pre" / "train")
    rows, scored = [], {}
    for name, extra in SETTINGS.items():
        cfg = records("demo_selftrain.yaml", "windows", "train.stages=[]",
                      "train.val_soundscapes=null", f"data.num_folds={FOLDS}",
                      f"train.init_from={pre}", *extra)
        folder = work / name[:3].strip("()")
        if name == KFOLD:
            folds.run_folds(cfg, folder, folds=folds.available_folds(cfg))
            model = str(folder)
        else:
            model = base.trained(cfg, folder)
        scored[name] = s = base._score_heldout(model, root, work, name[:3].strip("()"))  # noqa: SLF001
        rows.append({"seed": seed, "setting": name,
                     "macro_auc": metrics.macro_roc_auc(s.labels, s.scores),
                     "padded_cmap": metrics.padded_cmap(s.labels, s.scores),
                     "train_minutes": minutes(folder)})
    return rows, scored


def minutes(folder: Path) -> float:
    """Wall minutes from a setting's first config.yaml to its last run_report.json."""
    began = min(p.stat().st_mtime for p in folder.rglob("config.yaml"))
    ended = max(p.stat().st_mtime for p in folder.rglob("run_report.json"))
    return (ended - began) / 60


def main(run=None, doc: str | None = None, prefix: str = "bk_toolkit_") -> None:
    """The command line of this benchmark (and of winners_recipe.py's, with its `run`):
    seeds, tables, training minutes per setting, the rows per seed."""
    parser = argparse.ArgumentParser(description=(doc or __doc__).splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--keep", help="reuse/keep the work in this folder")
    args = parser.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix=prefix))
    table, _ = base.seeds_and_tables(run or run_seed, args.seeds, work)
    means = table.groupby("setting", sort=False).mean(numeric_only=True)
    print("training minutes per setting (mean over seeds; 2 cores)"
          + (", inference windows/s:" if "windows_per_s" in means else ":"))
    for name, m in means.iterrows():
        speed = f", {m.windows_per_s:.1f} windows/s" if "windows_per_s" in means else ""
        print(f"  {name}: {m.train_minutes:.1f}{speed}")
    print("\nper seed:")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()

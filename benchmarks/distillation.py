"""What embedding distillation brings on the benchmark's world.

    python benchmarks/distillation.py [--seeds 0 1] [--keep DIR]

On the soundscape benchmark's world (`benchmarks/soundscape_training.py`: the synthetic
BirdCLEF+ 2026 with half its sites' labelled soundscapes held out and scored), one
pretraining (demo_pre.yaml), then from it, on the 2026 clips and the training sites'
labelled windows (demo_selftrain.yaml's BCE, 5 epochs of 25 steps, validated on fold 0):

  (a) today's CNN: the training toolkit's baseline;
  (t) the teacher: (a)'s setting trained 3x longer (15 epochs), a larger-budget
      birdkeras model; its pooled 1,280-d features of every training clip's windows
      written by `birdkeras embed --manifest` (`embeddings.extract.run`);
  (b) (a) with `train.distill_embedding` from (t), weight 0.1 (the 5th place's);
  (c) (a) with it at weight 1.0.

(b) and (c) train as long as (a); their minutes do not count the teacher's. Each is
scored on the held-out windows (macro ROC-AUC, padded cmAP); the tables
(birdkeras.uncertainty) give each setting's mean with its 95 % interval over held-out
files and over seeds, and its paired difference from (a).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import soundscape_training as base  # noqa: E402
import training_toolkit  # noqa: E402

SETTINGS = {
    "(a) today's CNN": [],
    "(t) teacher (3x longer)": ["train.epochs=15"],
    "(b) + distillation x 0.1": ["train.distill_embedding.weight=0.1"],
    "(c) + distillation x 1.0": ["train.distill_embedding.weight=1.0"],
}


def run_seed(seed: int, work: Path) -> tuple[list[dict], dict]:
    """One seed's world and settings: (a table row per setting, setting -> its held-out
    `Scored`). A setting whose model is already in `work` is not retrained."""
    from birdkeras import metrics  # noqa: PLC0415
    from birdkeras.datasets import manifest  # noqa: PLC0415
    from birdkeras.embeddings import extract  # noqa: PLC0415

    root, records = base.world(seed, work)
    pre = base.trained(records("demo_pre.yaml", "pre"), work / "pre" / "train")
    teacher_dir = work / "teacher_embeddings"
    rows, scored = [], {}
    for name, extra in SETTINGS.items():
        key = name[:3].strip("()")
        if name.startswith(("(b)", "(c)")):
            extra = [*extra, f"train.distill_embedding.teacher={teacher_dir}"]
        cfg = records("demo_selftrain.yaml", "windows", "train.stages=[]",
                      "train.val_soundscapes=null", f"data.num_folds={training_toolkit.FOLDS}",
                      f"train.init_from={pre}", *extra)
        folder = work / key
        model = base.trained(cfg, folder)
        if name.startswith("(t)") and not (teacher_dir / "dataset_card.json").is_file():
            clips, name2label = manifest.load(cfg.data.manifest_dir)
            extract.run(model, str(teacher_dir), clips=clips, root=cfg.data.root,
                        classes=sorted(name2label, key=name2label.get), progress=False)
        scored[name] = s = base._score_heldout(model, root, work, key)  # noqa: SLF001
        rows.append({"seed": seed, "setting": name,
                     "macro_auc": metrics.macro_roc_auc(s.labels, s.scores),
                     "padded_cmap": metrics.padded_cmap(s.labels, s.scores),
                     "train_minutes": training_toolkit.minutes(folder)})
    return rows, scored


def main() -> None:
    training_toolkit.main(run_seed, __doc__, "bk_distill_")


if __name__ == "__main__":
    main()

"""What the 2026 winners' recipe brings: distillation, capped pseudo-label rounds, a
specialist, a per-class rank blend with the teacher.

    python benchmarks/winners_recipe.py [--seeds 0 1] [--keep DIR]

On the soundscape benchmark's world (`benchmarks/soundscape_training.py`: the synthetic
BirdCLEF+ 2026 with half its sites' labelled soundscapes held out and scored), one
pretraining (demo_pre.yaml), then from it, on the 2026 clips and the training sites'
labelled windows (demo_selftrain.yaml's BCE, 5 epochs of 25 steps, validated on fold 0
of 5):

  (a) today's CNN: the training toolkit's baseline;
  (t) the teacher: (a)'s setting trained 3x longer (15 epochs), a larger-budget
      birdkeras model; its pooled 1,280-d features of every training clip's windows
      written by `birdkeras embed --manifest` (`embeddings.extract.run`);
  (b) (a) with `train.distill_embedding` from (t), weight 0.1 (the 5th place's);
  (c) (b), then two pseudo-label rounds as the winners capped them: each round labels
      the training sites' soundscapes with the previous best model (demo_round1.yaml:
      threshold 0.5, the labelled windows kept with their hard labels), each class
      capped by the teacher's own probability (`pseudo.cap_model`), and trains from
      that model with the windows mixed in at 0.3, their share of each batch's loss
      at most half the labelled share (`input.mix_loss_cap=0.5`); the rounds do not
      distil (configs/b0_distill.yaml's ladder: distil, then rounds);
  (d) (c) with a specialist for the amphibians and insects (`data.specialist:
      [Amphibia, Insecta]`, (a)'s setting on those classes only), averaged into (c)'s
      columns of its classes as `predict --model C --model SPEC` does;
  (e) the per-class rank blend (`birdkeras.infer.blend`, method rank) of (c), (d) and
      the teacher's scores, its weights tuned on the fold-0 windows: out of fold for
      every member (none trained on them), as `birdkeras blend tune` does on oof.csv.

Each is scored on the held-out windows (macro ROC-AUC, padded cmAP), with its own
training minutes (not its inputs': (c) counts its pseudo-labelling and both rounds,
(d) the specialist, (e) the blend's tuning) and its inference windows/s on the held-out
files (a blend: every member's time summed); (c)'s rows carry each round's
pseudo-label precision and recall against the generator's calls. The tables
(birdkeras.uncertainty) give each setting's mean with its 95 % interval over held-out
files and over seeds, and its paired difference from (a).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import soundscape_training as base  # noqa: E402
import training_toolkit  # noqa: E402

TEACHER_EPOCHS = 15
DISTIL = "train.distill_embedding.weight=0.1"
ROUNDS = 2
CAP = 0.5
SPECIALIST = "[Amphibia, Insecta]"
NAMES = {"a": "(a) today's CNN", "t": "(t) teacher (3x longer)",
         "b": "(b) + distillation x 0.1", "c": f"(c) (b) + {ROUNDS} capped pseudo-label rounds",
         "d": "(d) (c) + amphibian/insect specialist",
         "e": "(e) rank blend of (c), (d), teacher"}


def run_seed(seed: int, work: Path) -> tuple[list[dict], dict]:
    """One seed's world and settings: (a table row per setting, setting -> its held-out
    `Scored`). A setting whose model is already in `work` is not retrained."""
    from birdkeras import metrics, uncertainty  # noqa: PLC0415
    from birdkeras.datasets import manifest  # noqa: PLC0415
    from birdkeras.embeddings import extract  # noqa: PLC0415
    from birdkeras.infer import blend  # noqa: PLC0415

    root, records = base.world(seed, work)
    pre = base.trained(records("demo_pre.yaml", "pre"), work / "pre" / "train")
    teacher_dir = work / "teacher_embeddings"
    labelled = set(pd.read_csv(root / base.YEAR / "train_soundscapes_labels.csv")["filename"])
    rows, scored, speed, models = [], {}, {}, {}

    def config(*extra):
        return records("demo_selftrain.yaml", "windows", "train.stages=[]",
                       "train.val_soundscapes=null", f"data.num_folds={training_toolkit.FOLDS}",
                       *extra)

    def record(key, model, minutes, **extra):
        began = time.perf_counter()
        scored[NAMES[key]] = s = base._score_heldout(model, root, work, key)  # noqa: SLF001
        speed[key] = len(s.files) / (time.perf_counter() - began)
        rows.append({"seed": seed, "setting": NAMES[key],
                     "macro_auc": metrics.macro_roc_auc(s.labels, s.scores),
                     "padded_cmap": metrics.padded_cmap(s.labels, s.scores),
                     "train_minutes": minutes, "windows_per_s": speed[key], **extra})

    for key, extra in (("a", []), ("t", [f"train.epochs={TEACHER_EPOCHS}"]),
                       ("b", [DISTIL, f"train.distill_embedding.teacher={teacher_dir}"])):
        cfg = config(f"train.init_from={pre}", *extra)
        models[key] = base.trained(cfg, work / key)
        if key == "t" and not (teacher_dir / "dataset_card.json").is_file():
            clips, name2label = manifest.load(cfg.data.manifest_dir)
            extract.run(models[key], str(teacher_dir), clips=clips, root=cfg.data.root,
                        classes=sorted(name2label, key=name2label.get), progress=False)
        record(key, models[key], training_toolkit.minutes(work / key))

    previous, quality = models["b"], {}
    for k in range(1, ROUNDS + 1):
        previous, quality[k] = _capped_round(config, previous, models["t"], work / f"round{k}",
                                             root, labelled)
    models["c"] = previous
    record("c", models["c"], _minutes([work / f"round{k}" for k in range(1, ROUNDS + 1)]),
           **{f"round{k}_{m}": v for k, pr in quality.items()
              for m, v in zip(("precision", "recall"), pr)})

    spec = records("demo_selftrain.yaml", "specialist", "train.stages=[]",
                   "train.val_soundscapes=null", f"data.num_folds={training_toolkit.FOLDS}",
                   f"train.init_from={pre}", f"data.specialist={SPECIALIST}")
    models["spec"] = base.trained(spec, work / "specialist")
    record("d", [models["c"], models["spec"]], training_toolkit.minutes(work / "specialist"))

    began = time.perf_counter()
    members = [[models["c"]], [models["c"], models["spec"]], [models["t"]]]
    labels, oof = _fold0_scores(config(), members)
    weights, oof_auc = blend.tune(oof, labels, "rank", step=0.1)
    tuned = (time.perf_counter() - began) / 60
    heldout = [scored[NAMES[k]] for k in ("c", "d", "t")]
    s = uncertainty.Scored(heldout[0].labels,
                           blend.combine([h.scores for h in heldout], weights, "rank"),
                           heldout[0].files)
    scored[NAMES["e"]] = s
    rows.append({"seed": seed, "setting": NAMES["e"],
                 "macro_auc": metrics.macro_roc_auc(s.labels, s.scores),
                 "padded_cmap": metrics.padded_cmap(s.labels, s.scores),
                 "train_minutes": tuned,
                 "windows_per_s": 1 / sum(1 / speed[k] for k in ("c", "d", "t")),
                 "blend_weights": " ".join(f"{w:.1f}" for w in weights),
                 "oof_macro_auc": oof_auc})
    return rows, scored


def _capped_round(config, previous: str, teacher: str, out: Path, root: Path,
                  labelled: set[str]) -> tuple[str, tuple[float, float]]:
    """One capped pseudo-label round: (its best model, the kept pseudo-labels'
    precision and recall on the unlabelled files)."""
    from birdkeras.selftrain import pseudolabel  # noqa: PLC0415

    stage = [f"pseudo.audio_dirs=[{base.YEAR}/train_soundscapes]", "pseudo.threshold=0.5",
             "pseudo.power=1.0", f"pseudo.hard_labels={base.YEAR}",
             f"pseudo.cap_model={teacher}"]
    shards = out / "pseudo"
    if not (shards / "dataset_card.json").is_file():
        pseudolabel.run([previous], [root / base.YEAR / "train_soundscapes"], str(shards),
                        config(*stage), progress=False)
    quality = base._pseudo_quality(shards, root, labelled)  # noqa: SLF001
    cfg = config(*stage, f"train.init_from={previous}", f"input.mix_dirs=[{shards}]",
                 "input.mix_weights=[0.3]", f"input.mix_loss_cap={CAP}")
    return base.trained(cfg, out / "train"), quality


def _minutes(folders: list[Path]) -> float:
    """Wall minutes from the first file written in `folders` (the first pseudo-label
    shard) to their last run_report.json (a run reused from --keep keeps its figure)."""
    files = [p for f in folders for p in f.rglob("*") if p.is_file()]
    ended = max(p.stat().st_mtime for p in files if p.name == "run_report.json")
    return (ended - min(p.stat().st_mtime for p in files)) / 60


def _fold0_scores(cfg, members: list[list[str]]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The fold-0 windows' labels and each member's probabilities on them (a member:
    one model, or a model and its specialist, averaged as predict averages them)."""
    from birdkeras.infer import runners as runners_lib  # noqa: PLC0415
    from birdkeras.infer import scoring  # noqa: PLC0415
    from birdkeras.records import format as record_format  # noqa: PLC0415
    from birdkeras.records import pipeline  # noqa: PLC0415

    card = record_format.read_dataset_card(cfg.tfrecords.dir)
    names = sorted(card["name2label"], key=card["name2label"].get)
    clips, labels = [], []
    for x, y, _, _ in pipeline.identified_windows(cfg, len(names),
                                                  pipeline.fold_files(cfg, training=False), 64):
        clips.append(x.numpy())
        labels.append(y.numpy())
    clips = np.concatenate(clips)
    scores = []
    for paths in members:
        runners = runners_lib.load_runners(paths, "tf")
        if runners[0].classes != names:
            raise ValueError(f"{paths[0]} scores {runners[0].classes[:3]}..., not the "
                             f"records' classes {names[:3]}...")
        scores.append(scoring.score_file(runners, [clips], "", 64))
    return np.concatenate(labels), scores


def main() -> None:
    training_toolkit.main(run_seed, __doc__, "bk_recipe_")


if __name__ == "__main__":
    main()

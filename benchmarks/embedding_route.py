"""The embedding route beside the CNN route, and each of its post-processing steps.

    python benchmarks/embedding_route.py [--work DIR] [--seed 0]

On the soundscape benchmark's data (`benchmarks/soundscape_training.py`: the synthetic
BirdCLEF+ 2026 with half the labelled sites held out; made here if `--work` has none):
the pretrained birdkeras B0 is the frozen embedding model (the stand-in for Perch v2,
whose weights do not reach this machine). It embeds the 2026 clips and the training
soundscapes; `birdkeras route` trains the probe, MLP and sequence heads (folds by site)
and tunes on their out-of-fold predictions, with the fine-tuned CNN (condition (a)) to
fuse. Scored on the held-out soundscapes (macro ROC-AUC, padded cmAP), side by side:
the CNN alone, each head, the sequence head fused with the CNN, and each post-processing
switch turned on alone over the sequence head.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pandas as pd  # noqa: E402

import soundscape_training as base  # noqa: E402

REPO = base.REPO
YEAR = base.YEAR


def _score(models, root: Path, work: Path, icfg) -> tuple[float, float]:
    from birdkeras import infer  # noqa: PLC0415

    infer.predict([str(m) for m in models], root / YEAR / "heldout_soundscapes",
                  work / "heldout.csv", "onnx" if Path(models[0]).is_dir() else "tf", icfg,
                  progress=False)
    return base.heldout_scored(work / "heldout.csv", root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", help="the soundscape benchmark's seed folder (reused)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", choices=["benchmark", "demo"], default="benchmark",
                        help="the synthetic world (benchmarks/soundscape_training.py)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bk_route_"))
    # What the route needs of the soundscape benchmark's seed: its world, the pretrained
    # B0 (the frozen model) and condition (a), the CNN fine-tuned on the clips (to fuse).
    _, records = base.world(args.seed, work, args.profile)
    pre = base.trained(records("demo_pre.yaml", "pre"), work / "pre" / "train")
    clips = records("demo_selftrain.yaml", "clips", "data.sources=[birdclef-2026]",
                    "train.stages=[]", "train.val_soundscapes=null")
    base.trained(dataclasses.replace(clips, train=dataclasses.replace(clips.train,
                                                                       init_from=pre)),
                 work / "(a)")

    from birdkeras import config as config_lib  # noqa: PLC0415
    from birdkeras.embeddings import extract  # noqa: PLC0415
    from birdkeras.datasets import manifest  # noqa: PLC0415
    from birdkeras.embeddings import fit  # noqa: PLC0415

    root, pre, cnn = work / "data", work / "pre" / "train" / "best.keras", work / "(a)" / "best.keras"
    sample = root / YEAR / "sample_submission.csv"
    classes = list(pd.read_csv(sample, nrows=0).columns[1:])
    emb = work / "embeddings"
    if not (emb / "soundscapes" / "dataset_card.json").is_file():
        clips, _ = manifest.load(work / "clips" / "manifest")
        extract.run(pre, str(emb / "clips"), clips=clips, root=root, classes=classes,
                  progress=False)
        extract.run(pre, str(emb / "soundscapes"), audio=[root / YEAR / "train_soundscapes"],
                  root=root, labels_source=YEAR, classes=classes, progress=False)
    cfg = config_lib.load_config(None, [f"seed={args.seed}"])
    card = fit.train(cfg, [str(emb / "clips"), str(emb / "soundscapes")], work / "route",
                       root / YEAR / "taxonomy.csv", cnn)
    print("out of fold:", {k: round(v["macro_auc"], 3) for k, v in card["oof_scores"].items()},
          "tuned:", {k: card[k] for k in ("temperatures", "prior_weight", "cnn_weight")})

    off = config_lib.InferConfig(class_order=str(sample), taxon_temperature=False,
                                 site_prior=False, cnn_fusion=False, route_cross_window=False)
    rows = [("CNN fine-tuned on clips (condition (a))", [cnn], config_lib.InferConfig(
        class_order=str(sample)))]
    for head in ("probe", "mlp", "sequence"):
        rows.append((f"embedding route: {head} head", [work / "route"],
                     dataclasses.replace(off, route_head=head)))
    rows.append((f"embedding route: heads blended {card['head_weights']} (tuned out of fold)",
                 [work / "route"], dataclasses.replace(off, route_head="blend")))
    rows.append(("sequence head + CNN fusion (weight tuned out of fold: "
                 f"{card['cnn_weight']:.1f})", [work / "route"],
                 dataclasses.replace(off, cnn_fusion=True)))
    switches = [("per-taxon temperature", {"taxon_temperature": True}),
                ("site/hour prior (weight tuned: %.1f)" % card["prior_weight"], {"site_prior": True}),
                ("per-class thresholds (tuned)", {"class_thresholds": True}),
                ("per-class thresholds (tuned), sharpened (power 2)",
                 {"class_thresholds": True, "threshold_mode": "sharpen"}),
                ("file-level top-3 scaling, power 0.5", {"file_topk_power": 0.5}),
                ("rank-aware scaling, power 0.5", {"rank_power": 0.5}),
                ("adaptive delta-shift smoothing 0.3", {"adaptive_smoothing": 0.3}),
                ("cross-window steps tuned out of fold %s" % card["cross_window"],
                 {"route_cross_window": True}),
                ("circular-shift TTA of the window sequence [1, -1]",
                 {"route_shift_tta": (1, -1)})]
    for name, knobs in switches:
        rows.append((f"sequence head + {name}", [work / "route"],
                     dataclasses.replace(off, **knobs)))
    by_taxon = fit.train(dataclasses.replace(cfg, route=dataclasses.replace(
        cfg.route, cross_window_by_taxon=True, prior_by_taxon=True, probe_temporal=True)),
        [str(emb / "clips"), str(emb / "soundscapes")], work / "route_by_taxon",
        root / YEAR / "taxonomy.csv", cnn)
    rows.append(("sequence head + cross-window steps tuned per taxon "
                 f"{by_taxon['cross_window_by_taxon']}", [work / "route_by_taxon"],
                 dataclasses.replace(off, route_cross_window=True)))
    rows.append(("probe with temporal features (neighbours' mean/max, position)",
                 [work / "route_by_taxon"], dataclasses.replace(off, route_head="probe")))
    rows.append(("sequence head + site/hour prior, weight per taxon "
                 f"{by_taxon['prior_weight_by_taxon']}", [work / "route_by_taxon"],
                 dataclasses.replace(off, site_prior=True)))
    # One route per switch that changes what is trained or tuned, each beside the default.
    variants = [("sequence head + site/hour prior in logit space", {"prior_space": "logit"},
                 {"site_prior": True}),
                ("sequence head with prototypes started at class means",
                 {"prototype_init": "class_mean"}, {}),
                ("sequence head, SWA over the last 10 epochs", {"swa_epochs": 10}, {}),
                ("sequence head, distilled to the frozen model (weight 0.3)",
                 {"distill_weight": 0.3}, {})]
    for k, (name, route_knobs, infer_knobs) in enumerate(variants):
        fit.train(dataclasses.replace(cfg, route=dataclasses.replace(cfg.route, **route_knobs)),
                  [str(emb / "clips"), str(emb / "soundscapes")], work / f"route_variant{k}",
                  root / YEAR / "taxonomy.csv", cnn)
        rows.append((name, [work / f"route_variant{k}"], dataclasses.replace(off, **infer_knobs)))
    from birdkeras import metrics, uncertainty  # noqa: PLC0415

    results = {}
    for name, models, icfg in rows:
        results[name] = [_score(models, root, work, icfg)]
        print(name, round(metrics.macro_roc_auc(results[name][0].labels,
                                                results[name][0].scores), 3), flush=True)
    # Compared with the sequence head (one seed: files resampled, no seed interval).
    sequence = "embedding route: sequence head"
    results = {sequence: results.pop(sequence), **results}
    for metric, label in ((metrics.macro_roc_auc, "macro ROC-AUC"),
                          (metrics.padded_cmap, "padded cmAP")):
        print(uncertainty.markdown(uncertainty.compare(results, metric, sequence), label))


if __name__ == "__main__":
    main()

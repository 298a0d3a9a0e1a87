"""Effect of each post-processing switch on the synthetic labelled soundscapes.

    make demo    # trains the models this reads
    python benchmarks/postprocessing.py [--demo work/demo]

Scores the demo's fine-tuned model (`ft/train/best.keras`) on the demo's labelled
synthetic soundscapes (birdclef-2026/train_soundscapes, labelled windows) with `birdkeras predict`, once
per setting, and prints macro ROC-AUC and padded cmAP beside the plain run's. Ensembling
adds the same run's last-epoch model (`final.keras`) and the from-scratch model.
Few windows (72 with the demo's data): the tables' intervals (birdkeras.uncertainty,
files resampled) say which differences are noise.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", default="work/demo", help="the make demo workdir")
    args = parser.parse_args()

    import pandas as pd  # noqa: PLC0415

    from birdkeras import metrics, uncertainty  # noqa: PLC0415
    from birdkeras.infer import evaluate  # noqa: PLC0415
    from birdkeras import infer  # noqa: PLC0415
    from birdkeras import config as config_lib  # noqa: PLC0415

    demo = Path(args.demo)
    data = demo / "data"
    best = demo / "ft" / "train" / "best.keras"
    if not best.is_file():
        raise SystemExit(f"{best} not found: run `make demo` first")
    soundscapes = data / "birdclef-2026" / "train_soundscapes"
    order = str(data / "birdclef-2026" / "sample_submission.csv")
    settings = [
        ("none", {}, [best]),
        ("smoothing [0.25, 0.5, 0.25]", {"smoothing": (0.25, 0.5, 0.25)}, [best]),
        ("smoothing [0.1, 0.8, 0.1]", {"smoothing": (0.1, 0.8, 0.1)}, [best]),
        ("file scaling: max, w=0.3", {"file_scaling": "max"}, [best]),
        ("file scaling: top-3 mean, w=0.3", {"file_scaling": "topk"}, [best]),
        ("time-shift TTA (-1 s, +1 s)", {"tta_shifts_s": (-1.0, 1.0)}, [best]),
        ("ensemble: best + final", {}, [best, demo / "ft" / "train" / "final.keras"]),
        ("ensemble: best + from-scratch best", {},
         [best, demo / "ft" / "train_scratch" / "best.keras"]),
    ]
    out = Path(tempfile.mkdtemp(prefix="bk_post_"))
    results = {}
    for i, (name, knobs, models) in enumerate(settings):
        icfg = config_lib.InferConfig(class_order=order, **knobs)
        infer.predict([str(m) for m in models], soundscapes, out / f"{i}.csv", "tf", icfg,
                      progress=False)
        pred = pd.read_csv(out / f"{i}.csv").set_index("row_id")
        truth = evaluate.truth_table(data, "birdclef-2026", list(pred.columns))
        results[name] = [uncertainty.Scored(truth.to_numpy(), pred.loc[truth.index].to_numpy(),
                                            [r.rsplit("_", 1)[0] for r in truth.index])]
    windows = len(next(iter(results.values()))[0].files)
    print(f"\n{windows} windows of the synthetic labelled soundscapes (one model, so no "
          "seed interval; files resampled for the others)\n")
    for metric, label in ((metrics.macro_roc_auc, "macro ROC-AUC"),
                          (metrics.padded_cmap, "padded cmAP")):
        print(uncertainty.markdown(uncertainty.compare(results, metric, "none"), label) + "\n")


if __name__ == "__main__":
    main()

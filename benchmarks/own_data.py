"""Your own labels on real audio: BirdNET's own score against a probe on its embeddings.

    python benchmarks/own_data.py [--window-s 3] [--hop-s 1]

Needs the birdnet extra (`pip install 'birdkeras[birdnet]'`; `make dev` has it). The hand-labelled
real recordings of `../shared/data/real/`: PyHa's Screaming Piha calls
(`pyha/ScreamingPiha2.mp3`, `ScreamingPiha3.mp3`, labels from
`ScreamingPiha_Manual_Labels.csv`: IN FILE, OFFSET, DURATION) as *Lipaugus vociferans*.
(scikit-maad's Red-faced Spinetail, `maad/spinetail.wav`, calls for 2.5 s every 5 s:
every 3 s window of its first half holds a call, so a probe has no negative to learn
from; it is left out.)

Each recording is cut into windows (`--window-s`, `--hop-s`) labelled by
`birdkeras.datasets.annotations` (overlap >= 0.5 s or half the call). Train on one part,
score the other: windows that start in a recording's first half train, windows that
start at least one window later score (no audio shared between the two). Scored:
(a) BirdNET V2.4's own probability for the species (its logit, mapped by scientific
name), (b) a logistic probe (scikit-learn, balanced class weights) on BirdNET's
1,024-d embeddings of the training windows, (c) a birdkeras CNN (demo_ft.yaml's B0 at
32 kHz, in-model log-mel and SpecAugment, BCE) trained on the same training windows'
audio, started from `--cnn-init` (default: the demo's model pretrained on synthetic
birds, when `make demo` has run; else random weights). ROC-AUC and average precision, with a 95 %
bootstrap interval over the scored windows (windows, not recordings: there are only
three recordings, so read the intervals as optimistic).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import average_precision_score, roc_auc_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from birdkeras.audio import io as audio_io  # noqa: E402
from birdkeras.audio import windows as audio_windows  # noqa: E402
from birdkeras.datasets import annotations as ann  # noqa: E402
from birdkeras.embeddings import birdnet  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
REAL = REPO.parent / "shared" / "data" / "real"
CNN_RATE = 32000


def datasets() -> dict:
    """name -> (annotations table, audio folder, species, the label kept)."""
    piha, _ = ann.read(REAL / "pyha" / "ScreamingPiha_Manual_Labels.csv",
                       file_column="IN FILE", start_column="OFFSET",
                       duration_column="DURATION", label_column="MANUAL ID")
    piha = piha[piha["file"].isin(["ScreamingPiha2.wav", "ScreamingPiha3.wav"])]
    return {"Screaming Piha (PyHa, 2 recordings, 26 calls)":
            (piha, REAL / "pyha", "Lipaugus vociferans", "bird")}


def cnn_scores(fit_clips, fit_y, test_clips, init: str | None, epochs: int) -> np.ndarray:
    """(c): a birdkeras classifier trained on `fit_clips` (one class, BCE, positives
    weighted by the negatives' share), its probabilities on `test_clips`."""
    import keras  # noqa: PLC0415

    from birdkeras.config import load_config  # noqa: PLC0415
    from birdkeras.model import classifier  # noqa: PLC0415
    from birdkeras.train import trainer  # noqa: PLC0415

    keras.utils.set_random_seed(0)
    cfg = load_config(REPO / "configs" / "demo_ft.yaml", ["train.loss=bce"])
    model = classifier.build_model(cfg, 1)
    if init:
        trainer.init_from(model, init)
    model.compile(optimizer=keras.optimizers.Adam(3e-4),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True))
    positive = max(fit_y.mean(), 1e-3)
    model.fit(fit_clips, fit_y[:, None].astype(np.float32), batch_size=16, epochs=epochs,
              class_weight={0: 0.5 / (1 - positive), 1: 0.5 / positive}, verbose=0)
    logits = model.predict(test_clips, batch_size=32, verbose=0)[:, 0]
    return 1 / (1 + np.exp(-logits))


def _interval(metric, y, p, n_boot=1000, seed=0):
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        rows = rng.integers(0, len(y), len(y))
        if 0 < y[rows].sum() < len(rows):
            values.append(metric(y[rows], p[rows]))
    low, high = np.percentile(values, [2.5, 97.5])
    return f"{metric(y, p):.3f} [{low:.3f}, {high:.3f}]"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window-s", dest="window_s", type=float, default=3.0)
    parser.add_argument("--hop-s", dest="hop_s", type=float, default=1.0)
    parser.add_argument("--cnn-init", dest="cnn_init",
                        default=str(REPO / "work" / "demo" / "pre" / "train" / "best.keras"))
    parser.add_argument("--cnn-epochs", dest="cnn_epochs", type=int, default=15)
    args = parser.parse_args()
    init = args.cnn_init if Path(args.cnn_init).is_file() else None
    model = birdnet.BirdNET("birdnet", args.window_s)
    lines = ["| recordings | windows train / scored (positive) | (a) BirdNET's own score: "
             "ROC-AUC | AP | (b) probe on BirdNET embeddings: ROC-AUC | AP | (c) birdkeras "
             "CNN on the windows' audio: ROC-AUC | AP |",
             "|---|---|---|---|---|---|---|---|"]
    for name, (table, folder, species, label) in datasets().items():
        cut, problems = ann.windows(table, folder, args.window_s, args.hop_s,
                                    classes=[label])
        assert not problems, problems
        embeddings, logits, train, y, audio = [], [], [], [], []
        for path, rows in cut.groupby("path"):
            wave = audio_io.load(path, model.sample_rate_hz)
            clips = audio_windows.cut(wave, model.sample_rate_hz, rows["start_s"], args.window_s)
            emb, logit = model(clips)
            audio.append(audio_windows.cut(audio_io.load(path, CNN_RATE), CNN_RATE,
                                           rows["start_s"], args.window_s))
            embeddings.append(emb)
            logits.append(logit[:, model.classes.index(species)])
            middle = len(wave) / model.sample_rate_hz / 2
            starts = rows["start_s"].to_numpy()
            train.append(np.where(starts + args.window_s <= middle, 1,
                                  np.where(starts >= middle, 0, -1)))  # -1: straddles
            y.append(rows["labels"].map(bool).to_numpy().astype(int))
        embeddings, logits = np.concatenate(embeddings), np.concatenate(logits)
        train, y = np.concatenate(train), np.concatenate(y)
        fit, test = train == 1, train == 0
        probe = make_pipeline(StandardScaler(), LogisticRegression(
            C=0.1, class_weight="balanced", max_iter=2000)).fit(embeddings[fit], y[fit])
        own = birdnet.probabilities(logits)[test]
        learnt = probe.predict_proba(embeddings[test])[:, 1]
        audio = np.concatenate(audio)
        cnn = cnn_scores(audio[fit], y[fit], audio[test], init, args.cnn_epochs)
        lines.append(f"| {name} | {fit.sum()} / {test.sum()} ({y[test].sum()}) | "
                     f"{_interval(roc_auc_score, y[test], own)} | "
                     f"{_interval(average_precision_score, y[test], own)} | "
                     f"{_interval(roc_auc_score, y[test], learnt)} | "
                     f"{_interval(average_precision_score, y[test], learnt)} | "
                     f"{_interval(roc_auc_score, y[test], cnn)} | "
                     f"{_interval(average_precision_score, y[test], cnn)} |")
    print(f"windows {args.window_s:g} s, hop {args.hop_s:g} s; CNN from "
          f"{init or 'random weights'}, {args.cnn_epochs} epochs")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

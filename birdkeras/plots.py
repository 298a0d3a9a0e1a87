"""Figures birdkeras writes: training curves, log-mel spectrograms, ROC and PR curves.

Every figure goes through `pyplot()`: matplotlib on its file-only backend (Agg), so
plots work on servers, in tests and in notebooks alike, and matplotlib is imported
only when a figure is drawn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_curve, roc_curve


def pyplot():
    """matplotlib.pyplot on the Agg backend."""
    import matplotlib  # noqa: PLC0415 - slow to import; only when drawing

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - after choosing the backend

    return plt


def history(csv_path: Path, png_path: Path) -> None:
    """Loss and metrics per epoch, one panel each, from Keras' CSV history."""
    if not Path(csv_path).is_file():
        return
    table = pd.read_csv(csv_path)
    panels = [c for c in ("loss", "val_loss", "auc", "val_macro_auc", "val_padded_cmap",
                          "val_soundscape_macro_auc")
              if c in table]
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3))
    for ax, column in zip(np.atleast_1d(axes), panels):
        ax.plot(table["epoch"] + 1, table[column], marker="o")
        ax.set_title(column)
        ax.set_xlabel("epoch")
    fig.tight_layout()
    fig.savefig(png_path, dpi=80)
    plt.close(fig)


def spectrograms(model, waves: np.ndarray, png_path: Path, titles=None) -> Path:
    """The model's own log-mel (its `log_mel` layer) of a few waveforms, side by side.

    Args:
        model: a classifier with a `log_mel` layer.
        waves: (n, samples) audio.
        png_path: the figure to write.
        titles: one per waveform (None: numbered).

    Returns:
        `png_path`.
    """
    mel = np.asarray(model.get_layer("log_mel")(np.asarray(waves, dtype=np.float32)))[..., 0]
    plt = pyplot()
    fig, axes = plt.subplots(1, len(mel), figsize=(3.2 * len(mel), 2.6), squeeze=False)
    for i, (ax, image) in enumerate(zip(axes[0], mel)):
        ax.imshow(image, origin="lower", aspect="auto", cmap="magma")
        ax.set(title=titles[i] if titles else f"example {i}", xlabel="frame", ylabel="mel")
    fig.tight_layout()
    fig.savefig(png_path, dpi=90)
    plt.close(fig)
    return Path(png_path)


def roc_and_pr(y: np.ndarray, scores: np.ndarray, classes, scored, out: Path) -> None:
    """`roc.png` and `pr.png`: micro-average over `scored` classes + the five commonest.

    Args:
        y: 0/1 labels (n, classes).
        scores: (n, classes).
        classes: class names.
        scored: indices of the classes with positives and negatives.
        out: the folder for roc.png and pr.png.
    """
    if not len(scored):
        return
    common = [k for k in np.argsort(-y.sum(axis=0)) if k in set(scored)][:5]
    curves = [("micro-average", y[:, scored].ravel(), scores[:, scored].ravel())]
    curves += [(classes[k], y[:, k], scores[:, k]) for k in common]
    plt = pyplot()
    for name, curve, axes in (("roc", roc_curve, ("false positive rate", "true positive rate")),
                              ("pr", precision_recall_curve, ("recall", "precision"))):
        fig, ax = plt.subplots(figsize=(5, 5))
        for label, truth, score in curves:
            a, b, _ = curve(truth, score)
            xs, ys = (a, b) if name == "roc" else (b, a)
            ax.plot(xs, ys, label=label, lw=2 if label == "micro-average" else 1)
        ax.set(xlabel=axes[0], ylabel=axes[1], title=f"{name.upper()} ({len(y)} windows)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=100)
        plt.close(fig)

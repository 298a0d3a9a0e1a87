"""The embedding route: heads on frozen embeddings, tuned on out-of-fold predictions.

    birdkeras route --cfg configs/b0_ft.yaml --embeddings work/emb/clips work/emb/soundscapes \
        --taxonomy data/kaggle/birdclef-2026/taxonomy.csv [--cnn work/b0_ft/best.keras] \
        --out work/route
    birdkeras predict --model work/route --audio SOUNDSCAPES --out submission.csv

Training data are the labelled windows of embedding folders (`birdkeras embed`): the
probe and the MLP (`birdkeras.heads`) learn from every labelled window; the sequence
head from the soundscape files, `route.seq_len` consecutive windows at a time (and,
with `route.pseudo_unlabelled`, from unlabelled files with the probe's predictions as
soft targets). Folds are grouped (site, else file; a clip is its own group), so a
window's out-of-fold prediction comes from heads that never saw its site or file;
those predictions are saved (`oof.npz`) and tune, without touching the folds' own
training windows: the per-taxon temperatures, the site/hour prior weight, the per-class
thresholds and the weight of a CNN fused in (`--cnn`). The route folder holds each
head (`.keras` and `.onnx`), `route.json` (classes, taxa, class mapping, sites, tuned
values, out-of-fold scores) and `oof.npz`; `birdkeras.embeddings.runner` runs it.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from sklearn.model_selection import GroupKFold

from birdkeras import config as config_lib
from birdkeras.audio import io as audio_io
from birdkeras.audio import windows as audio_windows
from birdkeras.embeddings import frozen, heads, tuning
from birdkeras.embeddings.extract import Table, read, read_card
from birdkeras.embeddings.runner import CARD
from birdkeras.embeddings.tuning import sigmoid
from birdkeras.errors import UserError
from birdkeras.export import convert
from birdkeras.export.runtime import Runner
from birdkeras.train import callbacks, optimization

HEADS = ("probe", "mlp", "sequence")


class RouteError(UserError):
    """The embeddings cannot train a route; the message says what is missing."""


def load_windows(dirs, taxonomy: pd.DataFrame) -> tuple[Table, dict]:
    """The windows of embedding folders `dirs` as one table, the embedding model's logits
    mapped to the taxonomy's classes; and the route card's description of them."""
    tables = [read(d) for d in dirs]
    first = tables[0].card
    for t in tables[1:]:
        if (t.card["model"], t.card["classes"]) != (first["model"], first["classes"]):
            raise RouteError(f"{dirs[0]} and another folder were embedded by different models "
                             "or for different classes; embed them alike")
    classes = first["classes"]
    if not classes:
        raise RouteError(f"{dirs[0]} has no classes: embed with labels (--labels or --manifest)")
    mapping = None
    if tables[0].logits is not None:
        order = taxonomy.set_index("primary_label").loc[classes].reset_index()
        mapping = frozen.map_classes(first["model_classes"], order)
    logits = None
    if mapping is not None:
        logits = frozen.mapped_logits(np.concatenate([t.logits for t in tables]), mapping)
    return Table.concat(tables, logits, len(classes)), {
        "embedder": first["model"], "kind": first["kind"], "dim": first["dim"],
        "classes": classes, "model_classes": first["model_classes"],
        "mapping": None if mapping is None else {
            "index": mapping["index"].tolist(),
            "proxies": {str(k): v for k, v in mapping["proxies"].items()},
            "mapped": mapping["mapped"], "proxied": mapping["proxied"],
            "unmapped": mapping["unmapped"]},
        "sample_rate_hz": first["sample_rate_hz"], "window_samples": first["window_samples"]}


def sequences(w: Table, rows: np.ndarray, seq_len: int):
    """Windows `rows` cut into per-file runs of `seq_len` in start order (the last run of a
    file is padded by repeating its last window); returns (index (runs, seq_len), mask)."""
    runs, masks = [], []
    frame = pd.DataFrame({"file": w.files[rows], "start": w.starts[rows], "row": rows})
    for _, group in frame.sort_values(["file", "start"]).groupby("file", sort=False):
        order = group["row"].to_numpy()
        for i in range(0, len(order), seq_len):
            run = order[i:i + seq_len]
            masks.append(np.arange(seq_len) < len(run))
            runs.append(np.concatenate([run, np.repeat(run[-1], seq_len - len(run))]))
    return np.array(runs, dtype=np.int64).reshape(-1, seq_len), np.array(masks).reshape(-1, seq_len)


def _site_index(sites: np.ndarray, known: list[str]) -> np.ndarray:
    lookup = {s: k for k, s in enumerate(known)}
    return np.array([lookup.get(s, len(known)) for s in sites], dtype=np.int32)


def _fit(model, inputs, targets, rcfg, epochs: int, seed: int, weights=None):
    """Trains a head as `route` says (`training_setup`); `weights` (per window, or per
    sequence step) scale each loss term."""
    keras.utils.set_random_seed(seed)
    steps = -(-len(targets) // rcfg.batch_size) * epochs
    model.compile(*training_setup(rcfg, targets, steps, weights))
    fit = dict(sample_weight=weights, batch_size=rcfg.batch_size, epochs=epochs, verbose=0)
    if rcfg.swa_epochs <= 1:
        model.fit(inputs, targets, **fit)
        return model
    # SWA: the mean of the weights at the last `swa_epochs` epoch ends (the trainer's own
    # callback, its files in a folder of their own).
    with tempfile.TemporaryDirectory() as tmp:
        swa = callbacks.SWA(Path(tmp), rcfg.swa_epochs)
        model.fit(inputs, targets, callbacks=[swa], **fit)
        swa.average(model)
    return model


def training_setup(rcfg, targets: np.ndarray, steps: int, weights=None):
    """The heads' optimizer and loss, as the 2026 notebook trains them where asked.

    Loss: BCE, or focal BCE (`route.loss`, `focal_gamma`), with label smoothing and, with
    `route.pos_weight_max` > 0, each class's positive term weighted by its negatives /
    positives in `targets` (capped there; rare classes count more). Optimizer: Adam, or
    AdamW (`weight_decay`), clipped to `clip_norm` (0: not); its learning rate `lr`
    constant, cosine to lr / 100 over `steps`, or one-cycle (a cosine warmup from
    lr / 25 over 30 % of the steps, then cosine to lr / 1000).

    Args:
        rcfg: the route settings.
        targets: the training targets (windows or sequence steps x classes).
        steps: optimizer steps of the whole fit.
        weights: the targets' loss weights (0: padding, not counted), or None.

    Returns:
        (optimizer, loss).
    """
    y = targets.reshape(-1, targets.shape[-1]) >= 0.5
    if weights is not None:
        y = y[np.asarray(weights).reshape(-1) > 0]
    pos_weight = np.ones(targets.shape[-1])
    if rcfg.pos_weight_max > 0:
        positives = y.sum(axis=0)
        pos_weight = np.clip((len(y) - positives) / np.maximum(positives, 1), 1.0,
                             rcfg.pos_weight_max)
    loss = optimization.PositiveWeightedBCE(pos_weight,
                                            rcfg.focal_gamma if rcfg.loss == "focal" else 0.0,
                                            rcfg.label_smoothing)
    lr = rcfg.lr
    if rcfg.schedule == "cosine":
        lr = optimization.WarmupCosine(rcfg.lr, rcfg.lr, rcfg.lr / 100, 0, steps)
    elif rcfg.schedule == "one_cycle":
        lr = optimization.WarmupCosine(rcfg.lr / 25, rcfg.lr, rcfg.lr / 1000,
                                       int(0.3 * steps), steps, warmup_shape="cosine")
    clip = {"global_clipnorm": rcfg.clip_norm} if rcfg.clip_norm else {}
    if rcfg.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=rcfg.weight_decay, **clip), loss
    return keras.optimizers.Adam(lr, **clip), loss


def window_features(w: Table, rcfg) -> np.ndarray:
    """The probe's and MLP's inputs: the embeddings, or with `route.probe_temporal`
    their temporal features (`tuning.temporal_features`)."""
    if not rcfg.probe_temporal:
        return w.embeddings
    return tuning.temporal_features(w.embeddings, w.files, w.starts)


def distilled_targets(w: Table, mapping: dict | None, weight: float) -> np.ndarray:
    """The heads' training targets: the labels, or with `weight` > 0 (`route.distill_weight`)
    the labels mixed with the frozen model's own probabilities for the classes it maps
    ((1 - weight) y + weight sigmoid(mapped logit)): distillation to the teacher as soft
    targets. Classes the model does not map, and unlabelled windows, keep their labels.

    Args:
        w: the windows (their `logits` mapped to the route's classes, or None).
        mapping: the route card's class mapping ("index", "proxies"), or None.
        weight: the teacher's share of each target.

    Returns:
        (windows, classes) targets.
    """
    if weight <= 0 or w.logits is None or mapping is None:
        return w.targets
    known = np.asarray(mapping["index"]) >= 0
    known[[int(k) for k in mapping["proxies"]]] = True
    mixed = (1 - weight) * w.targets + weight * sigmoid(w.logits)
    return np.where(known[None], mixed, w.targets).astype(np.float32)


def _window_head(w: Table, features, rows, rcfg, hidden: int, seed: int, targets=None):
    model = heads.probe_model(features.shape[1], w.targets.shape[1], rcfg.pca_dim, hidden)
    model.get_layer("projection").fit(features[rows])
    targets = w.targets if targets is None else targets
    return _fit(model, features[rows], targets[rows], rcfg, rcfg.epochs, seed)


def _sequence_inputs(w: Table, runs, sites: list[str], fusion: bool):
    x = [w.embeddings[runs], _site_index(w.sites[runs[:, 0]], sites),
         np.where(w.hours[runs[:, 0]] >= 0, w.hours[runs[:, 0]], 24).astype(np.int32)]
    if fusion:
        x.append(w.logits[runs])
    return x


def _sequence_head(w: Table, rows, targets, rcfg, sites, seed: int):
    fusion = rcfg.fusion and w.logits is not None
    model = heads.sequence_model(w.embeddings.shape[1], w.targets.shape[1], rcfg.seq_len, rcfg.pca_dim,
                                 rcfg.d_model, len(sites), rcfg.state_size, fusion,
                                 ssm_layers=rcfg.ssm_layers, window_heads=rcfg.window_heads)
    model.get_layer("projection").fit(w.embeddings[rows])
    runs, mask = sequences(w, rows, rcfg.seq_len)
    inputs = _sequence_inputs(w, runs, sites, fusion)
    if rcfg.prototype_init == "class_mean" and len(runs):
        heads.init_prototypes(model, inputs, targets[runs], mask)
    # Padding steps (repeats of a file's last window) carry no loss.
    return _fit(model, inputs, targets[runs], rcfg, rcfg.seq_epochs, seed,
                weights=mask.astype(np.float32))


def predict_sequences(model, w: Table, rows, sites, seq_len: int) -> np.ndarray:
    """Per-window logits of the sequence head for `rows` (NaN for rows it did not see).

    Args:
        model: a sequence head.
        w: the windows.
        rows: the windows to score.
        sites: the route's known sites.
        seq_len: windows per sequence.

    Returns:
        (n, classes) logits, NaN outside `rows`.
    """
    fusion = len(model.inputs) == 4
    runs, mask = sequences(w, rows, seq_len)
    out = np.full((len(w.embeddings), w.targets.shape[1]), np.nan, dtype=np.float32)
    if len(runs):
        logits = np.asarray(model.predict(_sequence_inputs(w, runs, sites, fusion), verbose=0))
        out[runs[mask]] = logits[mask]
    return out


def train(cfg: config_lib.Config, embedding_dirs, out, taxonomy_csv=None, cnn_model=None) -> dict:
    """Trains, tunes and saves the route (see the module docstring); returns its card.

    Args:
        cfg: its `route` section sizes and trains the heads.
        embedding_dirs: folders written by `birdkeras embed`.
        out: the route folder.
        taxonomy_csv: the competition's taxonomy (classes, scientific names, taxa); None
            (your own labels): the embedded classes are their own scientific names (so
            BirdNET's or Perch's logits map onto classes named by species), no taxa.
        cnn_model: a CNN to fuse, weight tuned out of fold (None: none).

    Returns:
        The route card (also route.json).
    """
    rcfg = cfg.route
    if taxonomy_csv is None:
        classes = read_card(embedding_dirs[0])["classes"]
        taxonomy = pd.DataFrame({"primary_label": classes, "scientific_name": classes,
                                 "class_name": ""})
    else:
        taxonomy = pd.read_csv(taxonomy_csv, dtype=str, keep_default_na=False)
    w, card = load_windows(embedding_dirs, taxonomy)
    labelled = np.flatnonzero(w.labelled)
    sites = sorted({s for s in w.sites if s})
    soundscape = np.flatnonzero(w.sites != "")  # windows of named soundscape files
    if len(labelled) < rcfg.folds:
        raise RouteError(f"{len(labelled)} labelled windows: too few for {rcfg.folds} folds")
    folds = np.full(len(w.embeddings), -1)
    splitter = GroupKFold(n_splits=rcfg.folds)
    for k, (_, held) in enumerate(splitter.split(labelled, groups=w.groups[labelled])):
        folds[labelled[held]] = k

    # Out-of-fold logits of each head: fold k's windows scored by heads trained without k.
    oof = {name: np.full(w.targets.shape, np.nan, np.float32) for name in HEADS}
    features = window_features(w, rcfg)
    soft = distilled_targets(w, card["mapping"], rcfg.distill_weight)  # what the heads learn
    for k in range(rcfg.folds):
        train_rows, held = labelled[folds[labelled] != k], labelled[folds[labelled] == k]
        for name, hidden in (("probe", 0), ("mlp", rcfg.mlp_hidden)):
            oof[name][held] = _window_head(w, features, train_rows, rcfg, hidden, cfg.seed,
                                           soft).predict(features[held], verbose=0)
        seq_rows, targets = _sequence_training(w, features, train_rows, soundscape, folds, k,
                                               rcfg, cfg, soft)
        if len(seq_rows):
            model = _sequence_head(w, seq_rows, targets, rcfg, sites, cfg.seed)
            held_sc = np.intersect1d(held, soundscape)
            oof["sequence"][held_sc] = predict_sequences(model, w, held_sc, sites,
                                                         rcfg.seq_len)[held_sc]

    # The final heads, on every labelled window.
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    final = {"probe": _window_head(w, features, labelled, rcfg, 0, cfg.seed, soft),
             "mlp": _window_head(w, features, labelled, rcfg, rcfg.mlp_hidden, cfg.seed, soft)}
    seq_rows, targets = _sequence_training(w, features, labelled, soundscape, folds, None,
                                           rcfg, cfg, soft)
    if len(seq_rows):
        final["sequence"] = _sequence_head(w, seq_rows, targets, rcfg, sites, cfg.seed)
    for name, model in final.items():
        model.save(out / f"{name}.keras")
        export_onnx(model, out / f"{name}.onnx")

    taxa = taxonomy.set_index("primary_label").reindex(card["classes"])["class_name"].fillna("")
    cnn = cnn_scores(cnn_model, w, card["classes"]) if cnn_model else None
    head_weights, oof["blend"] = tuning.tune_head_blend(w.targets, oof, labelled)
    tuned = tuning.tune(w, oof, folds, taxa.tolist(), rcfg, cnn)
    if cnn_model:
        tuned["cnn"] = str(cnn_model)
    np.savez(out / "oof.npz", folds=folds, y=w.targets, files=w.files, starts=w.starts,
             sites=w.sites, hours=w.hours, **oof)
    heads = sorted(final) + ["blend"]  # the blend: the final heads, out-of-fold weights
    card.update({"head": rcfg.head if rcfg.head in heads else "probe", "heads": heads,
                 "head_weights": {h: wt for h, wt in head_weights.items() if h in final},
                 "seq_len": rcfg.seq_len, "sites": sites, "taxa": taxa.tolist(),
                 "route": config_lib.to_dict(rcfg), **tuned})
    (out / CARD).write_text(json.dumps(card, indent=1) + "\n")
    return card


def _sequence_training(w: Table, features, train_rows, soundscape, folds, k, rcfg, cfg,
                       soft=None):
    """(rows, targets) of the sequence head's training: the labelled soundscape windows of
    the training folds and, with pseudo_unlabelled, the unlabelled soundscape windows
    with a probe's predictions (trained on those folds) as soft targets.

    Fold k's heads never see audio of its held-out groups, labelled or not: unlabelled
    windows of a held-out site are left out too, so the out-of-fold scores measure a
    site the route has never heard, as Kaggle's hidden soundscapes are to the final heads.
    """
    rows = np.intersect1d(train_rows, soundscape)
    targets = (w.targets if soft is None else soft).copy()
    if rcfg.pseudo_unlabelled:
        unlabelled = np.setdiff1d(soundscape, np.flatnonzero(w.labelled))
        if k is not None:
            held_groups = np.unique(w.groups[folds == k])
            unlabelled = unlabelled[~np.isin(w.groups[unlabelled], held_groups)]
        if len(unlabelled):
            probe = _window_head(w, features, train_rows, rcfg, 0, cfg.seed, soft)
            targets[unlabelled] = sigmoid(probe.predict(features[unlabelled], verbose=0))
            rows = np.union1d(rows, unlabelled)
    return rows, targets


def cnn_scores(model_path, w: Table, classes: list[str]) -> np.ndarray:
    """A CNN's probabilities for every window of `w` (its files decoded again), in the
    route's class order (classes the CNN lacks: 0)."""
    runner = Runner(model_path, "tf")
    columns = [runner.classes.index(c) if c in runner.classes else -1 for c in classes]
    out = np.zeros((len(w.embeddings), len(classes)), np.float32)
    for path in np.unique(w.paths):
        rows = np.flatnonzero(w.paths == path)
        wave = audio_io.load(path, runner.sample_rate_hz, allow_silence=True)
        probs = runner(audio_windows.cut(wave, runner.sample_rate_hz, w.starts[rows],
                                         runner.window_s))
        for k, col in enumerate(columns):
            if col >= 0:
                out[rows, k] = probs[:, col]
    return out


def export_onnx(model: keras.Model, path: Path) -> None:
    """A head as an ONNX graph (its Keras inputs, in order; logits out)."""
    specs = [tf.TensorSpec([None, *t.shape[1:]], t.dtype, name=t.name) for t in model.inputs]
    function = tf.function(lambda *x: model(list(x) if len(x) > 1 else x[0], training=False),
                           input_signature=specs, autograph=False)
    convert.to_onnx(function, path)

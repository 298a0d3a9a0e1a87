"""Blending members' scores: a weighted mean of probabilities or of per-class ranks,
the weights tuned on the members' out-of-fold predictions.

    birdkeras blend tune --oof work/b0_kfold work/effv2_kfold --method rank --out blend.json
    birdkeras blend apply --blend blend.json --submissions b0.csv effv2.csv --out submission.csv

`tune` reads each member's `oof.csv` (a k-fold run's folder, `birdkeras.train.folds`:
every window scored by the fold model that never trained on it), aligns the windows,
and searches the weights on a simplex grid (`step`) for the best pooled macro ROC-AUC;
nothing else of a member is read, so no weight is fitted on windows a member trained on.
`apply` blends the members' submission CSVs (any source: CNN ensembles, specialists
scored into the full class list, an embedding route, a teacher's mapped scores) with
those weights, row by row.

`rank`: each member's scores become per-class ranks over the rows (ties averaged,
scaled to (0, 1]) before the weighted mean, as the BirdCLEF 2026 winners blended models
whose probabilities are calibrated differently; any monotone transform of one member's
scores leaves the blend unchanged. Macro ROC-AUC only compares rows within a class, so
rank-blended scores score as they should, but they are not probabilities. `mean`: the
weighted mean of the probabilities.

`birdkeras predict --model blend.json` takes a card as one model: each member scores
the audio (sharing `infer.time_budget_s` equally), then `apply` blends their
submissions (`predicting.predict`).

Members' class lists must be the same set (their order may differ); a `class_map`
({member's name: blend's name}) renames a member's classes first.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.stats

from birdkeras import metrics
from birdkeras.errors import MissingPathError, UserError

METHODS = ("mean", "rank")
OOF = "oof.csv"  # birdkeras.train.folds writes it
_KEYS = ["recording_id", "start_s"]


class BlendError(UserError):
    """Members that cannot be blended (classes, rows); the message names them."""


def rank_transform(scores: np.ndarray) -> np.ndarray:
    """Each column's ranks over the rows (ties averaged), divided by the row count."""
    scores = np.asarray(scores, dtype=np.float64)
    return scipy.stats.rankdata(scores, axis=0) / max(len(scores), 1)


def combine(members: list[np.ndarray], weights, method: str = "rank") -> np.ndarray:
    """The weighted mean of the members' scores (`rank`: of their per-class ranks).

    Args:
        members: [rows, classes] arrays, rows and columns aligned.
        weights: one non-negative weight per member, or per member and class
            ([members, classes], `tune(per_class=True)`); normalised here.
        method: "rank" or "mean".

    Returns:
        The blended [rows, classes] scores.
    """
    if method not in METHODS:
        raise BlendError(f"blend method {method!r} is not one of {list(METHODS)}")
    weights = np.asarray(weights, dtype=np.float64)
    if (len(weights) != len(members) or (weights < 0).any()
            or (weights.sum(axis=0) <= 0).any()):
        raise BlendError(f"blend weights {weights.tolist()} must be {len(members)} "
                         "non-negative numbers (or rows), not all zero")
    stack = np.stack([rank_transform(m) if method == "rank" else np.asarray(m, np.float64)
                      for m in members])
    weights = weights / weights.sum(axis=0)
    if weights.ndim == 1:
        return np.tensordot(weights, stack, axes=1)
    return (weights[:, None, :] * stack).sum(axis=0)


def weight_grid(count: int, step: float) -> np.ndarray:
    """Every weight vector of `count` members on the simplex with spacing `step`
    (`metrics.weight_grid`; a step that does not divide 1 is a BlendError)."""
    try:
        return metrics.weight_grid(count, step)
    except ValueError as error:
        raise BlendError(str(error)) from None


def tune(members: list[np.ndarray], labels: np.ndarray, method: str = "rank",
         step: float = 0.1, per_class: bool = False) -> tuple[np.ndarray, float]:
    """The grid's weights with the best macro ROC-AUC of the blend on `labels`.

    Args:
        members: the members' out-of-fold scores, [rows, classes], aligned.
        labels: the rows' multi-hot labels.
        method: "rank" or "mean".
        step: the grid's spacing.
        per_class: also pick each class's weights for its own ROC-AUC ([members,
            classes]); a class without both positives and negatives keeps the global ones.

    Returns:
        (weights, macro ROC-AUC); ties keep the first found (the global weights first).
    """
    grid = weight_grid(len(members), step)
    best, best_auc = None, -np.inf
    for weights in grid:
        auc = metrics.macro_roc_auc(labels, combine(members, weights, method))
        if auc > best_auc + 1e-12:
            best, best_auc = weights, auc
    if not per_class:
        return best, float(best_auc)
    labels = np.asarray(labels) > 0.5
    per = np.repeat(best[:, None], labels.shape[1], axis=1)
    for k in metrics.scored_classes(labels):
        column = [m[:, [k]] for m in members]
        best_k = metrics.macro_roc_auc(labels[:, [k]], combine(column, best, method))
        for weights in grid:
            auc = metrics.macro_roc_auc(labels[:, [k]], combine(column, weights, method))
            if auc > best_k + 1e-12:
                per[:, k], best_k = weights, auc
    return per, float(metrics.macro_roc_auc(labels, combine(members, per, method)))


def _renamed(table: pd.DataFrame, classes: list[str], class_map: dict | None, where: str):
    """The member's class columns renamed by `class_map`, and the new names."""
    if not class_map:
        return table, classes
    renamed = [class_map.get(c, c) for c in classes]
    if len(set(renamed)) != len(renamed):
        raise BlendError(f"the class map gives {where} two classes of one name")
    return table.rename(columns=dict(zip(classes, renamed))), renamed


def _same_classes(names: list[str], classes: list[list[str]]) -> None:
    first = set(classes[0])
    for name, cls in zip(names[1:], classes[1:]):
        if set(cls) != first:
            raise BlendError(
                f"{name} and {names[0]} score different classes: only in {name}: "
                f"{sorted(set(cls) - first)[:10]}, only in {names[0]}: "
                f"{sorted(first - set(cls))[:10]} (give a class map to rename them)")


def read_oof(run: str | Path, class_map: dict | None = None):
    """A k-fold run's out-of-fold table: (window keys, labels, scores, class names)."""
    path = Path(run) / OOF if Path(run).is_dir() else Path(run)
    if not path.is_file():
        raise MissingPathError(f"{path} does not exist: give a k-fold run's folder (its "
                               f"{OOF}, written by `birdkeras train --folds ...`)")
    table = pd.read_csv(path)
    missing = [c for c in _KEYS if c not in table.columns]
    classes = [c.removeprefix("label_") for c in table.columns if c.startswith("label_")]
    if missing or not classes or any(c not in table.columns for c in classes):
        raise BlendError(f"{path} is not an out-of-fold table: it needs {_KEYS}, label_<class> "
                         "and <class> columns")
    table, renamed = _renamed(table, classes, class_map, str(path))
    table = table.rename(columns={f"label_{c}": f"label_{r}" for c, r in zip(classes, renamed)})
    table = table.sort_values(_KEYS, kind="stable").reset_index(drop=True)
    return (table[_KEYS], table[[f"label_{c}" for c in renamed]].to_numpy(),
            table[renamed].to_numpy(), renamed)


def tune_oof(runs: list, method: str = "rank", step: float = 0.1,
             class_maps: list | None = None, per_class: bool = False) -> dict:
    """Tunes the blend of k-fold runs on their out-of-fold predictions.

    Args:
        runs: the members' k-fold folders (or their oof.csv files).
        method: "rank" or "mean".
        step: the weight grid's spacing.
        class_maps: per member, a {member's class: blend's class} map or None.
        per_class: weights per member and class (`tune`).

    Returns:
        The blend card: members, weights, method, classes, and the out-of-fold macro
        ROC-AUC of each member alone and of the blend.
    """
    if len(runs) < 2:
        raise BlendError(f"blend needs two or more members, got {len(runs)}")
    class_maps = class_maps or [None] * len(runs)
    read = [read_oof(r, m) for r, m in zip(runs, class_maps)]
    names = [str(r) for r in runs]
    _same_classes(names, [cls for *_, cls in read])
    keys, labels, _, classes = read[0]
    members = []
    for name, (k, y, scores, cls) in zip(names, read):
        if len(k) != len(keys) or not (k.to_numpy() == keys.to_numpy()).all():
            raise BlendError(f"{name} and {names[0]} scored different out-of-fold windows "
                             f"({len(k)} and {len(keys)}): train them on the same records")
        order = [cls.index(c) for c in classes]
        if not np.array_equal(y[:, order], labels):
            raise BlendError(f"{name} and {names[0]} label the same windows differently: "
                             "train them on the same records")
        members.append(scores[:, order])
    weights, auc = tune(members, labels, method, step, per_class)
    return {"method": method, "members": names, "weights": np.round(weights, 6).tolist(),
            "per_class": per_class,
            "classes": classes, "class_maps": class_maps, "step": step,
            "oof_windows": len(keys),
            "oof_macro_auc": {"members": [metrics.macro_roc_auc(labels, m) for m in members],
                              "blend": auc}}


def apply(card: dict, submissions: list, out: str | Path) -> pd.DataFrame:
    """Blends the members' submission CSVs with a card's weights; writes `out`.

    Args:
        card: `tune_oof`'s card (or {"method", "weights"} and optional "class_maps").
        submissions: one CSV per member, in the card's member order (row_id + classes).
        out: the blended CSV (the first submission's rows and columns).

    Returns:
        The blended table.
    """
    weights = card["weights"]
    if len(submissions) != len(weights):
        raise BlendError(f"the blend has {len(weights)} members ({card.get('members')}); "
                         f"got {len(submissions)} submissions")
    maps = card.get("class_maps") or [None] * len(submissions)
    tables, classes = [], []
    for path, class_map in zip(submissions, maps):
        if not Path(path).is_file():
            raise MissingPathError(f"submission {path} does not exist")
        table = pd.read_csv(path)
        if "row_id" not in table.columns:
            raise BlendError(f"{path} has no row_id column: not a submission")
        names = [c for c in table.columns if c != "row_id"]
        table, names = _renamed(table, names, class_map, str(path))
        tables.append(table.set_index("row_id"))
        classes.append(names)
    paths = [str(p) for p in submissions]
    _same_classes(paths, classes)
    rows = tables[0].index
    for path, table in zip(paths[1:], tables[1:]):
        missing = rows.difference(table.index)
        if len(missing) or len(table) != len(rows):
            raise BlendError(f"{path} and {paths[0]} have different rows (e.g. "
                             f"{list(missing[:3]) or list(table.index.difference(rows)[:3])})")
    order = classes[0]
    if card.get("per_class"):  # the card's per-class weights, put in the columns' order
        _same_classes(["the blend card", *paths], [card["classes"], *classes])
        weights = np.asarray(weights)[:, [card["classes"].index(c) for c in order]]
    members = [t.loc[rows, order].to_numpy() for t in tables]
    blended = pd.DataFrame(combine(members, weights, card["method"]), columns=order)
    blended.insert(0, "row_id", rows)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    blended.to_csv(out, index=False)
    return blended


def write_card(card: dict, path: str | Path) -> None:
    """Writes a blend card as JSON."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(card, indent=1) + "\n")


def is_card(path) -> bool:
    """Whether `path` is a blend card (a JSON file with method, members and weights)."""
    path = Path(str(path))
    if path.suffix != ".json" or not path.is_file():
        return False
    try:
        card = json.loads(path.read_text())
    except ValueError:
        return False
    return isinstance(card, dict) and {"method", "members", "weights"} <= set(card)


def member_paths(card: dict, card_path: str | Path) -> list[str]:
    """The card's members as model paths: as written, else relative to the card's
    folder; a member found at neither is an error naming it."""
    paths = []
    for member in card["members"]:
        here = Path(card_path).parent / member
        path = member if Path(member).exists() else str(here) if here.exists() else None
        if path is None:
            raise MissingPathError(f"blend card {card_path}: member {member} does not exist "
                                   f"(nor {here})")
        paths.append(path)
    return paths


def read_card(path: str | Path) -> dict:
    """A blend card written by `write_card`."""
    if not Path(path).is_file():
        raise MissingPathError(f"blend card {path} does not exist (`birdkeras blend tune` "
                               "writes it)")
    return json.loads(Path(path).read_text())

"""The manifest: one cleaned table of recordings, its label map and folds.

Steps, in order (each configurable, each counted in `ingest_report.json`):
 1. read every configured source (`sources.read_source`: rejected rows and coerced
    values are recorded with their line);
 2. reject rows whose path would leave the data root ('..', absolute, symlinks out)
    and rows whose audio file does not exist (one stat per file);
 3. drop files listed in the user's corrupt-file list;
 4. drop pretraining rows whose `xc_id` is also in the target year (leakage);
 5. drop duplicates on (`xc_id`, primary label, author), keeping the first source listed;
 6. drop rows below `min_rating`; build the label map (`data.label_map`: the rows'
    primary labels, or the competition's classes, with those that have no clip
    reported); report unknown secondary labels;
 7. balance: downsample, then `filter` (rare classes get cv=False), then folds,
    then upsample (a `repeats` count: copies of a recording stay in its fold);
    labelled soundscape windows get folds by site and, with `balance.site_weight`,
    repeats that weigh each site's windows 1/sqrt(its window count).

Labelled soundscape sources (`birdclef-2026-soundscapes`, ...) add one row per
labelled window, with its multi-hot `labels` and no primary label; their folds are
dealt by group (a site, else a file), so no soundscape is split across folds. Your own
annotated recordings (`data.annotations`: Raven, Audacity, CSV, class folders) add one
row per window in the same form, grouped by recording (source `own`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from birdkeras import config as config_lib
from birdkeras.datasets import sources
from birdkeras.errors import MissingPathError, UserError

# The fold of rows that are never used for validation (cv=False): always in training.
TRAIN_ONLY_FOLD = -1


class ManifestError(UserError):
    """A manifest input (corrupt-file list, saved manifest) is unusable; names it."""


def build(cfg: config_lib.Config) -> tuple[pd.DataFrame, dict[str, int], dict]:
    """Runs steps 1-7 for `cfg.data`; returns (manifest, name2label, report)."""
    data = cfg.data
    root = Path(data.root)
    if not root.is_dir():
        raise MissingPathError(f"data.root={data.root} is not a folder")
    table, report = read_sources(root, data.sources, data.annotations, cfg.audio.window_s)
    table, rejected = reject_unsafe_paths(table, root)
    report["rejected"] += rejected
    table, rejected = reject_missing_files(table, root)
    report["rejected"] += rejected
    if data.corrupt_files:
        table, report["dropped_corrupt_list"] = drop_listed(
            table, cfg.data_path(data.corrupt_files), data.corrupt_files)
    if data.drop_target_xc_ids:
        table, report["dropped_target_xc_ids"] = drop_target_leaks(table, data.target_source,
                                                                   root)
    if data.dedupe:
        before = len(table)
        table = dedupe(table)
        report["dropped_duplicates"] = before - len(table)
    before = len(table)
    table = table[~(table["rating"] < data.min_rating)]
    report["dropped_low_rating"] = before - len(table)

    table, name2label = label_map(table, data, report)
    table, report["unknown_secondary_labels"] = drop_unknown_secondaries(table, name2label)
    table = balance(table, data.balance, data.num_folds, cfg.seed)
    report["rows"] = len(table)
    report["classes"] = len(name2label)
    return table.reset_index(drop=True), name2label, report


def read_sources(root: Path, names, annotations: config_lib.AnnotationsConfig | None = None,
                 window_s: float = 5.0) -> tuple[pd.DataFrame, dict]:
    """Every source's rows (and your own annotated windows) in one table.

    Args:
        root: the data root.
        names: the sources (`data.sources`).
        annotations: `data.annotations` (None or no tables: none).
        window_s: the windows' length for your annotated recordings.

    Returns:
        (the rows, the report of what reading them found: rows read per source,
        rejected rows and coerced values).
    """
    report: dict = {"read": {}, "rejected": [], "coerced": []}
    tables = []
    readers = [(name, lambda name=name: sources.read_source(root, name)) for name in names]
    if annotations is not None and annotations.tables:
        readers.append((sources.OWN, lambda: sources.read_annotation_windows(
            root, annotations, window_s)))
    for source, read in readers:
        table, rejected, coerced = read()
        report["read"][source] = len(table)
        report["rejected"] += rejected.to_dict("records")
        report["coerced"] += coerced.to_dict("records")
        tables.append(table)
    return pd.concat(tables, ignore_index=True), report


def label_map(table: pd.DataFrame, data: config_lib.DataConfig, report: dict):
    """(rows kept, name2label) for `data.label_map` (see the module docstring).

    A soundscape window's labels count as rows of their classes."""
    windows = table["primary_label"] == ""
    if data.label_map == "rows":
        names = set(table.loc[~windows, "primary_label"])
        names |= {label for labels in table.loc[windows, "labels"] for label in labels}
        return table, {name: i for i, name in enumerate(sorted(names))}
    classes = sources.read_classes(data.root, data.target_source)
    if data.specialist:  # its classes only: other clips left out, windows' labels cut
        classes = sources.specialist_classes(data.root, data.target_source,
                                             data.specialist_column, data.specialist)
        wanted = set(classes)
        others = ~windows & table["primary_label"].isin(set(sources.read_classes(
            data.root, data.target_source)) - wanted)
        report["outside_specialist"] = int(others.sum())
        table = table[~others].copy()
        for column in ("labels", "secondary_labels"):  # other classes: not unknown, not ours
            table[column] = [[c for c in labels if c in wanted] if isinstance(labels, list)
                             else labels for labels in table[column]]
        windows = table["primary_label"] == ""
    outside = ~windows & ~table["primary_label"].isin(set(classes))
    report["rejected"] += [
        {"source": r["source"], "path": r["path"],
         "reason": f"primary label {r['primary_label']!r} is not a class of "
                   f"{data.target_source}"} for r in table[outside].to_dict("records")]
    table = table[~outside]
    with_clips = set(table["primary_label"]) | {label for labels in table["labels"]
                                                for label in labels}
    report["classes_without_clips"] = [c for c in classes if c not in with_clips]
    return table, {name: i for i, name in enumerate(classes)}


def reject_missing_files(table: pd.DataFrame, root: Path) -> tuple[pd.DataFrame, list]:
    """Drops rows whose audio file is not there (a typo, a partial download)."""
    exists = table["path"].map(lambda p: (root / p).is_file())
    rejected = [{"source": r["source"], "path": r["path"], "reason": "audio file not found"}
                for r in table[~exists].to_dict("records")]
    return table[exists.to_numpy()], rejected


def reject_unsafe_paths(table: pd.DataFrame, root: Path) -> tuple[pd.DataFrame, list]:
    """Drops rows whose path is absolute, climbs with '..', or resolves outside root."""
    root_real = root.resolve()
    keep, rejected = [], []
    for path in table["path"]:
        reason = None
        if Path(path).is_absolute() or path.startswith(("/", "\\")):
            reason = "absolute path"
        elif ".." in Path(path).parts:
            reason = "path climbs out of the data root ('..')"
        else:
            try:
                (root / path).resolve().relative_to(root_real)
            except ValueError:
                reason = "path resolves outside the data root (symlink)"
        keep.append(reason is None)
        if reason:
            rejected.append({"path": path, "reason": reason})
    return table[keep], rejected


def drop_listed(table: pd.DataFrame, list_path: str,
                as_configured: str | None = None) -> tuple[pd.DataFrame, int]:
    """Drops rows whose path (relative to the data root) or file name is in the JSON list.

    `as_configured`: the config's value, named in errors beside the resolved path.
    """
    path = Path(list_path)
    name = f"data.corrupt_files={as_configured or list_path}"
    if as_configured and as_configured != list_path:
        name += f" ({list_path})"
    if not path.is_file():
        raise MissingPathError(f"{name} does not exist")
    try:
        listed = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ManifestError(f"{name} is not valid JSON: {err}") from err
    if not isinstance(listed, list):
        raise ManifestError(f"{name} must hold a JSON list of paths")
    listed = {str(p).strip() for p in listed}
    mask = table["path"].isin(listed) | table["path"].map(lambda p: Path(p).name).isin(listed)
    return table[~mask], int(mask.sum())


def drop_target_leaks(table: pd.DataFrame, target_source: str,
                      root: str | Path | None = None) -> tuple[pd.DataFrame, int]:
    """Drops rows of other sources whose xc_id is also a recording of the target year.

    The target year's ids come from the table's own rows of `target_source`, or, when
    the table has none (pretraining does not read the target year), from its metadata
    under `root`.
    """
    target = table[table["source"] == target_source]
    if target.empty and root is not None:
        target = sources.read_source(root, target_source)[0]
    target_ids = set(target["xc_id"].dropna())
    mask = (table["source"] != target_source) & table["xc_id"].isin(target_ids)
    return table[~mask], int(mask.sum())


def dedupe(table: pd.DataFrame) -> pd.DataFrame:
    """Drops repeats of (xc_id, primary label, author); rows without xc_id are kept."""
    has_id = table["xc_id"].notna()
    dup = table[has_id].duplicated(subset=["xc_id", "primary_label", "author"], keep="first")
    return table.drop(index=dup[dup].index)


def drop_unknown_secondaries(table, name2label) -> tuple[pd.DataFrame, dict[str, int]]:
    """Removes secondary labels (and soundscape window labels) that are not classes;
    returns how often each was seen."""
    unknown: dict[str, int] = {}

    def known(labels):
        for label in labels:
            if label not in name2label:
                unknown[label] = unknown.get(label, 0) + 1
        return [label for label in labels if label in name2label]

    table = table.assign(secondary_labels=table["secondary_labels"].map(known),
                         labels=table["labels"].map(known))
    return table, dict(sorted(unknown.items()))


def balance(table: pd.DataFrame, bal: config_lib.BalanceConfig, num_folds: int, seed: int):
    """Downsample, filter, folds, upsample (see the module docstring) for recordings;
    soundscape windows get folds by group (`group_folds`) and, with `bal.site_weight`,
    repeats by site (`site_repeats`).

    Args:
        table: the manifest rows.
        bal: `data.balance`.
        num_folds: `data.num_folds`.
        seed: the run's seed (folds and sampling).

    Returns:
        The table with `cv`, `fold` and `repeats`.
    """
    windows = table["primary_label"] == ""
    recordings = _balance_recordings(table[~windows], bal, num_folds, seed)
    if not windows.any():
        return recordings
    windows = group_folds(table[windows], num_folds, seed)
    if bal.site_weight == "inverse_sqrt":
        windows["repeats"] = site_repeats(windows)
    return pd.concat([recordings, windows], ignore_index=True)


def site_repeats(windows: pd.DataFrame) -> pd.Series:
    """Copies per soundscape window that weigh each window 1/sqrt(its site's count).

    A site with n windows, against the largest site's n_max, gets
    round(sqrt(n_max / n)) copies of each (at least 1): its share of the draws grows as
    sqrt(n) instead of n. Sites are the rows' `group` (source and site; a file whose
    name gives no site is its own).

    Args:
        windows: labelled soundscape rows of the manifest.

    Returns:
        The integer repeats, aligned with `windows`.
    """
    counts = windows["group"].map(windows["group"].value_counts())
    return np.maximum(np.round(np.sqrt(counts.max() / counts)), 1).astype(int)


def group_folds(table: pd.DataFrame, num_folds: int, seed: int) -> pd.DataFrame:
    """Folds by `group` (a soundscape's site, else its file): groups shuffled with `seed`
    and dealt round-robin, so one group's windows never straddle folds."""
    groups = sorted(table["group"].unique())
    order = np.random.default_rng(seed).permutation(len(groups))
    fold_of = {groups[g]: k % num_folds for k, g in enumerate(order)}
    return table.assign(cv=True, fold=table["group"].map(fold_of).astype(int), repeats=1)


def _balance_recordings(table: pd.DataFrame, bal: config_lib.BalanceConfig, num_folds: int,
                        seed: int) -> pd.DataFrame:
    if table.empty:
        return table.assign(cv=True, fold=TRAIN_ONLY_FOLD, repeats=1)
    rng = np.random.default_rng(seed)
    table = table.reset_index(drop=True)
    if bal.downsample_max_samples:
        keep = []
        for _, group in table.groupby("primary_label", sort=True):
            idx = group.index.to_numpy()
            if len(idx) > bal.downsample_max_samples:
                idx = np.sort(rng.choice(idx, bal.downsample_max_samples, replace=False))
            keep.extend(idx)
        table = table.loc[sorted(keep)].reset_index(drop=True)
    counts = table["primary_label"].map(table["primary_label"].value_counts())
    # A class with fewer rows than folds cannot be stratified: it stays in training.
    threshold = max(bal.filter_min_samples, num_folds)
    table = table.assign(cv=(counts >= threshold).to_numpy(), fold=TRAIN_ONLY_FOLD)
    cv_rows = table.index[table["cv"]]
    if len(cv_rows):
        splitter = StratifiedKFold(n_splits=num_folds, shuffle=True, random_state=seed)
        labels = table.loc[cv_rows, "primary_label"].to_numpy()
        for fold, (_, val) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
            table.loc[cv_rows[val], "fold"] = fold
    table["repeats"] = 1
    if bal.upsample_min_samples:
        for _, group in table.groupby("primary_label", sort=True):
            n = len(group)
            if n < bal.upsample_min_samples:
                base, extra = divmod(bal.upsample_min_samples, n)
                repeats = np.full(n, base)
                repeats[:extra] += 1
                table.loc[group.index, "repeats"] = repeats
    return table


def save(out_dir: str | Path, table: pd.DataFrame, name2label: dict, report: dict) -> Path:
    """Writes manifest.csv (lists as space-separated), name2label.json and report.json.

    Args:
        out_dir: `data.manifest_dir`.
        table: the manifest.
        name2label: class name -> label id.
        report: what ingest found (rows read, rejected, coerced, dropped).

    Returns:
        The folder written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    flat = table.assign(secondary_labels=table["secondary_labels"].map(" ".join),
                        labels=table["labels"].map(" ".join))
    flat.to_csv(out / "manifest.csv", index=False)
    (out / "name2label.json").write_text(json.dumps(name2label, indent=1) + "\n")
    (out / "ingest_report.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    return out


def ingest(cfg: config_lib.Config) -> tuple[pd.DataFrame, dict[str, int], dict, Path]:
    """`birdkeras ingest`: build, then save with the resolved config beside it."""
    table, name2label, report = build(cfg)
    out = save(cfg.data.manifest_dir, table, name2label, report)
    config_lib.save_config(cfg, out / "config.yaml")
    return table, name2label, report, out


def load(out_dir: str | Path) -> tuple[pd.DataFrame, dict[str, int]]:
    """Reads what `save` wrote."""
    out = Path(out_dir)
    for name in ("manifest.csv", "name2label.json"):
        if not (out / name).is_file():
            raise MissingPathError(
                f"{out / name} not found: run `birdkeras ingest` with this config first")
    numbers = ("rating", "latitude", "longitude", "duration_s", "xc_id", "start_s", "hour")
    table = pd.read_csv(out / "manifest.csv",
                        dtype={"secondary_labels": str, "labels": str, "primary_label": str,
                               "site": str, "date": str, "group": str},
                        keep_default_na=False, na_values={c: [""] for c in numbers})
    for column in ("secondary_labels", "labels"):
        if column not in table:  # a manifest written before soundscape windows
            table[column] = ""
        table[column] = table[column].map(lambda s: s.split() if s else [])
    for column in ("start_s", "hour"):
        if column not in table:
            table[column] = np.nan
    table["xc_id"] = table["xc_id"].astype("Int64")
    table["cv"] = table["cv"].astype(str).eq("True")
    return table, json.loads((out / "name2label.json").read_text())

"""Manifest: each source's reader, hygiene, balancing and folds, path safety."""

import json

import numpy as np
import pandas as pd
import pytest

from birdkeras.datasets import manifest
from birdkeras.datasets import sources
from birdkeras import synth
from birdkeras.config import catalog
from birdkeras.config import BalanceConfig, load_config
from birdkeras.errors import ConfigError, MissingPathError


@pytest.mark.parametrize("source", list(catalog.SOURCES))
def test_each_reader_finds_every_recording_with_its_label(synth_root, source):
    table, rejected, _ = sources.read_source(synth_root, source)
    truth = {r["path"]: r for r in synth.read_truth(synth_root) if r["source"] == source}
    assert rejected.empty
    assert sorted(table["path"]) == sorted(truth)
    for row in table.to_dict("records"):
        expected = truth[row["path"]]
        assert row["primary_label"] == expected["primary_label"]
        assert (synth_root / row["path"]).exists()
        # Secondary labels come out as codes for every year (2020/XC name them
        # 'Sci_Common', mapped through the eBird taxonomies under the root).
        assert sorted(row["secondary_labels"]) == sorted(expected["secondary_labels"].split())
        if expected["xc_id"]:
            assert row["xc_id"] == int(expected["xc_id"])
        else:
            assert pd.isna(row["xc_id"])


def test_reader_quirks():
    assert sources.parse_list("['']") == []
    assert sources.parse_list("[]") == []
    assert sources.parse_list("['a', 'b ']") == ["a", "b"]
    assert sources.parse_list("nocall") == ["nocall"]
    assert np.isnan(sources.parse_float("None")) and np.isnan(sources.parse_float(""))
    assert np.isnan(sources.parse_float("Not specified"))
    assert sources.parse_xc_id("abethr1/XC128013.ogg") == 128013
    assert sources.parse_xc_id("CSA36385.ogg", "https://xeno-canto.org/941297") == 941297
    assert sources.parse_xc_id("iNat1109254.ogg", "https://static.inaturalist.org/s/1.wav") is None


def test_real_2025_rows_parse(real_dir, tmp_path):
    folder = tmp_path / "birdclef-2025"
    folder.mkdir()
    real = real_dir / "metadata" / "birdclef2025_train.head_transcribed.csv"
    (folder / "train.csv").write_bytes(real.read_bytes())
    table, rejected, _ = sources.read_source(tmp_path, "birdclef-2025")
    assert rejected.empty and len(table) == 17
    xc = table[table["path"].str.contains("/XC")]
    assert xc["xc_id"].notna().all() and table[~table["path"].str.contains("/XC")]["xc_id"].isna().all()
    row = table[table["path"].str.endswith("XC941297.ogg")].iloc[0]
    assert row["secondary_labels"] == ["65448", "22976", "476538"]
    assert table["latitude"].isna().sum() == 2  # the two 'None' rows


def test_missing_metadata_names_the_file(tmp_path):
    with pytest.raises(sources.SourceError, match=r"birdclef-2023: metadata file not found: .*train_metadata\.csv"):
        sources.read_source(tmp_path, "birdclef-2023")


def _table(rows):
    """A hand-built manifest table: (source, xc_id, label, author) rows."""
    return pd.DataFrame([{
        "source": s, "recording_id": f"{s}/{i}", "xc_id": x, "primary_label": lab,
        "secondary_labels": [], "rating": 4.0, "author": a, "latitude": 0.0,
        "longitude": 0.0, "path": f"{s}/{lab}/{i}.ogg", "duration_s": np.nan,
    } for i, (s, x, lab, a) in enumerate(rows)]).astype({"xc_id": "Int64"})


def test_dedupe_on_xc_id_label_and_author():
    table = _table([
        ("birdclef-2021", 1, "a", "Ann"), ("birdclef-2022", 1, "a", "Ann"),  # duplicate
        ("birdclef-2023", 1, "a", "Bob"),  # other author: kept
        ("birdclef-2023", 1, "b", "Ann"),  # other label: kept
        ("birdclef-2025", None, "c", "Ann"), ("birdclef-2025", None, "c", "Ann"),  # no id: kept
    ])
    out = manifest.dedupe(table)
    assert len(out) == 5 and out.iloc[0]["source"] == "birdclef-2021"


def test_target_year_xc_ids_are_dropped_from_pretraining():
    table = _table([("birdclef-2026", 7, "a", "Ann"), ("birdclef-2021", 7, "a", "Ann"),
                    ("xeno-canto", 7, "b", "Cy"), ("birdclef-2021", 8, "a", "Ann")])
    out, dropped = manifest.drop_target_leaks(table, "birdclef-2026")
    assert dropped == 2 and sorted(out["xc_id"].tolist()) == [7, 8]


def test_pretraining_reads_the_target_years_ids_from_its_metadata(synth_root):
    # Pretraining does not read the target year; its leaks are found from its metadata.
    table = pd.concat([sources.read_source(synth_root, s)[0] for s in
                       ("birdclef-2020", "birdclef-2021", "birdclef-2022", "birdclef-2023",
                        "birdclef-2024", "xeno-canto")], ignore_index=True)
    target = sources.read_source(synth_root, "birdclef-2026")[0]
    shared = set(table["xc_id"].dropna()) & set(target["xc_id"].dropna())
    out, dropped = manifest.drop_target_leaks(table, "birdclef-2026", synth_root)
    assert dropped == len(table[table["xc_id"].isin(shared)]) > 0
    assert not set(out["xc_id"].dropna()) & shared


def _counts(n_per_class):
    rows = [("birdclef-2021", 1000 * k + i, label, "A")
            for k, (label, n) in enumerate(n_per_class.items()) for i in range(n)]
    return _table(rows)


def test_filter_marks_rare_classes_train_only():
    table = manifest.balance(_counts({"a": 20, "b": 6, "c": 2}),
                             BalanceConfig(filter_min_samples=7), num_folds=5, seed=0)
    cv = table.groupby("primary_label")["cv"].all()
    assert cv.to_dict() == {"a": True, "b": False, "c": False}
    assert (table.loc[~table["cv"], "fold"] == manifest.TRAIN_ONLY_FOLD).all()


def test_upsample_to_a_minimum_per_class():
    table = manifest.balance(_counts({"a": 20, "b": 3, "c": 1}),
                             BalanceConfig(upsample_min_samples=8), num_folds=5, seed=0)
    repeats = table.groupby("primary_label")["repeats"].sum().to_dict()
    assert repeats == {"a": 20, "b": 8, "c": 8}
    assert sorted(table.loc[table["primary_label"] == "b", "repeats"]) == [2, 3, 3]


def test_downsample_to_a_maximum_per_class():
    table = manifest.balance(_counts({"a": 50, "b": 12, "c": 4}),
                             BalanceConfig(downsample_max_samples=10), num_folds=5, seed=0)
    assert table["primary_label"].value_counts().to_dict() == {"a": 10, "b": 10, "c": 4}


def test_site_weight_draws_each_sites_windows_by_one_over_sqrt_count():
    recordings = _counts({"a": 10})
    windows = pd.DataFrame([{"source": "birdclef-2026-soundscapes", "recording_id": f"w{site}{i}",
                             "primary_label": "", "labels": ["a"], "site": site,
                             "group": f"birdclef-2026-soundscapes/{site}"}
                            for site, n in (("S01", 16), ("S02", 4), ("S03", 1))
                            for i in range(n)])
    table = pd.concat([recordings, windows], ignore_index=True)
    plain = manifest.balance(table, BalanceConfig(), num_folds=2, seed=0)
    assert (plain["repeats"] == 1).all()
    weighted = manifest.balance(table, BalanceConfig(site_weight="inverse_sqrt"),
                                num_folds=2, seed=0)
    per_site = weighted[weighted["primary_label"] == ""].groupby("site")["repeats"]
    assert per_site.unique().map(list).to_dict() == {"S01": [1], "S02": [2], "S03": [4]}
    # Each site's share of the draws grows as sqrt(its windows): 16 : 8 : 4.
    assert per_site.sum().to_dict() == {"S01": 16, "S02": 8, "S03": 4}
    assert (weighted.loc[weighted["primary_label"] == "a", "repeats"] == 1).all()
    with pytest.raises(ConfigError, match="site_weight"):
        load_config(None, ["data.balance.site_weight=sqrt"])


def test_stratified_folds_keep_rare_classes_in_training():
    table = manifest.balance(_counts({"a": 25, "b": 10, "c": 3}), BalanceConfig(),
                             num_folds=5, seed=0)
    per_fold = table[table["cv"]].groupby(["primary_label", "fold"]).size().unstack()
    assert (per_fold.loc["a"] == 5).all() and (per_fold.loc["b"] == 2).all()
    # 'c' has fewer rows than folds: never validated, always trained on.
    assert (table.loc[table["primary_label"] == "c", "fold"] == manifest.TRAIN_ONLY_FOLD).all()


def test_path_traversal_rows_are_rejected_and_recorded(tmp_path):
    root = tmp_path / "root"
    (root / "birdclef-2023" / "train_audio" / "a").mkdir(parents=True)
    outside = tmp_path / "secret.ogg"
    outside.write_bytes(b"x")
    (root / "birdclef-2023" / "train_audio" / "a" / "link.ogg").symlink_to(outside)
    (root / "birdclef-2023" / "train_audio" / "a" / "XC1.ogg").write_bytes(b"ogg")
    rows = ["a/XC1.ogg", "../../../secret.ogg", "/etc/passwd", "a/link.ogg"]
    catalog.write_csv(root / "birdclef-2023" / "train_metadata.csv", catalog.COLUMNS_2023,
                     [{"primary_label": "a", "filename": f, "author": "A", "rating": 4}
                      for f in rows])
    cfg = load_config(None, [f"data.root={root}", "data.sources=[birdclef-2023]",
                             "data.target_source=birdclef-2023", "data.num_folds=2"])
    table, _, report = manifest.build(cfg)
    assert table["path"].tolist() == ["birdclef-2023/train_audio/a/XC1.ogg"]
    reasons = sorted(r["reason"] for r in report["rejected"])
    assert len(reasons) == 3
    assert any("'..'" in r for r in reasons) and any("symlink" in r for r in reasons)


def test_full_ingest_of_the_synthetic_tree(synth_root, tmp_path):
    cfg = load_config(None, [
        f"data.root={synth_root}", f"data.corrupt_files={synth_root / 'corrupt_files.json'}",
        "data.sources=[birdclef-2020, birdclef-2021, birdclef-2022, birdclef-2023, xeno-canto]",
        "data.num_folds=2",
    ])
    table, name2label, report = manifest.build(cfg)
    listed = set(json.loads((synth_root / "corrupt_files.json").read_text()))
    assert not set(table["path"]) & listed
    target_ids = {int(r["xc_id"]) for r in synth.read_truth(synth_root)
                  if r["source"] == "birdclef-2026" and r["xc_id"]}
    assert not set(table["xc_id"].dropna()) & target_ids
    assert report["dropped_target_xc_ids"] > 0 and report["dropped_duplicates"] > 0
    assert not table.duplicated(["xc_id", "primary_label", "author"]).any() or \
        table[table.duplicated(["xc_id", "primary_label", "author"])]["xc_id"].isna().all()
    assert sorted(name2label) == sorted(table["primary_label"].unique())
    for labels in table["secondary_labels"]:
        assert set(labels) <= set(name2label)
    out = manifest.save(tmp_path, table, name2label, report)
    loaded, loaded_map = manifest.load(out)
    assert loaded_map == name2label
    assert loaded["secondary_labels"].tolist() == table["secondary_labels"].tolist()
    assert loaded["fold"].tolist() == table["fold"].tolist()


def test_bad_corrupt_list_and_root_are_clear_errors(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    table = _table([("birdclef-2021", 1, "a", "A")])
    with pytest.raises(manifest.ManifestError, match="bad.json is not valid JSON"):
        manifest.drop_listed(table, str(tmp_path / "bad.json"))
    with pytest.raises(MissingPathError, match="data.root=.*nowhere is not a folder"):
        manifest.build(load_config(None, [f"data.root={tmp_path / 'nowhere'}"]))


def test_bad_metadata_rows_are_recorded_and_bad_files_named(tmp_path):
    folder = tmp_path / "birdclef-2024"
    catalog.write_csv(folder / "train_metadata.csv", catalog.COLUMNS_2023, [
        {"primary_label": "a", "filename": "a/XC1.ogg", "author": "A"},
        {"primary_label": "", "filename": "a/XC2.ogg", "author": "A"},  # no label
        {"primary_label": "b", "filename": "", "author": "B"},  # no file
    ])
    table, rejected, _ = sources.read_source(tmp_path, "birdclef-2024")
    assert table["path"].tolist() == ["birdclef-2024/train_audio/a/XC1.ogg"]
    assert rejected["line"].tolist() == [3, 4]
    assert (rejected["reason"] == "empty primary label or filename").all()
    (folder / "train_metadata.csv").write_text("primary_label,author\na,A\n")
    with pytest.raises(sources.SourceError, match="has no column 'filename'"):
        sources.read_source(tmp_path, "birdclef-2024")


def test_repeated_header_rows_are_rejected_and_coerced_values_reported(tmp_path):
    folder = tmp_path / "birdclef-2024"
    catalog.write_csv(folder / "train_metadata.csv", catalog.COLUMNS_2023, [
        {"primary_label": "a", "filename": "a/XC1.ogg", "rating": "abc", "longitude": "1e999",
         "secondary_labels": "['b', 'c'"},
        {c: c for c in catalog.COLUMNS_2023},  # a header row again (concatenated files)
        {"primary_label": "b", "filename": "b/XC2.ogg", "rating": "nan", "latitude": "95"},
        {"primary_label": "c", "filename": "c/XC3.ogg", "rating": "4", "latitude": "None",
         "secondary_labels": "['a']"},
    ])
    table, rejected, coerced = sources.read_source(tmp_path, "birdclef-2024")
    assert table["primary_label"].tolist() == ["a", "b", "c"]  # no class 'primary_label'
    assert rejected[["line", "reason"]].values.tolist() == [[3, "repeated header row"]]
    found = {(r["line"], r["column"], r["value"], r["why"]) for r in coerced.to_dict("records")}
    assert found == {(2, "rating", "abc", "not a number"),
                     (2, "longitude", "1e999", "not finite"),
                     (2, "secondary_labels", "['b', 'c'", "malformed list"),
                     (4, "rating", "nan", "NaN"),
                     (4, "latitude", "95", "outside [-90, 90]")}
    assert table["secondary_labels"].tolist() == [["b", "c"], [], ["a"]]
    assert table["rating"].isna().tolist() == [True, True, False]


def test_rows_whose_audio_is_missing_are_rejected_not_made_classes(tmp_path):
    root = tmp_path / "root"
    (root / "birdclef-2023" / "train_audio" / "a").mkdir(parents=True)
    (root / "birdclef-2023" / "train_audio" / "a" / "XC1.ogg").write_bytes(b"ogg")
    catalog.write_csv(root / "birdclef-2023" / "train_metadata.csv", catalog.COLUMNS_2023, [
        {"primary_label": "a", "filename": "a/XC1.ogg", "rating": "abc"},
        {"primary_label": "ghost1", "filename": "ghost1/XC2.ogg"},  # no such file
    ])
    cfg = load_config(None, [f"data.root={root}", "data.sources=[birdclef-2023]",
                             "data.target_source=birdclef-2023", "data.num_folds=2",
                             f"data.manifest_dir={tmp_path / 'manifest'}"])
    table, name2label, report, out = manifest.ingest(cfg)
    assert list(name2label) == ["a"]
    written = json.loads((out / "ingest_report.json").read_text())
    assert {"source": "birdclef-2023", "path": "birdclef-2023/train_audio/ghost1/XC2.ogg",
            "reason": "audio file not found"} in written["rejected"]
    assert written["coerced"][0]["line"] == 2 and written["coerced"][0]["value"] == "abc"


def test_fine_tuning_classes_are_the_competitions_columns(synth_root):
    cfg = load_config(None, [f"data.root={synth_root}", "data.sources=[birdclef-2026]",
                             "data.label_map=competition", "data.num_folds=2"])
    table, name2label, report = manifest.build(cfg)
    columns = list(pd.read_csv(synth_root / "birdclef-2026" / "sample_submission.csv",
                               nrows=0).columns[1:])
    assert list(name2label) == columns and list(name2label.values()) == list(range(len(columns)))
    missing = sorted(set(columns) - set(table["primary_label"]))
    assert len(missing) == 2 and report["classes_without_clips"] == [
        c for c in columns if c in missing]
    pre = load_config(None, [f"data.root={synth_root}", "data.sources=[birdclef-2025]",
                             "data.num_folds=2"])
    assert sorted(manifest.build(pre)[1]) == sorted(manifest.build(pre)[0]["primary_label"]
                                                    .unique())  # pretraining: its own rows

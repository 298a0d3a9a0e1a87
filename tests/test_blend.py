"""Blending: per-class rank or probability means, weights tuned on out-of-fold tables."""

import json

import numpy as np
import pandas as pd
import pytest

from birdkeras import cli, metrics
from birdkeras.infer import blend

CLASSES = ["asbfly", "bkcbul", "comros", "grnsan"]


def _labels(rows=200, seed=0):
    rng = np.random.default_rng(seed)
    labels = (rng.random((rows, len(CLASSES))) < 0.2).astype(float)
    labels[:len(CLASSES), :] = np.eye(len(CLASSES))  # every class has a positive
    return labels


def _scores(labels, noise, seed):
    """Probabilities that follow the labels, blurred by `noise`."""
    rng = np.random.default_rng(seed)
    logits = 3 * (labels - 0.5) + noise * rng.normal(size=labels.shape)
    return 1 / (1 + np.exp(-logits))


def _oof(folder, labels, scores, classes=CLASSES, shuffle_seed=None):
    """A k-fold run's oof.csv (rows in any order: the blend aligns them)."""
    table = pd.DataFrame({"recording_id": [f"birdclef-2026/r{i // 3}.ogg" for i in range(len(labels))],
                          "fold": [i % 2 for i in range(len(labels))],
                          "start_s": [5.0 * (i % 3) for i in range(len(labels))]})
    table = pd.concat([table, pd.DataFrame(labels, columns=[f"label_{c}" for c in classes]),
                       pd.DataFrame(scores, columns=classes)], axis=1)
    if shuffle_seed is not None:
        table = table.sample(frac=1, random_state=shuffle_seed)
    folder.mkdir(parents=True)
    table.to_csv(folder / "oof.csv", index=False)
    return folder


def test_rank_blend_is_invariant_to_a_monotone_transform_of_one_member():
    labels = _labels()
    a, b = _scores(labels, 2.0, 1), _scores(labels, 3.0, 2)
    blended = blend.combine([a, b], [0.3, 0.7], "rank")
    for transform in (lambda x: x ** 5, lambda x: np.log(x / (1 - x)), lambda x: 10 * x - 3):
        np.testing.assert_allclose(blend.combine([a, transform(b)], [0.3, 0.7], "rank"),
                                   blended, atol=1e-12)
    # The probability mean is not: the transform changes what it averages.
    assert not np.allclose(blend.combine([a, b ** 5], [0.3, 0.7], "mean"),
                           blend.combine([a, b], [0.3, 0.7], "mean"))
    # One member alone: ranks keep its macro ROC-AUC.
    assert metrics.macro_roc_auc(labels, blend.combine([a, b], [1, 0], "rank")) == \
        pytest.approx(metrics.macro_roc_auc(labels, a))
    ranks = blend.rank_transform(np.array([[0.1], [0.5], [0.5], [0.9]]))
    np.testing.assert_allclose(ranks[:, 0], [0.25, 0.625, 0.625, 1.0])


def test_weights_are_tuned_on_the_out_of_fold_tables(tmp_path):
    labels = _labels()
    good, poor = _scores(labels, 1.0, 3), _scores(labels, 6.0, 4)
    runs = [_oof(tmp_path / "good", labels, good), _oof(tmp_path / "poor", labels[:, ::-1], poor[:, ::-1], CLASSES[::-1], shuffle_seed=0)]
    card = blend.tune_oof(runs, "rank", step=0.1)
    assert card["weights"][0] > card["weights"][1]
    assert card["oof_macro_auc"]["blend"] >= max(card["oof_macro_auc"]["members"]) - 1e-12
    expected, auc = blend.tune([good, poor], labels, "rank", 0.1)
    np.testing.assert_allclose(card["weights"], expected)  # rows and columns realigned
    assert card["oof_macro_auc"]["blend"] == pytest.approx(auc)
    # Swap which member is good in the out-of-fold tables: the weights swap with it.
    swapped = blend.tune_oof([_oof(tmp_path / "g2", labels, poor), _oof(tmp_path / "p2", labels, good)])
    assert swapped["weights"] == card["weights"][::-1]
    assert len(blend.weight_grid(3, 0.1)) == 66 and np.allclose(blend.weight_grid(3, 0.1).sum(1), 1)


def test_class_lists_must_agree_unless_mapped(tmp_path):
    labels = _labels()
    renamed = ["asbfly", "bkcbul", "comros", "Tringa ochropus"]
    a = _oof(tmp_path / "a", labels, _scores(labels, 2.0, 1))
    b = _oof(tmp_path / "b", labels, _scores(labels, 2.0, 2), classes=renamed)
    with pytest.raises(blend.BlendError, match=r"only in .*b.*\['Tringa ochropus'\].*\['grnsan'\]"):
        blend.tune_oof([a, b])
    card = blend.tune_oof([a, b], class_maps=[None, {"Tringa ochropus": "grnsan"}])
    assert card["classes"] == CLASSES
    other_rows = _oof(tmp_path / "c", labels[:-3], _scores(labels[:-3], 2.0, 3))
    with pytest.raises(blend.BlendError, match="different out-of-fold windows"):
        blend.tune_oof([a, other_rows])
    with pytest.raises(blend.BlendError, match="must divide 1"):
        blend.weight_grid(2, 0.3)
    with pytest.raises(blend.BlendError, match="two or more members"):
        blend.tune_oof([a])


def _submission(path, rows, scores, classes=CLASSES):
    table = pd.DataFrame(scores, columns=classes)
    table.insert(0, "row_id", rows)
    table.to_csv(path, index=False)
    return path


def test_the_command_tunes_then_applies_the_blend_to_submissions(tmp_path, capsys):
    labels = _labels()
    runs = [_oof(tmp_path / "a", labels, _scores(labels, 1.0, 1)),
            _oof(tmp_path / "b", labels, _scores(labels, 4.0, 2))]
    card_path = tmp_path / "blend.json"
    assert cli.main(["blend", "tune", "--oof", *map(str, runs), "--out", str(card_path)]) == 0
    card = json.loads(card_path.read_text())
    assert "out-of-fold windows: weights" in capsys.readouterr().out
    test = _labels(30, seed=5)
    rows = [f"BC2026_Test_0001_S01_20250101_000000_{5 * (i + 1)}" for i in range(30)]
    a, b = _scores(test, 1.0, 6), _scores(test, 4.0, 7)
    subs = [_submission(tmp_path / "a.csv", rows, a),
            # Another row order and column order: aligned by row_id and class name.
            _submission(tmp_path / "b.csv", rows[::-1], b[::-1][:, ::-1], CLASSES[::-1])]
    out = tmp_path / "blended.csv"
    assert cli.main(["blend", "apply", "--blend", str(card_path), "--submissions",
                     *map(str, subs), "--out", str(out)]) == 0
    blended = pd.read_csv(out)
    assert list(blended.columns) == ["row_id", *CLASSES] and list(blended["row_id"]) == rows
    np.testing.assert_allclose(blended[CLASSES].to_numpy(),
                               blend.combine([a, b], card["weights"], "rank"), atol=1e-12)
    short = _submission(tmp_path / "short.csv", rows[:-1], b[:-1])
    assert cli.main(["blend", "apply", "--blend", str(card_path), "--submissions",
                     str(subs[0]), str(short), "--out", str(tmp_path / "x.csv")]) == 2
    assert "different rows" in capsys.readouterr().err


def test_per_class_weights_follow_each_members_strong_classes(tmp_path, capsys):
    labels = _labels(300)
    # Member a is sharp on the first class only, member b on the others.
    a, b = _scores(labels, 8.0, 1), _scores(labels, 8.0, 2)
    a[:, 0], b[:, 1:] = _scores(labels, 0.5, 3)[:, 0], _scores(labels, 0.5, 4)[:, 1:]
    runs = [_oof(tmp_path / "a", labels, a), _oof(tmp_path / "b", labels, b)]
    card = blend.tune_oof(runs, "rank", step=0.1, per_class=True)
    weights = np.array(card["weights"])
    assert weights.shape == (2, len(CLASSES))
    assert weights[0, 0] > 0.5 and (weights[1, 1:] > 0.5).all()
    one = blend.tune_oof(runs, "rank", step=0.1)
    assert card["oof_macro_auc"]["blend"] > one["oof_macro_auc"]["blend"]
    # Applied to submissions whose columns come in another order: each class keeps its own.
    card_path = tmp_path / "blend.json"
    blend.write_card(card, card_path)
    rows = [f"r_{i}" for i in range(len(labels))]
    subs = [_submission(tmp_path / "a.csv", rows, a[:, ::-1], CLASSES[::-1]),
            _submission(tmp_path / "b.csv", rows, b)]
    out = tmp_path / "out.csv"
    assert cli.main(["blend", "apply", "--blend", str(card_path), "--submissions",
                     *map(str, subs), "--out", str(out)]) == 0
    blended = pd.read_csv(out)
    assert list(blended.columns) == ["row_id", *CLASSES[::-1]]
    np.testing.assert_allclose(blended[CLASSES].to_numpy(), blend.combine([a, b], weights),
                               atol=1e-12)

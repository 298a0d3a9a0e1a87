"""Official metrics equal their formulas (sklearn on the same inputs)."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from birdkeras import metrics


@pytest.fixture
def case():
    rng = np.random.default_rng(0)
    labels = (rng.random((40, 6)) < 0.3).astype(int)
    labels[:, 4] = 0  # a class with no positives
    labels[:, 5] = 1  # a class with no negatives
    scores = np.clip(labels * 0.4 + rng.random((40, 6)) * 0.8, 0, 1)
    return labels, scores


def official_2023(solution: pd.DataFrame, submission: pd.DataFrame, padding_factor=5):
    """The BirdCLEF 2023 metric as published: pad with rows of ones, macro AP."""
    new_rows = pd.DataFrame([[1] * solution.shape[1]] * padding_factor, columns=solution.columns)
    padded_solution = pd.concat([solution, new_rows]).reset_index(drop=True)
    padded_submission = pd.concat([submission, new_rows]).reset_index(drop=True)
    return average_precision_score(padded_solution.values, padded_submission.values,
                                   average="macro")


def official_2024(solution: pd.DataFrame, submission: pd.DataFrame):
    """The BirdCLEF 2024/2025 metric as published: macro ROC-AUC over scored columns."""
    solution_sums = solution.sum(axis=0)
    scored = list(solution_sums[solution_sums > 0].index.values)
    return roc_auc_score(solution[scored].values, submission[scored].values, average="macro")


def test_padded_cmap_equals_the_2023_formula(case):
    labels, scores = case
    expected = official_2023(pd.DataFrame(labels), pd.DataFrame(scores))
    assert metrics.padded_cmap(labels, scores) == pytest.approx(expected, abs=1e-12)
    # The class with no positives scores (thanks to the padding), not NaN.
    assert np.isfinite(metrics.padded_cmap(labels[:, 4:5], scores[:, 4:5]))


def test_macro_auc_equals_the_2024_formula_without_the_undefined_class(case):
    labels, scores = case
    # With every class defined, exactly the official formula.
    defined = [0, 1, 2, 3, 4]  # 4 has no positives: the formula itself drops it
    expected = official_2024(pd.DataFrame(labels[:, defined]), pd.DataFrame(scores[:, defined]))
    assert metrics.macro_roc_auc(labels[:, defined], scores[:, defined]) == pytest.approx(expected, abs=1e-12)
    # A class with no negatives makes the official formula undefined (older sklearn
    # raises, newer returns NaN for the whole score); we skip that class instead.
    try:
        with pytest.warns(Warning):
            official = official_2024(pd.DataFrame(labels), pd.DataFrame(scores))
        assert np.isnan(official)
    except ValueError:
        pass
    assert metrics.macro_roc_auc(labels, scores) == pytest.approx(expected, abs=1e-12)


def test_perfect_and_chance_scores():
    labels = np.eye(4)[np.arange(40) % 4]
    assert metrics.macro_roc_auc(labels, labels) == 1.0
    assert metrics.padded_cmap(labels, labels) == 1.0
    assert metrics.macro_roc_auc(labels, np.full_like(labels, 0.5)) == 0.5


def test_per_class_table(case):
    labels, scores = case
    table = metrics.per_class_table(labels, scores, list("abcdef"))
    assert table["support"].tolist() == labels.sum(axis=0).tolist()
    assert np.isnan(table.loc[4, "ap"]) and np.isnan(table.loc[4, "roc_auc"])
    assert np.isnan(table.loc[5, "roc_auc"]) and table.loc[5, "ap"] == 1.0
    assert table.loc[0, "roc_auc"] == pytest.approx(roc_auc_score(labels[:, 0], scores[:, 0]))


def test_tied_scores_give_the_official_values():
    """Both metrics are computed in numpy (fast enough to bootstrap); with scores rounded
    to two decimals (many ties, as probabilities written to a CSV have), they equal the
    published formulas."""
    rng = np.random.default_rng(3)
    labels = pd.DataFrame((rng.random((200, 12)) < 0.15).astype(int))
    scores = pd.DataFrame(np.round(rng.random((200, 12)) * 0.5 + labels.values * 0.3, 2))
    assert metrics.padded_cmap(labels.values, scores.values) == pytest.approx(
        official_2023(labels, scores), abs=1e-12)
    assert metrics.macro_roc_auc(labels.values, scores.values) == pytest.approx(
        official_2024(labels, scores), abs=1e-12)

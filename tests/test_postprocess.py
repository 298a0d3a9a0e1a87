"""Post-processing steps, each against a small example computed by hand."""

import numpy as np
import pytest

from birdkeras import config as config_lib
from birdkeras import postprocess

# One file: 3 windows x 2 classes.
PROBS = np.array([[0.2, 0.8], [0.6, 0.4], [0.4, 0.0]], dtype=np.float32)


def test_smooth_renormalises_at_the_edges():
    probs = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]], dtype=np.float32)
    smoothed = postprocess.smooth(probs, (0.25, 0.5, 0.25))
    np.testing.assert_allclose(smoothed[:, 0], [1 / 3, 0.5, 1 / 3])
    np.testing.assert_allclose(postprocess.smooth(probs, ()), probs)


def test_file_scale_max_and_topk():
    probs = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(postprocess.file_scale(probs, "max", 0.5, 3)[:, 0],
                               [0.5, 1.0, 0.5])
    np.testing.assert_allclose(postprocess.file_scale(probs, "topk", 1.0, 2)[:, 1],
                               [0.5, 0.5, 0.5])


def test_smoothing_weights_are_validated():
    with pytest.raises(config_lib.ConfigError, match="infer.smoothing"):
        config_lib.load_config(None, ["infer.smoothing=[0.5,0.5]"])


def test_taxon_temperature_divides_each_class_by_its_taxons():
    logits = np.array([[2.0, 3.0, -4.0]], dtype=np.float32)
    out = postprocess.taxon_temperature(logits, ["Aves", "Insecta", "Amphibia"],
                                        {"Insecta": 2.0, "Amphibia": 4.0})
    np.testing.assert_allclose(out, [[2.0, 1.5, -1.0]])


def test_file_topk_scale_multiplies_by_the_mean_of_the_top_k_to_a_power():
    # Class 0: top-2 = 0.6, 0.4 -> mean 0.5; class 1: 0.8, 0.4 -> 0.6. Power 2.
    out = postprocess.file_topk_scale(PROBS, top_k=2, power=2.0)
    np.testing.assert_allclose(out, PROBS * np.array([[0.25, 0.36]]), rtol=1e-6)


def test_rank_scale_multiplies_by_the_files_maximum_to_a_power():
    # Maxima 0.6 and 0.8; power 1.
    out = postprocess.rank_scale(PROBS, power=1.0)
    np.testing.assert_allclose(out, [[0.12, 0.64], [0.36, 0.32], [0.24, 0.0]], rtol=1e-6)


def test_adaptive_smooth_moves_unconfident_windows_towards_their_neighbours():
    # Window 1, class 0: neighbours (0.2 + 0.4) / 2 = 0.3; p = 0.6; strength 0.5:
    # 0.6 + 0.5 * 0.4 * (0.3 - 0.6) = 0.54. Window 0 (edge, padded with itself):
    # neighbours (0.2 + 0.6) / 2 = 0.4: 0.2 + 0.5 * 0.8 * 0.2 = 0.28.
    out = postprocess.adaptive_smooth(PROBS, strength=0.5)
    assert out[1, 0] == pytest.approx(0.54, abs=1e-6)
    assert out[0, 0] == pytest.approx(0.28, abs=1e-6)
    # Class 1, window 2 (p = 0): neighbours (0.4 + 0.0) / 2 = 0.2: 0 + 0.5 * 1 * 0.2 = 0.1.
    assert out[2, 1] == pytest.approx(0.1, abs=1e-6)


def test_prior_fusion_mixes_in_the_site_hour_prior():
    prior = np.array([1.0, 0.0], dtype=np.float32)
    out = postprocess.prior_fusion(PROBS, prior, weight=0.25)
    np.testing.assert_allclose(out, 0.75 * PROBS + 0.25 * prior[None], rtol=1e-6)
    assert out[2, 0] == pytest.approx(0.55)


def test_thresholds_zero_what_is_below_each_class_cut():
    out = postprocess.thresholds(PROBS, np.array([0.5, 0.3], dtype=np.float32))
    np.testing.assert_allclose(out, [[0.0, 0.8], [0.6, 0.4], [0.0, 0.0]])


def test_sharpened_thresholds_push_down_below_the_cut_and_keep_the_ranking():
    cut = np.array([0.5, 0.3], dtype=np.float32)
    out = postprocess.thresholds(PROBS, cut, "sharpen", 2.0)
    # Below the cut: cut x (p / cut)^2 = p^2 / cut; at or above it: unchanged.
    np.testing.assert_allclose(out, [[0.2 ** 2 / 0.5, 0.8], [0.6, 0.4],
                                     [0.4 ** 2 / 0.5, 0.0]], rtol=1e-6)
    rng = np.random.default_rng(0)
    p = rng.random((50, 2)).astype(np.float32)
    sharp = postprocess.thresholds(p, cut, "sharpen", 3.0)
    for k in range(2):  # each class's order kept (zeroing ties it)
        np.testing.assert_array_equal(np.argsort(sharp[:, k]), np.argsort(p[:, k]))
    assert len(np.unique(postprocess.thresholds(p, cut)[:, 0])) < len(np.unique(sharp[:, 0]))
    with pytest.raises(config_lib.ConfigError, match="threshold_power=0.5 must be >= 1"):
        config_lib.InferConfig(threshold_power=0.5)

"""Batch-level waveform augmentation: labels mixed with the audio's own factor."""

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from birdkeras.records import mixing
from birdkeras.config import ConfigError, load_config

SEED = tf.constant([1, 2], tf.int64)


def _batch(n=16, length=3200):
    waves = tf.random.stateless_normal([n, length], [0, 0])
    return waves, tf.one_hot(tf.range(n), n)  # one class per example


def _partners(labels, i):
    return [j for j in range(labels.shape[1]) if j != i and labels[i, j] > 1e-6]


def test_mixup_mixes_inputs_and_labels_with_the_same_factor():
    waves, labels = _batch()
    mixed, mixed_labels = (t.numpy() for t in mixing.mixup(waves, labels, 0.4, 1.0, SEED))
    waves = waves.numpy()
    np.testing.assert_allclose(mixed_labels.sum(axis=1), 1.0, atol=1e-6)
    assert (mixed_labels.max(axis=1) < 0.99).any()
    for i in range(16):
        expected = mixed_labels[i, i] * waves[i] + sum(
            mixed_labels[i, j] * waves[j] for j in _partners(mixed_labels, i))
        np.testing.assert_allclose(mixed[i], expected, atol=1e-5)


def test_cutmix_labels_follow_the_share_of_samples_replaced():
    waves, labels = _batch()
    mixed, mixed_labels = (t.numpy() for t in mixing.cutmix(waves, labels, 1.0, 1.0, SEED))
    waves = waves.numpy()
    np.testing.assert_allclose(mixed_labels.sum(axis=1), 1.0, atol=1e-6)
    # With probability 1 and Beta(1, 1) cut shares, nearly every example is cut (an
    # example drawn as its own partner, or a zero-width cut, stays whole).
    cut = [i for i in range(16) if (mixed[i] != waves[i]).any()]
    assert len(cut) >= 12, cut
    for i in range(16):
        # The example's own label keeps exactly the share of its samples it kept.
        kept = np.mean(mixed[i] == waves[i])
        np.testing.assert_allclose(mixed_labels[i, i], kept, atol=1e-6)
    for i in cut:
        # One contiguous segment, taken from the one partner that shares the label.
        changed = np.flatnonzero(mixed[i] != waves[i])
        assert changed[-1] - changed[0] + 1 == len(changed)
        (j,) = _partners(mixed_labels, i)
        np.testing.assert_array_equal(mixed[i][changed], waves[j][changed])
        np.testing.assert_allclose(mixed_labels[i, j], len(changed) / waves.shape[1], atol=1e-6)


def test_probability_zero_is_identity():
    waves, labels = _batch()
    for fn in (lambda: mixing.mixup(waves, labels, 0.4, 0.0, SEED),
               lambda: mixing.cutmix(waves, labels, 1.0, 0.0, SEED)):
        out_waves, out_labels = fn()
        np.testing.assert_array_equal(out_waves.numpy(), waves.numpy())
        np.testing.assert_array_equal(out_labels.numpy(), labels.numpy())
    np.testing.assert_array_equal(mixing.add_noise(waves, (10.0, 10.0), 0.0, SEED).numpy(),
                                  waves.numpy())


def test_noise_is_added_at_the_requested_snr():
    waves, _ = _batch(length=32000)
    noisy = mixing.add_noise(waves, (20.0, 20.0), 1.0, SEED).numpy()
    noise = noisy - waves.numpy()
    snr = 10 * np.log10(np.mean(waves.numpy() ** 2, axis=1) / np.mean(noise ** 2, axis=1))
    np.testing.assert_allclose(snr, 20.0, atol=0.3)


def test_background_comes_from_the_pool_at_the_requested_snr():
    waves, _ = _batch(n=4, length=1000)
    pool = tf.constant(np.sin(np.arange(3 * 5000) / 7.0).reshape(3, 5000).astype(np.float32))
    out = mixing.add_background(waves, pool, (6.0, 6.0), 1.0, SEED).numpy()
    added = out - waves.numpy()
    snr = 10 * np.log10(np.mean(waves.numpy() ** 2, axis=1) / np.mean(added ** 2, axis=1))
    np.testing.assert_allclose(snr, 6.0, atol=0.2)
    # Each added signal is a scaled window of one pool clip.
    clips = pool.numpy()
    for row in added:
        windows = np.stack([clip[s:s + 1000] for clip in clips for s in range(4001)])
        gains = windows @ row / np.sum(windows ** 2, axis=1)
        residual = np.abs(windows * gains[:, None] - row).max(axis=1)
        assert residual.min() < 1e-4


def test_background_pool_from_a_folder(synth_root):
    folder = synth_root / "birdclef-2026" / "train_soundscapes"
    pool = mixing.load_background_pool(str(folder), 32000, 5.0)
    assert pool.ndim == 2 and pool.shape[1] >= 5 * 32000


def _augmented(tmp_path, *overrides):
    """A batch through the training pipeline's augmenter, with a 1-clip noise pool
    (a 440 Hz tone) in tmp_path/noise."""
    (tmp_path / "noise").mkdir(exist_ok=True)
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(16000 * 6) / 16000)
    sf.write(tmp_path / "noise" / "tone.wav", tone.astype(np.float32), 16000)
    cfg = load_config(None, [f"data.root={tmp_path}", "audio.sample_rate_hz=16000",
                             "audio.fmax_hz=8000", "augment.background_dir=noise",
                             "augment.background_snr_db=[0, 0]", "augment.noise_snr_db=[10, 10]",
                             *overrides])
    waves, labels = _batch(n=8, length=16000 * 5)
    out, out_labels = mixing.batch_augmenter(cfg)(tf.constant(3, tf.int64), (waves, labels))
    np.testing.assert_array_equal(out_labels.numpy(), labels.numpy())  # labels untouched
    return waves.numpy(), out.numpy(), tone


def test_the_training_augmenter_adds_gaussian_noise(tmp_path):
    waves, out, _ = _augmented(tmp_path, "augment.noise_probability=1.0")
    added = out - waves
    snr = 10 * np.log10(np.mean(waves ** 2, axis=1) / np.mean(added ** 2, axis=1))
    np.testing.assert_allclose(snr, 10.0, atol=0.3)


def test_the_training_augmenter_mixes_in_the_background_pool(tmp_path):
    waves, out, tone = _augmented(tmp_path, "augment.background_probability=1.0")
    added = out - waves
    snr = 10 * np.log10(np.mean(waves ** 2, axis=1) / np.mean(added ** 2, axis=1))
    np.testing.assert_allclose(snr, 0.0, atol=0.2)
    # What was added is the pool's tone: its spectrum peaks at 440 Hz.
    peak_hz = np.argmax(np.abs(np.fft.rfft(added, axis=1)), axis=1) * 16000 / added.shape[1]
    np.testing.assert_allclose(peak_hz, 440.0, atol=1.0)


def test_augment_config_errors():
    with pytest.raises(ConfigError, match="needs augment.background_dir"):
        load_config(None, ["augment.background_probability=0.5"])
    with pytest.raises(ConfigError, match=r"augment.noise_snr_db=\[30.0, 10.0\] must be"):
        load_config(None, ["augment.noise_snr_db=[30, 10]"])

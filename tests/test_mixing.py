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


SR = 16000


def _tone(hz, seconds=2.0, start_s=0.0, length_s=None, n=2):
    t = np.arange(int(SR * seconds)) / SR
    wave = np.sin(2 * np.pi * hz * t)
    if length_s is not None:
        wave *= (t >= start_s) & (t < start_s + length_s)
    return tf.constant(np.repeat(wave[None].astype(np.float32), n, axis=0))


def _peak_hz(wave):
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return np.argmax(spectrum) * SR / len(wave)


def test_pitch_shift_moves_a_tone_by_the_ratio_and_keeps_its_duration():
    waves = _tone(1000.0)
    out = mixing.pitch_shift(waves, (4.0, 4.0), 1.0, SEED).numpy()
    assert out.shape == waves.shape
    want = 1000.0 * 2 ** (4 / 12)
    for row in out:
        assert abs(_peak_hz(row[4000:-4000]) - want) < 8  # 1,260 Hz, not 1,000
    # The tone still fills the window (its duration kept; resampling alone would leave
    # 21% of it silent).
    envelope = np.convolve(out[0] ** 2, np.ones(400) / 400, mode="same")
    assert np.mean(envelope > 0.5 * envelope.max()) > 0.95


def test_resampling_reaches_the_last_sample_where_float_steps_land_on_it():
    # tf.range(0, 144639, 0.85295) in float32 ends exactly on 144,639: the last pair of
    # samples must still be the one interpolated (a pitch shift of -2.76 semitones of a
    # 5 s window at 32 kHz crashed training with an index out of range).
    wave = tf.range(144640, dtype=tf.float32)
    out = mixing.resample(wave, 0.85295).numpy()
    assert out[-1] == 144639.0 and len(out) == len(np.arange(0.0, 144639.0, 0.85295))
    np.testing.assert_allclose(np.diff(out), 0.85295, atol=0.02)  # a ramp, resampled
    frames = mixing.stretch(tf.random.stateless_normal([64 * 256 + 768], (0, 1)), 0.8529)
    assert np.isfinite(frames.numpy()).all()


def test_time_stretch_changes_a_bursts_duration_not_its_pitch():
    # 2,030 Hz: not a whole number of cycles per vocoder hop, so phases must be carried.
    waves = _tone(2030.0, seconds=3.0, start_s=1.0, length_s=1.0)
    out = mixing.time_stretch(waves, (0.8, 0.8), 1.0, SEED).numpy()
    envelope = np.convolve(out[0] ** 2, np.ones(400) / 400, mode="same")
    on = np.flatnonzero(envelope > 0.5 * envelope.max())
    assert (on[-1] - on[0]) / SR == pytest.approx(1.0 / 0.8, abs=0.05)  # 1.25 s
    steady = out[0][on[0] + 800:on[-1] - 800]
    assert abs(_peak_hz(steady) - 2030.0) < 8
    # Phases carried from frame to frame keep it one clean tone: most energy near it.
    spectrum = np.abs(np.fft.rfft(steady * np.hanning(len(steady)))) ** 2
    hz = np.fft.rfftfreq(len(steady), 1 / SR)
    assert spectrum[np.abs(hz - 2030) < 30].sum() > 0.999 * spectrum.sum()
    steady_envelope = envelope[on[0] + 800:on[-1] - 800]
    assert steady_envelope.std() < 0.08 * steady_envelope.mean()  # 0.06; 0.13 without


@pytest.mark.parametrize("beta", [1.0, 2.0])
def test_coloured_noise_has_the_spectral_slope(beta):
    waves, _ = _batch(n=4, length=SR * 4)
    out = mixing.coloured_noise(waves, (20.0, 20.0), (beta, beta), 1.0, SEED)
    noise = (out - waves).numpy()
    power = np.mean(np.abs(np.fft.rfft(noise, axis=1)) ** 2, axis=0)
    hz = np.fft.rfftfreq(noise.shape[1], 1 / SR)
    band = (hz > 50) & (hz < 5000)
    slope = np.polyfit(np.log(hz[band]), np.log(power[band]), 1)[0]
    assert slope == pytest.approx(-beta, abs=0.1)
    snr = 10 * np.log10(np.mean(waves.numpy() ** 2, axis=1) / np.mean(noise ** 2, axis=1))
    np.testing.assert_allclose(snr, 20.0, atol=0.1)


def test_gain_shift_and_the_max_label_rule():
    waves, labels = _batch(n=8)
    louder = mixing.gain(waves, (6.0, 6.0), 1.0, SEED).numpy()
    np.testing.assert_allclose(louder / waves.numpy(), 10 ** (6 / 20), rtol=1e-5)
    impulse = np.zeros((3, 100), np.float32)
    impulse[:, 50] = 1.0
    rolled = mixing.time_shift(tf.constant(impulse), 0.2, 1.0, SEED).numpy()
    assert (np.abs(np.argmax(rolled, axis=1) - 50) <= 20).all() and (rolled.sum(axis=1) == 1).all()
    _, maxed = mixing.mixup(waves, labels, 0.4, 1.0, SEED, label_rule="max")
    # Every mixed example carries its own class and its partner's, in full.
    assert set(np.unique(maxed.numpy())) <= {0.0, 1.0}
    assert (maxed.numpy().sum(axis=1) >= 1).all() and (maxed.numpy().sum(axis=1) <= 2).all()
    assert (np.diag(maxed.numpy()) == 1).all() and (maxed.numpy().sum(axis=1) == 2).sum() >= 4


def test_filter_augment_changes_band_energies_within_its_range_only_when_training():
    from birdkeras.model.specaugment import FilterAugment  # noqa: PLC0415

    layer = FilterAugment(db=(-6.0, 6.0), bands=(2, 4), probability=1.0, seed=3)
    log_mel = np.zeros((16, 64, 10, 1), np.float32)
    gains = np.asarray(layer(log_mel, training=True))
    assert np.abs(gains).max() <= 6.0 and np.abs(gains).max() > 1.0
    levels = [1 + np.count_nonzero(np.diff(example)) for example in gains[:, :, 0, 0]]
    assert {2, 4} <= set(levels) and max(levels) <= 4  # constant steps, 2 to 4 bands
    np.testing.assert_array_equal(np.asarray(layer(log_mel, training=False)), log_mel)
    assert np.ptp(gains[:, :, :, 0], axis=2).max() == 0  # the same gain in every frame


def test_new_augment_settings_are_refused_when_inverted_or_improbable():
    for bad, named in ((["augment.pitch_shift_semitones=[3, -3]"], "pitch_shift_semitones"),
                       (["augment.time_stretch_rate=[1.2, 0.8]"], "time_stretch_rate"),
                       (["augment.gain_probability=1.5"], "gain_probability"),
                       (["augment.filter_augment_probability=-0.1"], "filter_augment_prob"),
                       (["augment.coloured_noise_exponent=[2, 1]"], "coloured_noise_exp")):
        with pytest.raises(ConfigError, match=named):
            load_config(None, bad)


@pytest.mark.slow
def test_augmentations_are_absent_at_validation(demo_records):
    from birdkeras.records import pipeline  # noqa: PLC0415

    overrides, name2label, _ = demo_records
    on = ["augment.gain_probability=1", "augment.shift_probability=1",
          "augment.coloured_noise_probability=1", "augment.pitch_shift_probability=1",
          "augment.time_stretch_probability=1", "augment.filter_augment_probability=1",
          "augment.mixup_probability=1"]
    batches = []
    for extra in ([], on):
        cfg = load_config(None, [*overrides, "input.batch_size=4", *extra])
        val = pipeline.make_dataset(cfg, len(name2label), False)
        batches.append(next(iter(val))[0].numpy())
    np.testing.assert_array_equal(*batches)


def test_every_new_augmentation_runs_in_the_tf_data_graph(tmp_path):
    cfg = load_config(None, ["audio.sample_rate_hz=16000", "audio.fmax_hz=8000",
                             "augment.gain_probability=1", "augment.shift_probability=1",
                             "augment.coloured_noise_probability=1",
                             "augment.pitch_shift_probability=1",
                             "augment.time_stretch_probability=1",
                             "augment.mixup_probability=1", "augment.mixup_label_rule=max"])
    waves, labels = _batch(n=4, length=16000 * 2)
    ds = tf.data.Dataset.from_tensors((waves, labels)).repeat(2).enumerate().map(
        mixing.batch_augmenter(cfg))
    for out, out_labels in ds:
        assert out.shape == waves.shape and np.isfinite(out.numpy()).all()
        assert not np.allclose(out.numpy(), waves.numpy())
        assert set(np.unique(out_labels.numpy())) <= {0.0, 1.0}

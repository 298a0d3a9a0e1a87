"""In-model front end and augmentation layers."""

import keras
import librosa
import numpy as np
import pytest
import tensorflow as tf

from birdkeras.model.frontend import LogMelSpectrogram, SpectrogramToImage
from birdkeras.model.mel import NumpyLogMel, mel_filterbank
from birdkeras.model.specaugment import FrequencyMasking, TimeMasking

SR = 32000


def chirp(gain=0.5, seconds=5.0, f0=1000.0, seed=0):
    t = np.arange(int(SR * seconds)) / SR
    noise = 0.01 * np.random.default_rng(seed).standard_normal(len(t))
    return (gain * (np.sin(2 * np.pi * (f0 + 600 * t) * t) + noise)).astype(np.float32)


def librosa_log_mel(y, top_db=80.0):
    """The oracle: settings that must match are written out here."""
    power = librosa.feature.melspectrogram(
        y=y, sr=SR, n_fft=2048, hop_length=512, n_mels=128, fmin=50.0, fmax=14000.0,
        htk=True, norm=None, power=2.0, center=True, pad_mode="reflect", window="hann")
    return librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=top_db)


def test_filterbank_equals_librosa_htk_without_norm():
    ours = mel_filterbank(SR, 2048, 128, 50.0, 14000.0)
    ref = librosa.filters.mel(sr=SR, n_fft=2048, n_mels=128, fmin=50.0, fmax=14000.0,
                              htk=True, norm=None)
    np.testing.assert_allclose(ours.T, ref, atol=1e-6)


@pytest.mark.parametrize("gain,top_db", [(0.5, 80.0), (1e-3, 80.0), (0.5, None)])
def test_log_mel_matches_librosa_to_0_05_db(gain, top_db):
    y = chirp(gain)
    ours = np.asarray(LogMelSpectrogram(top_db=top_db)(y[None]))[0, :, :, 0]
    np.testing.assert_allclose(ours, librosa_log_mel(y, top_db), atol=0.05)


def test_log_mel_is_independent_of_batch_mates():
    layer = LogMelSpectrogram()
    loud, quiet = chirp(gain=1.0), chirp(gain=1e-4, seed=1)
    alone = np.asarray(layer(quiet[None]))[0]
    batched = np.asarray(layer(np.stack([loud, quiet])))[1]
    np.testing.assert_allclose(batched, alone, atol=1e-4)
    image = SpectrogramToImage()
    np.testing.assert_allclose(np.asarray(image(layer(np.stack([loud, quiet]))))[1],
                               np.asarray(image(alone[None]))[0], atol=1e-3)


def test_eager_equals_inside_a_tf_data_map():
    layer = LogMelSpectrogram()
    y = np.stack([chirp(0.3), chirp(0.05, f0=3000.0)])
    eager = np.asarray(layer(y))
    mapped = next(iter(tf.data.Dataset.from_tensor_slices(y).batch(2).map(layer)))
    np.testing.assert_allclose(mapped.numpy(), eager, atol=1e-4)


def test_output_shape_for_any_length():
    layer = LogMelSpectrogram()
    for seconds in (5.0, 12.3):
        n = int(SR * seconds)
        out = layer(np.zeros((2, n), np.float32) + chirp(0.1, seconds)[None])
        assert tuple(out.shape) == (2, 128, 1 + n // 512, 1)
    image = SpectrogramToImage()(out)
    assert image.shape[-1] == 3
    assert float(keras.ops.min(image)) >= 0 and float(keras.ops.max(image)) <= 255


@pytest.mark.parametrize("cls,kwargs", [
    (LogMelSpectrogram, {"sample_rate_hz": 22050, "fft_length": 1024, "hop_length": 256,
                         "num_mel_bins": 64, "fmin_hz": 20.0, "fmax_hz": 11025,
                         "top_db": 60, "dft": "matmul"}),
    (SpectrogramToImage, {"eps": 1e-5}),
    (FrequencyMasking, {"num_masks": 3, "max_width": 7, "probability": 0.5, "seed": 1}),
    (TimeMasking, {"num_masks": 1, "max_width": 20, "probability": 0.9, "seed": 2}),
])
def test_config_round_trip(cls, kwargs):
    # Every argument passed (none of them a default) is in the config, and survives a
    # from_config round trip (keras-hub's check).
    config = cls(**kwargs).get_config()
    assert {**config, **kwargs} == config
    clone = cls.from_config(config).get_config()
    assert {**clone, **kwargs} == clone


def test_invalid_arguments_are_named():
    with pytest.raises(ValueError, match="fmax_hz must be <= sample_rate_hz / 2"):
        LogMelSpectrogram(sample_rate_hz=16000, fmax_hz=14000)
    with pytest.raises(ValueError, match="max_width must be >= 0. Received: max_width=-1"):
        TimeMasking(max_width=-1)
    with pytest.raises(ValueError, match="probability must be in"):
        FrequencyMasking(probability=2)


def _spectrogram_batch():
    return keras.random.normal((8, 64, 100, 1), seed=0) + 10.0


def test_masks_are_identity_at_inference():
    x = _spectrogram_batch()
    for layer in (FrequencyMasking(max_width=20, seed=0), TimeMasking(max_width=20, seed=0)):
        np.testing.assert_array_equal(np.asarray(layer(x)), np.asarray(x))
        np.testing.assert_array_equal(np.asarray(layer(x, training=False)), np.asarray(x))


def test_frequency_mask_only_ever_spans_mel_bins():
    x = np.asarray(_spectrogram_batch())
    out = np.asarray(FrequencyMasking(num_masks=2, max_width=20, seed=3)(x, training=True))
    changed = out != x
    assert changed.any()
    for example in changed[..., 0]:
        rows = example.any(axis=1)  # mel bins touched
        # A touched mel bin is masked across every frame; untouched bins are intact.
        assert (example[rows].all()) and not example[~rows].any()


def test_time_mask_only_ever_spans_frames():
    x = np.asarray(_spectrogram_batch())
    out = np.asarray(TimeMasking(num_masks=2, max_width=30, seed=3)(x, training=True))
    changed = (out != x)[..., 0]
    assert changed.any()
    for example in changed:
        cols = example.any(axis=0)
        assert example[:, cols].all() and not example[:, ~cols].any()
        assert cols.sum() <= 60


def test_masks_are_seeded_and_respect_probability():
    x = _spectrogram_batch()
    a = np.asarray(TimeMasking(max_width=30, seed=5)(x, training=True))
    b = np.asarray(TimeMasking(max_width=30, seed=5)(x, training=True))
    np.testing.assert_array_equal(a, b)
    never = np.asarray(TimeMasking(max_width=30, probability=0.0, seed=5)(x, training=True))
    np.testing.assert_array_equal(never, np.asarray(x))


@pytest.mark.parametrize("cls", [FrequencyMasking, TimeMasking])
def test_a_seeded_mask_differs_from_batch_to_batch(cls):
    # Seeded means reproducible across runs, not the same mask every batch.
    layer, x = cls(max_width=20, seed=5), _spectrogram_batch()
    first = np.asarray(layer(x, training=True))
    second = np.asarray(layer(x, training=True))
    assert (first != second).any()


@pytest.mark.parametrize("rate,fft,hop,mels,fmax", [(32000, 2048, 512, 128, 14000.0),
                                                   (22050, 1000, 320, 40, 8000.0),
                                                   (16000, 1024, 1024, 32, 8000.0)])
def test_numpy_front_end_equals_the_training_layer(rate, fft, hop, mels, fmax):
    # The front end predict runs in its decode threads (a real FFT) must give the
    # log-mel the model was trained on: to 1e-3 dB.
    settings = dict(sample_rate_hz=rate, fft_length=fft, hop_length=hop, num_mel_bins=mels,
                    fmin_hz=50.0, fmax_hz=fmax, top_db=80.0)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, rate * 2)) * np.linspace(0, 1, rate * 2)).astype("float32")
    x[1, :rate] = 0.0  # silence and a step
    layer = LogMelSpectrogram(**settings)
    np.testing.assert_allclose(NumpyLogMel.of(layer.get_config())(x), np.asarray(layer(x)),
                               atol=1e-3)

"""In-model audio front end: waveform -> log-mel "image".

Inside the model, so training and inference cannot drift (the exported model takes raw
waveform). Keras 3 layers on `keras.ops` only, serialisable.

`LogMelSpectrogram` matches `librosa.feature.melspectrogram(y, sr=..., n_fft=...,
hop_length=..., n_mels=..., fmin=..., fmax=..., htk=True, norm=None, power=2.0,
center=True, pad_mode="reflect")` followed by `librosa.power_to_db(S, ref=1.0,
amin=1e-10, top_db=...)` applied to each example on its own (tested to 0.05 dB).
Unlike `keras.layers.MelSpectrogram(power_to_db=True)`, the `top_db` clamp is per
example, so an example's features never depend on its batch mates.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


def _hz_to_mel_htk(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz_htk(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(sample_rate_hz, fft_length, num_mel_bins, fmin_hz, fmax_hz) -> np.ndarray:
    """HTK-scale triangular filters without area normalisation, (fft_length//2+1, mels).

    The same construction as `librosa.filters.mel(htk=True, norm=None)`.
    """
    fft_freqs = np.linspace(0, sample_rate_hz / 2, fft_length // 2 + 1)
    mel_points = np.linspace(_hz_to_mel_htk(fmin_hz), _hz_to_mel_htk(fmax_hz), num_mel_bins + 2)
    hz_points = _mel_to_hz_htk(mel_points)
    widths = np.diff(hz_points)
    ramps = hz_points[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    return np.maximum(0, np.minimum(lower, upper)).T.astype(np.float32)


@keras.saving.register_keras_serializable(package="birdkeras")
class LogMelSpectrogram(keras.layers.Layer):
    """Waveform to log-mel power in dB, clamped to `top_db` below each example's peak.

    Args:
        sample_rate_hz: sample rate of the input waveform.
        fft_length: FFT size (and window length), in samples.
        hop_length: hop between frames, in samples.
        num_mel_bins: number of mel bands.
        fmin_hz, fmax_hz: band edges; fmax_hz <= sample_rate_hz / 2.
        top_db: dynamic range kept below each example's maximum; None keeps all.

    Input shape: `(batch, samples)`. Output: `(batch, num_mel_bins, frames, 1)` with
    `frames = 1 + samples // hop_length` (centred, reflect-padded frames).
    """

    def __init__(self, sample_rate_hz=32000, fft_length=2048, hop_length=512,
                 num_mel_bins=128, fmin_hz=50.0, fmax_hz=14000.0, top_db=80.0, **kwargs):
        super().__init__(**kwargs)
        if fmax_hz > sample_rate_hz / 2:
            raise ValueError(f"fmax_hz must be <= sample_rate_hz / 2. Received: "
                             f"fmax_hz={fmax_hz}, sample_rate_hz={sample_rate_hz}")
        if not 0 <= fmin_hz < fmax_hz:
            raise ValueError(f"fmin_hz must be in [0, fmax_hz). Received: fmin_hz={fmin_hz}")
        if hop_length <= 0 or fft_length < hop_length:
            raise ValueError(f"Need 0 < hop_length <= fft_length. Received: "
                             f"hop_length={hop_length}, fft_length={fft_length}")
        if top_db is not None and top_db <= 0:
            raise ValueError(f"top_db must be > 0 or None. Received: top_db={top_db}")
        self.sample_rate_hz, self.fft_length, self.hop_length = sample_rate_hz, fft_length, hop_length
        self.num_mel_bins, self.fmin_hz, self.fmax_hz, self.top_db = (
            num_mel_bins, fmin_hz, fmax_hz, top_db)
        self._filterbank = mel_filterbank(sample_rate_hz, fft_length, num_mel_bins, fmin_hz,
                                          fmax_hz)

    def call(self, inputs):
        waveform = ops.cast(inputs, "float32")
        real, imag = ops.stft(waveform, sequence_length=self.fft_length,
                              sequence_stride=self.hop_length, fft_length=self.fft_length,
                              window="hann", center=True)
        power = ops.square(real) + ops.square(imag)  # (batch, frames, bins)
        mel = ops.matmul(power, ops.convert_to_tensor(self._filterbank))
        db = 10.0 * ops.log(ops.maximum(mel, 1e-10)) / np.log(10.0)
        if self.top_db is not None:
            peak = ops.max(db, axis=(1, 2), keepdims=True)  # per example
            db = ops.maximum(db, peak - self.top_db)
        return ops.expand_dims(ops.transpose(db, (0, 2, 1)), -1)

    def compute_output_shape(self, input_shape):
        frames = None if input_shape[1] is None else 1 + input_shape[1] // self.hop_length
        return (input_shape[0], self.num_mel_bins, frames, 1)

    def get_config(self):
        return {**super().get_config(), "sample_rate_hz": self.sample_rate_hz,
                "fft_length": self.fft_length, "hop_length": self.hop_length,
                "num_mel_bins": self.num_mel_bins, "fmin_hz": self.fmin_hz,
                "fmax_hz": self.fmax_hz, "top_db": self.top_db}


@keras.saving.register_keras_serializable(package="birdkeras")
class SpectrogramToImage(keras.layers.Layer):
    """Per-example standardisation, then scaling to the 0..255 RGB range.

    keras.applications EfficientNets (B0-B7 and V2) rescale and normalise inside the
    model and expect pixels in [0, 255]; this layer standardises each example's
    log-mel (mean 0, std 1 over mels x frames, its own statistics only), maps +-3 std
    to 0..255 and repeats the channel three times.

    Input shape: `(batch, mels, frames, 1)`. Output: `(batch, mels, frames, 3)`.
    """

    def __init__(self, eps=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.eps = eps

    def call(self, inputs):
        mean = ops.mean(inputs, axis=(1, 2, 3), keepdims=True)
        std = ops.std(inputs, axis=(1, 2, 3), keepdims=True)
        z = (inputs - mean) / (std + self.eps)
        pixels = ops.clip((z + 3.0) / 6.0, 0.0, 1.0) * 255.0
        return ops.concatenate([pixels, pixels, pixels], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:3], 3)

    def get_config(self):
        return {**super().get_config(), "eps": self.eps}

"""In-model audio front end: waveform -> log-mel "image".

Inside the model, so training and inference cannot drift (the exported model takes raw
waveform). Keras 3 layers on `keras.ops` only, serialisable.

`LogMelSpectrogram` matches `librosa.feature.melspectrogram(y, sr=..., n_fft=...,
hop_length=..., n_mels=..., fmin=..., fmax=..., htk=True, norm=None, power=2.0,
center=True, pad_mode="reflect")` followed by `librosa.power_to_db(S, ref=1.0,
amin=1e-10, top_db=...)` applied to each example on its own (tested to 0.05 dB).
Unlike `keras.layers.MelSpectrogram(power_to_db=True)`, the `top_db` clamp is per
example, so an example's features never depend on its batch mates.

`dft="matmul"` computes the same spectrogram without FFT ops, which tf2onnx cannot turn
into a graph ONNX Runtime accepts: frames are gathered, windowed and transformed by a
two-stage (Cooley-Tukey) DFT written as two matrix products and a twiddle product, with
the mel filterbank's rows permuted to the factorised bin order. Every op (Gather,
MatMul, Mul, Reshape, ReduceMax, Log) exists in ONNX and TFLite. It is numerically the
FFT front end to float32 rounding (tested to 1e-3 dB) and costs about 2N(N1 + N2)
multiply-adds per frame for N = N1 * N2, instead of N^2 for a plain DFT matrix.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from birdkeras.model.mel import dft_matrices, mel_filterbank


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
        dft: "fft" (`ops.stft`, for training) or "matmul" (the same values without FFT
            ops, for ONNX/TFLite export).

    Input shape: `(batch, samples)`. Output: `(batch, num_mel_bins, frames, 1)` with
    `frames = 1 + samples // hop_length` (centred, reflect-padded frames).
    """

    def __init__(self, sample_rate_hz=32000, fft_length=2048, hop_length=512,
                 num_mel_bins=128, fmin_hz=50.0, fmax_hz=14000.0, top_db=80.0, dft="fft",
                 **kwargs):
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
        if dft not in ("fft", "matmul"):
            raise ValueError(f'dft must be "fft" or "matmul". Received: dft={dft!r}')
        self.dft = dft
        self.sample_rate_hz, self.fft_length, self.hop_length = sample_rate_hz, fft_length, hop_length
        self.num_mel_bins, self.fmin_hz, self.fmax_hz, self.top_db = (
            num_mel_bins, fmin_hz, fmax_hz, top_db)
        self._filterbank = mel_filterbank(sample_rate_hz, fft_length, num_mel_bins, fmin_hz,
                                          fmax_hz)

        if dft == "matmul":
            used = np.flatnonzero(self._filterbank.any(axis=1))
            hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(fft_length) / fft_length)
            self._dft = dft_matrices(fft_length, self._filterbank, hann,  # periodic, as stft
                                     int(used.max()) + 1)

    def _mel_fft(self, waveform):
        real, imag = ops.stft(waveform, sequence_length=self.fft_length,
                              sequence_stride=self.hop_length, fft_length=self.fft_length,
                              window="hann", center=True)
        power = ops.square(real) + ops.square(imag)  # (batch, frames, bins)
        return ops.matmul(power, ops.convert_to_tensor(self._filterbank))

    def _mel_matmul(self, waveform):
        # Matrix products over every frame of the batch at once, arranged so that no
        # tensor is ever transposed (generic transposes are slow in ONNX Runtime); the
        # |X|^2 pair sums live in the mel matrix.
        window, stage1, twr, twi, stage2, mel = (ops.convert_to_tensor(m) for m in self._dft)
        n, hop = self.fft_length, self.hop_length
        n1, n2 = twr.shape
        half = n // 2
        padded = ops.pad(waveform, ((0, 0), (half, half)), mode="reflect")
        frames_count = 1 + ops.shape(waveform)[1] // hop
        if n % hop == 0:
            # Framing by reshape: hop-sized blocks, n // hop of them side by side per frame
            # (slices and a concatenation, no gather: cheaper in ONNX Runtime).
            count = frames_count + n // hop - 1
            blocks = ops.reshape(padded[:, :count * hop], (-1, count, hop))
            frames = ops.concatenate([blocks[:, k:k + frames_count] for k in range(n // hop)],
                                     axis=-1)  # (batch, frames, n)
        else:
            index = (ops.expand_dims(ops.arange(frames_count) * hop, 1)
                     + ops.expand_dims(ops.arange(n), 0))
            frames = ops.take(padded, index, axis=1)  # (batch, frames, n)
        x = ops.reshape(frames, (-1, n1, n2)) * window  # [g, a, b]
        a = ops.matmul(stage1, x)  # [g, (re | im) c, b]
        ar, ai = a[:, :n1], a[:, n1:]
        b = ops.concatenate([ar * twr - ai * twi, ar * twi + ai * twr], axis=-1)
        spectrum = ops.matmul(b, stage2)  # [g, c, (re | im) d]
        power_mel = ops.matmul(ops.reshape(ops.square(spectrum), (-1, mel.shape[0])), mel)
        return ops.reshape(power_mel, (-1, frames_count, mel.shape[-1]))

    def call(self, inputs):
        waveform = ops.cast(inputs, "float32")
        mel = self._mel_fft(waveform) if self.dft == "fft" else self._mel_matmul(waveform)
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
                "fmax_hz": self.fmax_hz, "top_db": self.top_db, "dft": self.dft}


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

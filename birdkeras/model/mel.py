"""The log-mel front end's numbers, in numpy: the HTK mel filterbank, the two-stage DFT
matrices of the exportable front end, and `NumpyLogMel`, the front end itself for
inference's decode threads. No Keras or TensorFlow: the ONNX/OpenVINO path imports
only this module.
"""

from __future__ import annotations

import numpy as np
from scipy import fft


def _hz_to_mel_htk(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz_htk(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def _split(n: int) -> tuple[int, int]:
    """n = n1 * n2 with n1 the divisor of n closest to sqrt(n) (n1 <= n2)."""
    n1 = max(d for d in range(1, int(np.sqrt(n)) + 1) if n % d == 0)
    return n1, n // n1


def dft_matrices(fft_length: int, filterbank: np.ndarray, window: np.ndarray,
                 num_bins: int | None = None):
    """Constant matrices of the two-stage DFT + mel projection (see the module docstring).

    For n = n2 * a + b and k = c + n1 * d (a, c < n1; b, d < n2):
    X[k] = sum_b W_n2^(b d) W_N^(b c) sum_a w[n] x[n] W_n1^(a c). Only the d needed
    for bins below `num_bins` are kept.

    Returns float32 arrays, complex products written as real ones: the window `[a, b]`
    (n1, n2); stage 1 `[(re | im) c, a]` (2 n1, n1); twiddle real and imaginary `[c, b]`
    (n1, n2); stage 2 `[(re | im) b, (re | im) d]` (2 n2, 2 d); mel `[(c, (re | im) d),
    mel]` (n1 * 2 d, mels): the filterbank row of bin c + n1 d, twice, so that squared
    real and imaginary parts add up to the power.

    Args:
        fft_length: N.
        filterbank: (N // 2 + 1, mels).
        window: the analysis window (N,).
        num_bins: bins to keep (None: all the filterbank's).
    """
    n = fft_length
    n1, n2 = _split(n)
    num_bins = filterbank.shape[0] if num_bins is None else num_bins
    d_kept = min(n2, (num_bins - 1) // n1 + 1)
    f1 = np.exp(-2j * np.pi * np.outer(np.arange(n1), np.arange(n1)) / n1)  # [c, a]
    twiddle = np.exp(-2j * np.pi * np.outer(np.arange(n1), np.arange(n2)) / n)  # [c, b]
    f2 = np.exp(-2j * np.pi * np.outer(np.arange(n2), np.arange(d_kept)) / n2)  # [b, d]
    k = np.arange(n1)[:, None] + n1 * np.arange(d_kept)[None, :]  # [c, d] -> bin
    fb = np.zeros((n1, d_kept, filterbank.shape[1]))
    inside = k < filterbank.shape[0]
    fb[inside] = filterbank[k[inside]]
    f32 = lambda z: np.ascontiguousarray(z, dtype=np.float32)  # noqa: E731
    return (f32(window.reshape(n1, n2)), f32(np.concatenate([f1.real, f1.imag])),
            f32(twiddle.real), f32(twiddle.imag),
            f32(np.block([[f2.real, f2.imag], [-f2.imag, f2.real]])),
            f32(np.concatenate([fb, fb], axis=1).reshape(n1 * 2 * d_kept, -1)))


def mel_filterbank(sample_rate_hz, fft_length, num_mel_bins, fmin_hz, fmax_hz) -> np.ndarray:
    """HTK-scale triangular filters without area normalisation, (fft_length//2+1, mels).

    The same construction as `librosa.filters.mel(htk=True, norm=None)`.

    Args:
        sample_rate_hz: the audio's rate.
        fft_length: the FFT size.
        num_mel_bins: mel bands.
        fmin_hz: lowest band edge.
        fmax_hz: highest band edge.

    Returns:
        float32 (fft_length // 2 + 1, num_mel_bins).
    """
    fft_freqs = np.linspace(0, sample_rate_hz / 2, fft_length // 2 + 1)
    mel_points = np.linspace(_hz_to_mel_htk(fmin_hz), _hz_to_mel_htk(fmax_hz), num_mel_bins + 2)
    hz_points = _mel_to_hz_htk(mel_points)
    widths = np.diff(hz_points)
    ramps = hz_points[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    return np.maximum(0, np.minimum(lower, upper)).T.astype(np.float32)


class NumpyLogMel:
    """`LogMelSpectrogram`'s values (same filterbank, window, padding, dB and per-example
    clamp), computed with a real FFT in numpy/scipy: for inference's decode threads, so
    the exported CNN is fed log-mel frames and the front end costs what an FFT costs.

    Input: `(batch, samples)` float32. Output: `(batch, num_mel_bins, frames, 1)` float32,
    `frames = 1 + samples // hop_length`. Only the FFT bins some mel filter uses are kept.

    Args:
        sample_rate_hz: the audio's rate.
        fft_length: FFT size.
        hop_length: hop between frames.
        num_mel_bins: mel bands.
        fmin_hz: lowest band edge.
        fmax_hz: highest band edge.
        top_db: dynamic range below each example's peak (None: all).
    """

    def __init__(self, sample_rate_hz=32000, fft_length=2048, hop_length=512,
                 num_mel_bins=128, fmin_hz=50.0, fmax_hz=14000.0, top_db=80.0, **unused):
        self.fft_length, self.hop_length, self.top_db = fft_length, hop_length, top_db
        # Two front ends with the same key compute the same values.
        self.key = (sample_rate_hz, fft_length, hop_length, num_mel_bins, fmin_hz, fmax_hz,
                    top_db)
        bank = mel_filterbank(sample_rate_hz, fft_length, num_mel_bins, fmin_hz, fmax_hz)
        used = np.flatnonzero(bank.any(axis=1))
        self.lo, self.hi = int(used.min()), int(used.max()) + 1
        self.bank = np.ascontiguousarray(bank[self.lo:self.hi], dtype=np.float32)
        n = np.arange(fft_length)
        self.window = (0.5 - 0.5 * np.cos(2 * np.pi * n / fft_length)).astype(np.float32)

    @classmethod
    def of(cls, layer_config: dict) -> NumpyLogMel:
        """From a `LogMelSpectrogram`'s config."""
        return cls(**layer_config)

    def __call__(self, waves: np.ndarray) -> np.ndarray:
        waves = np.asarray(waves, dtype=np.float32)
        n, hop = self.fft_length, self.hop_length
        padded = np.pad(waves, ((0, 0), (n // 2, n // 2)), mode="reflect")
        frames = np.lib.stride_tricks.sliding_window_view(padded, n, axis=-1)[:, ::hop]
        spectrum = fft.rfft(frames * self.window, axis=-1)[..., self.lo:self.hi]
        power = spectrum.real ** 2 + spectrum.imag ** 2
        mel = np.matmul(power.astype(np.float32), self.bank)  # (batch, frames, mels)
        db = 10.0 * np.log10(np.maximum(mel, 1e-10))
        if self.top_db is not None:
            db = np.maximum(db, db.max(axis=(1, 2), keepdims=True) - self.top_db)
        return np.ascontiguousarray(db.transpose(0, 2, 1)[..., None], dtype=np.float32)

"""Batch-level waveform augmentation in the training `tf.data` pipeline.

MixUp and CutMix change labels, and background mixing needs a pool of noise clips, so
they run on batches of (waveforms, labels) in the input pipeline, training only, each
with its own probability. Randomness is stateless, keyed by (seed, batch index), so a
run is reproducible.

    mixup      x = lam*x + (1-lam)*x[perm],  y likewise,  lam ~ Beta(alpha, alpha)
    cutmix     a random time segment of x is replaced by x[perm]'s; y mixed by the
               fraction of samples kept
    noise      Gaussian noise at a random SNR (dB, against the clip's own RMS)
    background a random crop of a clip from the noise pool (e.g. unlabelled
               soundscapes) at a random SNR
    gain, time_shift (circular roll), coloured_noise (1/f^β, pink to brown),
    time_stretch (phase vocoder: speed without pitch), pitch_shift (pitch without
    speed): the clip's own variations, before what is added to it
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from birdkeras import config as config_lib
from birdkeras.audio import io as audio_io
from birdkeras.errors import MissingPathError


def _seed(seed, step, salt):
    return tf.stack([tf.cast(seed, tf.int64) * 1000 + salt, tf.cast(step, tf.int64)])


def _beta(shape, alpha, seed):
    a = tf.random.stateless_gamma(shape, seed, alpha=alpha)
    b = tf.random.stateless_gamma(shape, seed + 1, alpha=alpha)
    return a / (a + b)


def _chosen(batch, probability, seed):
    return tf.random.stateless_uniform([batch], seed) < probability


def mixup(waves, labels, alpha, probability, seed, label_rule="mix"):
    """    Args:
        waves: (batch, samples).
        labels: (batch, classes).
        alpha: the Beta distribution's parameter.
        probability: chance that an example is mixed.
        seed: a stateless seed (2,).
        label_rule: mix (labels mixed as the waves are) or max (a mixed example carries
            both examples' labels in full: multi-label clips, as the BirdCLEF seeds)."""
    batch = tf.shape(waves)[0]
    chosen = _chosen(batch, probability, seed)
    lam = tf.where(chosen, _beta([batch], alpha, seed + 2), 1.0)
    perm = tf.argsort(tf.random.stateless_uniform([batch], seed + 3))
    mixed = lam[:, None] * waves + (1 - lam[:, None]) * tf.gather(waves, perm)
    if label_rule == "max":
        return mixed, tf.where(chosen[:, None], tf.maximum(labels, tf.gather(labels, perm)),
                               labels)
    return mixed, lam[:, None] * labels + (1 - lam[:, None]) * tf.gather(labels, perm)


def cutmix(waves, labels, alpha, probability, seed):
    """    Args:
        waves: (batch, samples).
        labels: (batch, classes).
        alpha: the Beta distribution's parameter.
        probability: chance that an example is cut.
        seed: a stateless seed (2,)."""
    batch, length = tf.shape(waves)[0], tf.shape(waves)[1]
    cut = 1.0 - _beta([batch], alpha, seed + 2)
    cut = tf.where(_chosen(batch, probability, seed), cut, 0.0)
    width = tf.cast(tf.round(cut * tf.cast(length, tf.float32)), tf.int32)
    start = tf.cast(tf.random.stateless_uniform([batch], seed + 4)
                    * tf.cast(length - width + 1, tf.float32), tf.int32)
    positions = tf.range(length)[None, :]
    inside = (positions >= start[:, None]) & (positions < (start + width)[:, None])
    perm = tf.argsort(tf.random.stateless_uniform([batch], seed + 3))
    mixed = tf.where(inside, tf.gather(waves, perm), waves)
    kept = 1.0 - tf.cast(width, tf.float32) / tf.cast(length, tf.float32)
    return mixed, kept[:, None] * labels + (1 - kept[:, None]) * tf.gather(labels, perm)


def _rms(x):
    return tf.sqrt(tf.reduce_mean(tf.square(x), axis=1, keepdims=True) + 1e-12)


def add_noise(waves, snr_db, probability, seed):
    """    Args:
        waves: (batch, samples).
        snr_db: [low, high] signal-to-noise ratio.
        probability: chance that an example gets noise.
        seed: a stateless seed (2,)."""
    batch = tf.shape(waves)[0]
    snr = tf.random.stateless_uniform([batch, 1], seed + 2, snr_db[0], snr_db[1])
    noise = tf.random.stateless_normal(tf.shape(waves), seed + 3)
    scale = _rms(waves) / 10 ** (snr / 20)
    return tf.where(_chosen(batch, probability, seed)[:, None], waves + noise * scale, waves)


def add_background(waves, pool, snr_db, probability, seed):
    """`pool`: (clips, samples) float32, each clip at least as long as the windows.

    Args:
        waves: (batch, samples).
        pool: (clips, samples) noise clips, each at least a window long.
        snr_db: [low, high] signal-to-noise ratio.
        probability: chance that an example gets a background.
        seed: a stateless seed (2,).
    """
    batch, length = tf.shape(waves)[0], tf.shape(waves)[1]
    which = tf.random.stateless_uniform([batch], seed + 2, 0, tf.shape(pool)[0], tf.int32)
    room = tf.shape(pool)[1] - length + 1
    start = tf.random.stateless_uniform([batch], seed + 3, 0, room, tf.int32)
    index = tf.stack([tf.repeat(which[:, None], length, axis=1),
                      start[:, None] + tf.range(length)[None, :]], axis=-1)
    return _added_at_snr(waves, tf.gather_nd(pool, index), snr_db, probability, seed)


def _added_at_snr(waves, noise, snr_db, probability, seed):
    """`noise` scaled to a random SNR (U(snr_db), seed + 4) against each clip's RMS and
    added to the chosen examples (seed)."""
    snr = tf.random.stateless_uniform([tf.shape(waves)[0], 1], seed + 4, snr_db[0], snr_db[1])
    scale = _rms(waves) / (_rms(noise) * 10 ** (snr / 20))
    return tf.where(_chosen(tf.shape(waves)[0], probability, seed)[:, None],
                    waves + noise * scale, waves)


def load_background_pool(folder: str, sample_rate_hz: int, window_s: float,
                         max_clips: int = 64) -> np.ndarray:
    """Decodes up to `max_clips` audio files under `folder` into a (clips, samples) array.

    Files shorter than one window are skipped; longer ones are cut to the shortest
    usable length so the pool is rectangular.

    Args:
        folder: audio files, searched recursively.
        sample_rate_hz: the rate.
        window_s: the shortest usable clip.
        max_clips: clips at most.

    Returns:
        (clips, samples) float32.
    """
    if not Path(folder).is_dir():
        raise MissingPathError(f"augment.background_dir={folder} is not a folder (a relative "
                               "path is relative to data.root)")
    paths = audio_io.list_audio(folder, allow_empty=True)
    if not paths:
        raise MissingPathError(f"augment.background_dir={folder} holds no audio files")
    window = config_lib.window_samples(window_s, sample_rate_hz)
    clips = []
    for path in paths[:max_clips]:
        try:
            y = audio_io.load(path, sample_rate_hz, max_duration_s=120.0)
        except audio_io.AudioError:
            continue  # a broken noise file is not worth a failed run
        if len(y) >= window:
            clips.append(y)
    if not clips:
        raise audio_io.AudioError(f"augment.background_dir={folder}: no decodable clip of at least "
                         f"{window_s} s")
    length = min(len(c) for c in clips)
    return np.stack([c[:length] for c in clips])


def gain(waves, db, probability, seed):
    """Each chosen example times 10^(g/20), g ~ U(db[0], db[1]).

    Args:
        waves: (batch, samples).
        db: [low, high] gain in dB.
        probability: chance that an example is changed.
        seed: a stateless seed (2,).
    """
    batch = tf.shape(waves)[0]
    g = tf.random.stateless_uniform([batch, 1], seed + 2, db[0], db[1])
    return tf.where(_chosen(batch, probability, seed)[:, None], waves * 10 ** (g / 20), waves)


def time_shift(waves, max_fraction, probability, seed):
    """Each chosen example rolled (circularly) by up to `max_fraction` of its length,
    either way.

    Args:
        waves: (batch, samples).
        max_fraction: the largest shift, as a share of the length.
        probability: chance that an example is changed.
        seed: a stateless seed (2,).
    """
    batch, length = tf.shape(waves)[0], tf.shape(waves)[1]
    most = tf.cast(tf.cast(length, tf.float32) * max_fraction, tf.int32)
    shift = tf.random.stateless_uniform([batch], seed + 2, -most, most + 1, tf.int32)
    shift = tf.where(_chosen(batch, probability, seed), shift, 0)
    index = tf.math.floormod(tf.range(length)[None, :] - shift[:, None], length)
    return tf.gather(waves, index, batch_dims=1)


def coloured_noise(waves, snr_db, exponent, probability, seed):
    """Noise whose power falls as 1/f^β (β ~ U(exponent): 1 pink, 2 brown), at a random
    SNR against the clip's RMS: white noise shaped in the frequency domain.

    Args:
        waves: (batch, samples).
        snr_db: [low, high] signal-to-noise ratio.
        exponent: [low, high] β of the 1/f^β power.
        probability: chance that an example is changed.
        seed: a stateless seed (2,).
    """
    batch, length = tf.shape(waves)[0], tf.shape(waves)[1]
    white = tf.random.stateless_normal([batch, length], seed + 2)
    spectrum = tf.signal.rfft(white)
    bins = tf.cast(tf.range(tf.shape(spectrum)[1]), tf.float32)
    beta = tf.random.stateless_uniform([batch, 1], seed + 3, exponent[0], exponent[1])
    amplitude = tf.pow(tf.maximum(bins, 1.0)[None, :], -beta / 2)  # power ~ f^-beta
    noise = tf.signal.irfft(spectrum * tf.cast(amplitude, tf.complex64), [length])
    return _added_at_snr(waves, noise, snr_db, probability, seed)


_FFT, _HOP = 1024, 256  # the phase vocoder's frames


def stretch(wave, rate):
    """One waveform played `rate` times faster at the same pitch (a phase vocoder, as
    librosa.effects.time_stretch): about len / rate samples."""
    frames = tf.signal.stft(wave, _FFT, _HOP, pad_end=True)  # (t, f)
    count = tf.shape(frames)[0]
    steps = tf.range(0.0, tf.cast(count - 1, tf.float32), rate)
    left = _left_index(steps, count)
    frac = (steps - tf.cast(left, tf.float32))[:, None]
    a, b = tf.gather(frames, left), tf.gather(frames, left + 1)
    magnitude = (1 - frac) * tf.abs(a) + frac * tf.abs(b)
    # Each output frame's phase advances by its input pair's phase difference (equal to
    # the expected omega plus the deviation, modulo 2 pi).
    advance = tf.math.angle(b) - tf.math.angle(a)
    phase = tf.math.angle(frames[0])[None, :] + tf.cumsum(advance, axis=0, exclusive=True)
    out = tf.complex(magnitude * tf.cos(phase), magnitude * tf.sin(phase))
    return tf.signal.inverse_stft(out, _FFT, _HOP,
                                  window_fn=tf.signal.inverse_stft_window_fn(_HOP))


def _left_index(where, size):
    """The sample left of each fractional position, at most size - 2 so that its right
    neighbour exists: tf.range's float32 steps can land exactly on size - 1 (e.g. 0.85295
    over 144,640 samples), one past the last pair."""
    return tf.minimum(tf.cast(tf.floor(where), tf.int32), tf.maximum(size - 2, 0))


def resample(wave, ratio):
    """One waveform resampled by linear interpolation to len / ratio samples: played
    back at the same rate, every frequency times `ratio`."""
    size = tf.shape(wave)[0]
    where = tf.range(0.0, tf.cast(size - 1, tf.float32), ratio)
    left = _left_index(where, size)
    frac = where - tf.cast(left, tf.float32)
    return (1 - frac) * tf.gather(wave, left) + frac * tf.gather(wave, left + 1)


def _fit(wave, length):
    """`wave` cropped (centred) or zero-padded (evenly) to `length` samples."""
    size = tf.shape(wave)[0]
    start = tf.maximum((size - length) // 2, 0)
    wave = wave[start:start + length]
    extra = length - tf.shape(wave)[0]
    return tf.pad(wave, [[extra // 2, extra - extra // 2]])


def time_stretch(waves, rates, probability, seed):
    """Each chosen example stretched (rate ~ U(rates); > 1 faster, shorter) at the same
    pitch, then centred in the window (cropped, or zero-padded).

    Args:
        waves: (batch, samples).
        rates: [low, high] speed factor.
        probability: chance that an example is changed.
        seed: a stateless seed (2,).
    """
    batch, length = tf.shape(waves)[0], tf.shape(waves)[1]
    rate = tf.random.stateless_uniform([batch], seed + 2, rates[0], rates[1])
    chosen = _chosen(batch, probability, seed)

    def one(args):
        wave, r, on = args
        return tf.cond(on, lambda: _fit(stretch(wave, r), length), lambda: wave)

    return tf.map_fn(one, (waves, rate, chosen), fn_output_signature=tf.float32)


def pitch_shift(waves, semitones, probability, seed):
    """Each chosen example's frequencies times 2^(s/12), s ~ U(semitones), its duration
    kept: stretched by 1/ratio, then resampled by ratio (as librosa.effects.pitch_shift).

    Args:
        waves: (batch, samples).
        semitones: [low, high] shift.
        probability: chance that an example is changed.
        seed: a stateless seed (2,).
    """
    batch, length = tf.shape(waves)[0], tf.shape(waves)[1]
    ratio = 2 ** (tf.random.stateless_uniform([batch], seed + 2, semitones[0],
                                              semitones[1]) / 12)
    chosen = _chosen(batch, probability, seed)

    def one(args):
        wave, r, on = args
        return tf.cond(on, lambda: _fit(resample(stretch(wave, 1 / r), r), length),
                       lambda: wave)

    return tf.map_fn(one, (waves, ratio, chosen), fn_output_signature=tf.float32)


def batch_augmenter(cfg: config_lib.Config):
    """A function (step, (waves, labels[, weights])) -> augmented batch, or None if off."""
    aug = cfg.augment
    if not (aug.mixup_probability or aug.cutmix_probability or aug.noise_probability
            or aug.background_probability or aug.gain_probability or aug.shift_probability
            or aug.coloured_noise_probability or aug.pitch_shift_probability
            or aug.time_stretch_probability):
        return None
    pool = None
    if aug.background_probability:
        pool = tf.constant(load_background_pool(cfg.data_path(aug.background_dir),
                                                cfg.audio.sample_rate_hz,
                                                cfg.audio.window_s))
    seed = cfg.seed

    def apply(step, batch):
        waves, labels, *rest = batch
        # The clip itself first (its pitch, speed, position, level), then what is added.
        if aug.time_stretch_probability:
            waves = time_stretch(waves, aug.time_stretch_rate, aug.time_stretch_probability,
                                 _seed(seed, step, 5))
        if aug.pitch_shift_probability:
            waves = pitch_shift(waves, aug.pitch_shift_semitones, aug.pitch_shift_probability,
                                _seed(seed, step, 6))
        if aug.shift_probability:
            waves = time_shift(waves, aug.shift_max_fraction, aug.shift_probability,
                               _seed(seed, step, 7))
        if aug.gain_probability:
            waves = gain(waves, aug.gain_db, aug.gain_probability, _seed(seed, step, 8))
        if aug.coloured_noise_probability:
            waves = coloured_noise(waves, aug.coloured_noise_snr_db,
                                   aug.coloured_noise_exponent,
                                   aug.coloured_noise_probability, _seed(seed, step, 9))
        if aug.background_probability:
            waves = add_background(waves, pool, aug.background_snr_db,
                                   aug.background_probability, _seed(seed, step, 1))
        if aug.noise_probability:
            waves = add_noise(waves, aug.noise_snr_db, aug.noise_probability,
                              _seed(seed, step, 2))
        if aug.mixup_probability:
            waves, labels = mixup(waves, labels, aug.mixup_alpha, aug.mixup_probability,
                                  _seed(seed, step, 3), aug.mixup_label_rule)
        if aug.cutmix_probability:
            waves, labels = cutmix(waves, labels, aug.cutmix_alpha, aug.cutmix_probability,
                                   _seed(seed, step, 4))
        return (waves, labels, *rest)

    return apply

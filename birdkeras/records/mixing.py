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


def mixup(waves, labels, alpha, probability, seed):
    """    Args:
        waves: (batch, samples).
        labels: (batch, classes).
        alpha: the Beta distribution's parameter.
        probability: chance that an example is mixed.
        seed: a stateless seed (2,)."""
    batch = tf.shape(waves)[0]
    lam = tf.where(_chosen(batch, probability, seed), _beta([batch], alpha, seed + 2), 1.0)
    perm = tf.argsort(tf.random.stateless_uniform([batch], seed + 3))
    mixed = lam[:, None] * waves + (1 - lam[:, None]) * tf.gather(waves, perm)
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
    noise = tf.gather_nd(pool, index)
    snr = tf.random.stateless_uniform([batch, 1], seed + 4, snr_db[0], snr_db[1])
    scale = _rms(waves) / (_rms(noise) * 10 ** (snr / 20))
    return tf.where(_chosen(batch, probability, seed)[:, None], waves + noise * scale, waves)


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


def batch_augmenter(cfg: config_lib.Config):
    """A function (step, (waves, labels[, weights])) -> augmented batch, or None if off."""
    aug = cfg.augment
    if not (aug.mixup_probability or aug.cutmix_probability or aug.noise_probability
            or aug.background_probability):
        return None
    pool = None
    if aug.background_probability:
        pool = tf.constant(load_background_pool(cfg.data_path(aug.background_dir),
                                                cfg.audio.sample_rate_hz,
                                                cfg.audio.window_s))
    seed = cfg.seed

    def apply(step, batch):
        waves, labels, *rest = batch
        if aug.background_probability:
            waves = add_background(waves, pool, aug.background_snr_db,
                                   aug.background_probability, _seed(seed, step, 1))
        if aug.noise_probability:
            waves = add_noise(waves, aug.noise_snr_db, aug.noise_probability,
                              _seed(seed, step, 2))
        if aug.mixup_probability:
            waves, labels = mixup(waves, labels, aug.mixup_alpha, aug.mixup_probability,
                                  _seed(seed, step, 3))
        if aug.cutmix_probability:
            waves, labels = cutmix(waves, labels, aug.cutmix_alpha, aug.cutmix_probability,
                                   _seed(seed, step, 4))
        return (waves, labels, *rest)

    return apply

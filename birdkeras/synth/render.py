"""Rendering a planned clip or soundscape to an audio file (runs in worker processes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from birdkeras.audio import io as audio_io
from birdkeras.synth import ogg, voices, world
from birdkeras.synth.plan import SOUNDSCAPE_RATE_HZ, Clip


def render_job(job):
    """(path, a Clip or a soundscape tuple) -> (path, frames written | calls placed)."""
    path, what = job
    if isinstance(what, tuple) and what[0] == "world":
        rel, pool, duration_s, seed, site, hour, rates, snr_db = what[1:]
        track, calls = world.render(rel, pool, duration_s, seed, site, hour, rates, snr_db,
                                    SOUNDSCAPE_RATE_HZ)
        _write(path, track, SOUNDSCAPE_RATE_HZ, seed)
        return path, calls
    if isinstance(what, tuple):
        return path, _render_soundscape(path, *what[1:])
    return path, _render_clip(path, what)


def _render_clip(path: str, clip: Clip) -> int:
    rng = np.random.default_rng(clip.seed)
    y = voices.render_recording(clip.primary, clip.secondaries, clip.duration_s,
                                clip.sample_rate_hz, rng, clip.primary_span)
    if clip.broken == "silent":
        y = np.zeros_like(y)
    if clip.channels == 2:
        y = np.stack([y, 0.8 * np.roll(y, 7)], axis=1)
    _write(path, y, clip.sample_rate_hz, clip.seed)
    if clip.broken == "empty":
        Path(path).write_bytes(b"")
    elif clip.broken == "truncated":
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: max(len(data) * 35 // 100, 64)])
    return len(y)


def _render_soundscape(path: str, rel: str, pool: list, duration_s: float, seed: int) -> list:
    """Twelve (or duration/5) windows, each with 0-2 species calling inside it."""
    rng = np.random.default_rng(seed)
    sr = SOUNDSCAPE_RATE_HZ
    track = voices.pink_noise(int(duration_s * sr), rng) * 0.03
    calls = []
    for w in range(int(duration_s // 5)):
        k = int(rng.choice([0, 1, 1, 2]))
        for i in rng.choice(len(pool), min(k, len(pool)), replace=False):
            sp = pool[int(i)]
            start = w * 5 + float(rng.uniform(0.1, 2.0))
            end = min(start + float(rng.uniform(1.5, 3.0)), w * 5 + 4.9)
            placed = voices.place_calls(track, sp, sr, rng, float(rng.uniform(0.3, 0.6)),
                                        start, end, float(rng.uniform(0.96, 1.04)), 1.0)
            calls += [(rel, sp.code, round(a, 3), round(b, 3)) for a, b in placed]
    track *= 0.8 / (np.max(np.abs(track)) + 1e-9)
    _write(path, track, sr, seed)
    return calls


def _write(path: str, y: np.ndarray, sample_rate_hz: int, seed: int) -> None:
    audio_io.write(path, y, sample_rate_hz)
    if path.endswith(".ogg"):
        ogg.set_serial(path, seed)

"""Recordings of any length in bounded memory: decoded block by block, windowed and
scored in parts, equal to decoding the whole file at once."""

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from birdkeras import config as config_lib
from birdkeras.audio import io as audio_io
from birdkeras.audio import windows
from birdkeras.infer import scoring
from birdkeras.infer.submission import Scored

from conftest import REAL

SOUNDSCAPE = REAL / "birdnet" / "soundscape_120s.ogg"  # real, 48 kHz


def _whole(path, rate, window_s, hop_s, shifts):
    """Today's way: the file decoded at once, then cut."""
    wave = audio_io.load(path, rate, allow_silence=True)
    starts = windows.window_starts(len(wave) / rate, window_s, hop_s)
    return starts, [windows.cut(wave, rate, starts, window_s, s) for s in shifts]


@pytest.mark.parametrize("hop_s,shifts", [(5.0, (0.0,)), (2.5, (0.0, -1.0, 1.5)),
                                          (7.0, (0.0, 0.5))])
def test_parts_of_a_real_recording_equal_the_whole(hop_s, shifts):
    starts, whole = _whole(SOUNDSCAPE, 32000, 5.0, hop_s, shifts)
    parts = list(windows.decode_windows(SOUNDSCAPE, 32000, 5.0, hop_s, shifts, block_s=7.3))
    assert len(parts) > 5 and parts[-1]["last"] and not any(p["last"] for p in parts[:-1])
    joined = windows.whole_file(parts)
    np.testing.assert_array_equal(joined["starts"], starts)
    assert joined["duration_s"] == pytest.approx(120.0, abs=1e-3)
    for ours, theirs in zip(joined["windows"], whole, strict=True):
        assert np.abs(ours - theirs).max() < 1e-6  # the same samples (float32 rounding)


def test_chosen_windows_of_a_recording_stream_out_in_order():
    starts_s = np.array([0.0, 17.5, 60.0, 118.0, 130.0])  # the last two run past the end
    wave = audio_io.load(SOUNDSCAPE, 32000)
    got = [p for p in windows.stream_windows(SOUNDSCAPE, 32000, 5.0, starts_s=starts_s,
                                             block_s=11.0) if not isinstance(p, float)]
    np.testing.assert_array_equal(np.concatenate([s for s, _ in got]), starts_s)
    clips = np.concatenate([c[0] for _, c in got])
    expected = windows.cut(wave, 32000, starts_s, 5.0)
    assert np.abs(clips - expected).max() < 1e-6 and not clips[-1].any()


@pytest.fixture(scope="module")
def long_file(tmp_path_factory):
    """20 minutes at 48 kHz, stereo: the real soundscape ten times over (FLAC)."""
    wave, rate = audio_io.load(SOUNDSCAPE, 48000), 48000
    path = tmp_path_factory.mktemp("long") / "long_20min.flac"
    tiled = np.tile(wave, 10)
    audio_io.write(path, np.stack([tiled, 0.5 * tiled], axis=1), rate)
    return path


def test_a_long_recording_is_windowed_in_bounded_memory(long_file):
    """Peak of numpy allocations while reading every window of a 20-minute file: a few
    blocks' worth, not the 154 MB of the file decoded at 32 kHz (float32)."""
    tracemalloc.start()
    count = 0
    for part in windows.decode_windows(long_file, 32000, 5.0, 5.0, (0.0,), block_s=20.0):
        count += len(part["starts"])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 240
    assert peak < 30e6, f"peak {peak / 1e6:.0f} MB"


class _Runner:
    """A stand-in model: a fixed function of each window (RMS, peak, and their ratio)."""

    sample_rate_hz, window_s, path, classes = 32000, 5.0, Path("stand-in"), ["a", "b", "c"]

    def __call__(self, clips):
        clips = np.asarray(clips, np.float64)
        rms = np.sqrt((clips**2).mean(axis=1))
        peak = np.abs(clips).max(axis=1)
        return np.stack([rms, peak, rms / (peak + 1e-9)], axis=1).astype(np.float32)


def test_scores_in_parts_equal_scores_of_the_whole_file(long_file, monkeypatch):
    """`iter_scored` (what predict, pseudolabel and checks use) on the 20-minute file and
    the real 2-minute one, with TTA, post-processing and two decode threads: the same
    rows and values in small blocks as with each file in one block."""
    icfg = config_lib.InferConfig(hop_s=2.5, tta_shifts_s=(-1.0, 1.0), workers=2,
                                  smoothing=(0.25, 0.5, 0.25), file_scaling="max")
    files = [SOUNDSCAPE, long_file]
    monkeypatch.setattr(audio_io, "BLOCK_S", 1e6)  # each file in one block: today's way
    whole = list(scoring.iter_scored(files, [_Runner()], icfg))
    monkeypatch.setattr(audio_io, "BLOCK_S", 9.0)
    parts = list(scoring.iter_scored(files, [_Runner()], icfg))
    assert all(isinstance(s, Scored) for s in whole + parts)
    for a, b in zip(whole, parts, strict=True):
        assert a.path == b.path
        np.testing.assert_array_equal(a.starts_s, b.starts_s)
        np.testing.assert_allclose(a.probs, b.probs, atol=1e-6)
    assert len(parts[1].starts_s) == 479  # 20 min, every 2.5 s


def test_a_file_that_breaks_midway_is_reported_not_half_scored(tmp_path):
    data = SOUNDSCAPE.read_bytes()
    broken = tmp_path / "cut_short.ogg"
    broken.write_bytes(data[: len(data) // 2] + b"\x00" * 5000)
    good = tmp_path / "good.ogg"
    good.write_bytes(data)
    out = list(scoring.iter_scored([broken, good], [_Runner()],
                                   config_lib.InferConfig(workers=1)))
    assert len(out) == 2 and isinstance(out[1], Scored) and out[1].path == good
    first = out[0]
    # libsndfile reads a damaged Ogg up to the damage (the file scores what it holds), or
    # stops with an error that names it: never a crash, never the next file's rows.
    if isinstance(first, Scored):
        assert first.path == broken and len(first.starts_s) < 24
    else:
        assert first["path"] == broken and str(broken) in first["error"]


class _FrontEnd:
    """A stand-in numpy front end: frame energies at its own hop; counts its calls."""

    def __init__(self, hop):
        self.key, self.hop, self.calls = ("stand-in", hop), hop, 0

    def __call__(self, clips):
        self.calls += 1
        frames = clips[:, : clips.shape[1] // self.hop * self.hop].reshape(len(clips), -1, self.hop)
        return (frames**2).mean(axis=2)[:, None, :, None]


class _MelRunner(_Runner):
    """A stand-in CNN on its front end's frames (audio in: it runs the front end itself)."""

    def __init__(self, front_end, weight):
        self.front_end, self.weight = front_end, weight

    def __call__(self, windows):
        if np.ndim(windows) == 2:
            windows = self.front_end(windows)
        energy = np.asarray(windows)[:, 0, :, 0]
        return np.stack([energy.mean(axis=1), energy.max(axis=1), energy.std(axis=1)],
                        axis=1).astype(np.float32) * self.weight


def test_an_ensemble_computes_each_distinct_front_end_once_per_part():
    """Two members share a front end, a third has its own, a fourth takes audio: the
    decode threads compute each of the two front ends once per part, and the scores
    equal each member computing its own."""
    shared, other = _FrontEnd(640), _FrontEnd(1000)
    members = [_MelRunner(shared, 1.0), _MelRunner(_FrontEnd(640), 2.0),
               _MelRunner(other, 0.5), _Runner()]
    members[1].front_end.key = shared.key  # equal settings, another object
    icfg = config_lib.InferConfig(workers=1)
    (ensemble,) = scoring.iter_scored([SOUNDSCAPE], members, icfg)
    parts = sum(1 for _ in windows.decode_windows(SOUNDSCAPE, 32000, 5.0, 5.0, (0.0,)))
    assert shared.calls == other.calls == parts and members[1].front_end.calls == 0
    alone = [next(iter(scoring.iter_scored([SOUNDSCAPE], [m], icfg))).probs for m in members]
    np.testing.assert_allclose(ensemble.probs, np.mean(alone, axis=0), rtol=1e-6)

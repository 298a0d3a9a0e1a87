"""Audio in, for inference: files -> decoded 5 s windows, decoded ahead in threads.

Files (any of ogg/mp3/flac/wav, any rate, mono or stereo, any length) are decoded by
`workers` threads that run ahead of inference with a bounded queue, so memory stays
flat however many files there are. Each file is cut into windows of the model's
`window_s` every `hop_s` seconds, the last one zero-padded; a window's row in a
submission is `{file stem}_{end second}`.
"""

from __future__ import annotations

import concurrent.futures
import math
from collections import deque
from pathlib import Path

import numpy as np

from birdkeras.audio import io as audio_io
from birdkeras.config import window_samples


def window_starts(duration_s: float, window_s: float, hop_s: float) -> np.ndarray:
    """Start seconds of the windows covering `duration_s` (at least one)."""
    count = 1 if duration_s <= window_s else math.ceil((duration_s - window_s) / hop_s - 1e-9) + 1
    return np.arange(count) * hop_s


def cut(wave: np.ndarray, sample_rate_hz: int, starts_s, window_s: float,
        shift_s: float = 0.0) -> np.ndarray:
    """Windows `[start + shift, start + shift + window_s)`, zero outside the recording.

    Args:
        wave: mono audio (samples,).
        sample_rate_hz: its sample rate.
        starts_s: window starts in seconds.
        window_s: window length in seconds.
        shift_s: a shift added to every start (TTA).

    Returns:
        Windows (len(starts_s), window samples) float32.
    """
    width = window_samples(window_s, sample_rate_hz)
    out = np.zeros((len(starts_s), width), dtype=np.float32)
    for i, start in enumerate(starts_s):
        begin = int(round((start + shift_s) * sample_rate_hz))
        lo, hi = max(begin, 0), min(begin + width, len(wave))
        if hi > lo:
            out[i, lo - begin:hi - begin] = wave[lo:hi]
    return out


def decode_windows(path: Path, sample_rate_hz: int, window_s: float, hop_s: float,
           shifts_s: tuple[float, ...], transform=None) -> dict:
    """One file -> its windows for each shift, or its error (runs in a decode thread).

    `transform` (e.g. a numpy log-mel front end) is applied to each shift's windows here,
    in the decode thread, while inference runs on the previous file.

    Args:
        path: the audio file.
        sample_rate_hz: the model's sample rate.
        window_s: the model's window.
        hop_s: seconds between window starts.
        shifts_s: TTA shifts (0.0 first).
        transform: applied to each shift's windows (None: raw audio).

    Returns:
        {path, starts, duration_s, windows: one array per shift}, or {path, error,
        duration_s}.
    """
    try:
        wave = audio_io.load(path, sample_rate_hz, allow_silence=True)
    except audio_io.AudioError as err:
        try:
            duration = audio_io.info(path).duration or None
        except audio_io.AudioError:
            duration = None
        return {"path": path, "error": str(err), "duration_s": duration}
    starts = window_starts(len(wave) / sample_rate_hz, window_s, hop_s)
    clips = [cut(wave, sample_rate_hz, starts, window_s, s) for s in shifts_s]
    if transform is not None:
        clips = [transform(c) for c in clips]
    return {"path": path, "starts": starts, "duration_s": len(wave) / sample_rate_hz,
            "windows": clips}


def decode_ahead(files, workers: int, **kwargs):
    """Yields `decode_windows(file, **kwargs)` in file order, `workers` threads decoding ahead."""
    if workers == 0:
        for path in files:
            yield decode_windows(path, **kwargs)
        return
    # Threads, not processes: libsndfile (through cffi) and soxr release the GIL, and
    # threads need no `if __name__ == "__main__"` guard in users' scripts or fork after
    # TensorFlow started its own threads.
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="decode") as pool:
        todo = deque(files)
        pending = deque(pool.submit(decode_windows, todo.popleft(), **kwargs)
                        for _ in range(min(2 * workers, len(todo))))
        while pending:
            result = pending.popleft().result()
            if todo:
                pending.append(pool.submit(decode_windows, todo.popleft(), **kwargs))
            yield result

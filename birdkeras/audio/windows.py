"""Audio in, for inference: files -> decoded 5 s windows, decoded ahead in threads.

Files (any of ogg/mp3/flac/wav, any rate, mono or stereo, any length) are decoded in
blocks (`audio.io.stream`) and each file's windows come out in parts as its blocks
arrive, so memory depends on neither the number of files nor their length (a 24-hour
recording is scored in the memory of a minute). `workers` threads decode ahead of
inference, several files at once and within each file, through bounded queues. Each
file is cut into windows of the model's `window_s` every `hop_s` seconds, the last one
zero-padded; a window's row in a submission is `{file stem}_{end second}`.
"""

from __future__ import annotations

import concurrent.futures
import math
import queue
import threading
from collections import deque
from pathlib import Path

import numpy as np

from birdkeras.audio import io as audio_io
from birdkeras.config import window_samples

# Parts of a file queued ahead of inference, per file in flight.
PARTS_AHEAD = 2


def window_starts(duration_s: float, window_s: float, hop_s: float) -> np.ndarray:
    """Start seconds of the windows covering `duration_s` (at least one)."""
    count = 1 if duration_s <= window_s else math.ceil((duration_s - window_s) / hop_s - 1e-9) + 1
    return np.arange(count) * hop_s


def cut(wave: np.ndarray, sample_rate_hz: int, starts_s, window_s: float,
        shift_s: float = 0.0, offset: int = 0) -> np.ndarray:
    """Windows `[start + shift, start + shift + window_s)`, zero outside the recording.

    Args:
        wave: mono audio (samples,): the recording, or the part of it from sample
            `offset` on (a block of a stream).
        sample_rate_hz: its sample rate.
        starts_s: window starts in seconds (from the recording's start).
        window_s: window length in seconds.
        shift_s: a shift added to every start (TTA).
        offset: the recording's sample at `wave[0]`.

    Returns:
        Windows (len(starts_s), window samples) float32.
    """
    width = window_samples(window_s, sample_rate_hz)
    out = np.zeros((len(starts_s), width), dtype=np.float32)
    for i, start in enumerate(starts_s):
        begin = int(round((start + shift_s) * sample_rate_hz)) - offset
        lo, hi = max(begin, 0), min(begin + width, len(wave))
        if hi > lo:
            out[i, lo - begin:hi - begin] = wave[lo:hi]
    return out


def stream_windows(path: Path, sample_rate_hz: int, window_s: float,
                   starts_s: np.ndarray | None = None, hop_s: float = 5.0,
                   shifts_s: tuple[float, ...] = (0.0,), block_s: float | None = None,
                   allow_silence: bool = True):
    """A file's windows in parts, decoded block by block: yields (starts, one array of
    windows per shift) as each part's audio is complete, then, last, the file's
    duration in seconds (a float).

    Raises `AudioError` as `audio.io.stream` does, possibly after some parts.

    Args:
        path: the audio file.
        sample_rate_hz: the rate to decode to.
        window_s: the windows' length.
        starts_s: the windows to cut (sorted); None: every `hop_s` over the file
            (`window_starts` of its length, known at its end).
        hop_s: seconds between window starts (when `starts_s` is None).
        shifts_s: shifts added to every start (TTA; 0.0 first).
        block_s: seconds decoded per block (None: `audio.io.BLOCK_S`).
        allow_silence: accept a file of digital silence.

    Returns:
        A generator of (starts, [windows per shift]) parts, then the duration (float).
    """
    width = window_samples(window_s, sample_rate_hz)
    buffer, origin, total, k = np.zeros(0, np.float32), 0, 0, 0

    def begin(start, shift):
        return int(round((start + shift) * sample_rate_hz))

    def start_of(index):
        return float(starts_s[index]) if starts_s is not None else index * hop_s

    def part(indices):
        starts = np.array([start_of(i) for i in indices], dtype=np.float64)
        return starts, [cut(buffer, sample_rate_hz, starts, window_s, shift, origin)
                        for shift in shifts_s]

    for block in audio_io.stream(path, sample_rate_hz, block_s or audio_io.BLOCK_S,
                                 allow_silence=allow_silence):
        buffer = np.concatenate([buffer, block]) if len(buffer) else block
        total += len(block)
        ready = []
        while ((starts_s is None or k < len(starts_s))
               and max(begin(start_of(k), s) for s in shifts_s) + width <= total):
            ready.append(k)
            k += 1
        if ready:
            yield part(ready)
        # Keep what the next window needs (the earliest of its shifts) and after.
        if starts_s is None or k < len(starts_s):
            keep = min(max(min(begin(start_of(k), s) for s in shifts_s), origin), total)
        else:
            keep = total
        buffer, origin = buffer[keep - origin:], keep
    duration_s = total / sample_rate_hz
    count = len(window_starts(duration_s, window_s, hop_s)) if starts_s is None else len(starts_s)
    if k < count:
        yield part(range(k, count))
    yield duration_s


def decode_windows(path: Path, sample_rate_hz: int, window_s: float, hop_s: float,
                   shifts_s: tuple[float, ...], transform=None,
                   block_s: float | None = None):
    """One file -> its windows for each shift, in parts, or its error (runs in a decode
    thread). Yields dicts: {path, starts, windows: one array per shift, last: False} per
    part, then {path, starts, windows, last: True, duration_s}; or, when the file cannot be decoded, {path, error, duration_s, last: True}
    (after any parts already yielded: the file's parts are then void).

    `transform` (e.g. a numpy log-mel front end) is applied to each shift's windows here,
    in the decode thread, while inference runs on earlier parts.

    Args:
        path: the audio file.
        sample_rate_hz: the model's sample rate.
        window_s: the model's window.
        hop_s: seconds between window starts.
        shifts_s: TTA shifts (0.0 first).
        transform: applied to each shift's windows (None: raw audio).
        block_s: seconds of audio decoded per block (None: `audio.io.BLOCK_S`).
    """
    # A part is held back one step, so that the last one can say it is (a file has a
    # window at least, so there is always a part before the duration).
    previous = None
    try:
        for item in stream_windows(path, sample_rate_hz, window_s, hop_s=hop_s,
                                   shifts_s=shifts_s, block_s=block_s):
            if isinstance(item, float):
                yield {"path": path, "starts": previous[0], "windows": previous[1],
                       "last": True, "duration_s": item}
                return
            if previous is not None:
                yield {"path": path, "starts": previous[0], "windows": previous[1],
                       "last": False}
            starts, clips = item
            previous = (starts, [transform(c) for c in clips] if transform else clips)
    except audio_io.AudioError as err:
        try:
            duration = audio_io.info(path).duration or None
        except audio_io.AudioError:
            duration = None
        yield {"path": path, "error": str(err), "duration_s": duration, "last": True}


def whole_file(parts) -> dict:
    """A file's parts (`decode_windows`) joined: {path, starts, windows, duration_s}, or
    its error dict. For readers that need every window of a file at once."""
    starts, windows, last = [], [], None
    for last in parts:
        if "error" in last:
            return last
        starts.append(last["starts"])
        windows.append(last["windows"])

    def join(arrays):
        if isinstance(arrays[0], dict):  # features by front end (infer.scoring.FrontEnds)
            return {key: np.concatenate([a[key] for a in arrays]) for key in arrays[0]}
        return np.concatenate(arrays)

    joined = [join([w[s] for w in windows]) for s in range(len(windows[0]))]
    return {"path": last["path"], "starts": np.concatenate(starts),
            "duration_s": last["duration_s"], "windows": joined}


def decode_ahead(files, workers: int, **kwargs):
    """Yields the parts of `decode_windows(file, **kwargs)` for every file, in file
    order, `workers` threads decoding ahead: up to 2 x `workers` files at once, each
    with at most `PARTS_AHEAD` parts waiting."""
    if workers == 0:
        for path in files:
            yield from decode_windows(path, **kwargs)
        return
    # Threads, not processes: libsndfile (through cffi) and soxr release the GIL, and
    # threads need no `if __name__ == "__main__"` guard in users' scripts or fork after
    # TensorFlow started its own threads.
    stop = threading.Event()

    def produce(path, parts: queue.Queue):
        for item in decode_windows(path, **kwargs):
            while not stop.is_set():
                try:
                    parts.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if stop.is_set():
                return

    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="decode") as pool:
        todo, pending = deque(files), deque()

        def submit():
            parts = queue.Queue(maxsize=PARTS_AHEAD)
            pending.append((parts, pool.submit(produce, todo.popleft(), parts)))

        for _ in range(min(2 * workers, len(todo))):
            submit()
        try:
            while pending:
                parts, future = pending[0]
                try:
                    item = parts.get(timeout=0.5)
                except queue.Empty:
                    if future.done() and parts.empty():
                        future.result()  # a decode thread's own failure, raised here
                        raise RuntimeError("a decode thread ended before its file's last part")
                    continue
                yield item
                if item["last"]:
                    pending.popleft()
                    if todo:
                        submit()
        finally:
            stop.set()

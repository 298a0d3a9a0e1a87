"""Audio files: finding them, reading headers, decoding (down-mixed, resampled), writing.

soundfile (libsndfile 1.2: WAV, FLAC, OGG/Vorbis, MP3) decodes and soxr resamples.
tensorflow-io's decoders do not load on TF 2.21, and this path is ~1,000x realtime
per core, so it is the only decode path in birdkeras (ingest, training, predict,
pseudo-labels and embeddings share it). `list_audio` is the one rule for which files
of a folder are audio.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from birdkeras import storage
from birdkeras.errors import UserError

FORMATS = {
    ".wav": ("WAV", "PCM_16"),
    ".flac": ("FLAC", "PCM_16"),
    ".ogg": ("OGG", "VORBIS"),
    ".mp3": ("MP3", "MPEG_LAYER_III"),
}
# Writing long OGG/MP3 in one call can crash libsndfile; write in blocks of this many frames.
_WRITE_BLOCK_FRAMES = 1 << 16


AUDIO_SUFFIXES = tuple(FORMATS)
# What libsndfile raises for a file it cannot open or decode.
_DECODE_ERRORS = (sf.LibsndfileError, RuntimeError, OSError)


class AudioError(UserError):
    """An audio file cannot be used; the message names the file and the reason."""


def list_audio(inputs, allow_empty: bool = False) -> list[Path]:
    """The audio files (`AUDIO_SUFFIXES`, any case) named by `inputs`: files, and folders
    searched recursively, each folder's files sorted by path.

    A path that does not exist, or a file that is not audio, is an error; a folder
    without audio is one too unless `allow_empty` (Kaggle's save run gives an empty
    test folder).
    """
    files = []
    for item in [inputs] if isinstance(inputs, (str, Path)) else inputs:
        path = Path(item)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*")
                            if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
        elif path.is_file():
            if path.suffix.lower() not in AUDIO_SUFFIXES:
                raise AudioError(f"{path} is not an audio file ({', '.join(AUDIO_SUFFIXES)})")
            files.append(path)
        else:
            raise AudioError(f"{path} not found")
    if not files and not allow_empty:
        raise AudioError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) in "
                         f"{[str(i) for i in ([inputs] if isinstance(inputs, (str, Path)) else inputs)]}")
    return files


def info(path: str | Path):
    """The file's header (`samplerate`, `channels`, `frames`, `duration`), without decoding.

    Raises `AudioError` when the header cannot be read.
    """
    try:
        if storage.is_remote(path):  # gs://: the header's bytes only, by ranged reads
            with storage.open_file(str(path), "rb") as f:
                return sf.info(f)
        return sf.info(str(path))
    except _DECODE_ERRORS as err:
        raise AudioError(f"{path}: cannot read the header: {err}") from err


# `stream` reads about this many seconds of the source per block.
BLOCK_S = 60.0


def load(
    path: str | Path,
    sample_rate_hz: int,
    max_duration_s: float | None = None,
    allow_silence: bool = False,
) -> np.ndarray:
    """Decodes `path` to mono float32 at `sample_rate_hz`: `stream`'s blocks, joined.

    Raises `AudioError` for unreadable files and for audio that would poison training:
    zero samples, NaN or inf values, or all-zero (digital silence over the whole file;
    `allow_silence=True` accepts it, as inference does).

    Args:
        path: a local file or a URL (gs://...).
        sample_rate_hz: the rate to resample to.
        max_duration_s: decode at most this much from the start (None: all).
        allow_silence: accept a file of digital silence (inference does).

    Returns:
        The audio, mono float32 in [-1, 1], shape (samples,).
    """
    blocks = list(stream(path, sample_rate_hz, max_duration_s=max_duration_s,
                         allow_silence=allow_silence, block_s=None))
    return np.ascontiguousarray(np.concatenate(blocks) if len(blocks) > 1 else blocks[0],
                                dtype=np.float32)


def stream(
    path: str | Path,
    sample_rate_hz: int,
    block_s: float | None = BLOCK_S,
    max_duration_s: float | None = None,
    allow_silence: bool = False,
):
    """Decodes `path` block by block: yields mono float32 arrays at `sample_rate_hz`
    whose concatenation is exactly the whole file decoded at once (soxr's streaming
    resampler carries its filter state across blocks), so memory does not grow with the
    file's length.

    Raises `AudioError` as `load` does: at the first block for an unreadable file, at
    the block where NaN or inf appears, after the last block for a file with no samples
    or (unless `allow_silence`) of digital silence.

    Args:
        path: a local file or a URL (gs://: copied to a temporary file first).
        sample_rate_hz: the rate to resample to.
        block_s: seconds of the source per block (None: the whole file in one).
        max_duration_s: decode at most this much from the start (None: all).
        allow_silence: accept a file of digital silence (inference does).
    """
    if storage.is_remote(path):
        yield from _stream_remote(str(path), sample_rate_hz, block_s, max_duration_s,
                                  allow_silence)
        return
    path = Path(path)
    try:
        f = sf.SoundFile(str(path))
    except _DECODE_ERRORS as err:
        raise AudioError(f"{path}: cannot decode: {err}") from err
    with f:
        source_rate = f.samplerate
        left = -1 if max_duration_s is None else int(round(max_duration_s * source_rate))
        per_block = -1 if block_s is None else max(int(block_s * source_rate), 1)
        resampler = (None if source_rate == sample_rate_hz else
                     soxr.ResampleStream(source_rate, sample_rate_hz, 1, dtype="float32",
                                         quality="HQ"))
        total, sound = 0, False
        while True:
            want = per_block if left < 0 else (left if per_block < 0 else min(per_block, left))
            try:
                audio = f.read(frames=want, dtype="float32", always_2d=True)
            except _DECODE_ERRORS as err:
                raise AudioError(f"{path}: cannot decode: {err}") from err
            last = audio.shape[0] == 0 or want < 0 or audio.shape[0] < want or (
                left >= 0 and total + audio.shape[0] >= left)
            total += audio.shape[0]
            mono = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
            if not np.isfinite(mono).all():
                raise AudioError(f"{path}: contains NaN or inf samples")
            sound = sound or bool(np.any(mono))
            if total == 0:
                raise AudioError(f"{path}: has 0 samples")
            if last and not allow_silence and not sound:
                raise AudioError(f"{path}: is all zeros (digital silence)")
            if resampler is not None:
                mono = resampler.resample_chunk(np.ascontiguousarray(mono), last=last)
            yield np.ascontiguousarray(mono, dtype=np.float32)
            if last:
                return


def _stream_remote(url: str, sample_rate_hz, block_s, max_duration_s, allow_silence):
    """`stream` of a gs:// (or other TF filesystem) file, through a local copy."""
    suffix = Path(url).suffix
    with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:  # libsndfile picks codecs by name
        try:
            with storage.open_file(url, "rb") as f:
                while chunk := f.read(1 << 24):
                    tmp.write(chunk)
        except Exception as err:  # noqa: BLE001 - filesystem errors vary by backend
            raise AudioError(f"{url}: cannot read: {err}") from err
        tmp.flush()
        try:
            yield from stream(tmp.name, sample_rate_hz, block_s, max_duration_s, allow_silence)
        except AudioError as err:  # name the file the user gave, not the temporary copy
            raise AudioError(str(err).replace(tmp.name, url)) from err


def to_int16(audio: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] to int16 PCM, clipping what lies outside."""
    return (np.clip(audio, -1.0, 32767 / 32768) * 32768).astype(np.int16)


def write(path: str | Path, audio: np.ndarray, sample_rate_hz: int) -> Path:
    """Writes float audio (frames,) or (frames, channels); format from the suffix."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise AudioError(f"{path}: unknown audio suffix; expected one of {sorted(FORMATS)}")
    fmt, subtype = FORMATS[path.suffix.lower()]
    audio = np.asarray(audio, dtype=np.float32)
    channels = 1 if audio.ndim == 1 else audio.shape[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    with sf.SoundFile(
        str(path), "w", samplerate=sample_rate_hz, channels=channels, format=fmt, subtype=subtype
    ) as f:
        for start in range(0, len(audio), _WRITE_BLOCK_FRAMES):
            f.write(audio[start : start + _WRITE_BLOCK_FRAMES])
    return path

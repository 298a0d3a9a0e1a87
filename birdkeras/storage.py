"""Files on local disk or behind a URL (`gs://` and the other filesystems TensorFlow has).

One set of file operations for every stage that writes outputs (TFRecord shards,
pseudo-labels, embeddings, cards): local paths use the standard library, URLs go
through `tf.io.gfile`, so TensorFlow is imported only when a URL is used (build workers
and the ONNX/OpenVINO inference path never import it).
"""

from __future__ import annotations

from pathlib import Path


def is_remote(path) -> bool:
    """Whether `path` is a URL (`gs://...`) rather than a local path."""
    return "://" in str(path)


def _gfile():
    import tensorflow as tf  # noqa: PLC0415 - heavy; only URLs need it

    return tf.io.gfile


def open_file(path, mode: str):
    """`open(path, mode)`, or `tf.io.gfile.GFile` for a URL."""
    return _gfile().GFile(str(path), mode) if is_remote(path) else open(path, mode)


def exists(path) -> bool:
    return _gfile().exists(str(path)) if is_remote(path) else Path(path).exists()


def size(path) -> int | None:
    """The size of a file in bytes (one stat, local or remote), or None when it is absent."""
    if is_remote(path):
        gfile = _gfile()
        return gfile.stat(str(path)).length if gfile.exists(str(path)) else None
    path = Path(path)
    return path.stat().st_size if path.is_file() else None


def rename(src, dst) -> None:
    """Atomic replace of `dst` by `src` (a rename on local disks; GCS copies then deletes)."""
    if is_remote(src):
        _gfile().rename(str(src), str(dst), overwrite=True)
    else:
        Path(src).replace(dst)


def remove(path) -> None:
    if is_remote(path):
        _gfile().remove(str(path))
    else:
        Path(path).unlink(missing_ok=True)


def makedirs(path) -> None:
    if is_remote(path):
        _gfile().makedirs(str(path))
    else:
        Path(path).mkdir(parents=True, exist_ok=True)


def join(folder, name: str) -> str:
    """`folder/name` for local paths and URLs alike."""
    return f"{str(folder).rstrip('/')}/{name}"


def listdir(folder) -> list[str]:
    """Names in `folder` (empty when it does not exist)."""
    if is_remote(folder):
        gfile = _gfile()
        return [n.rstrip("/") for n in gfile.listdir(str(folder))] if gfile.isdir(str(folder)) else []
    folder = Path(folder)
    return [p.name for p in folder.iterdir()] if folder.is_dir() else []


def read_text(path) -> str:
    with open_file(path, "r") as f:
        return f.read()


def write_text_atomic(path, text: str) -> None:
    """Writes `text` to a temporary name beside `path`, then renames it over `path`: a
    reader sees the old file or the new one, never half of one."""
    tmp = f"{path}.tmp"
    with open_file(tmp, "w") as f:
        f.write(text)
    rename(tmp, path)

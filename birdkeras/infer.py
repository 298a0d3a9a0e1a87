"""Soundscape inference: audio files -> 5 s windows -> probabilities -> submission.

    birdkeras predict --model work/demo/export --runtime onnx \
        --audio data/test_soundscapes --out submission.csv

Files are decoded (any of ogg/mp3/flac/wav, any rate, mono or stereo, any length) by
`infer.workers` threads that run ahead of inference with a bounded queue, so memory
stays flat however many files there are. Each file is cut into windows of the model's
`window_s` every `infer.hop_s` seconds, the last one zero-padded; a window's row is
`{file stem}_{end second}`. A file that cannot be decoded is reported and skipped; it
still gets its rows (see `broken_file_duration_s`), filled with the mean probability of
each class over all other windows of the run, so a Kaggle submission stays complete.

Post-processing (config `infer`, each off by default): time-shift TTA, checkpoint
ensembling (several `--model`), temporal smoothing, file-level scaling.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import time
from collections import deque
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from birdkeras import audio
from birdkeras import config as config_lib

AUDIO_SUFFIXES = (".ogg", ".mp3", ".flac", ".wav")
RUNTIMES = ("tf", "tflite", "onnx")
REPORT = "predict_report.json"


class PredictError(ValueError):
    """Bad inference input (model, runtime, audio path, class order); names it."""


# ----------------------------------------------------------------------------------
# Audio in.


def list_audio(inputs) -> list[Path]:
    """Audio files named by `inputs` (files, or folders searched one level deep)."""
    files = []
    for item in [inputs] if isinstance(inputs, (str, Path)) else inputs:
        path = Path(item)
        if path.is_dir():
            files += sorted(p for p in path.iterdir()
                            if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
        elif path.is_file():
            if path.suffix.lower() not in AUDIO_SUFFIXES:
                raise PredictError(f"{path} is not an audio file ({', '.join(AUDIO_SUFFIXES)})")
            files.append(path)
        else:
            raise PredictError(f"{path} not found")
    if not files:
        raise PredictError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) in {inputs}")
    stems = pd.Series([f.stem for f in files])
    if stems.duplicated().any():
        raise PredictError(f"two files share the stem {stems[stems.duplicated()].iloc[0]!r}: "
                           "row_ids would collide")
    return files


def window_starts(duration_s: float, window_s: float, hop_s: float) -> np.ndarray:
    """Start seconds of the windows covering `duration_s` (at least one)."""
    count = 1 if duration_s <= window_s else math.ceil((duration_s - window_s) / hop_s - 1e-9) + 1
    return np.arange(count) * hop_s


def cut(wave: np.ndarray, sample_rate_hz: int, starts_s, window_s: float,
        shift_s: float = 0.0) -> np.ndarray:
    """Windows `[start + shift, start + shift + window_s)`, zero outside the recording."""
    width = int(round(window_s * sample_rate_hz))
    out = np.zeros((len(starts_s), width), dtype=np.float32)
    for i, start in enumerate(starts_s):
        begin = int(round((start + shift_s) * sample_rate_hz))
        lo, hi = max(begin, 0), min(begin + width, len(wave))
        if hi > lo:
            out[i, lo - begin:hi - begin] = wave[lo:hi]
    return out


def decode(path: Path, sample_rate_hz: int, window_s: float, hop_s: float,
           shifts_s: tuple[float, ...]) -> dict:
    """One file -> its windows for each shift (run in a decode worker)."""
    try:
        wave = audio.load(path, sample_rate_hz, allow_silence=True)
    except audio.AudioError as err:
        try:
            duration = sf.info(str(path)).duration or None
        except (sf.LibsndfileError, RuntimeError, OSError):
            duration = None
        return {"path": path, "error": str(err), "duration_s": duration}
    starts = window_starts(len(wave) / sample_rate_hz, window_s, hop_s)
    return {"path": path, "starts": starts, "duration_s": len(wave) / sample_rate_hz,
            "windows": [cut(wave, sample_rate_hz, starts, window_s, s) for s in shifts_s]}


def decoded(files, workers: int, **kwargs):
    """Yields `decode(file)` in file order, `workers` threads decoding ahead."""
    if workers == 0:
        for path in files:
            yield decode(path, **kwargs)
        return
    # Threads, not processes: libsndfile (through cffi) and soxr release the GIL, and
    # threads need no `if __name__ == "__main__"` guard in users' scripts or fork after
    # TensorFlow started its own threads.
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="decode") as pool:
        todo = deque(files)
        pending = deque(pool.submit(decode, todo.popleft(), **kwargs)
                        for _ in range(min(2 * workers, len(todo))))
        while pending:
            result = pending.popleft().result()
            if todo:
                pending.append(pool.submit(decode, todo.popleft(), **kwargs))
            yield result


# ----------------------------------------------------------------------------------
# Models.


class Runner:
    """One model in one runtime: `runner(windows (n, samples)) -> probabilities (n, C)`."""

    def __init__(self, model_path, runtime: str = "tf", activation: str = "sigmoid",
                 threads: int = 0):
        from birdkeras import export  # noqa: PLC0415

        if runtime not in RUNTIMES:
            raise PredictError(f"runtime must be one of {RUNTIMES}. Received: {runtime!r}")
        path = Path(model_path)
        self.runtime, self.path = runtime, path
        if path.is_file() and path.suffix == ".keras":
            if runtime != "tf":
                raise PredictError(f"{path} is a Keras model: use --runtime tf, or "
                                   f"`birdkeras export` it for {runtime}")
            cfg, self.classes = export.run_files(path)
            self.sample_rate_hz, self.window_s = cfg.audio.sample_rate_hz, cfg.audio.window_s
            self.activation = activation
            self._call = self._keras(export.inference_model(export.load_keras(path), activation,
                                                            exportable=False))
            return
        if not path.is_dir():
            raise PredictError(f"{path} is neither a .keras model nor an export folder")
        card = export.read_card(path)
        self.classes, self.activation = card["classes"], card["activation"]
        self.sample_rate_hz, self.window_s = card["sample_rate_hz"], card["window_s"]
        key = "savedmodel" if runtime == "tf" else runtime
        if key not in card["artifacts"]:
            raise PredictError(f"{path} has no {key} artifact (it has "
                               f"{sorted(card['artifacts'])}): export it with --formats {key}")
        artifact = path / card["artifacts"][key]
        self._call = {"tf": self._saved_model, "tflite": self._tflite,
                      "onnx": self._onnx}[runtime](artifact, threads)

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        probs = np.asarray(self._call(np.ascontiguousarray(windows, dtype=np.float32)))
        if probs.shape != (len(windows), len(self.classes)):
            raise PredictError(f"{self.path} ({self.runtime}) returned shape {probs.shape}, "
                               f"expected ({len(windows)}, {len(self.classes)})")
        return probs

    @staticmethod
    def _keras(model):
        import tensorflow as tf  # noqa: PLC0415

        fn = tf.function(lambda w: model(w, training=False), reduce_retracing=True)
        return lambda w: fn(tf.constant(w)).numpy()

    @staticmethod
    def _saved_model(artifact, threads):
        import tensorflow as tf  # noqa: PLC0415

        serve = tf.saved_model.load(str(artifact)).signatures["serving_default"]
        return lambda w: next(iter(serve(waveform=tf.constant(w)).values())).numpy()

    @staticmethod
    def _tflite(artifact, threads):
        import tensorflow as tf  # noqa: PLC0415

        interpreter = tf.lite.Interpreter(str(artifact), num_threads=threads or None)
        (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
        shape = [None]

        def run(w):
            if shape[0] != w.shape:
                interpreter.resize_tensor_input(inp["index"], w.shape)
                interpreter.allocate_tensors()
                shape[0] = w.shape
            interpreter.set_tensor(inp["index"], w)
            interpreter.invoke()
            return interpreter.get_tensor(out["index"]).copy()

        return run

    @staticmethod
    def _onnx(artifact, threads):
        try:
            import onnxruntime as ort  # noqa: PLC0415
        except ImportError as err:
            raise PredictError("--runtime onnx needs onnxruntime: "
                               "pip install onnxruntime") from err
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(artifact), options,
                                       providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda w: session.run(None, {name: w})[0]


def load_runners(model_paths, runtime: str, activation: str, threads: int = 0) -> list[Runner]:
    runners = [Runner(p, runtime, activation, threads) for p in model_paths]
    if not runners:
        raise PredictError("no model given")
    first = runners[0]
    for other in runners[1:]:
        if (other.classes, other.sample_rate_hz, other.window_s) != (
                first.classes, first.sample_rate_hz, first.window_s):
            raise PredictError(f"cannot ensemble {first.path} and {other.path}: their "
                               "classes, sample rates or windows differ")
    return runners


# ----------------------------------------------------------------------------------
# Post-processing (numpy, per file: probabilities (windows, classes)).


def smooth(probs: np.ndarray, weights) -> np.ndarray:
    """Weighted average over neighbouring windows, renormalised at the file's ends."""
    if not len(weights) or len(probs) == 1:
        return probs
    weights = np.asarray(weights, dtype=np.float64)
    half = len(weights) // 2
    padded = np.pad(probs, ((half, half), (0, 0)))
    present = np.pad(np.ones(len(probs)), (half, half))
    total = sum(w * padded[i:i + len(probs)] for i, w in enumerate(weights))
    norm = sum(w * present[i:i + len(probs)] for i, w in enumerate(weights))
    return (total / norm[:, None]).astype(np.float32)


def file_scale(probs: np.ndarray, mode: str, weight: float, top_k: int) -> np.ndarray:
    """Blends each window with the file's max (or top-k mean) per class."""
    if mode == "none" or weight == 0:
        return probs
    if mode == "max":
        summary = probs.max(axis=0)
    else:
        k = min(top_k, len(probs))
        summary = np.sort(probs, axis=0)[-k:].mean(axis=0)
    return ((1 - weight) * probs + weight * summary[None]).astype(np.float32)


def class_columns(path: str | None, model_classes: list[str]) -> list[str]:
    """The submission's class columns, from a sample submission or a taxonomy."""
    if path is None:
        return list(model_classes)
    header = pd.read_csv(path, nrows=0).columns
    if "row_id" in header:
        columns = [c for c in header if c != "row_id"]
    elif "primary_label" in header:
        columns = pd.read_csv(path, usecols=["primary_label"])["primary_label"].astype(str).tolist()
    else:
        raise PredictError(f"{path}: expected a sample submission (row_id + class columns) "
                           "or a taxonomy (primary_label column)")
    if len(set(columns)) != len(columns):
        raise PredictError(f"{path}: class names repeat")
    return columns


# ----------------------------------------------------------------------------------
# The run.


def _seconds(value: float) -> str:
    return f"{value:g}" if float(value).is_integer() else f"{value:.3f}".rstrip("0")


def predict(model_paths, inputs, out_csv, runtime: str = "tf",
            icfg: config_lib.InferConfig = config_lib.InferConfig(), long_csv=None,
            raven_dir=None, progress: bool = True, threads: int = 0) -> dict:
    """Writes the submission (and optional long CSV / Raven tables); returns a report."""
    files = list_audio(inputs)
    runners = load_runners(model_paths if isinstance(model_paths, (list, tuple))
                           else [model_paths], runtime, icfg.activation, threads)
    first = runners[0]
    columns = class_columns(icfg.class_order, first.classes)
    for runner in runners:  # warm up (graph tracing, allocation) before the clock starts
        runner(np.zeros((icfg.batch_size, int(first.window_s * first.sample_rate_hz)),
                        dtype=np.float32))
    start = time.perf_counter()
    shifts = (0.0, *icfg.tta_shifts_s)
    results, broken, windows_done = [], [], 0
    bar = None
    if progress:
        from tqdm.auto import tqdm  # noqa: PLC0415

        bar = tqdm(total=len(files), unit="file", desc="predict")
    for item in decoded(files, icfg.workers, sample_rate_hz=first.sample_rate_hz,
                        window_s=first.window_s, hop_s=icfg.hop_s, shifts_s=shifts):
        if "error" in item:
            broken.append(item)
        else:
            probs = np.mean([_score(runner, windows, icfg.batch_size)
                             for windows in item["windows"] for runner in runners], axis=0)
            probs = smooth(probs, icfg.smoothing)
            probs = file_scale(probs, icfg.file_scaling, icfg.file_scaling_weight,
                               icfg.file_scaling_top_k)
            results.append((item["path"], item["starts"], probs))
            windows_done += len(probs)
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - start

    fill = (np.concatenate([p for _, _, p in results]).mean(axis=0) if results
            else np.zeros(len(first.classes), dtype=np.float32))
    for item in broken:
        duration = item["duration_s"] or icfg.broken_file_duration_s
        starts = window_starts(duration, first.window_s, icfg.hop_s)
        results.append((item["path"], starts, np.tile(fill, (len(starts), 1))))
    order = {path: i for i, path in enumerate(files)}
    results.sort(key=lambda r: order[r[0]])

    table = _submission(results, first.classes, columns, first.window_s)
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_csv, index=False)
    if long_csv is not None:
        _long_table(results, first.classes, first.window_s, icfg.long_min_score).to_csv(
            long_csv, index=False)
    if raven_dir is not None:
        _raven(results, first.classes, first.window_s, icfg.raven_min_score, Path(raven_dir),
               first.sample_rate_hz / 2)
    report = {
        "files": len(files), "rows": len(table), "windows_scored": windows_done,
        "broken_files": [{"file": str(b["path"]), "error": b["error"]} for b in broken],
        "models": [str(r.path) for r in runners], "runtime": runtime,
        "classes_filled_with_zero": sorted(set(columns) - set(first.classes)),
        "model_classes_not_in_submission": sorted(set(first.classes) - set(columns)),
        "seconds": round(elapsed, 2),
        "windows_per_s": round(windows_done * len(shifts) * len(runners) / elapsed, 1),
        "infer": config_lib.to_dict(icfg), "submission": str(out_csv),
    }
    (out_csv.parent / REPORT).write_text(json.dumps(report, indent=1) + "\n")
    return report


def _score(runner: Runner, windows: np.ndarray, batch_size: int) -> np.ndarray:
    return np.concatenate([runner(windows[i:i + batch_size])
                           for i in range(0, len(windows), batch_size)])


def _submission(results, model_classes, columns, window_s) -> pd.DataFrame:
    index = {name: k for k, name in enumerate(model_classes)}
    row_ids, blocks = [], []
    for path, starts, probs in results:
        row_ids += [f"{path.stem}_{_seconds(s + window_s)}" for s in starts]
        block = np.zeros((len(probs), len(columns)), dtype=np.float32)
        for j, name in enumerate(columns):
            if name in index:
                block[:, j] = probs[:, index[name]]
        blocks.append(block)
    table = pd.DataFrame(np.concatenate(blocks) if blocks else np.zeros((0, len(columns))),
                         columns=columns)
    table.insert(0, "row_id", row_ids)
    return table


def _detections(results, classes, window_s, min_score):
    for path, starts, probs in results:
        rows, cols = np.nonzero(probs >= min_score)
        for i, k in zip(rows, cols):
            yield path, float(starts[i]), float(starts[i] + window_s), classes[k], float(probs[i, k])


def _long_table(results, classes, window_s, min_score) -> pd.DataFrame:
    return pd.DataFrame(list(_detections(results, classes, window_s, min_score)),
                        columns=["file", "start", "end", "label", "score"]).assign(
        file=lambda t: t["file"].map(lambda p: Path(p).name))


def _raven(results, classes, window_s, min_score, folder: Path, high_hz: float) -> None:
    """One Raven Pro selection table per file (tab-separated), detections >= min_score."""
    folder.mkdir(parents=True, exist_ok=True)
    header = ["Selection", "View", "Channel", "Begin Time (s)", "End Time (s)",
              "Low Freq (Hz)", "High Freq (Hz)", "Species", "Score"]
    for path, starts, probs in results:
        lines = ["\t".join(header)]
        one = [(path, starts, probs)]
        for n, (_, begin, end, label, score) in enumerate(
                _detections(one, classes, window_s, min_score), start=1):
            lines.append("\t".join([str(n), "Spectrogram 1", "1", f"{begin:.3f}", f"{end:.3f}",
                                    "0", f"{high_hz:g}", label, f"{score:.4f}"]))
        (folder / f"{path.stem}.BirdKeras.selection.table.txt").write_text("\n".join(lines) + "\n")

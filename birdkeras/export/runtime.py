"""One model in one runtime: windows `(n, samples)` -> probabilities `(n, classes)`.

A model is a `.keras` file from a training run (runtime "tf", the training front end)
or a `birdkeras export` folder, run by TensorFlow (its SavedModel), TFLite, ONNX
Runtime or OpenVINO. Each runtime is imported only when asked for, so predicting with
ONNX Runtime or OpenVINO imports neither TensorFlow nor Keras.

Precision is explicit: every runtime computes in float32 unless asked otherwise
(`precision`). OpenVINO would otherwise pick bfloat16 by itself on CPUs that have it
(`avx512_bf16`, AMX), and a submission would depend on which CPU Kaggle hands out.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from birdkeras.config import window_samples
from birdkeras.errors import PredictError
from birdkeras.export.card import read_export_card
from birdkeras.export.openvino_support import (PRECISIONS, openvino_config, openvino_module,
                                               openvino_precision)
from birdkeras.model.mel import NumpyLogMel

RUNTIMES = ("tf", "tflite", "onnx", "openvino")


class Runner:
    """`runner(windows) -> probabilities`, with the model's classes, rate and window.

    Args:
        model_path: a `.keras` model (runtime "tf") or an export folder.
        runtime: one of `RUNTIMES`.
        activation: `.keras` models only: "sigmoid" or "softmax" (an export folder
            carries the activation it was exported with).
        threads: the runtime's intra-op threads (0: its default).
        sed_output: `.keras` SED models: "clip" or "frame_max".
        front_end: export folders on ONNX/OpenVINO: "numpy" (the CNN on log-mel frames,
            the front end in numpy) or "graph" (the whole model on raw audio).
        int8: the int8 CNN of an export made with `--int8`.
        precision: "f32" (default), "bf16" or "f16" (OpenVINO only; where the CPU has it).
    """

    def __init__(self, model_path, runtime: str = "tf", activation: str = "sigmoid",
                 threads: int = 0, sed_output: str = "clip", front_end: str = "numpy",
                 int8: bool = False, precision: str = "f32"):
        if runtime not in RUNTIMES:
            raise PredictError(f"runtime must be one of {RUNTIMES}. Received: {runtime!r}")
        if precision not in PRECISIONS:
            raise PredictError(f"precision must be one of {PRECISIONS}. Received: {precision!r}")
        if precision != "f32" and runtime != "openvino":
            raise PredictError(f"precision {precision} is an OpenVINO option; {runtime} runs "
                               "float32 (int8: export --int8 and infer.int8)")
        path = Path(model_path)
        self.runtime, self.path, self.precision = runtime, path, precision
        # What the runtime really computes in (OpenVINO falls back to f32, or from f16 to
        # bf16, where the CPU lacks the asked-for precision); int8 adds to it.
        self.precision_used = "f32"
        # A numpy log-mel front end the decode threads run (None: the model takes audio).
        self.front_end = None
        if path.is_file() and path.suffix == ".keras":
            if runtime != "tf":
                raise PredictError(f"{path} is a Keras model: use --runtime tf, or "
                                   f"`birdkeras export` it for {runtime}")
            # Keras and TensorFlow only for a .keras model: export folders run without them.
            from birdkeras.export import keras_runtime  # noqa: PLC0415 - keeps TF out

            cfg, self.classes, self._call = keras_runtime.load(path, activation, sed_output)
            self.sample_rate_hz, self.window_s = cfg.audio.sample_rate_hz, cfg.audio.window_s
            self.activation = activation
            return
        if not path.is_dir():
            raise PredictError(f"{path} is neither a .keras model nor an export folder")
        card = read_export_card(path)
        self.classes, self.activation = card["classes"], card["activation"]
        self.sample_rate_hz, self.window_s = card["sample_rate_hz"], card["window_s"]
        key = "savedmodel" if runtime == "tf" else runtime
        if runtime in ("onnx", "openvino") and (front_end == "numpy" or int8):
            # The CNN on log-mel frames, the front end in numpy (decode threads).
            key = f"{runtime}_mel_int8" if int8 else f"{runtime}_mel"
            if key in card["artifacts"]:
                self.front_end = NumpyLogMel(**card["front_end"])
            elif int8:
                raise PredictError(f"{path} has no int8 {runtime} CNN: export it with --int8")
            else:
                key = runtime  # an older export: the whole model on raw audio
        if key not in card["artifacts"]:
            raise PredictError(f"{path} has no {key} artifact (it has "
                               f"{sorted(card['artifacts'])}): export it with --formats {key}")
        artifact = path / card["artifacts"][key]
        if runtime == "openvino":
            self._call, self.precision_used = _openvino(artifact, threads, precision)
        else:
            self._call = {"tf": _saved_model, "tflite": _tflite, "onnx": _onnx}[runtime](
                artifact, threads)

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        """Probabilities of `windows`: audio (n, samples), or log-mel frames (n, mels,
        frames, 1) when the runner has a numpy `front_end` (see `birdkeras.model.mel`)."""
        if self.front_end is not None and np.ndim(windows) == 2:
            windows = self.front_end(windows)
        probs = np.asarray(self._call(np.ascontiguousarray(windows, dtype=np.float32)))
        if probs.shape != (len(windows), len(self.classes)):
            raise PredictError(f"{self.path} ({self.runtime}) returned shape {probs.shape}, "
                               f"expected ({len(windows)}, {len(self.classes)})")
        return probs

    @property
    def window_samples(self) -> int:
        return window_samples(self.window_s, self.sample_rate_hz)


def _saved_model(artifact, threads):
    import tensorflow as tf  # noqa: PLC0415 - only the SavedModel runtime needs TensorFlow

    serve = tf.saved_model.load(str(artifact)).signatures["serving_default"]
    return lambda w: next(iter(serve(waveform=tf.constant(w)).values())).numpy()


def _tflite(artifact, threads):
    import tensorflow as tf  # noqa: PLC0415 - only the TFLite runtime needs TensorFlow

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


@contextlib.contextmanager
def single_threaded_blas():
    """numpy's BLAS on one thread for the block: the numpy front end runs in decode
    threads beside the runtime's own threads, and BLAS's spinning pool would take their
    cores (B0 at 128 x 313 from OGG on 2 cores: 40 -> 58 windows/s with ONNX Runtime)."""
    from threadpoolctl import threadpool_limits  # noqa: PLC0415 - only while predicting

    with threadpool_limits(1, user_api="blas"):
        yield


def onnx_session(path, threads: int = 0):
    """An ONNX Runtime session on the CPU, set up the one way birdkeras runs ONNX graphs
    (CNNs and route heads): all graph optimisations, `threads` intra-op threads (0: the
    runtime's default), and idle threads that sleep instead of spinning (decode threads
    share these cores)."""
    try:
        import onnxruntime as ort  # noqa: PLC0415 - one runtime among several
    except ImportError as err:
        raise PredictError("--runtime onnx needs onnxruntime: pip install onnxruntime") from err
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _onnx(artifact, threads):
    session = onnx_session(artifact, threads)
    name = session.get_inputs()[0].name
    return lambda w: session.run(None, {name: w})[0]


def _openvino(artifact, threads, precision="f32"):
    """(callable, precision the compiled model runs in)."""
    ov = openvino_module()
    core = ov.Core()
    compiled = core.compile_model(str(artifact), "CPU", openvino_config(threads, precision))
    request = compiled.create_infer_request()
    output = compiled.output(0)
    used = openvino_precision(compiled.get_property("INFERENCE_PRECISION_HINT"))
    return (lambda w: request.infer({0: w})[output].copy()), used


def best_available(folder) -> tuple[str, str]:
    """The fastest runtime an export folder and this machine's packages allow, and why
    (OpenVINO, then ONNX Runtime, then TensorFlow's SavedModel)."""
    artifacts = read_export_card(folder)["artifacts"]
    reasons = []
    for runtime, module in (("openvino", "openvino"), ("onnx", "onnxruntime")):
        if runtime not in artifacts:
            reasons.append(f"no {runtime} artifact in {folder}")
            continue
        try:
            __import__(module)
        except ImportError:
            reasons.append(f"{module} is not installed")
            continue
        return runtime, "; ".join(reasons) or f"{runtime}: the fastest available"
    return "tf", "; ".join(reasons)

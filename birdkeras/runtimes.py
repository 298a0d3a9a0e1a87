"""One model in one runtime: windows `(n, samples)` -> probabilities `(n, classes)`.

A model is a `.keras` file from a training run (runtime "tf", the training front end)
or a `birdkeras export` folder, run by TensorFlow (its SavedModel), TFLite or ONNX
Runtime; or an embedding route folder (`birdkeras route`). Each runtime is imported
only when asked for.
"""

from __future__ import annotations

import contextlib

from pathlib import Path

import numpy as np

from birdkeras.errors import PredictError

RUNTIMES = ("tf", "tflite", "onnx", "openvino")


class Runner:
    """`runner(windows) -> probabilities`, with the model's classes, rate and window."""

    def __init__(self, model_path, runtime: str = "tf", activation: str = "sigmoid",
                 threads: int = 0, sed_output: str = "clip", front_end: str = "numpy",
                 int8: bool = False):
        from birdkeras import export  # noqa: PLC0415 - TensorFlow, only when a model loads

        if runtime not in RUNTIMES:
            raise PredictError(f"runtime must be one of {RUNTIMES}. Received: {runtime!r}")
        path = Path(model_path)
        self.runtime, self.path = runtime, path
        # A numpy log-mel front end the decode threads run (None: the model takes audio).
        self.front_end = None
        if path.is_file() and path.suffix == ".keras":
            if runtime != "tf":
                raise PredictError(f"{path} is a Keras model: use --runtime tf, or "
                                   f"`birdkeras export` it for {runtime}")
            cfg, self.classes = export.run_files(path)
            self.sample_rate_hz, self.window_s = cfg.audio.sample_rate_hz, cfg.audio.window_s
            self.activation = activation
            self._call = _keras(export.inference_model(export.load_keras(path), activation,
                                                       exportable=False,
                                                       sed_output=sed_output))
            return
        if not path.is_dir():
            raise PredictError(f"{path} is neither a .keras model nor an export folder")
        card = export.read_card(path)
        self.classes, self.activation = card["classes"], card["activation"]
        self.sample_rate_hz, self.window_s = card["sample_rate_hz"], card["window_s"]
        key = "savedmodel" if runtime == "tf" else runtime
        if runtime in ("onnx", "openvino") and (front_end == "numpy" or int8):
            # The CNN on log-mel frames, the front end in numpy (decode threads).
            key = f"{runtime}_mel_int8" if int8 else f"{runtime}_mel"
            if key in card["artifacts"]:
                from birdkeras.features import NumpyLogMel  # noqa: PLC0415

                self.front_end = NumpyLogMel(**card["front_end"])
            elif int8:
                raise PredictError(f"{path} has no int8 {runtime} CNN: export it with --int8")
            else:
                key = runtime  # an older export: the whole model on raw audio
        if key not in card["artifacts"]:
            raise PredictError(f"{path} has no {key} artifact (it has "
                               f"{sorted(card['artifacts'])}): export it with --formats {key}")
        artifact = path / card["artifacts"][key]
        self._call = {"tf": _saved_model, "tflite": _tflite, "onnx": _onnx,
                      "openvino": _openvino}[runtime](artifact, threads)

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        """Probabilities of `windows`: audio (n, samples), or log-mel frames (n, mels,
        frames, 1) when the runner has a numpy `front_end` (see `features`)."""
        if self.front_end is not None and np.ndim(windows) == 2:
            windows = self.front_end(windows)
        probs = np.asarray(self._call(np.ascontiguousarray(windows, dtype=np.float32)))
        if probs.shape != (len(windows), len(self.classes)):
            raise PredictError(f"{self.path} ({self.runtime}) returned shape {probs.shape}, "
                               f"expected ({len(windows)}, {len(self.classes)})")
        return probs

    @property
    def window_samples(self) -> int:
        return int(round(self.window_s * self.sample_rate_hz))


def load_runners(model_paths, runtime: str, activation: str, threads: int = 0,
                 sed_output: str = "clip", icfg=None) -> list:
    """One runner per model; an ensemble's models must share classes, rate and window.

    A folder holding `route.json` is an embedding route (`birdkeras.route_runtime`).
    """
    runners = []
    for path in model_paths:
        if (Path(path) / "route.json").is_file():
            from birdkeras import route_runtime  # noqa: PLC0415

            runners.append(route_runtime.RouteRunner(path, runtime, icfg, threads))
        else:
            runners.append(Runner(path, runtime, activation, threads, sed_output,
                                  icfg.front_end if icfg else "numpy",
                                  icfg.int8 if icfg else False))
    if not runners:
        raise PredictError("no model given")
    first = runners[0]
    for other in runners[1:]:
        if (other.classes, other.sample_rate_hz, other.window_s) != (
                first.classes, first.sample_rate_hz, first.window_s):
            raise PredictError(f"cannot ensemble {first.path} and {other.path}: their "
                               "classes, sample rates or windows differ")
    return runners


def _keras(model):
    import tensorflow as tf  # noqa: PLC0415

    fn = tf.function(lambda w: model(w, training=False), reduce_retracing=True)
    return lambda w: fn(tf.constant(w)).numpy()


def _saved_model(artifact, threads):
    import tensorflow as tf  # noqa: PLC0415

    serve = tf.saved_model.load(str(artifact)).signatures["serving_default"]
    return lambda w: next(iter(serve(waveform=tf.constant(w)).values())).numpy()


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


@contextlib.contextmanager
def single_threaded_blas():
    """numpy's BLAS on one thread for the block: the numpy front end runs in decode
    threads beside the runtime's own threads, and BLAS's spinning pool would take their
    cores (B0 at 128 x 313 from OGG on 2 cores: 40 -> 58 windows/s with ONNX Runtime)."""
    from threadpoolctl import threadpool_limits  # noqa: PLC0415

    with threadpool_limits(1, user_api="blas"):
        yield


def _onnx(artifact, threads):
    try:
        import onnxruntime as ort  # noqa: PLC0415
    except ImportError as err:
        raise PredictError("--runtime onnx needs onnxruntime: pip install onnxruntime") from err
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle runtime threads sleep instead of spinning: decode threads share these cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(artifact), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda w: session.run(None, {name: w})[0]


def _openvino(artifact, threads):
    from birdkeras import export  # noqa: PLC0415

    ov = export.openvino_module()
    # Threads not pinned to cores: decode threads share them.
    config = {"PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = ov.Core().compile_model(str(artifact), "CPU", config)
    request = compiled.create_infer_request()
    output = compiled.output(0)
    return lambda w: request.infer({0: w})[output].copy()


def best_available(folder) -> tuple[str, str]:
    """The fastest runtime an export folder and this machine's packages allow, and why
    (OpenVINO, then ONNX Runtime, then TensorFlow's SavedModel)."""
    from birdkeras import export  # noqa: PLC0415

    artifacts = export.read_card(folder)["artifacts"]
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

"""The models `predict` runs: each path becomes a runner (an embedding route folder, an
export folder or a `.keras` model), and an ensemble's runners must agree on classes,
sample rate and window."""

from __future__ import annotations

from pathlib import Path

from birdkeras import config as config_lib
from birdkeras.embeddings.runner import CARD as ROUTE_CARD
from birdkeras.embeddings.runner import RouteRunner
from birdkeras.errors import PredictError
from birdkeras.export.runtime import Runner, best_available


def load_runners(model_paths, runtime: str, icfg: config_lib.InferConfig | None = None,
                 threads: int = 0) -> list:
    """One runner per model path; an ensemble's models must share classes, rate and window.

    A folder holding `route.json` is an embedding route; the rest are export folders
    or `.keras` models (`icfg` gives the activation, SED output, front end, int8 and
    precision).

    Args:
        model_paths: model paths.
        runtime: the runtime.
        icfg: inference settings (None: defaults).
        threads: runtime threads.

    Returns:
        The runners, in order.
    """
    icfg = icfg or config_lib.InferConfig()
    runners = []
    for path in model_paths:
        if (Path(path) / ROUTE_CARD).is_file():
            runners.append(RouteRunner(path, runtime, icfg, threads))
        else:
            runners.append(Runner(path, runtime, icfg.activation, threads, icfg.sed_output,
                                  icfg.front_end, icfg.int8, icfg.precision))
    if not runners:
        raise PredictError("no model given")
    first = runners[0]
    for other in runners[1:]:
        if (other.classes, other.sample_rate_hz, other.window_s) != (
                first.classes, first.sample_rate_hz, first.window_s):
            raise PredictError(f"cannot ensemble {first.path} and {other.path}: their "
                               "classes, sample rates or windows differ")
    return runners


def best_runtime(path) -> tuple[str, str]:
    """The fastest runtime for a model path on this machine, and why: for an export folder
    OpenVINO, then ONNX Runtime, then TensorFlow (`best_available`); a route folder's
    heads are ONNX graphs (its frozen embedding model runs as it was given), so ONNX
    Runtime, else Keras; a `.keras` model runs on TensorFlow."""
    path = Path(path)
    if (path / ROUTE_CARD).is_file():
        try:
            __import__("onnxruntime")
        except ImportError:
            return "tf", f"{path} is an embedding route and onnxruntime is not installed"
        return "onnx", f"{path} is an embedding route: its heads run on ONNX Runtime"
    if path.is_file():
        return "tf", f"{path} is a Keras model file, not an export folder"
    return best_available(path)

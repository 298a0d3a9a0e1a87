"""The export card (`birdkeras_export.json`): what an export folder holds and how its
models read audio. No Keras or TensorFlow: inference on ONNX Runtime or OpenVINO reads
it without them.
"""

from __future__ import annotations

import json
from pathlib import Path

from birdkeras.errors import UserError

CARD = "birdkeras_export.json"
FORMATS = {"savedmodel": "saved_model", "tflite": "model.tflite", "onnx": "model.onnx",
           "openvino": "model.xml"}
DEFAULT_FORMATS = ("savedmodel", "tflite", "onnx")  # openvino: optional dependency
FRONT_END_KEYS = ("sample_rate_hz", "fft_length", "hop_length", "num_mel_bins", "fmin_hz",
                  "fmax_hz", "top_db")
ACTIVATIONS = ("sigmoid", "softmax")
SED_OUTPUTS = ("clip", "frame_max")


class ExportError(UserError):
    """A model or export folder cannot be exported or read; the message names it."""


def read_export_card(folder: str | Path) -> dict:
    """The card of an export folder, checked for the keys inference needs."""
    path = Path(folder) / CARD
    if not path.is_file():
        raise ExportError(f"{path} not found: {folder} is not a `birdkeras export` folder")
    card = json.loads(path.read_text())
    for key in ("classes", "sample_rate_hz", "window_s", "activation", "artifacts"):
        if key not in card:
            raise ExportError(f"{path} has no {key!r}: write it again with birdkeras export")
    return card


def write_export_card(folder: str | Path, card: dict) -> None:
    (Path(folder) / CARD).write_text(json.dumps(card, indent=1) + "\n")

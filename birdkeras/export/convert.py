"""Export a trained model for CPU inference: SavedModel, TFLite, ONNX and OpenVINO.

Each artifact is the whole model, raw waveform `(batch, samples)` float32 in [-1, 1] to
probabilities `(batch, classes)`:

    waveform -> LogMelSpectrogram(dft="matmul") -> to_image -> backbone -> head
             -> logits -> sigmoid | softmax

The training front end computes its spectrogram with `ops.stft`, which tf2onnx cannot
turn into a graph ONNX Runtime accepts; the exported one computes the same values with
matrix products (see `birdkeras.features`). ONNX and OpenVINO also get the CNN alone
(`cnn.onnx`, `cnn.xml`: log-mel frames in), which `birdkeras predict` feeds from
`features.NumpyLogMel` (a real FFT in the decode threads, the fastest CPU path), and,
with `int8=True`, its int8 version (`birdkeras.export.int8`). SpecAugment layers are the
identity at inference and are left out. Next to the artifacts, `birdkeras_export.json`
records the classes, the sample rate, the window, the front end's settings and the
activation, so `birdkeras predict` needs nothing else.

    birdkeras export --model work/demo/ft/train/best.keras --out work/demo/export \
        --formats onnx,openvino [--int8 --int8-check work/demo/data birdclef-2026]
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.framework import convert_to_constants

from birdkeras import config as config_lib
from birdkeras.export import int8 as int8_lib
from birdkeras.export.card import (ACTIVATIONS, CARD, DEFAULT_FORMATS, FORMATS,
                                   FRONT_END_KEYS, SED_OUTPUTS, ExportError, read_export_card,
                                   write_export_card)
from birdkeras.export.openvino_support import openvino_module
from birdkeras.model import classifier, run_files
from birdkeras.model.frontend import LogMelSpectrogram
from birdkeras.model.mel import NumpyLogMel

# The ONNX opset of every graph birdkeras writes (the CNN, its front end, the route heads).
ONNX_OPSET = 17
__all__ = ["CARD", "export", "inference_model", "mel_model", "to_onnx", "to_openvino"]


class _Standardize(keras.layers.Layer):
    """`keras.layers.Normalization` with its statistics as graph constants.

    Normalization keeps mean and variance as eager tensors, which a traced function
    captures as inputs: tf2onnx then asks for them as graph inputs and the TFLite
    converter produced NaNs. Not serialisable; exists only while exporting.
    """

    def __init__(self, mean, variance, **kwargs):
        super().__init__(**kwargs)
        self.mean = np.asarray(mean, dtype=np.float32)
        self.scale = 1.0 / np.maximum(np.sqrt(np.asarray(variance, dtype=np.float32)),
                                      keras.backend.epsilon())

    def call(self, inputs):
        return (inputs - self.mean) * self.scale


class _ErfGelu(keras.layers.Layer):
    """Exact GELU as 0.5 x (1 + erf(x / sqrt 2)): TensorFlow's own uses Erfc, which
    tf2onnx cannot convert (ConvNeXt). Exists only while exporting."""

    def call(self, inputs):
        return 0.5 * inputs * (1.0 + keras.ops.erf(inputs * 0.7071067811865476))


def _depthwise(layer: keras.layers.Conv2D) -> keras.layers.DepthwiseConv2D:
    """A Conv2D with one group per channel (ConvNeXt) as the DepthwiseConv2D it is:
    TensorFlow runs grouped convolutions as a function call tf2onnx cannot convert."""
    kernel, *bias = layer.get_weights()
    depthwise = keras.layers.DepthwiseConv2D(
        layer.kernel_size, strides=layer.strides, padding=layer.padding,
        dilation_rate=layer.dilation_rate, use_bias=layer.use_bias,
        activation=layer.activation, name=layer.name)
    depthwise.build((None, None, None, kernel.shape[-1]))
    depthwise.set_weights([kernel.transpose(0, 1, 3, 2), *bias])
    return depthwise


def _export_in_tensorflow(model_path, out_dir, formats, activation, sed_output, int8,
                          calibration, int8_options) -> dict:
    """`birdkeras export` in a child process on the TensorFlow backend; its card."""
    args = [sys.executable, "-m", "birdkeras", "export", "--model", str(model_path), "--out",
            str(out_dir), "--formats", ",".join(formats), "--activation", activation,
            "--sed-output", sed_output, *(["--int8"] if int8 else []),
            *(["--calibration", str(calibration)] if calibration else []),
            "--calibration-windows", str(int8_options.calibration_windows),
            "--int8-keep-float", int8_options.keep_float,
            *([] if int8_options.per_channel else ["--int8-per-tensor"])]
    done = subprocess.run(args, env={**os.environ, "KERAS_BACKEND": "tensorflow"},
                          capture_output=True, text=True, check=False)
    if done.returncode:
        raise ExportError(f"exporting {model_path} under TensorFlow failed:\n"
                          f"{done.stderr[-2000:]}")
    return read_export_card(out_dir)


def inference_model(model: keras.Model, activation: str = "sigmoid",
                    exportable: bool = True, sed_output: str = "clip") -> keras.Model:
    """`model` with no augmentation and probabilities out; `exportable`: the matmul
    front end and constant normalisation (for tf2onnx and TFLite), else the FFT one.
    `sed_output` (SED heads): "clip" logits, or "frame_max", the maximum over the
    window's frames.

    Layers (and their weights) are shared with `model`, not copied.

    Args:
        model: a trained classifier.
        activation: "sigmoid" or "softmax".
        exportable: the matmul front end and constant normalisation (tf2onnx, TFLite);
            else the FFT front end.
        sed_output: SED heads: "clip" or "frame_max".

    Returns:
        waveform -> probabilities, sharing `model`'s layers.
    """
    if activation not in ACTIVATIONS:
        raise ExportError(f"activation must be one of {ACTIVATIONS}. Received: {activation!r}")
    if sed_output not in SED_OUTPUTS:
        raise ExportError(f"sed_output must be one of {SED_OUTPUTS}. Received: {sed_output!r}")
    if sed_output == "frame_max":
        if "sed" not in [layer.name for layer in model.layers]:
            raise ExportError("sed_output=frame_max needs a model with a SED head (model.head=sed)")
        model = classifier.with_frame_max(model)  # before cloning: the frames of this graph

    def swap(layer):
        if not exportable and not layer.name.endswith("_mask"):
            return layer
        if isinstance(layer, LogMelSpectrogram):
            return LogMelSpectrogram.from_config({**layer.get_config(), "dft": "matmul"})
        if layer.name in ("freq_mask", "time_mask", "filter_mask"):
            return keras.layers.Identity(name=layer.name)
        if (isinstance(layer, keras.layers.Conv2D) and layer.groups > 1
                and layer.groups == layer.filters == layer.kernel.shape[-1]):
            return _depthwise(layer)
        if (isinstance(layer, keras.layers.Activation)
                and getattr(layer.activation, "__name__", "") == "gelu"):
            return _ErfGelu(name=layer.name)
        if isinstance(layer, keras.layers.Normalization):
            return _Standardize(np.asarray(layer.mean), np.asarray(layer.variance),
                                name=layer.name)
        if isinstance(layer, keras.Model):  # the backbone
            return keras.models.clone_model(layer, clone_function=swap)
        return layer

    plain = keras.models.clone_model(model, clone_function=swap)
    output = plain.output
    if isinstance(output, dict):  # a SED model with its frame-max output
        output = output["frame_max" if sed_output == "frame_max" else "logits"]
    probabilities = keras.layers.Activation(activation, name="probabilities")(output)
    return keras.Model(plain.input, probabilities, name=f"{model.name}_export")


def _concrete(model: keras.Model, mel_bins: int | None = None):
    """The model as a tf.function: waveform (batch, samples), or log-mel frames
    (batch, mel_bins, frames, 1) for the CNN fed by a numpy front end."""
    if mel_bins:
        spec = tf.TensorSpec((None, mel_bins, None, 1), tf.float32, name="log_mel")
        return tf.function(lambda log_mel: model(log_mel, training=False),
                           input_signature=[spec], autograph=False)
    spec = tf.TensorSpec((None, None), tf.float32, name="waveform")
    return tf.function(lambda waveform: model(waveform, training=False),
                       input_signature=[spec], autograph=False)


def _frozen(function):
    return convert_to_constants.convert_variables_to_constants_v2(
        function.get_concrete_function())


def mel_model(model: keras.Model) -> keras.Model:
    """The inference model after its front end: log-mel frames in, probabilities out."""
    return keras.Model(model.get_layer("log_mel").output, model.output, name="cnn")


def export(model_path: str | Path, out_dir: str | Path, formats=DEFAULT_FORMATS,
           activation: str = "sigmoid", sed_output: str = "clip", int8: bool = False,
           calibration=None,
           int8_options: int8_lib.Int8Options = int8_lib.Int8Options()) -> dict:
    """Writes the requested artifacts and the export card to `out_dir`; returns the card.

    ONNX and OpenVINO get two graphs each: the whole model (raw audio in) and the CNN
    alone (log-mel in, for `birdkeras.model.mel.NumpyLogMel` in predict's decode threads).

    Args:
        model_path: a `.keras` model of a training run (its run files beside it), or a
            k-fold run's folder (ensemble.json): each fold into `out_dir`/fold<k>.
        out_dir: the export folder.
        formats: among `FORMATS`.
        activation: "sigmoid" or "softmax" on the logits.
        sed_output: SED heads: "clip" logits, or "frame_max" over the window's frames.
        int8: also an int8 CNN (`birdkeras.export.int8`), calibrated on `calibration`.
        calibration: a folder of audio, or None for the run's own training records.
        int8_options: calibration windows, per-channel weights, layers kept float32.

    Returns:
        The export card (also written as `birdkeras_export.json`).

    The artifacts are TensorFlow graphs: in a process whose Keras runs on JAX (a model
    trained on a TPU v5e-8), the export runs in a TensorFlow process of its own.
    """
    members = run_files.ensemble_members(model_path)
    if members:  # a k-fold run: each fold exported, and the same ensemble.json over them
        cards = [export(m, Path(out_dir) / Path(m).parent.name, formats, activation,
                        sed_output, int8, calibration, int8_options) for m in members]
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        run_files.write_ensemble(out_dir, [Path(m).parent.name for m in members])
        return {**cards[0], "members": [Path(m).parent.name for m in members]}
    if keras.backend.backend() != "tensorflow":
        return _export_in_tensorflow(model_path, out_dir, formats, activation, sed_output,
                                     int8, calibration, int8_options)
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise ExportError(f"formats must be among {sorted(FORMATS)}. Received: {list(formats)}")
    if int8 and not {"onnx", "openvino"} & set(formats):
        raise ExportError("--int8 quantises the ONNX / OpenVINO CNN: add onnx or openvino to "
                          "--formats")
    cfg, class_names = run_files.read(model_path)
    model = inference_model(classifier.load_keras(model_path), activation, sed_output=sed_output)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = _write_tf(model, set(formats), out)
    front_end = model.get_layer("log_mel").get_config()
    if {"onnx", "openvino"} & set(formats):
        to_onnx(_concrete(model), out / FORMATS["onnx"])
        to_onnx(_concrete(mel_model(model), front_end["num_mel_bins"]), out / "cnn.onnx")
        written.update({"onnx": FORMATS["onnx"], "onnx_mel": "cnn.onnx"})
    if "openvino" in formats:
        to_openvino(out / FORMATS["onnx"], out / FORMATS["openvino"])
        to_openvino(out / "cnn.onnx", out / "cnn.xml")
        written.update({"openvino": FORMATS["openvino"], "openvino_mel": "cnn.xml"})
    card = {"format_version": 2, "source_model": str(model_path), "classes": class_names,
            "sample_rate_hz": cfg.audio.sample_rate_hz, "window_s": cfg.audio.window_s,
            "activation": activation, "sed_output": sed_output, "artifacts": written,
            "front_end": {k: front_end[k] for k in FRONT_END_KEYS},
            "config": config_lib.to_dict(cfg)}
    if int8:
        card = add_int8(out, card, cfg, calibration, int8_options)
    write_export_card(out, card)
    return card


def add_int8(out: Path, card: dict, cfg: config_lib.Config, calibration,
              options: int8_lib.Int8Options) -> dict:
    """The int8 CNN(s) beside the float32 ones of the export `out`, calibrated on the
    user's windows; returns `card` with them added.

    Args:
        out: an export folder with `cnn.onnx` (and `cnn.xml` for OpenVINO).
        card: its export card.
        cfg: the exported run's config (its training records calibrate by default).
        calibration: a folder of audio, or None for the run's own training records.
        options: calibration windows, per-channel weights, layers kept float32.

    Returns:
        `card` with the int8 artifacts and options recorded.
    """
    waves, origin = int8_lib.calibration_windows(cfg, calibration, options.calibration_windows)
    front_end = NumpyLogMel(**card["front_end"])
    mels = np.concatenate([front_end(waves[i:i + 16]) for i in range(0, len(waves), 16)])
    int8_lib.quantize_onnx(out / "cnn.onnx", out / "cnn_int8.onnx", mels, options)
    card["artifacts"]["onnx_mel_int8"] = "cnn_int8.onnx"
    if "openvino" in card["artifacts"]:
        to_openvino(out / "cnn_int8.onnx", out / "cnn_int8.xml")
        card["artifacts"]["openvino_mel_int8"] = "cnn_int8.xml"
    card["int8"] = {**options.describe(), "calibration": origin,
                    "calibration_windows": len(waves)}
    return card


def _write_tf(model, formats: set, out: Path) -> dict:
    written, function = {}, _concrete(model)
    if "savedmodel" in formats:
        module = tf.Module()
        module.model, module.serve = model, function
        tf.saved_model.save(module, str(out / FORMATS["savedmodel"]),
                            signatures={"serving_default": function})
        written["savedmodel"] = FORMATS["savedmodel"]
    if "tflite" in formats:
        # From the frozen function: converted with its variables, the TFLite graph kept
        # them as READ_VARIABLE ops that read uninitialised variables (NaN outputs).
        converter = tf.lite.TFLiteConverter.from_concrete_functions([_frozen(function)])
        (out / FORMATS["tflite"]).write_bytes(converter.convert())
        written["tflite"] = FORMATS["tflite"]
    return written


def to_onnx(function, path: Path) -> None:
    """A traced `tf.function` (with its input signature) as an ONNX graph at `ONNX_OPSET`:
    the one tf2onnx conversion of birdkeras (CNNs and route heads)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tf2onnx  # noqa: PLC0415 - slow to import; only when converting
    except ImportError as err:
        raise ExportError("ONNX export needs tf2onnx (a birdkeras dependency): "
                          "pip install tf2onnx") from err

    tf2onnx.convert.from_function(function, input_signature=function.input_signature,
                                  opset=ONNX_OPSET, output_path=str(path))


def to_openvino(onnx_path: Path, xml_path: Path) -> None:
    """OpenVINO IR from an ONNX graph, weights kept in float32 (parity with Keras)."""
    ov = openvino_module()
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml_path), compress_to_fp16=False)

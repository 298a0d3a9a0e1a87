"""Post-training int8 quantisation of an exported CNN (opt-in: `birdkeras export --int8`).

The CNN that takes log-mel frames (`cnn.onnx`) is quantised statically by ONNX Runtime
(QDQ format: int8 weights per output channel, uint8 activations), its activation
ranges calibrated on a few hundred windows of the user's own training data: by default
the evaluation windows of the run's TFRecords (`tfrecords.dir` of the config saved
beside the model), else a folder of audio (`--calibration`). OpenVINO reads the same
QDQ graph and runs it in int8 (`cnn_int8.xml`). The front end stays float32 (numpy).

Quantisation changes scores; with `--int8-check ROOT SOURCE` the export scores that
source's labelled soundscapes with the float32 and the int8 CNN and records (and the
command prints) both macro ROC-AUCs and their difference.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from birdkeras import config as config_lib
from birdkeras.errors import UserError
from birdkeras.features import NumpyLogMel

CALIBRATION_WINDOWS = 300


class QuantizeError(UserError):
    """The int8 export lacks what it needs; the message says what to give."""


def calibration_windows(cfg: config_lib.Config, folder=None,
                        count: int = CALIBRATION_WINDOWS) -> tuple[np.ndarray, str]:
    """Up to `count` windows (count, samples) of the user's data, and where they came from."""
    from birdkeras import audio, data, windows  # noqa: PLC0415

    rate, width = cfg.audio.sample_rate_hz, int(round(cfg.audio.window_s * cfg.audio.sample_rate_hz))
    if folder is not None:
        clips = []
        for path in windows.list_audio(folder):
            try:
                wave = audio.load(path, rate)
            except audio.AudioError:
                continue
            starts = windows.window_starts(len(wave) / rate, cfg.audio.window_s, cfg.audio.window_s)
            clips.append(windows.cut(wave, rate, starts, cfg.audio.window_s))
            if sum(len(c) for c in clips) >= count:
                break
        if not clips:
            raise QuantizeError(f"--calibration {folder}: no decodable audio")
        return np.concatenate(clips)[:count], str(folder)
    try:
        card = data.read_card(cfg.tfrecords.dir)
    except data.DataError as err:
        raise QuantizeError(f"int8 calibration reads the run's training records "
                            f"({cfg.tfrecords.dir}), which are not here: give --calibration "
                            "FOLDER (a few minutes of your training audio)") from err
    cfg = dataclasses.replace(cfg, input=dataclasses.replace(cfg.input, eval_windows=8))
    batches = data.make_dataset(cfg, len(card["name2label"]), training=False,
                                files=data.shard_files(cfg.tfrecords.dir), global_batch_size=64)
    out = []
    for x, *_ in batches:
        out.append(x.numpy()[:, :width])
        if sum(len(o) for o in out) >= count:
            break
    return np.concatenate(out)[:count], cfg.tfrecords.dir


def quantize_onnx(source: Path, target: Path, log_mels: np.ndarray) -> None:
    """`source` (float32, log-mel in) -> `target` (int8 QDQ), calibrated on `log_mels`."""
    import onnxruntime as ort  # noqa: PLC0415
    from onnxruntime import quantization  # noqa: PLC0415

    name = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).get_inputs()[0].name

    class Reader(quantization.CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{name: log_mels[i:i + 8]} for i in range(0, len(log_mels), 8)])

        def get_next(self):
            return next(self.batches, None)

    prepared = target.with_name(target.stem + "_prepared.onnx")
    quantization.shape_inference.quant_pre_process(str(source), str(prepared),
                                                   skip_symbolic_shape=True)
    quantization.quantize_static(
        str(prepared), str(target), Reader(), quant_format=quantization.QuantFormat.QDQ,
        per_channel=True, activation_type=quantization.QuantType.QUInt8,
        weight_type=quantization.QuantType.QInt8)
    prepared.unlink()


def add_int8(out: Path, card: dict, model_path, cfg: config_lib.Config, calibration=None,
             check=None) -> dict:
    """Writes the int8 CNN(s) beside a float32 export; returns the updated card."""
    from birdkeras import export  # noqa: PLC0415

    waves, origin = calibration_windows(cfg, calibration)
    front_end = NumpyLogMel(**card["front_end"])
    mels = np.concatenate([front_end(waves[i:i + 16]) for i in range(0, len(waves), 16)])
    quantize_onnx(out / "cnn.onnx", out / "cnn_int8.onnx", mels)
    card["artifacts"]["onnx_mel_int8"] = "cnn_int8.onnx"
    if "openvino" in card["artifacts"]:
        export._to_openvino(out / "cnn_int8.onnx", out / "cnn_int8.xml")
        card["artifacts"]["openvino_mel_int8"] = "cnn_int8.xml"
    card["int8"] = {"calibration": origin, "calibration_windows": len(waves)}
    if check is not None:
        (out / export.CARD).write_text(json.dumps(card, indent=1) + "\n")
        card["int8"]["check"] = check_int8(out, *check)
    return card


def check_int8(folder: Path, root, source: str) -> dict:
    """Macro ROC-AUC of the float32 and the int8 CNN on `source`'s labelled soundscapes."""
    import tempfile  # noqa: PLC0415

    from birdkeras import evaluate, infer, layout  # noqa: PLC0415

    audio_dir = Path(root) / layout.SOURCES[source].folder / "train_soundscapes"
    result = {"source": source}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("float32", "int8"):
            icfg = config_lib.InferConfig(int8=precision == "int8", workers=1)
            infer.predict([folder], audio_dir, Path(tmp) / f"{precision}.csv", "onnx", icfg,
                          progress=False)
            scores = evaluate.evaluate(Path(tmp) / f"{precision}.csv", root, source)
            result[f"{precision}_macro_auc"] = scores["macro_auc"]
    result["delta"] = result["int8_macro_auc"] - result["float32_macro_auc"]
    return result

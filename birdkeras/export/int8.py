"""Post-training int8 quantisation of an exported CNN (opt-in: `birdkeras export --int8`).

The CNN that takes log-mel frames (`cnn.onnx`) is quantised statically by ONNX Runtime
(QDQ format: int8 weights per output channel, uint8 activations), its activation
ranges calibrated on a few hundred windows of the user's own training data: by default
the evaluation windows of the run's TFRecords (`tfrecords.dir` of the config saved
beside the model), else a folder of audio (`--calibration`). OpenVINO reads the same
QDQ graph and runs it in int8 (`cnn_int8.xml`). The front end stays float32 (numpy).

Quantisation changes scores; `birdkeras export --int8-check ROOT SOURCE` scores that
source's labelled soundscapes with the float32 and the int8 CNN and prints both macro
ROC-AUCs and their difference (`birdkeras.infer.evaluate.precision_check`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from birdkeras import config as config_lib
from birdkeras.audio import io as audio_io
from birdkeras.audio import windows
from birdkeras.errors import UserError
from birdkeras.records import pipeline
from birdkeras.records.format import RecordsError, list_shards, read_dataset_card

CALIBRATION_WINDOWS = 300


class QuantizeError(UserError):
    """The int8 export lacks what it needs; the message says what to give."""


def calibration_windows(cfg: config_lib.Config, folder=None,
                        count: int = CALIBRATION_WINDOWS) -> tuple[np.ndarray, str]:
    """Up to `count` windows (count, samples) of the user's data, and where they came from."""
    rate, width = cfg.audio.sample_rate_hz, cfg.audio.window_samples
    if folder is not None:
        clips = []
        for path in audio_io.list_audio(folder):
            try:
                wave = audio_io.load(path, rate)
            except audio_io.AudioError:
                continue
            starts = windows.window_starts(len(wave) / rate, cfg.audio.window_s, cfg.audio.window_s)
            clips.append(windows.cut(wave, rate, starts, cfg.audio.window_s))
            if sum(len(c) for c in clips) >= count:
                break
        if not clips:
            raise QuantizeError(f"--calibration {folder}: no decodable audio")
        return np.concatenate(clips)[:count], str(folder)
    try:
        card = read_dataset_card(cfg.tfrecords.dir)
    except RecordsError as err:
        raise QuantizeError(f"int8 calibration reads the run's training records "
                            f"({cfg.tfrecords.dir}), which are not here: give --calibration "
                            "FOLDER (a few minutes of your training audio)") from err
    cfg = dataclasses.replace(cfg, input=dataclasses.replace(cfg.input, eval_windows=8))
    batches = pipeline.make_dataset(cfg, len(card["name2label"]), training=False,
                                    files=list_shards(cfg.tfrecords.dir), global_batch_size=64)
    out = []
    for x, *_ in batches:
        out.append(x.numpy()[:, :width])
        if sum(len(o) for o in out) >= count:
            break
    return np.concatenate(out)[:count], cfg.tfrecords.dir


def quantize_onnx(source: Path, target: Path, log_mels: np.ndarray) -> None:
    """`source` (float32, log-mel in) -> `target` (int8 QDQ), calibrated on `log_mels`."""
    import onnxruntime as ort  # noqa: PLC0415 - only when quantising
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

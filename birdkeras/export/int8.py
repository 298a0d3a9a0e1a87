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

`Int8Options` holds what the quantisation can trade: the number of calibration windows,
weights per output channel or per tensor, and `keep_float="ends"`, which leaves the
first convolution (the stem, which sees the log-mel's full range) and the classifier's
last matrix product in float32 (ONNX Runtime's `nodes_to_exclude`).
`benchmarks/int8_accuracy.py` measures each against float32.
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
KEEP_FLOAT = ("none", "ends")


@dataclasses.dataclass(frozen=True)
class Int8Options:
    """How `quantize_onnx` quantises (the defaults are `birdkeras export --int8`'s).

    Attributes:
        calibration_windows: windows whose activation ranges set the int8 scales.
        per_channel: one weight scale per output channel (else one per tensor).
        keep_float: "none", or "ends": the first convolution and the last matrix
            product stay float32.
    """

    calibration_windows: int = CALIBRATION_WINDOWS
    per_channel: bool = True
    keep_float: str = "none"

    def __post_init__(self):
        if self.keep_float not in KEEP_FLOAT:
            raise QuantizeError(f"int8 keep_float must be one of {KEEP_FLOAT}. "
                                f"Received: {self.keep_float!r}")
        if self.calibration_windows < 1:
            raise QuantizeError("int8 calibration_windows must be at least 1. "
                                f"Received: {self.calibration_windows}")

    def describe(self) -> dict:
        return dataclasses.asdict(self)


class QuantizeError(UserError):
    """The int8 export lacks what it needs; the message says what to give."""


def calibration_windows(cfg: config_lib.Config, folder=None,
                        count: int = CALIBRATION_WINDOWS) -> tuple[np.ndarray, str]:
    """Up to `count` windows (count, samples) of the user's data, and where they came from.

    Args:
        cfg: the exported run's config (its `tfrecords.dir` is the default source).
        folder: a folder of audio (or a list of folders and files) instead.
        count: the windows wanted; fewer come back when the data hold fewer.

    Returns:
        (windows, a description of where they came from).
    """
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
    # Enough consecutive windows per recording to reach `count` (a recording gives at most
    # as many as it holds).
    per_record = max(8, -(-count // max(int(card.get("records", 1)), 1)))
    cfg = dataclasses.replace(cfg, input=dataclasses.replace(cfg.input, eval_windows=per_record))
    batches = pipeline.make_dataset(cfg, len(card["name2label"]), training=False,
                                    files=list_shards(cfg.tfrecords.dir), global_batch_size=64)
    out = []
    for x, *_ in batches:
        out.append(x.numpy()[:, :width])
        if sum(len(o) for o in out) >= count:
            break
    return np.concatenate(out)[:count], cfg.tfrecords.dir


def kept_float_nodes(model_path: Path, keep_float: str) -> list[str]:
    """The names of the nodes `keep_float` leaves in float32 (none, or the graph's first
    convolution and last matrix product)."""
    if keep_float == "none":
        return []
    import onnx  # noqa: PLC0415 - only when quantising

    nodes = onnx.load(str(model_path)).graph.node
    first = next((n.name for n in nodes if n.op_type == "Conv"), None)
    last = next((n.name for n in reversed(nodes) if n.op_type in ("MatMul", "Gemm")), None)
    if first is None or last is None:
        raise QuantizeError(f"{model_path}: keep_float=ends needs a convolution and a final "
                            "matrix product in the CNN")
    return [first, last]


def quantize_onnx(source: Path, target: Path, log_mels: np.ndarray,
                  options: Int8Options = Int8Options()) -> None:
    """`source` (float32, log-mel in) -> `target` (int8 QDQ), calibrated on `log_mels`.

    Args:
        source: the float32 CNN (`cnn.onnx`).
        target: where the int8 CNN goes.
        log_mels: calibration inputs (windows, mels, frames) from the numpy front end.
        options: calibration, per-channel weights, layers kept float32.

    Returns:
        None; `target` is written.
    """
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
        per_channel=options.per_channel,
        nodes_to_exclude=kept_float_nodes(prepared, options.keep_float), activation_type=quantization.QuantType.QUInt8,
        weight_type=quantization.QuantType.QInt8)
    prepared.unlink()

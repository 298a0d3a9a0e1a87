"""Inference: export to every runtime with parity, predict, post-processing, evaluate."""

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import openvino
import pandas as pd
import pytest
import soundfile as sf

from birdkeras.infer import scoring
from birdkeras.export import card as card_lib
from birdkeras.audio import io as audio_io
from birdkeras import cli
from birdkeras.infer import evaluate
from birdkeras.infer import predicting
from birdkeras.export import convert
from birdkeras.export import openvino_support
from birdkeras.export import int8
from birdkeras.model.mel import NumpyLogMel
from birdkeras import infer
from birdkeras.model import classifier
from birdkeras.export import runtime as export_runtime
from birdkeras.infer import submission
from birdkeras.audio import windows
from birdkeras import config as config_lib
from birdkeras.errors import PredictError, UserError
from birdkeras.model.frontend import LogMelSpectrogram

CLASSES = ["amecro", "barswa", "comrav", "houspa", "norcar", "sonspa"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A training run's folder (model, config, classes), with logits spread wide."""
    folder = tmp_path_factory.mktemp("run")
    cfg = config_lib.load_config(None, [
        "audio.sample_rate_hz=16000", "audio.num_mel_bins=32", "audio.fft_length=1024",
        "audio.hop_length=512", "audio.fmax_hz=8000"])
    keras.utils.set_random_seed(0)  # the same test model every run
    model = classifier.build_model(cfg, len(CLASSES))
    # A random backbone's features barely differ between inputs: scale a random head so
    # the logits spread over a few units (a meaningful parity check).
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((4, 16000 * 5)).astype("float32") * np.array([[0.01], [0.1],
                                                                               [0.3], [1.0]])
    features = keras.Model(model.input, model.get_layer("head_dropout").output)(noise)
    features = np.asarray(features) - np.asarray(features).mean(axis=0)
    kernel = rng.standard_normal((features.shape[1], len(CLASSES)))
    kernel *= 3.0 / max((features @ kernel).std(), 1e-12)
    model.get_layer("logits").set_weights([kernel.astype("float32"), np.zeros(len(CLASSES),
                                                                              "float32")])
    model.save(folder / "best.keras")
    config_lib.save_config(cfg, folder / "config.yaml")
    (folder / "name2label.json").write_text(json.dumps({c: i for i, c in enumerate(CLASSES)}))
    return folder


@pytest.fixture(scope="module")
def exported(run_dir):
    card = convert.export(run_dir / "best.keras", run_dir / "export",
                         ("savedmodel", "tflite", "onnx", "openvino"))
    assert sorted(card["artifacts"]) == ["onnx", "onnx_mel", "openvino", "openvino_mel",
                                         "savedmodel", "tflite"]
    return run_dir / "export"


def _tones(freqs, seed: int) -> np.ndarray:
    """5 s clips at 16 kHz: a tone per frequency (random phase) in light noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(16000 * 5) / 16000
    return (0.3 * np.sin(2 * np.pi * np.asarray(freqs)[:, None] * t
                         + rng.uniform(0, 2 * np.pi, (len(freqs), 1)))
            + 0.03 * rng.standard_normal((len(freqs), t.size))).astype("float32")


@pytest.fixture(scope="module")
def tone_run(tmp_path_factory, synth_root):
    """A run whose model separates tones: batch-norm statistics and a head (the
    features' main directions) set from its 'training audio', 24 tone clips saved as
    WAVs. (A random EfficientNet with default batch-norm statistics gives nearly the
    same features for every input: int8 noise would swamp them.)"""
    folder = tmp_path_factory.mktemp("tone_run")
    cfg = config_lib.load_config(None, [
        "audio.sample_rate_hz=16000", "audio.num_mel_bins=32", "audio.fft_length=1024",
        "audio.hop_length=512", "audio.fmax_hz=8000", "model.bn_momentum=0.01",
        "model.mask_probability=0"])
    classes = list(pd.read_csv(synth_root / "birdclef-2026" / "sample_submission.csv",
                               nrows=0).columns[1:])  # so that the int8 check can score it
    keras.utils.set_random_seed(0)
    model = classifier.build_model(cfg, len(classes))
    clips = _tones(np.repeat(np.geomspace(200, 6000, 8), 3), seed=1)
    model(clips, training=True)  # batch-norm statistics of the training audio
    features = np.array(keras.Model(model.input, model.get_layer("head_dropout").output)(clips))
    mean = features.mean(axis=0)
    directions = np.linalg.svd(features - mean, full_matrices=False)[2][:6]
    kernel = directions.T @ np.random.default_rng(0).standard_normal((6, len(classes)))
    kernel = kernel * 2.0 / ((features - mean) @ kernel).std(axis=0)
    model.get_layer("logits").set_weights([kernel.astype("float32"),
                                           (-(mean @ kernel)).astype("float32")])
    model.save(folder / "best.keras")
    config_lib.save_config(cfg, folder / "config.yaml")
    (folder / "name2label.json").write_text(json.dumps({c: i for i, c in enumerate(classes)}))
    (folder / "audio").mkdir()
    for i, clip in enumerate(clips):
        sf.write(folder / "audio" / f"clip{i:02d}.wav", clip, 16000)
    return folder


def _logit(p):
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


@pytest.mark.slow
def test_int8_export_is_calibrated_on_the_runs_data_and_close_to_float32(
        tone_run, run_dir, exported, synth_root, tmp_path, capsys):
    out = tmp_path / "q"
    assert cli.main(["export", "--model", str(tone_run / "best.keras"), "--out", str(out),
                     "--formats", "onnx,openvino", "--int8", "--calibration",
                     str(tone_run / "audio"), "--int8-check", str(synth_root),
                     "birdclef-2026"]) == 0
    card = card_lib.read_export_card(out)
    assert {"onnx_mel_int8", "openvino_mel_int8"} <= set(card["artifacts"])
    assert card["int8"]["calibration_windows"] == 24
    assert card["int8"]["calibration"] == str(tone_run / "audio")
    printed = capsys.readouterr()
    assert "(asked 300: all the data hold)" in printed.out
    assert "int8 changes the scores" not in printed.err  # measured with --int8-check

    # The check scores the labelled soundscapes with both CNNs; its float32 figure is
    # what a plain float32 predict + evaluate gives, and the command prints the change.
    check = card["int8"]["check"]
    assert check["runtime"] == "openvino"
    infer.predict([out], synth_root / "birdclef-2026" / "train_soundscapes", tmp_path / "f.csv",
                  "openvino", config_lib.InferConfig(), progress=False)
    expected = evaluate.evaluate(tmp_path / "f.csv", synth_root, "birdclef-2026")["macro_auc"]
    assert check["f32_macro_auc"] == pytest.approx(expected, abs=1e-9)
    assert check["delta"] == pytest.approx(check["int8_macro_auc"] - expected)
    assert f"{check['delta']:+.4f}" in printed.out

    # Fresh tones: int8 follows float32 (close, not equal), in both runtimes.
    clips = _tones(np.tile(np.geomspace(200, 6000, 8), 2), seed=2)
    full = export_runtime.Runner(out, "onnx")(clips)
    assert _logit(full).std() > 1.0  # spread-out scores: a meaningful comparison
    agreement = {}
    for runtime in ("onnx", "openvino"):
        quantised = export_runtime.Runner(out, runtime, int8=True)(clips)
        assert not np.array_equal(quantised, full)
        agreement[runtime] = np.corrcoef(_logit(quantised).ravel(), _logit(full).ravel())[0, 1]
    assert min(agreement.values()) > 0.75, agreement

    # The calibration data matter: calibrated on near-silence, the same CNN is far off.
    silence = (np.random.default_rng(5).standard_normal((24, 16000 * 5)) * 1e-4).astype("float32")
    int8.quantize_onnx(out / "cnn.onnx", out / "cnn_int8.onnx",
                           NumpyLogMel(**card["front_end"])(silence))
    off = export_runtime.Runner(out, "onnx", int8=True)(clips)
    assert np.corrcoef(_logit(off).ravel(), _logit(full).ravel())[0, 1] < agreement["onnx"] - 0.3

    with pytest.raises(PredictError, match="no int8 onnx CNN"):
        export_runtime.Runner(exported, "onnx", int8=True)
    with pytest.raises(convert.ExportError, match="add onnx or openvino"):
        convert.export(run_dir / "best.keras", tmp_path / "x", ("tflite",), int8=True)


def _weight_source(graph, node):
    """(producer op of `node`'s weight input or "initializer", that producer's node)."""
    producers = {o: n for n in graph.node for o in n.output}
    source = producers.get(node.input[1])
    return ("initializer", None) if source is None else (source.op_type, source)


@pytest.mark.slow
def test_int8_options_keep_the_first_and_last_layers_float_and_scale_per_tensor(
        tone_run, tmp_path, capsys):
    import onnx

    out = tmp_path / "q"
    assert cli.main(["export", "--model", str(tone_run / "best.keras"), "--out", str(out),
                     "--formats", "onnx", "--int8", "--calibration", str(tone_run / "audio"),
                     "--calibration-windows", "10", "--int8-keep-float", "ends",
                     "--int8-per-tensor"]) == 0
    printed = capsys.readouterr()
    assert f"int8 calibrated on 10 windows of {tone_run / 'audio'}" in printed.out
    assert "warning: int8 changes the scores" in printed.err  # no --int8-check given
    card = card_lib.read_export_card(out)
    assert card["int8"] == {"calibration_windows": 10, "per_channel": False,
                            "keep_float": "ends", "calibration": str(tone_run / "audio")}
    graph = onnx.load(str(out / "cnn_int8.onnx")).graph
    initializers = {i.name: i for i in graph.initializer}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    products = [n for n in graph.node if n.op_type in ("MatMul", "Gemm")]
    # The stem and the classifier read float32 weights; the layers between read int8
    # weights through DequantizeLinear, one scale per tensor.
    assert _weight_source(graph, convs[0])[0] == "initializer"
    assert _weight_source(graph, products[-1])[0] == "initializer"
    kind, dequantize = _weight_source(graph, convs[1])
    assert kind == "DequantizeLinear"
    assert onnx.numpy_helper.to_array(initializers[dequantize.input[1]]).size == 1

    clips = _tones(np.tile(np.geomspace(200, 6000, 8), 2), seed=2)
    full = export_runtime.Runner(out, "onnx")(clips)
    quantised = export_runtime.Runner(out, "onnx", int8=True)(clips)
    assert np.corrcoef(_logit(quantised).ravel(), _logit(full).ravel())[0, 1] > 0.75

    # Per channel (the default): one scale per output channel of each quantised conv.
    int8.quantize_onnx(out / "cnn.onnx", out / "cnn_pc.onnx",
                       NumpyLogMel(**card["front_end"])(clips[:8]))
    graph = onnx.load(str(out / "cnn_pc.onnx")).graph
    initializers = {i.name: i for i in graph.initializer}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    kind, dequantize = _weight_source(graph, convs[0])
    assert kind == "DequantizeLinear"
    assert onnx.numpy_helper.to_array(initializers[dequantize.input[1]]).size > 1

    with pytest.raises(int8.QuantizeError, match="keep_float must be one of.*'all'"):
        int8.Int8Options(keep_float="all")
    with pytest.raises(int8.QuantizeError, match="calibration_windows.*Received: 0"):
        int8.Int8Options(calibration_windows=0)


def test_int8_calibration_reads_every_window_the_runs_records_hold_up_to_the_count(
        demo_records):
    from conftest import REPO, read_records
    from birdkeras.records import format as record_format

    overrides, _, shards = demo_records
    cfg = config_lib.load_config(REPO / "configs" / "demo_pre.yaml", overrides)
    width = cfg.audio.window_samples
    # Each recording gives as many consecutive windows as it holds (at least one).
    held = sum(max(len(r[record_format.AUDIO]) // width, 1)
               for r in read_records(shards).values())
    assert held > len(read_records(shards))  # some hold several
    found, origin = int8.calibration_windows(cfg, count=10 ** 6)
    assert origin == str(shards) and found.shape == (held, width)
    assert int8.calibration_windows(cfg, count=20)[0].shape == (20, width)


def test_the_fastest_available_runtime_is_chosen_with_a_reason(exported, monkeypatch):
    assert export_runtime.best_available(exported) == ("openvino", "openvino: the fastest available")
    real_import = __builtins__["__import__"] if isinstance(__builtins__, dict) else __import__

    def no_openvino(name, *args, **kwargs):
        if name == "openvino":
            raise ImportError("not in this image")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr("builtins.__import__", no_openvino)
    runtime, reason = export_runtime.best_available(exported)
    assert runtime == "onnx" and "openvino is not installed" in reason


@pytest.mark.parametrize("rate,fft,hop,mels,fmax", [(32000, 2048, 512, 128, 14000),
                                                   (22050, 1000, 320, 40, 8000),
                                                   (16000, 1024, 1024, 32, 8000)])
def test_matmul_front_end_equals_fft(rate, fft, hop, mels, fmax):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, rate * 2)) * np.linspace(0, 1, rate * 2)).astype("float32")
    x[1, :rate] = 0.0  # silence and a step
    a = LogMelSpectrogram(rate, fft, hop, mels, 50.0, fmax, 80.0)(x)
    b = LogMelSpectrogram(rate, fft, hop, mels, 50.0, fmax, 80.0, dft="matmul")(x)
    assert a.shape == b.shape
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-3)  # dB


def test_every_runtime_matches_keras_on_real_audio(run_dir, exported, real_dir):
    wave = audio_io.load(real_dir / "birdnet" / "soundscape_120s.flac", 16000)
    clips = windows.cut(wave, 16000, np.arange(0, 40, 5.0), 5.0)
    model = classifier.load_keras(run_dir / "best.keras")
    expected = np.asarray(keras.ops.sigmoid(model(clips, training=False)))
    assert expected.std() > 0.05  # spread probabilities, not all ~0.5
    for runtime in export_runtime.RUNTIMES:
        for front_end in ("numpy", "graph"):  # log-mel in numpy + CNN, or the whole graph
            runner = export_runtime.Runner(exported, runtime, front_end=front_end)
            assert (runner.front_end is not None) == (
                front_end == "numpy" and runtime in ("onnx", "openvino"))
            np.testing.assert_allclose(runner(clips), expected, atol=1e-4,
                                       err_msg=f"{runtime} {front_end}")
    keras_runner = export_runtime.Runner(run_dir / "best.keras", "tf")
    np.testing.assert_allclose(keras_runner(clips), expected, atol=1e-4)


@pytest.mark.parametrize("precision", ["f32", "bf16", "f16"])
def test_openvino_runs_in_the_precision_it_is_given(exported, precision, real_dir):
    # Asked explicitly, never OpenVINO's own choice (bf16 by default on avx512_bf16/AMX
    # CPUs): f32 everywhere; bf16/f16 where the CPU has them, else what OpenVINO falls
    # back to, and the runner says which.
    assert openvino_support.openvino_config(0, precision)["INFERENCE_PRECISION_HINT"] == precision
    runner = export_runtime.Runner(exported, "openvino", precision=precision)
    capabilities = openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if precision == "f32":
        assert runner.precision_used == "f32"
    elif precision == "bf16":
        assert runner.precision_used == ("bf16" if "BF16" in capabilities else "f32")
    else:
        assert runner.precision_used in ("f16", "bf16", "f32")
    wave = audio_io.load(real_dir / "birdnet" / "soundscape_120s.flac", 16000)
    clips = windows.cut(wave, 16000, np.arange(0, 40, 5.0), 5.0)
    reference = export_runtime.Runner(exported, "onnx")(clips)
    got = runner(clips)
    if runner.precision_used == "f16":
        # Half precision for real (avx512_fp16 / AMX-FP16 CPUs): this small test model's
        # pooled features are ~4e-6, below f16's normal range (6e-5), so its logits move
        # by tens (measured on a Sapphire Rapids CPU); only that it ran is checked here.
        # f16 suits models whose activations stay in range: check one against f32 first.
        assert got.shape == reference.shape and np.isfinite(got).all()
    else:
        tolerance = 1e-4 if runner.precision_used == "f32" else 3e-2
        np.testing.assert_allclose(got, reference, atol=tolerance)
    with pytest.raises(PredictError, match="OpenVINO option"):
        export_runtime.Runner(exported, "onnx", precision="bf16")


@pytest.mark.parametrize("runtime", ["onnx", "openvino"])
def test_predict_on_onnx_or_openvino_never_imports_tensorflow(exported, synth_root, runtime,
                                                               tmp_path):
    audio = audio_io.list_audio(synth_root / "birdclef-2026" / "train_soundscapes")[0]
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "birdkeras", "predict", "--quiet",
         "--model", str(exported), "--runtime", runtime, "--audio", str(audio),
         "--out", str(tmp_path / "sub.csv")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    imported = {line.split("|")[-1].strip().split(".")[0]
                for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "birdkeras" in imported and runtime.replace("onnx", "onnxruntime") in imported
    assert not imported & {"tensorflow", "keras", "jax", "tf_keras"}, imported
    assert len(pd.read_csv(tmp_path / "sub.csv")) == 12


def test_runtime_errors_name_the_problem(run_dir, exported, tmp_path):
    with pytest.raises(PredictError, match="--runtime tf"):
        export_runtime.Runner(run_dir / "best.keras", "onnx")
    with pytest.raises(PredictError, match="runtime must be"):
        export_runtime.Runner(exported, "torch")
    with pytest.raises(convert.ExportError, match="birdkeras_export.json"):
        export_runtime.Runner(tmp_path, "onnx")
    with pytest.raises(convert.ExportError, match="formats"):
        convert.export(run_dir / "best.keras", tmp_path / "x", ("coreml",))
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "site1.ogg").write_bytes(b"")
    with pytest.raises(PredictError, match="share the stem 'site1'"):
        predicting.check_unique_stems(audio_io.list_audio([tmp_path / "a", tmp_path / "b"]))
    with pytest.raises(audio_io.AudioError, match="not an audio file"):
        audio_io.list_audio([tmp_path / "a" / "site1.ogg", run_dir / "config.yaml"])
    with pytest.raises(PredictError, match="infer.class_order=.*none.csv is not a file"):
        submission.class_columns(str(tmp_path / "none.csv"), CLASSES)
    with pytest.raises(PredictError, match="neither a .keras model nor an export"):
        export_runtime.Runner(tmp_path / "missing.keras", "tf")
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "best.keras").write_bytes((run_dir / "best.keras").read_bytes())
    with pytest.raises(UserError, match="config.yaml"):
        convert.export(lone / "best.keras", tmp_path / "y")  # no training run beside it
    (tmp_path / "no_row_id.csv").write_text("a,b\n1,2\n")
    with pytest.raises(evaluate.EvaluateError, match="no row_id column"):
        evaluate.evaluate(tmp_path / "no_row_id.csv", tmp_path, "birdclef-2026")


def test_birdnet_soundscape_same_rows_in_ogg_mp3_flac(exported, real_dir, tmp_path):
    tables = {}
    for suffix in ("ogg", "mp3", "flac"):
        report = infer.predict([exported], real_dir / "birdnet" / f"soundscape_120s.{suffix}",
                               tmp_path / suffix / "sub.csv", "onnx", progress=False)
        assert report["broken_files"] == []
        tables[suffix] = pd.read_csv(tmp_path / suffix / "sub.csv")
    flac = tables["flac"]
    assert flac["row_id"].tolist() == [f"soundscape_120s_{s}" for s in range(5, 121, 5)]
    for suffix in ("ogg", "mp3"):
        assert tables[suffix]["row_id"].tolist() == flac["row_id"].tolist()
        diff = np.abs(tables[suffix][CLASSES].to_numpy() - flac[CLASSES].to_numpy())
        print(suffix, "vs flac: max", diff.max(), "median", np.median(diff))
        assert diff.max() < 0.05, suffix  # lossy codecs; stated in the README
        assert np.median(diff) < 0.01, suffix


def test_predict_every_real_recording_with_a_broken_one(exported, real_dir, tmp_path):
    folders = [real_dir / d for d in ("opensoundscape", "xeno_canto", "pyha", "maad",
                                      "birdclef_baseline")]
    extra = [real_dir / "birdnet" / "soundscape_old_10s_16k.wav",
             real_dir / "perch" / "21100_36_48.ogg"]
    bad = tmp_path / "truncated.ogg"
    bad.write_bytes((real_dir / "perch" / "21100_36_48.ogg").read_bytes()[:300])
    icfg = config_lib.InferConfig(workers=2, broken_file_duration_s=10.0)
    report = infer.predict([exported], [*folders, *extra, bad], tmp_path / "sub.csv", "tflite",
                           icfg, long_csv=tmp_path / "long.csv", raven_dir=tmp_path / "raven",
                           progress=False)
    sub = pd.read_csv(tmp_path / "sub.csv")
    files = audio_io.list_audio([*folders, *extra, bad])
    broken = {b["file"] for b in report["broken_files"]}
    assert str(bad) in broken and any("empty_2c" in b for b in broken)
    for path in files:
        rows = sub[sub["row_id"].str.rsplit("_", n=1).str[0] == path.stem]
        assert len(rows) >= 1, path  # every file has rows, broken ones too
    # 2.3 s clip: one padded window ending at 5 s; a long one: ceil(decoded s / 5) rows.
    assert sub["row_id"].str.startswith("XC13742_").sum() == 1
    long_one = real_dir / "xeno_canto" / "XC13738_Vermivora_chrysoptera.mp3"
    seconds = len(audio_io.load(long_one, 16000)) / 16000
    assert sub["row_id"].str.startswith("XC13738_").sum() == np.ceil(seconds / 5) >= 11
    stems = sub["row_id"].str.rsplit("_", n=1).str[0]
    broken_stems = {Path(b).stem for b in broken}
    good = sub[~stems.isin(broken_stems)][CLASSES].to_numpy()
    filled = sub[stems == "truncated"][CLASSES].to_numpy()
    assert len(filled) == 2  # broken_file_duration_s=10 -> 2 windows
    # Broken files' rows hold each class's mean over every decoded window of the run.
    for row in sub[stems.isin(broken_stems)][CLASSES].to_numpy():
        np.testing.assert_allclose(row, good.mean(axis=0), atol=1e-6)
    assert ((good >= 0) & (good <= 1)).all()
    long = pd.read_csv(tmp_path / "long.csv")
    assert list(long.columns) == ["file", "start", "end", "label", "score"]
    assert (long["score"] >= 0.1).all() and set(long["label"]) <= set(CLASSES)
    raven = (tmp_path / "raven" / "XC13738_Vermivora_chrysoptera.BirdKeras.selection.table.txt")
    assert raven.read_text().startswith("Selection\tView\tChannel\tBegin Time (s)")


def test_windows_cover_any_length_with_a_padded_last_one():
    np.testing.assert_array_equal(windows.window_starts(60.0, 5.0, 5.0), np.arange(0, 60, 5))
    np.testing.assert_array_equal(windows.window_starts(62.0, 5.0, 5.0), np.arange(0, 65, 5))
    np.testing.assert_array_equal(windows.window_starts(2.3, 5.0, 5.0), [0.0])
    np.testing.assert_array_equal(windows.window_starts(20.0, 5.0, 2.5), np.arange(0, 17, 2.5))
    wave = np.arange(1, 13, dtype=np.float32)  # 12 samples at 2 Hz = 6 s
    clips = windows.cut(wave, 2, windows.window_starts(6.0, 5.0, 5.0), 5.0)
    np.testing.assert_array_equal(clips[1], [11, 12, 0, 0, 0, 0, 0, 0, 0, 0])
    shifted = windows.cut(wave, 2, [0.0], 5.0, shift_s=-1.0)
    np.testing.assert_array_equal(shifted[0, :3], [0, 0, 1])


def test_ensemble_tta_and_sample_submission_order(run_dir, exported, synth_root, tmp_path):
    soundscapes = synth_root / "birdclef-2026" / "train_soundscapes"
    order = tmp_path / "sample_submission.csv"
    columns = ["row_id", "zzz_unknown", *reversed(CLASSES)]
    pd.DataFrame(columns=columns).to_csv(order, index=False)
    base = config_lib.InferConfig(class_order=str(order), workers=0)
    one = infer.predict([exported], soundscapes, tmp_path / "one.csv", "onnx", base,
                        progress=False)
    assert one["classes_filled_with_zero"] == ["zzz_unknown"]
    # The report says what computed the rows: precision, runtime version, CPU flags.
    assert one["precision"]["requested"] == "f32" and one["precision"]["used"] == ["f32"]
    assert one["precision"]["package"] == "onnxruntime" and one["precision"]["version"]
    assert "avx2" in one["cpu"]["flags"]
    single = pd.read_csv(tmp_path / "one.csv")
    assert list(single.columns) == columns and (single["zzz_unknown"] == 0).all()
    infer.predict([exported, run_dir / "best.keras"], soundscapes, tmp_path / "two.csv", "tf",
                  base, progress=False)
    np.testing.assert_allclose(pd.read_csv(tmp_path / "two.csv")[CLASSES], single[CLASSES],
                               atol=1e-4)  # the same model twice, in two runtimes
    taxonomy = tmp_path / "taxonomy.csv"
    pd.DataFrame({"primary_label": CLASSES[::2], "common_name": "x"}).to_csv(taxonomy,
                                                                             index=False)
    assert submission.class_columns(str(taxonomy), CLASSES) == CLASSES[::2]
    (tmp_path / "other.csv").write_text("filename,duration\na.ogg,5\n")
    with pytest.raises(PredictError, match="sample submission"):
        submission.class_columns(str(tmp_path / "other.csv"), CLASSES)
    tta = config_lib.InferConfig(tta_shifts_s=(-1.0, 1.0), workers=1)
    infer.predict([exported], soundscapes, tmp_path / "tta.csv", "onnx", tta, progress=False)
    shifted = pd.read_csv(tmp_path / "tta.csv")
    # Each file's rows: the mean over the shifts of each window's probabilities.
    runner = export_runtime.Runner(exported, "onnx")
    for path in audio_io.list_audio(soundscapes):
        wave = audio_io.load(path, runner.sample_rate_hz, allow_silence=True)
        starts = windows.window_starts(len(wave) / runner.sample_rate_hz, 5.0, 5.0)
        expected = np.mean([runner(windows.cut(wave, runner.sample_rate_hz, starts, 5.0, s))
                            for s in (0.0, -1.0, 1.0)], axis=0)
        rows = shifted[shifted["row_id"].str.startswith(path.stem + "_")][CLASSES]
        np.testing.assert_allclose(rows.to_numpy(), expected, atol=1e-5)


def test_an_ensemble_is_the_mean_of_its_different_models(run_dir, synth_root, tmp_path):
    soundscapes = synth_root / "birdclef-2026" / "train_soundscapes"
    other = keras.models.load_model(run_dir / "best.keras")
    kernel, bias = other.get_layer("logits").get_weights()
    other.get_layer("logits").set_weights([kernel[:, ::-1].copy(), bias + 0.5])
    other.save(tmp_path / "other.keras")
    for name in ("config.yaml", "name2label.json"):  # the run files beside the model
        (tmp_path / name).write_text((run_dir / name).read_text())
    icfg = config_lib.InferConfig(workers=0)
    paths = {"a": run_dir / "best.keras", "b": tmp_path / "other.keras"}
    alone = {}
    for name, path in paths.items():
        infer.predict([path], soundscapes, tmp_path / f"{name}.csv", "tf", icfg, progress=False)
        alone[name] = pd.read_csv(tmp_path / f"{name}.csv")[CLASSES].to_numpy()
    assert np.abs(alone["a"] - alone["b"]).max() > 0.05  # two different models
    infer.predict(list(paths.values()), soundscapes, tmp_path / "both.csv", "tf", icfg,
                  progress=False)
    both = pd.read_csv(tmp_path / "both.csv")[CLASSES].to_numpy()
    np.testing.assert_allclose(both, (alone["a"] + alone["b"]) / 2, atol=1e-5)


def _perfect_submission(synth_root, soundscapes) -> pd.DataFrame:
    """1 where the generator placed a call of the species in the window, else 0.

    Built from the generator's own call list (soundscape_calls.csv), not from the label
    file that `evaluate` reads."""
    calls = pd.read_csv(synth_root / "soundscape_calls.csv")
    species = sorted(pd.read_csv(synth_root / "birdclef-2026" / "sample_submission.csv")
                     .columns[1:])
    rows = []
    for path in sorted(soundscapes.iterdir()):
        here = calls[calls["path"].map(lambda p: Path(p).name) == path.name]
        for end in range(5, 65, 5):
            inside = here[(here["start_s"] < end) & (here["end_s"] > end - 5)]
            rows.append({"row_id": f"{path.stem}_{end}",
                         **{sp: float(sp in set(inside["species"])) for sp in species}})
    return pd.DataFrame(rows)


def test_evaluate_submission(exported, synth_root, tmp_path):
    soundscapes = synth_root / "birdclef-2026" / "train_soundscapes"
    infer.predict([exported], soundscapes, tmp_path / "sub.csv", "onnx", progress=False)
    with pytest.raises(evaluate.EvaluateError, match="nothing to score"):
        evaluate.evaluate(tmp_path / "sub.csv", synth_root, "birdclef-2026")  # wrong classes
    perfect = _perfect_submission(synth_root, soundscapes)
    perfect.to_csv(tmp_path / "perfect.csv", index=False)
    result = evaluate.evaluate(tmp_path / "perfect.csv", synth_root, "birdclef-2026",
                               tmp_path / "eval")
    assert result["scored_classes"] >= 2 and result["macro_auc"] == 1.0
    assert result["padded_cmap"] == 1.0
    for name in ("metrics.json", "per_class.csv", "roc.png", "pr.png"):
        assert (tmp_path / "eval" / name).stat().st_size > 0
    perfect.iloc[1:].to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(evaluate.EvaluateError, match="no rows for 1 labelled"):
        evaluate.evaluate(tmp_path / "short.csv", synth_root, "birdclef-2026")


@pytest.mark.slow
def test_cli_export_predict_evaluate(run_dir, synth_root, tmp_path, capsys):
    assert cli.main(["export", "--model", str(run_dir / "best.keras"), "--out",
                     str(tmp_path / "exp"), "--formats", "onnx"]) == 0
    soundscapes = synth_root / "birdclef-2026" / "train_soundscapes"
    assert cli.main(["predict", "--model", str(tmp_path / "exp"), "--runtime", "onnx",
                     "--audio", str(soundscapes), "--out", str(tmp_path / "sub.csv"),
                     "--quiet", "--set", "infer.smoothing=[0.25,0.5,0.25]"]) == 0
    assert "predicted" in capsys.readouterr().out
    assert cli.main(["evaluate", "--pred", str(tmp_path / "sub.csv"), "--root",
                     str(synth_root)]) == 2  # this model's classes are not the synthetic ones
    assert "nothing to score" in capsys.readouterr().err
    assert cli.main(["predict", "--model", str(tmp_path / "exp"), "--runtime", "tflite",
                     "--audio", str(soundscapes), "--out", str(tmp_path / "x.csv")]) == 2
    assert "no tflite artifact" in capsys.readouterr().err
    assert cli.main(["predict", "--model", str(tmp_path / "exp"), "--audio",
                     str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.csv")]) == 2
    assert "nowhere not found" in capsys.readouterr().err


def test_kaggle_save_run_with_no_test_audio_writes_the_header(exported, synth_root, tmp_path):
    empty = tmp_path / "test_soundscapes"
    empty.mkdir()
    sample = synth_root / "birdclef-2026" / "sample_submission.csv"
    icfg = config_lib.InferConfig(class_order=str(sample), dry_run_files=2,
                                  hidden_test_files=700)
    report = infer.predict([exported], empty, tmp_path / "sub.csv", "onnx", icfg,
                           progress=False,
                           dry_run_audio=synth_root / "birdclef-2026" / "train_soundscapes")
    written = pd.read_csv(tmp_path / "sub.csv")
    assert list(written.columns) == list(pd.read_csv(sample, nrows=0).columns)
    assert len(written) == 0 and report["files"] == 0 and "save run" in report["note"]
    dry = report["dry_run"]
    assert dry["files"] == 2 and dry["windows"] == 24 and dry["seconds"] > 0
    # seconds is rounded to 0.01 s and the projection to 0.1 s in the report.
    assert dry["projected_hidden_run_s"] == pytest.approx(dry["seconds"] / 2 * 700,
                                                          abs=0.005 / 2 * 700 + 0.05)
    saved = json.loads((tmp_path / predicting.REPORT).read_text())
    assert saved["dry_run"] == dry
    with pytest.raises(audio_io.AudioError, match="nowhere not found"):
        infer.predict([exported], tmp_path / "nowhere", tmp_path / "x.csv", "onnx",
                      progress=False)


def test_a_time_budget_drops_optional_work_and_still_writes_every_row(exported, synth_root,
                                                                    tmp_path):
    soundscapes = synth_root / "birdclef-2026" / "train_soundscapes"
    files = audio_io.list_audio(soundscapes)
    full = config_lib.InferConfig(tta_shifts_s=(-1.0, 1.0), workers=0)
    tight = config_lib.InferConfig(tta_shifts_s=(-1.0, 1.0), workers=0, time_budget_s=1e-3)
    infer.predict([exported, exported], soundscapes, tmp_path / "full.csv", "onnx", full,
                  progress=False)
    report = infer.predict([exported, exported], soundscapes, tmp_path / "tight.csv", "onnx",
                           tight, progress=False)
    # The first file measures the cost; then TTA goes, then the second model, then scoring.
    dropped = [e["dropped"] for e in report["time_budget"]["dropped"]]
    assert dropped == ["tta_shifts", f"model {exported}", "scoring"]
    assert all(e["before_file"] == 1 for e in report["time_budget"]["dropped"])
    full_rows, tight_rows = pd.read_csv(tmp_path / "full.csv"), pd.read_csv(tmp_path / "tight.csv")
    assert tight_rows["row_id"].tolist() == full_rows["row_id"].tolist()  # every row there
    first = tight_rows["row_id"].str.startswith(files[0].stem + "_")
    np.testing.assert_allclose(tight_rows[first][CLASSES], full_rows[first][CLASSES], atol=1e-6)
    for row in tight_rows[~first][CLASSES].to_numpy():  # filled: the scored windows' mean
        np.testing.assert_allclose(row, tight_rows[first][CLASSES].mean().to_numpy(), atol=1e-6)
    roomy = dataclasses.replace(tight, time_budget_s=1e6)
    report = infer.predict([exported, exported], soundscapes, tmp_path / "roomy.csv", "onnx",
                           roomy, progress=False)
    assert report["time_budget"]["dropped"] == []
    np.testing.assert_allclose(pd.read_csv(tmp_path / "roomy.csv")[CLASSES],
                               full_rows[CLASSES], atol=1e-6)


def test_time_budget_levels_follow_the_projection():
    now = [0.0]
    budget = scoring.TimeBudget(100.0, shifts=3, models=2, windows_per_file=[10] * 10,
                              clock=lambda: now[0])
    assert budget.plan(0, ["a", "b"])  # nothing measured yet
    budget.done(10, 6)  # 60 units
    now[0] = 6.0  # 0.1 s per unit: the rest at full work would take 9 x 60 x 0.1 = 54 s
    assert budget.plan(1, ["a", "b"]) and (budget.shifts, budget.models) == (3, 2)
    now[0] = 60.0  # 1 s per unit: 9 files x 60 units over; x 20 over; x 10 over (150 s)
    assert budget.plan(1, ["a", "b"]) and (budget.shifts, budget.models) == (1, 1)
    assert [e["dropped"] for e in budget.events] == ["tta_shifts", "model b"]
    now[0] = 95.0  # at one pass, the next file alone (10 units, ~16 s) no longer fits
    assert budget.plan(1, ["a", "b"]) is False
    assert [e["dropped"] for e in budget.events] == ["tta_shifts", "model b", "scoring"]


@pytest.mark.slow
def test_a_run_copied_elsewhere_exports_and_predicts(run_dir, tmp_path, synth_root):
    # The run's config names files of the machine it trained on; none of them exist here.
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("best.keras", "name2label.json"):
        (moved / name).write_bytes((run_dir / name).read_bytes())
    cfg = config_lib.load_config(run_dir / "config.yaml", [
        "train.init_from=/elsewhere/pre/best.keras", "model.weights=/elsewhere/b0_notop.h5",
        "infer.class_order=/elsewhere/sample_submission.csv",
        "data.corrupt_files=/elsewhere/corrupt.json"])
    config_lib.save_config(cfg, moved / "config.yaml")
    card = convert.export(moved / "best.keras", tmp_path / "export", formats=("onnx",))
    assert card["classes"] == CLASSES
    report = infer.predict([moved / "best.keras"], synth_root / "birdclef-2026" /
                           "train_soundscapes", tmp_path / "sub.csv", "tf", progress=False)
    assert report["rows"] > 0
    # A path that is needed and missing still gets its clear error, where it is used.
    with pytest.raises(PredictError, match="infer.class_order=/elsewhere/sample_submission.csv"):
        infer.predict([moved / "best.keras"], synth_root / "birdclef-2026" / "train_soundscapes",
                      tmp_path / "x.csv", "tf", cfg.infer, progress=False)


def test_reports_carry_site_date_and_hour_from_the_file_names(exported, synth_root, tmp_path):
    report = infer.predict([exported], synth_root / "birdclef-2026" / "train_soundscapes",
                           tmp_path / "sub.csv", "onnx", progress=False)
    for item in report["recordings"]:
        site, date, hour = re.search(r"_(S\d+)_(\d{8})_(\d\d)\d{4}\.ogg$", item["file"]).groups()
        assert (item["site"], item["date"], item["hour"]) == (site, date, int(hour))
        assert item["windows"] == 12

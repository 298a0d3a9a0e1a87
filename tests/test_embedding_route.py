"""The embedding route: embed (stand-in Perch v2 SavedModel), heads, out-of-fold
tuning, ONNX export, predict."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import onnxruntime as ort
import numpy as np
import pandas as pd
import pytest
import scipy.special
import tensorflow as tf

from birdkeras.audio import io as audio_io
from birdkeras.embeddings import extract
from birdkeras.embeddings import frozen
from birdkeras.embeddings import heads
from birdkeras.embeddings import tuning
from birdkeras.selftrain import pseudolabel
from birdkeras import infer
from birdkeras.embeddings import fit
from birdkeras.embeddings import runner as route_runner
from birdkeras.datasets import soundscapes
from birdkeras.records import format as record_format
from birdkeras.audio import windows
from birdkeras import config as config_lib
from birdkeras import metrics
from birdkeras import postprocess
from birdkeras.config import load_config

from conftest import kill_when, read_records

YEAR = "birdclef-2026"
FAST = ["route.epochs=15", "route.seq_epochs=15", "route.pca_dim=16", "route.mlp_hidden=16",
        "route.d_model=16", "route.folds=2", "route.batch_size=16"]


def make_standin_perch(folder, labels, window=160_000, dim=48, outputs=("embedding", "label"),
                       dft_matmul=False):
    """A SavedModel with Perch v2's serving signature: `inputs` (batch, window) float32 ->
    {"embedding": (batch, dim), "label": (batch, len(labels))}, assets/labels.csv.
    `dft_matmul`: the spectrum as matrix products (a graph tf2onnx converts)."""
    rng = np.random.default_rng(0)
    proj = tf.constant(rng.standard_normal((256, dim)).astype(np.float32) * 0.1)
    head = tf.constant(rng.standard_normal((dim, len(labels))).astype(np.float32))
    angle = 2 * np.pi * np.outer(np.arange(510), np.arange(256)) / 510
    cos, sin = (tf.constant(np.cos(angle), tf.float32), tf.constant(np.sin(angle), tf.float32))

    class StandIn(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, window], tf.float32, name="inputs")])
        def serve(self, inputs):
            frames = tf.reshape(inputs, (-1, 64, window // 64))
            if dft_matmul:
                spectrum = tf.sqrt(tf.square(frames[:, :, :510] @ cos)
                                   + tf.square(frames[:, :, :510] @ sin) + 1e-12)
            else:
                spectrum = tf.abs(tf.signal.rfft(frames[:, :, :510]))  # (batch, 64, 256)
            emb = tf.matmul(tf.math.log(tf.reduce_mean(spectrum, axis=1) + 1e-3), proj)
            out = {"embedding": emb, "label": tf.matmul(emb, head),
                   "spatial_embedding": tf.zeros([tf.shape(inputs)[0], 4, dim])}
            return {k: v for k, v in out.items() if k in outputs}

    model = StandIn()
    tf.saved_model.save(model, str(folder), signatures={"serving_default": model.serve})
    (folder / "assets").mkdir(exist_ok=True)
    pd.DataFrame({"inat2024_fsd50k": labels}).to_csv(folder / "assets" / "labels.csv",
                                                     index=False)
    return folder


@pytest.fixture(scope="module")
def taxonomy(synth_root):
    return pd.read_csv(synth_root / YEAR / "taxonomy.csv", dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def perch(tmp_path_factory, taxonomy):
    # Its classes: every 2026 species but two by scientific name, another of the same genus
    # as one of those two (a genus proxy), and unrelated species.
    names = taxonomy["scientific_name"].str.strip().tolist()
    labels = names[2:] + [names[0].split(" ")[0] + " proxima", "Unrelata avis", "Zzz zzz"]
    return make_standin_perch(tmp_path_factory.mktemp("perch") / "perch_v2", labels)


@pytest.fixture(scope="module")
def embedded(perch, synth_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("emb") / "soundscapes"
    classes = list(pd.read_csv(synth_root / YEAR / "sample_submission.csv", nrows=0).columns[1:])
    card = extract.run(perch, str(out), audio=[synth_root / YEAR / "train_soundscapes"],
                     root=synth_root, labels_source=YEAR, classes=classes, files_per_shard=1,
                     progress=False)
    return out, card, classes


def test_standin_embeddings_are_written_and_read_back_exactly(embedded, perch, synth_root):
    out, card, classes = embedded
    table = extract.read(str(out))
    model = frozen.load(perch)
    labels = soundscapes.read_labels(synth_root, YEAR)
    assert card["windows"] == len(table.files) == 12 * len(
        audio_io.list_audio(synth_root / YEAR / "train_soundscapes"))
    for path in audio_io.list_audio(synth_root / YEAR / "train_soundscapes"):
        rows = np.flatnonzero(table.files == path.name)
        wave = audio_io.load(path, 32000, allow_silence=True)
        clips = windows.cut(wave, 32000, table.starts[rows], 5.0)
        emb, logits = model(clips)
        np.testing.assert_array_equal(table.embeddings[rows], emb)  # exactly
        np.testing.assert_array_equal(table.logits[rows], logits)
        meta = soundscapes.parse_name(path.name)
        assert set(table.sites[rows]) == {meta["site"]} and set(table.hours[rows]) == {meta["hour"]}
        for r in rows:  # labelled windows carry their targets, the others none
            match = labels[(labels["file"] == path.name) & (labels["start_s"] == table.starts[r])]
            if len(match):
                expected = [classes[k] for k in np.flatnonzero(table.targets[r])]
                assert expected == sorted(match.iloc[0]["labels"])
            else:
                assert np.isnan(table.targets[r]).all()


@pytest.mark.slow
def test_a_killed_embed_run_resumes_with_every_window_once(perch, synth_root, tmp_path):
    out = tmp_path / "emb"
    args = [sys.executable, "-m", "birdkeras", "embed", "--quiet", "--model", str(perch),
            "--out", str(out), "--files-per-shard", "1", "--audio",
            str(synth_root / YEAR / "train_soundscapes"), str(synth_root / "birdclef-2025" /
                                                              "train_soundscapes")]
    kill_when(args, lambda: list(out.glob("*.done.json")), timeout_s=300)
    assert 0 < len(list(out.glob("*.done.json"))) < 4, "no kill between shards"
    audio_in = [synth_root / YEAR / "train_soundscapes", synth_root / "birdclef-2025" /
                "train_soundscapes"]
    extract.run(perch, str(out), audio=audio_in, files_per_shard=1, progress=False)
    extract.run(perch, str(tmp_path / "fresh"), audio=audio_in, files_per_shard=1, progress=False)
    resumed, fresh = extract.read(str(out)), extract.read(str(tmp_path / "fresh"))
    keys = list(zip(resumed.files, resumed.starts))
    assert len(keys) == len(set(keys)) == len(fresh.files)  # every window once
    np.testing.assert_array_equal(resumed.embeddings, fresh.embeddings)


def test_perch_as_onnx_gives_the_savedmodels_embeddings_through_embed(taxonomy, synth_root,
                                                                    tmp_path):
    # Converted as the public perch_v2.onnx was: tf2onnx's command on the SavedModel.
    labels = taxonomy["scientific_name"].str.strip().tolist()
    saved = make_standin_perch(tmp_path / "perch_v2", labels, dft_matmul=True)
    (tmp_path / "onnx").mkdir()
    done = subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(saved),
                           "--output", str(tmp_path / "onnx" / "perch_v2.onnx"), "--opset", "17"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (tmp_path / "onnx" / "labels.csv").write_text((saved / "assets" / "labels.csv").read_text())
    onnx = frozen.load(tmp_path / "onnx" / "perch_v2.onnx")
    assert (onnx.dim, onnx.classes, onnx.window_samples) == (48, labels, 160_000)
    audio = audio_io.list_audio(synth_root / YEAR / "train_soundscapes")[:1]
    tables = []
    for name, model in (("saved", saved), ("onnx", tmp_path / "onnx" / "perch_v2.onnx")):
        extract.run(model, str(tmp_path / name), audio=audio, progress=False)
        tables.append(extract.read(str(tmp_path / name)))
    np.testing.assert_allclose(tables[1].embeddings, tables[0].embeddings, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(tables[1].logits, tables[0].logits, atol=1e-3, rtol=1e-4)
    # The same file on OpenVINO (float32 set explicitly), as `embed --model-runtime
    # openvino` and `predict --runtime openvino` run it.
    clips = windows.cut(audio_io.load(audio[0], 32000), 32000, tables[0].starts, 5.0)
    on_openvino = frozen.load(tmp_path / "onnx" / "perch_v2.onnx", runtime="openvino")
    assert (on_openvino.runtime, onnx.runtime) == ("openvino", "onnx")
    emb, logits = on_openvino(clips)
    np.testing.assert_allclose(emb, tables[0].embeddings, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(logits, tables[0].logits, atol=1e-3, rtol=1e-4)
    (tmp_path / "onnx" / "labels.csv").unlink()  # without labels: embeddings only
    assert frozen.load(tmp_path / "onnx" / "perch_v2.onnx").classes == []


def test_search_finds_the_querys_own_window_first(embedded, tmp_path):
    from birdkeras.cli import main  # noqa: PLC0415

    out, _, _ = embedded
    table = extract.read(str(out))
    path, start = table.paths[7], float(table.starts[7])
    assert main(["search", "--embeddings", str(out), "--query", f"{path}:{start}",
                 "--out", str(tmp_path / "found"), "--top-k", "5"]) == 0
    raven = pd.read_csv(tmp_path / "found" / "search.selection.table.txt", sep="\t")
    assert (raven["Begin Path"][0], raven["Begin Time (s)"][0]) == (path, start)
    assert raven["Similarity"][0] == pytest.approx(1.0, abs=1e-4)
    assert raven["Rank"].tolist() == [1, 2, 3, 4, 5]
    assert (np.diff(raven["Similarity"]) <= 0).all()
    with pytest.raises(Exception, match="past the end"):
        from birdkeras.embeddings import search  # noqa: PLC0415
        search.run([str(out)], [f"{path}:9999"], tmp_path / "none")


def test_signature_mismatches_name_what_they_found(tmp_path):
    short = make_standin_perch(tmp_path / "short", ["a b"], window=80_000)
    with pytest.raises(frozen.EmbedderError, match=r"shape \(None, 80000\).*160000"):
        frozen.load(short)
    blind = make_standin_perch(tmp_path / "blind", ["a b"], outputs=("label",))
    with pytest.raises(frozen.EmbedderError, match=r"returns \['label'\], with no 'embedding'"):
        frozen.load(blind)
    with pytest.raises(frozen.EmbedderError, match="not a SavedModel folder"):
        frozen.load(tmp_path)


def test_species_are_mapped_exactly_then_by_genus_and_the_rest_listed(perch, taxonomy):
    model = frozen.load(perch)
    mapping = frozen.map_classes(model.classes, taxonomy)
    names = taxonomy["scientific_name"].str.strip().tolist()
    codes = taxonomy["primary_label"].tolist()
    assert mapping["mapped"] == codes[2:]
    assert mapping["proxied"] == [codes[0]] and mapping["unmapped"] == [codes[1]]
    logits = np.random.default_rng(0).standard_normal((3, len(model.classes))).astype(np.float32)
    mapped = frozen.mapped_logits(logits, mapping, fill=-10.0)
    np.testing.assert_array_equal(mapped[:, 2:], logits[:, :len(names) - 2])
    genus = [k for k, c in enumerate(model.classes) if c.split(" ")[0] == names[0].split(" ")[0]]
    np.testing.assert_array_equal(mapped[:, 0], logits[:, genus].max(axis=1))
    assert (mapped[:, 1] == -10.0).all()  # unmapped: reported, and not silently 0


@pytest.mark.parametrize("deep", [False, True])
def test_the_sequence_head_scores_a_file_the_same_whatever_its_batch_mates(deep):
    model = heads.sequence_model(24, 5, seq_len=12, pca_dim=8, d_model=16, num_sites=2,
                                 fusion=True, ssm_layers=3 if deep else 1,
                                 window_heads=4 if deep else 0)
    if deep:  # the blocks are there, and the windows attend to each other
        names = [layer.name for layer in model.layers]
        assert {"ssm", "ssm_1", "ssm_2", "window_attention", "positions"} <= set(names)
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((3, 12, 24)).astype(np.float32),
              np.array([0, 1, 2], np.int32), np.array([3, 24, 7], np.int32),
              rng.standard_normal((3, 12, 5)).astype(np.float32)]
    together = np.asarray(model(inputs))
    for i in range(3):
        alone = np.asarray(model([x[i:i + 1] for x in inputs]))
        np.testing.assert_allclose(alone[0], together[i], atol=1e-5)


def _random_embeddings(folder, n_files=12, windows_per_file=12, dim=16, classes=4, seed=0,
                       unlabelled_files=0):
    """An embedding folder of random windows and random labels (nothing to learn); the
    last `unlabelled_files` files have no labels."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    name = record_format.shard_name(-1, 0, 1)
    with open(folder / name, "wb") as f:
        for i in range(n_files):
            for w in range(windows_per_file):
                targets = (rng.random(classes) < 0.3).astype(np.float32)
                f.write(record_format.frame(record_format.encode_example({
                    extract.EMBEDDING: rng.standard_normal(dim).astype(np.float32),
                    extract.TARGETS: targets if i < n_files - unlabelled_files else
                    np.zeros(0, np.float32),
                    extract.FILE: f"BC2026_Train_{i:04d}_S{i % 4:02d}_20250301_{w:02d}0000.ogg",
                    extract.PATH: "", extract.START_S: 5.0 * w, extract.SITE: f"S{i % 4:02d}",
                    extract.DATE: "20250301", extract.HOUR: i % 24, extract.GROUP: f"S{i % 4:02d}"})))
    (folder / record_format.CARD).write_text(json.dumps({
        "model": "random", "kind": "test", "dim": dim, "model_classes": [],
        "classes": [f"c{k}" for k in range(classes)], "sample_rate_hz": 32000,
        "window_samples": 160000, "shards": [name], "windows": n_files * windows_per_file}))
    return [f"c{k}" for k in range(classes)]


@pytest.fixture(scope="module")
def random_route(tmp_path_factory):
    """A route trained on random embeddings with random labels: 144 windows in 200
    dimensions, so any head can memorise the windows it sees (nothing generalises), and
    two unlabelled files of two sites that the default `pseudo_unlabelled` learns from."""
    tmp_path = tmp_path_factory.mktemp("random_route")
    classes = _random_embeddings(tmp_path / "emb", n_files=14, dim=200, unlabelled_files=2)
    pd.DataFrame({"primary_label": classes, "scientific_name": classes,
                  "class_name": "Aves"}).to_csv(tmp_path / "taxonomy.csv", index=False)
    cfg = load_config(None, ["route.epochs=60", "route.seq_epochs=60", "route.pca_dim=0",
                             "route.mlp_hidden=64", "route.folds=2", "route.fusion=false",
                             "route.lr=0.03",
                             "route.d_model=32", "route.batch_size=256"])
    card = fit.train(cfg, [str(tmp_path / "emb")], tmp_path / "route", tmp_path / "taxonomy.csv")
    return tmp_path, card, extract.read(str(tmp_path / "emb"))


@pytest.mark.slow
def test_out_of_fold_folds_keep_a_sites_windows_together(random_route):
    tmp_path, _, table = random_route
    oof = np.load(tmp_path / "route" / "oof.npz")
    labelled = table.labelled
    assert set(np.unique(oof["folds"][labelled])) == {0, 1}
    assert (oof["folds"][~labelled] == -1).all()
    for group in np.unique(table.groups):
        assert len(np.unique(oof["folds"][labelled & (table.groups == group)])) == 1


@pytest.mark.slow
@pytest.mark.parametrize("head", ["probe", "mlp", "sequence"])
def test_out_of_fold_predictions_never_come_from_the_folds_own_windows(random_route, head):
    tmp_path, card, table = random_route
    # Random labels: a head that saw a window memorises it (the final heads, trained on
    # every window, score far above chance); out of fold it is at chance. The route has
    # the default pseudo_unlabelled: unlabelled files of two sites are learnt too.
    assert card["route"]["pseudo_unlabelled"]
    model = keras.models.load_model(tmp_path / "route" / f"{head}.keras")
    rows = np.arange(len(table.embeddings))
    if head == "sequence":
        seen = fit.predict_sequences(model, table, rows, card["sites"], card["seq_len"])
    else:
        seen = model.predict(table.embeddings, verbose=0)
    labelled = table.labelled
    assert metrics.macro_roc_auc(table.targets[labelled], seen[labelled]) > 0.8
    assert abs(card["oof_scores"][head]["macro_auc"] - 0.5) < 0.12


@pytest.mark.slow
def test_route_values_are_tuned_on_the_saved_out_of_fold_predictions(random_route):
    tmp_path, card, table = random_route
    oof = np.load(tmp_path / "route" / "oof.npz")
    again = tuning.tune(table, {h: oof[h] for h in fit.HEADS}, oof["folds"], card["taxa"],
                        load_config(None, ["route.head=sequence"]).route, None)
    assert again["temperatures"] == card["temperatures"]
    assert again["prior_weight"] == card["prior_weight"]
    assert again["cross_window"] == card["cross_window"]
    np.testing.assert_allclose(again["thresholds"], card["thresholds"])
    # Per taxon: this taxonomy has one taxon (Aves), so its steps are the global ones.
    by_taxon = tuning.tune(table, {h: oof[h] for h in fit.HEADS}, oof["folds"], card["taxa"],
                           load_config(None, ["route.head=sequence",
                                              "route.cross_window_by_taxon=true"]).route, None)
    assert by_taxon["cross_window_by_taxon"] == {"Aves": card["cross_window"]}


def _prior_windows(sites_per_fold=4, windows_per_site=20, classes=3, seed=0):
    """Windows whose labels are set by their site (a site's own classes are always on),
    sites kept whole in folds, and uninformative model logits."""
    rng = np.random.default_rng(seed)
    sites = np.repeat([f"S{i:02d}" for i in range(2 * sites_per_fold)], windows_per_site)
    site_classes = rng.random((2 * sites_per_fold, classes)) < 0.5
    site_classes[np.arange(2 * sites_per_fold), np.arange(2 * sites_per_fold) % classes] = True
    site_classes[0] = False  # every class has negatives somewhere
    targets = site_classes[np.repeat(np.arange(2 * sites_per_fold), windows_per_site)]
    n = len(sites)
    table = extract.Table(rng.standard_normal((n, 4)).astype(np.float32), None,
                          targets.astype(np.float32), np.array([f"{s}.ogg" for s in sites]),
                          np.array([""] * n), np.zeros(n), sites, np.full(n, 6), sites, {})
    folds = (np.arange(n) >= n // 2).astype(int)  # sites 0-3: fold 0, sites 4-7: fold 1
    logits = rng.standard_normal(targets.shape).astype(np.float32)
    return table, folds, {"probe": logits}


def test_the_prior_weight_is_tuned_on_priors_from_the_other_folds_only():
    table, folds, oof = _prior_windows()
    rcfg = config_lib.RouteConfig(head="probe")
    tuned = tuning.tune(table, oof, folds, ["Aves"] * 3, rcfg, None)
    # A site's prior built from its own windows would predict them perfectly; from the
    # other folds (which never saw the site) it is the overall frequency: no use.
    assert tuned["prior_weight"] == 0.0
    # The saved prior (for predict) is from every labelled window.
    np.testing.assert_allclose(tuning.prior_of(tuned["prior"], "S01", 6),
                               (table.targets[20:40].sum(axis=0) + 5 * table.targets.mean(axis=0))
                               / (20 + 5), rtol=1e-5)


def test_the_prior_helps_when_other_folds_know_the_site():
    table, _, oof = _prior_windows()
    folds = np.arange(len(table.files)) % 2  # every site in both folds
    tuned = tuning.tune(table, oof, folds, ["Aves"] * 3, config_lib.RouteConfig(head="probe"), None)
    assert tuned["prior_weight"] > 0.0


def test_prior_weights_per_taxon_are_each_taxons_own():
    table, _, oof = _prior_windows()
    folds = np.arange(len(table.files)) % 2  # every site in both folds: the prior helps
    # ... except for class 2, which the model already scores perfectly.
    oof["probe"][:, 2] = 5 * table.targets[:, 2] - 2.5
    taxa = ["Insecta", "Insecta", "Aves"]
    rcfg = config_lib.RouteConfig(head="probe", prior_by_taxon=True)
    tuned = tuning.tune(table, oof, folds, taxa, rcfg, None)
    by_taxon = tuned["prior_weight_by_taxon"]
    assert by_taxon["Insecta"] > 0.0 and by_taxon["Aves"] == 0.0
    weights = tuning.prior_weights(taxa, tuned["prior_weight"], by_taxon)
    np.testing.assert_array_equal(weights, [by_taxon["Insecta"]] * 2 + [0.0])
    p, prior = np.full((2, 3), 0.5, np.float32), np.array([1.0, 0.0, 1.0], np.float32)
    np.testing.assert_allclose(postprocess.prior_fusion(p, prior, weights),
                               [[0.5 + 0.5 * weights[0], 0.5 - 0.5 * weights[0], 0.5]] * 2,
                               rtol=1e-6)
    # A taxon without a tuned weight takes the global one; off, no per-taxon weights.
    np.testing.assert_allclose(tuning.prior_weights(["Mammalia"], 0.3, by_taxon), [0.3])
    assert "prior_weight_by_taxon" not in tuning.tune(
        table, oof, folds, taxa, config_lib.RouteConfig(head="probe"), None)


def test_the_prior_in_logit_space_adds_its_log_odds_and_is_tuned_out_of_fold():
    p = np.array([[0.5, 0.2, 0.9], [0.7, 0.2, 0.1]], np.float32)
    prior = np.array([0.8, 0.0, np.nan], np.float32)
    out = postprocess.prior_fusion(p, prior, 0.5, "logit")
    # By hand: logit(0.5) + 0.5 logit(0.8) = 0.5 ln 4 -> 2/3; logit(0.2) + 0.5 logit(1e-4)
    # = ln(1/4) + 0.5 ln(1e-4 / 0.9999); a NaN prior leaves the class alone.
    np.testing.assert_allclose(out[0, 0], 2 / 3, rtol=1e-5)
    expected = 1 / (1 + np.exp(-(np.log(0.25) + 0.5 * np.log(1e-4 / (1 - 1e-4)))))
    np.testing.assert_allclose(out[:, 1], [expected] * 2, rtol=1e-4)
    np.testing.assert_allclose(out[:, 2], p[:, 2], rtol=1e-6)
    np.testing.assert_allclose(postprocess.prior_fusion(p, prior, 0.5)[:, 2], p[:, 2], rtol=1e-6)
    # Within a class at one site the order is kept (a monotone map of p).
    assert out[1, 0] > out[0, 0]
    np.testing.assert_allclose(postprocess.prior_fusion(p, prior, 0.0, "logit"), p)
    with pytest.raises(ValueError, match="prior space.*'log'"):
        postprocess.prior_fusion(p, prior, 0.5, "log")

    table, _, oof = _prior_windows()
    folds = np.arange(len(table.files)) % 2  # every site in both folds: the prior helps
    rcfg = config_lib.RouteConfig(head="probe", prior_space="logit")
    tuned = tuning.tune(table, oof, folds, ["Aves"] * 3, rcfg, None)
    assert tuned["prior_space"] == "logit" and tuned["prior_weight"] > 0.0
    _, apart, _ = _prior_windows()  # sites held out: the prior from other folds is no use
    assert tuning.tune(table, oof, apart, ["Aves"] * 3, rcfg, None)["prior_weight"] == 0.0


def test_temporal_probe_features_are_each_windows_neighbours_and_position():
    emb = np.array([[1, 10], [3, 30], [2, 20], [7, 70]], np.float32)
    # File a: starts 0, 10, 5 (rows 0, 1, 2 out of order); file b: one window.
    out = tuning.temporal_features(emb, ["a", "a", "a", "b"], [0.0, 10.0, 5.0, 0.0])
    np.testing.assert_array_equal(out[0], [1, 10, 1.5, 15, 2, 20, 0.0])  # first: itself, next
    np.testing.assert_array_equal(out[2], [2, 20, 2.0, 20, 3, 30, 0.5])  # middle: 1 and 3
    np.testing.assert_array_equal(out[1], [3, 30, 2.5, 25, 3, 30, 1.0])  # last: 2, itself
    np.testing.assert_array_equal(out[3], [7, 70, 7, 70, 7, 70, 0.0])


def test_a_temporal_probe_learns_what_only_the_neighbours_show():
    rng = np.random.default_rng(0)
    n_files, per_file, dim = 40, 12, 8
    emb = rng.standard_normal((n_files * per_file, dim)).astype(np.float32)
    files = np.repeat([f"f{i}" for i in range(n_files)], per_file)
    starts = np.tile(np.arange(per_file) * 5.0, n_files)
    # A class is on where the NEXT window of the file has a large first feature.
    nxt = np.concatenate([emb[1:, 0], [0.0]])
    nxt[per_file - 1::per_file] = emb[per_file - 1::per_file, 0]
    y = (nxt > 0.8).astype(np.float32)[:, None]
    table = extract.Table(emb, None, y, files, files, starts, np.full(len(emb), ""),
                          np.full(len(emb), -1), files, {})
    rows, test = np.arange(0, 360), np.arange(360, 480)

    def auc(temporal):
        rcfg = config_lib.RouteConfig(pca_dim=0, epochs=60, lr=0.03, batch_size=128,
                                      probe_temporal=temporal)
        features = fit.window_features(table, rcfg)
        head = fit._window_head(table, features, rows, rcfg, 0, 0)  # noqa: SLF001
        return metrics.macro_roc_auc(y[test], head.predict(features[test], verbose=0))

    plain, temporal = auc(False), auc(True)
    assert plain < 0.65 and temporal > plain + 0.2


def test_the_heads_train_with_the_notebooks_loss_and_optimizer_when_asked():
    targets = np.zeros((10, 2), np.float32)
    targets[:2, 0] = 1  # class 0: 2 positives, 8 negatives; class 1: 5 and 5
    targets[:5, 1] = 1
    rcfg = config_lib.RouteConfig(loss="focal", focal_gamma=1.5, label_smoothing=0.1,
                                  pos_weight_max=3.0, optimizer="adamw", weight_decay=0.01,
                                  schedule="one_cycle", clip_norm=1.0, lr=0.01)
    optimizer, loss = fit.training_setup(rcfg, targets, 100)
    assert loss.pos_weight == [3.0, 1.0]  # 8/2 capped at 3; 5/5
    assert (loss.gamma, loss.label_smoothing) == (1.5, 0.1)
    assert isinstance(optimizer, keras.optimizers.AdamW) and optimizer.weight_decay == 0.01
    assert optimizer.global_clipnorm == 1.0
    schedule = optimizer._learning_rate  # noqa: SLF001 - the schedule itself
    assert float(schedule(0)) == pytest.approx(0.01 / 25)
    assert float(schedule(30)) == pytest.approx(0.01)
    assert float(schedule(100)) == pytest.approx(0.01 / 1000)
    # Padding steps (weight 0) are not counted: row 1 goes (class 0: 1 of 9; class 1: 4 of 9).
    _, padded = fit.training_setup(rcfg, targets, 100, weights=np.r_[1, 0, np.ones(8)])
    assert padded.pos_weight == [3.0, 1.25] and fit.training_setup(
        dataclasses.replace(rcfg, pos_weight_max=100.0), targets, 100,
        weights=np.r_[1, 0, np.ones(8)])[1].pos_weight[0] == 8.0
    cosine, plain = (fit.training_setup(config_lib.RouteConfig(schedule=k, lr=0.01), targets, 100)
                     for k in ("cosine", "constant"))
    assert float(cosine[0]._learning_rate(100)) == pytest.approx(1e-4)  # noqa: SLF001
    assert isinstance(plain[0], keras.optimizers.Adam) and plain[0].global_clipnorm is None
    assert plain[1].pos_weight == [1.0, 1.0] and plain[1].gamma == 0.0
    with pytest.raises(config_lib.ConfigError, match="route.window_heads=3 must be >= 0 and "
                                                     "divide route.d_model=64"):
        config_lib.RouteConfig(window_heads=3)
    with pytest.raises(config_lib.ConfigError, match=r"route.label_smoothing=1.0 must be in"):
        config_lib.RouteConfig(label_smoothing=1.0)
    # A probe trained so learns a learnable class.
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((400, 8)).astype(np.float32)
    y = (emb[:, :1] > 0.5).astype(np.float32)
    table = extract.Table(emb, None, y, np.arange(400).astype(str), np.full(400, ""),
                          np.zeros(400), np.full(400, ""), np.full(400, -1), np.full(400, ""), {})
    rcfg = dataclasses.replace(rcfg, pca_dim=0, epochs=60, batch_size=64, clip_norm=5.0)
    head = fit._window_head(table, emb, np.arange(300), rcfg, 0, 0)  # noqa: SLF001
    assert metrics.macro_roc_auc(y[300:], head.predict(emb[300:], verbose=0)) > 0.95


def test_the_layered_prior_falls_back_site_hour_then_site_then_hour_then_overall():
    y = np.array([[1, 0], [0, 1], [1, 1]], np.float32)
    sites, hours = np.array(["S1", "S1", "S2"]), np.array([0, 5, 5])
    prior = tuning.prior_table(y, sites, hours, np.arange(3), smoothing=1.0)
    overall = [2 / 3, 2 / 3]
    for site, hour, expected in (
            ("S1", 0, [5 / 6, 1 / 3]),  # its site x hour cell: (y0 + overall) / 2
            ("S1", 7, [5 / 9, 5 / 9]),  # a known site at a new hour: the site's cell
            ("S9", 5, [5 / 9, 8 / 9]),  # an unseen site: its hour's cell
            ("S9", 7, overall), ("S9", -1, overall), ("", -1, overall),
            ("", 0, [5 / 6, 1 / 3])):  # no site in the name, hour 0 known
        np.testing.assert_allclose(tuning.prior_of(prior, site, hour), expected, rtol=1e-6,
                                   err_msg=f"{site} {hour}")


def test_a_file_started_at_midnight_is_hour_0_not_unknown():
    assert tuning.file_context("BC2026_Test_0001_S01_20250301_003000.ogg") == ("S01", 0)
    assert tuning.file_context("BC2026_Test_0001_S01_20250301_133000.ogg") == ("S01", 13)
    assert tuning.file_context("recording.wav") == ("", -1)
    y = np.array([[1, 0], [0, 1]], np.float32)
    prior = tuning.prior_table(y, np.array(["S01", "S01"]), np.array([0, 13]), np.arange(2), 0.0)
    np.testing.assert_allclose(tuning.prior_of(prior, *tuning.file_context(
        "BC2026_Test_0001_S01_20250301_003000.ogg")), [1, 0])


def test_the_cross_window_steps_are_the_hand_computed_transforms():
    p = np.array([[0.2, 0.9], [0.6, 0.1], [0.4, 0.5]], np.float32)
    np.testing.assert_allclose(tuning.cross_window(p, {"rank_power": 1.0}),
                               p * np.array([[0.6, 0.9]]), rtol=1e-6)
    top3 = p.mean(axis=0)  # three windows: the top-3 mean is the mean
    np.testing.assert_allclose(tuning.cross_window(p, {"file_topk_power": 0.5}),
                               p * np.sqrt(top3)[None], rtol=1e-6)
    # Adaptive smoothing: p + s (1 - p)(mean of neighbours, ends repeated - p).
    s = 0.5
    first = 0.2 + s * 0.8 * ((0.2 + 0.6) / 2 - 0.2)
    assert tuning.cross_window(p, {"adaptive_smoothing": s})[0, 0] == pytest.approx(first)
    np.testing.assert_array_equal(tuning.cross_window(p, {}), p)


def _chorus_files(rng, n_files=30, per_file=6):
    """(files, starts, y) of `n_files` files: two classes each on for a whole file or not
    at all (a chorus), so that smoothing over a file's windows can help."""
    files = np.repeat([f"f{i}.ogg" for i in range(n_files)], per_file)
    starts = np.tile(np.arange(per_file) * 5.0, n_files)
    y = np.repeat(rng.random((n_files, 2)) < 0.4, per_file, axis=0).astype(np.float32)
    return files, starts, y


def test_per_taxon_cross_window_steps_are_each_taxons_own_tuning():
    rng = np.random.default_rng(0)
    # Two chorus classes (noisy per window: smoothing helps) and two event classes
    # already scored perfectly (nothing can help them).
    files, starts, chorus = _chorus_files(rng)
    events = (rng.random((len(files), 2)) < 0.3).astype(np.float32)
    y = np.concatenate([chorus, events], axis=1)
    probs = np.concatenate([(0.3 * chorus + rng.random(chorus.shape)) / 1.3,
                            0.2 + 0.6 * events], axis=1).astype(np.float32)
    taxa = ["Insecta", "Insecta", "Aves", "Aves"]
    rows = np.arange(len(files))
    by_taxon = tuning.tune_cross_window_by_taxon(y, probs, files, starts, rows, taxa)
    assert by_taxon["Insecta"] == tuning.tune_cross_window(y[:, :2], probs[:, :2], files,
                                                           starts, rows)
    assert any(v > 0 for v in by_taxon["Insecta"].values())
    assert set(by_taxon["Aves"].values()) == {0.0}
    one = probs[files == "f0.ogg"]
    out = tuning.cross_window(one, {"rank_power": 1.0}, by_taxon, taxa)
    np.testing.assert_array_equal(out[:, 2:], one[:, 2:])  # Aves: every step off
    np.testing.assert_allclose(out[:, :2], tuning.cross_window(one[:, :2], by_taxon["Insecta"]),
                               rtol=1e-6)
    # A taxon the tuning did not see gets the global steps.
    np.testing.assert_allclose(
        tuning.cross_window(one, {"rank_power": 1.0}, {"Aves": by_taxon["Aves"]}, taxa)[:, :2],
        one[:, :2] * one[:, :2].max(axis=0, keepdims=True), rtol=1e-6)


def test_cross_window_strengths_are_tuned_where_they_help_and_left_off_where_not():
    rng = np.random.default_rng(0)
    # A class is on for a whole file or not at all; per window, the score is noisy.
    files, starts, y = _chorus_files(rng)
    probs = (0.3 * y + rng.random(y.shape)).astype(np.float32) / 1.3
    rows = np.arange(len(files))
    steps = tuning.tune_cross_window(y, probs, files, starts, rows)
    assert any(v > 0 for v in steps.values())
    tuned = np.concatenate([tuning.cross_window(probs[files == f], steps)
                            for f in dict.fromkeys(files)])
    assert metrics.macro_roc_auc(y, tuned) > metrics.macro_roc_auc(y, probs) + 0.02
    # Already perfect: nothing can help, every step stays off.
    assert set(tuning.tune_cross_window(y, 0.2 + 0.6 * y, files, starts, rows).values()) == {0.0}


def _sequence_table(lengths, sites, labelled, dim=6, classes=3, seed=0):
    """A Table of soundscape files with `lengths` windows at `sites`, labelled or not."""
    rng = np.random.default_rng(seed)
    files = np.concatenate([[f"f{i}_{s}.ogg"] * n for i, (n, s) in enumerate(zip(lengths, sites))])
    site = np.concatenate([[s] * n for n, s in zip(lengths, sites)])
    starts = np.concatenate([np.arange(n) * 5.0 for n in lengths])
    on = np.concatenate([[lab] * n for n, lab in zip(lengths, labelled)])
    targets = (rng.random((len(files), classes)) < 0.4).astype(np.float32)
    targets[~on] = np.nan
    n = len(files)
    return extract.Table(rng.standard_normal((n, dim)).astype(np.float32), None, targets,
                         files, np.array([""] * n), starts, site, np.full(n, 6), site, {})


def test_padding_steps_of_a_short_file_carry_no_loss(monkeypatch):
    # A 3-window file with seq_len 6: one run, its last 3 steps padding.
    w = _sequence_table([3], ["S1"], [True])
    rcfg = config_lib.RouteConfig(seq_len=6, pca_dim=0, d_model=8, seq_epochs=2,
                                  batch_size=4, fusion=False)
    seen = {}
    real_fit = fit._fit
    monkeypatch.setattr(fit, "_fit", lambda *a, **k: seen.update(k) or real_fit(*a, **k))
    fit._sequence_head(w, np.arange(3), w.targets, rcfg, ["S1"], seed=0)
    np.testing.assert_array_equal(seen["weights"], [[1] * 3 + [0] * 3])
    # And a zero weight really takes a step out of training: whatever its targets are,
    # the head trains to the same weights.
    runs, mask = fit.sequences(w, np.arange(3), 6)
    inputs = fit._sequence_inputs(w, runs, ["S1"], False)
    trained = []
    for pad_target in (0.0, 1.0):
        targets = w.targets[runs].copy()
        targets[~mask] = pad_target
        model = heads.sequence_model(6, 3, 6, 0, 8, 1, 4, False)
        model.get_layer("projection").fit(w.embeddings)
        trained.append(fit._fit(model, inputs, targets, rcfg, 2, 0,
                                weights=mask.astype(np.float32)).get_weights())
    for a, b in zip(*trained):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("fusion", [False, True])
def test_prototypes_start_at_the_class_means_of_the_heads_input_features(fusion):
    keras.utils.set_random_seed(0)
    model = heads.sequence_model(6, 3, 4, 0, 8, 1, 4, fusion)
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((5, 4, 6)).astype(np.float32), np.zeros(5, np.int32),
              np.full(5, 6, np.int32)] + ([rng.standard_normal((5, 4, 3)).astype(np.float32)]
                                          if fusion else [])
    model.get_layer("projection").fit(inputs[0].reshape(-1, 6))
    targets = np.zeros((5, 4, 3), np.float32)
    targets[0, :2, 0] = 1.0  # class 0: two real windows ...
    targets[1, 3, 0] = 1.0   # ... and a padding step, which does not count
    targets[2, 1, 1] = 0.7   # class 1: one soft positive; class 2: none
    mask = np.ones((5, 4), bool)
    mask[1, 3] = False
    before = np.array(model.get_layer("prototypes").prototypes)
    assert heads.init_prototypes(model, inputs, targets, mask) == 2
    head = model.get_layer("prototypes")
    features = np.asarray(keras.Model(model.inputs, head.input[0] if fusion else head.input)(
        inputs))
    after = np.array(head.prototypes)
    np.testing.assert_allclose(after[0], features[0, :2].mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(after[1], features[2, 1], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(after[2], before[2])


def test_the_route_setting_starts_the_sequence_heads_prototypes_at_class_means(monkeypatch):
    w = _sequence_table([3], ["S1"], [True])
    calls = []
    monkeypatch.setattr(heads, "init_prototypes", lambda *a: calls.append(a) or 0)
    for init in ("random", "class_mean"):
        rcfg = config_lib.RouteConfig(seq_len=6, pca_dim=0, d_model=8, seq_epochs=1,
                                      batch_size=4, fusion=False, prototype_init=init)
        fit._sequence_head(w, np.arange(3), w.targets, rcfg, ["S1"], seed=0)
    assert len(calls) == 1  # class_mean only, with the padding mask
    np.testing.assert_array_equal(calls[0][3], [[True] * 3 + [False] * 3])


def test_a_heads_swa_ends_at_the_mean_of_its_last_epochs_weights(monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 6)).astype(np.float32)
    y = (x[:, :3] > 0).astype(np.float32)
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(self.model.get_weights())

    real_fit = keras.Model.fit
    monkeypatch.setattr(keras.Model, "fit", lambda self, *a, **k: real_fit(
        self, *a, **{**k, "callbacks": [*k.get("callbacks", []), Record()]}))
    rcfg = config_lib.RouteConfig(pca_dim=0, batch_size=8, swa_epochs=2)
    model = heads.probe_model(6, 3, 0, 0)
    model.get_layer("projection").fit(x)
    fit._fit(model, x, y, rcfg, 4, 0)
    assert len(seen) == 4
    for got, last, before in zip(model.get_weights(), seen[-1], seen[-2]):
        np.testing.assert_allclose(got, (last + before) / 2, rtol=1e-5, atol=1e-6)
    assert any(np.abs(a - b).max() > 1e-6 for a, b in zip(seen[-1], seen[-2]))
    with pytest.raises(config_lib.ConfigError, match="swa_epochs >= 0.*-1"):
        config_lib.RouteConfig(swa_epochs=-1)


def test_distillation_mixes_the_frozen_models_probabilities_into_mapped_classes_only():
    w = _sequence_table([2, 2], ["S1", "S2"], [True, False])
    logits = np.array([[0.0, 5.0, np.log(3.0)]] * 4, np.float32)
    w = dataclasses.replace(w, logits=logits)
    mapping = {"index": [4, -1, -1], "proxies": {"2": [7, 8]}}  # class 1 unmapped
    soft = fit.distilled_targets(w, mapping, 0.25)
    # By hand: class 0: 0.75 y + 0.25 * 0.5; class 2: 0.75 y + 0.25 * 0.75; class 1: y.
    np.testing.assert_allclose(soft[:2, 0], 0.75 * w.targets[:2, 0] + 0.125, rtol=1e-6)
    np.testing.assert_allclose(soft[:2, 2], 0.75 * w.targets[:2, 2] + 0.1875, rtol=1e-6)
    np.testing.assert_array_equal(soft[:, 1], w.targets[:, 1])
    assert np.isnan(soft[2:]).all()  # unlabelled windows stay unlabelled
    assert fit.distilled_targets(w, mapping, 0.0) is w.targets
    assert fit.distilled_targets(dataclasses.replace(w, logits=None), mapping, 0.25) is w.targets
    # The sequence head's training targets start from them.
    rcfg = config_lib.RouteConfig(pseudo_unlabelled=False, distill_weight=0.25)
    rows, targets = fit._sequence_training(w, w.embeddings, np.arange(2), np.arange(4),
                                           np.zeros(4, int), None, rcfg, None, soft)
    np.testing.assert_array_equal(rows, [0, 1])
    np.testing.assert_allclose(targets[:2], soft[:2])
    with pytest.raises(config_lib.ConfigError, match="route.distill_weight=1.0"):
        config_lib.RouteConfig(distill_weight=1.0)


def test_a_folds_sequence_head_never_hears_its_held_out_sites():
    # S1 and S2 labelled (folds 0 and 1), each with an unlabelled file too; S3 never labelled.
    w = _sequence_table([4, 4, 4, 4, 4], ["S1", "S2", "S1", "S2", "S3"],
                        [True, True, False, False, False])
    folds = np.where(w.labelled, np.where(w.sites == "S1", 0, 1), -1)
    cfg = load_config(None, ["route.epochs=2", "route.pca_dim=0"])
    soundscape = np.arange(len(w.files))
    for k, held_site in ((0, "S1"), (1, "S2")):
        train_rows = np.flatnonzero(w.labelled & (folds != k))
        rows, _ = fit._sequence_training(w, w.embeddings, train_rows, soundscape, folds, k,
                                         cfg.route, cfg)
        assert held_site not in set(w.sites[rows])
        assert "S3" in set(w.sites[rows])  # unlabelled audio of no held-out site is used
    rows, _ = fit._sequence_training(w, w.embeddings, np.flatnonzero(w.labelled), soundscape,
                                     folds, None, cfg.route, cfg)
    assert set(w.sites[rows]) == {"S1", "S2", "S3"}  # the final heads hear everything


def test_the_cpu_notebook_picks_onnx_runtime_for_a_route_folder(tmp_path):
    (tmp_path / route_runner.CARD).write_text("{}")
    runtime, reason = infer.runners.best_runtime(tmp_path)
    assert runtime == "onnx" and "route" in reason


def test_heads_in_onnx_match_keras(tmp_path):

    rng = np.random.default_rng(0)
    for name, model, feeds in (
            ("probe", heads.probe_model(24, 6, pca_dim=8, hidden=16),
             {"embedding": rng.standard_normal((5, 24)).astype(np.float32)}),
            ("sequence", heads.sequence_model(24, 6, seq_len=12, pca_dim=8, d_model=16,
                                              num_sites=2, fusion=True),
             {"embedding": rng.standard_normal((3, 12, 24)).astype(np.float32),
              "site": np.array([0, 1, 2], np.int32), "hour": np.array([1, 24, 5], np.int32),
              "mapped_logits": rng.standard_normal((3, 12, 6)).astype(np.float32)}),
            # The 2026 notebook's sizes: d_model 320, state 32, 4 SSM layers, 8 heads
            # of attention between the windows.
            ("notebook", heads.sequence_model(24, 6, seq_len=12, pca_dim=8, d_model=320,
                                              num_sites=2, state_size=32, fusion=True,
                                              ssm_layers=4, window_heads=8),
             {"embedding": rng.standard_normal((3, 12, 24)).astype(np.float32),
              "site": np.array([0, 1, 2], np.int32), "hour": np.array([1, 24, 5], np.int32),
              "mapped_logits": rng.standard_normal((3, 12, 6)).astype(np.float32)})):
        model.get_layer("projection").fit(rng.standard_normal((40, 24)).astype(np.float32))
        fit.export_onnx(model, tmp_path / f"{name}.onnx")
        session = ort.InferenceSession(str(tmp_path / f"{name}.onnx"),
                                       providers=["CPUExecutionProvider"])
        got = session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})[0]
        expected = np.asarray(model([feeds[t.name] for t in model.inputs]
                                    if len(model.inputs) > 1 else feeds["embedding"]))
        np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.fixture(scope="module")
def trained_route(embedded, synth_root, tmp_path_factory):
    """A route trained by the command on the stand-in's soundscape embeddings; its
    output (the unmapped species are listed)."""
    out, _, _ = embedded
    tmp_path = tmp_path_factory.mktemp("trained_route")
    (tmp_path / "cfg.yaml").write_text("route:\n" + "".join(
        f"  {kv.split('=')[0].split('.')[1]}: {kv.split('=')[1]}\n" for kv in FAST))
    args = ["route", "--cfg", str(tmp_path / "cfg.yaml"), "--embeddings", str(out),
            "--taxonomy", str(synth_root / YEAR / "taxonomy.csv"), "--out", str(tmp_path / "route")]
    done = subprocess.run([sys.executable, "-m", "birdkeras", *args], capture_output=True,
                          text=True, timeout=900, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp_path / "route", done.stdout


@pytest.mark.slow
def test_route_training_lists_the_unmapped_species(trained_route, taxonomy):
    route, printed = trained_route
    assert "1 unmapped" in printed and taxonomy["primary_label"][1] in printed
    card = json.loads((route / route_runner.CARD).read_text())
    assert card["head"] == "sequence" and set(card["heads"]) == {"probe", "mlp", "sequence", "blend"}


@pytest.mark.slow
def test_a_route_teacher_pseudo_labels_exactly_as_predict_scores(trained_route, synth_root,
                                                                 tmp_path):
    route, _ = trained_route
    audio = synth_root / YEAR / "train_soundscapes"
    cfg = load_config(None, [f"data.root={synth_root}", "pseudo.threshold=0",
                             "pseudo.files_per_shard=2", "infer.adaptive_smoothing=0.3"])
    pseudolabel.run([route], [audio], str(tmp_path / "pseudo"), cfg, runtime="onnx",
                    progress=False)
    infer.predict([route], audio, tmp_path / "sub.csv", "onnx",
                  pseudolabel.teacher_infer_config(cfg), progress=False)
    sub = pd.read_csv(tmp_path / "sub.csv").set_index("row_id")
    soft = {}
    for rid, rec in read_records(tmp_path / "pseudo").items():
        name, start = rid.removeprefix("pseudo/").split("@")
        soft[f"{Path(name).stem}_{int(float(start)) + 5}"] = rec[record_format.SOFT_TARGETS]
    assert sorted(soft) == sorted(sub.index)
    np.testing.assert_allclose(np.stack([soft[r] for r in sub.index]), sub.to_numpy(),
                               atol=1e-5)


@pytest.mark.slow
def test_a_route_trains_and_predict_writes_a_submission_with_it(trained_route, embedded,
                                                                 synth_root, tmp_path):
    route = trained_route[0]
    _, _, classes = embedded
    sample = synth_root / YEAR / "sample_submission.csv"
    icfg = config_lib.InferConfig(class_order=str(sample), adaptive_smoothing=0.3)
    report = infer.predict([route], synth_root / YEAR / "train_soundscapes",
                           tmp_path / "sub.csv", "onnx", icfg, progress=False)
    sub = pd.read_csv(tmp_path / "sub.csv")
    assert list(sub.columns) == ["row_id", *classes] and len(sub) == report["rows"] > 0
    values = sub[classes].to_numpy()
    assert ((values >= 0) & (values <= 1)).all() and values.std() > 0
    runner = route_runner.RouteRunner(route, "tf", icfg)
    onnx_runner = route_runner.RouteRunner(route, "onnx", icfg)
    path = audio_io.list_audio(synth_root / YEAR / "train_soundscapes")[0]
    clips = windows.cut(audio_io.load(path, 32000), 32000, np.arange(0, 60, 5.0), 5.0)
    np.testing.assert_allclose(runner.score_file(clips, path.name),
                               onnx_runner.score_file(clips, path.name), atol=1e-4)
    moved = config_lib.InferConfig(embedder=str(tmp_path / "nowhere"))
    with pytest.raises(Exception, match="set infer.embedder"):
        route_runner.RouteRunner(route, "onnx", moved)


@pytest.mark.slow
def test_circular_shift_tta_is_the_mean_of_the_rotated_sequences_logits(trained_route,
                                                                         synth_root):
    route = trained_route[0]
    off = config_lib.InferConfig(taxon_temperature=False, site_prior=False, cnn_fusion=False,
                                 route_cross_window=False)
    plain = route_runner.RouteRunner(route, "onnx", off)
    tta = route_runner.RouteRunner(
        route, "onnx", dataclasses.replace(off, route_shift_tta=(1, -1, 12)))
    path = audio_io.list_audio(synth_root / YEAR / "train_soundscapes")[0]
    clips = windows.cut(audio_io.load(path, 32000), 32000, np.arange(0, 60, 5.0), 5.0)
    # Rotating the audio windows rotates the embeddings: each shifted run by hand.
    logits = [np.roll(scipy.special.logit(plain.score_file(np.roll(clips, s, axis=0),
                                                           path.name).astype(np.float64)),
                      -s, axis=0) for s in (0, 1, -1)]  # 12 rotates a 12-window file to itself
    expected = scipy.special.expit(np.mean(logits, axis=0))
    got = tta.score_file(clips, path.name)
    # Near 0 or 1 a float32 probability does not give its logit back: compare the rest.
    exact = np.all([np.abs(v) < 9 for v in logits], axis=0)
    assert exact.mean() > 0.8
    np.testing.assert_allclose(got[exact], expected[exact], atol=1e-4)
    assert np.abs(got - plain.score_file(clips, path.name)).max() > 1e-3  # it does something


def test_an_embedding_folder_goes_to_the_notebooks_cache_and_back(embedded, perch, taxonomy,
                                                                  synth_root, tmp_path):
    from birdkeras import cli  # noqa: PLC0415
    from birdkeras.embeddings import cache  # noqa: PLC0415

    out, _, classes = embedded
    table = extract.read(str(out))
    done = cache.export(str(out), tmp_path / "cache", synth_root / YEAR / "taxonomy.csv")
    meta = pd.read_parquet(tmp_path / "cache" / cache.META)
    arrays = np.load(tmp_path / "cache" / cache.ARRAYS)
    assert done["windows"] == len(meta) == len(table.files) and done["scores"]
    assert list(meta.columns[:4]) == ["row_id", "filename", "site", "hour_utc"]
    first = meta.iloc[1]
    assert first.row_id == f"{Path(table.files[1]).stem}_{int(table.starts[1]) + 5}"
    np.testing.assert_array_equal(arrays[cache.EMBEDDINGS], table.embeddings)
    # An exactly mapped class carries its own logit; a class Perch lacks the fill.
    perch_labels = pd.read_csv(perch / "assets" / "labels.csv").iloc[:, 0].tolist()
    sci = dict(zip(taxonomy["primary_label"], taxonomy["scientific_name"].str.strip()))
    k = next(i for i, c in enumerate(classes) if sci[c] in perch_labels)
    np.testing.assert_array_equal(arrays[cache.SCORES][:, k],
                                  table.logits[:, perch_labels.index(sci[classes[k]])])
    assert (arrays[cache.SCORES][:, 1] == -10.0).all()  # the stand-in lacks it, no genus mate

    back = tmp_path / "back"
    assert cli.main(["embed-cache", "import", "--cache", str(tmp_path / "cache"),
                     "--classes", str(synth_root / YEAR / "sample_submission.csv"),
                     "--labels", YEAR, "--root", str(synth_root), "--model", str(perch),
                     "--out", str(back)]) == 0
    again = extract.read(str(back))
    np.testing.assert_array_equal(again.embeddings, table.embeddings)
    np.testing.assert_array_equal(again.logits, arrays[cache.SCORES])
    np.testing.assert_array_equal(again.starts, table.starts)
    for key in ("files", "sites", "hours", "groups"):
        np.testing.assert_array_equal(getattr(again, key), getattr(table, key))
    np.testing.assert_array_equal(again.labelled, table.labelled)
    assert table.labelled.any() and (~table.labelled).any()
    np.testing.assert_array_equal(again.targets[again.labelled], table.targets[table.labelled])
    assert again.card["model"] == str(perch) and again.card["model_classes"] == classes
    # The route trains on the imported cache as on embed's folder (its logits mapped 1:1),
    # here with temporal probe features, which predict computes from a file's windows, and
    # a deeper sequence head (2 SSM blocks, attention between windows).
    card = fit.train(load_config(None, [*FAST, "route.probe_temporal=true", "route.ssm_layers=2",
                                        "route.window_heads=4"]), [str(back)],
                     tmp_path / "route", synth_root / YEAR / "taxonomy.csv")
    assert set(card["oof_scores"]) >= {"probe", "sequence"} and card["embedder"] == str(perch)
    assert len(card["mapping"]["mapped"]) == len(classes)
    off = config_lib.InferConfig(taxon_temperature=False, site_prior=False, cnn_fusion=False,
                                 route_cross_window=False, route_head="probe")
    runner = route_runner.RouteRunner(tmp_path / "route", "onnx", off)
    path = audio_io.list_audio(synth_root / YEAR / "train_soundscapes")[0]
    clips = windows.cut(audio_io.load(path, 32000), 32000, np.arange(0, 60, 5.0), 5.0)
    emb, _ = runner.embedder(clips.astype(np.float32))
    probe = keras.models.load_model(tmp_path / "route" / "probe.keras", compile=False)
    features = tuning.temporal_features(emb, [path.name] * len(emb), np.arange(len(emb)) * 5.0)
    assert features.shape == (12, 3 * emb.shape[1] + 1)
    np.testing.assert_allclose(runner.score_file(clips, path.name),
                               scipy.special.expit(np.asarray(probe(features))), atol=1e-4)
    sequence = route_runner.RouteRunner(tmp_path / "route", "onnx",
                                        dataclasses.replace(off, route_head="sequence"))
    keras_sequence = route_runner.RouteRunner(tmp_path / "route", "tf",
                                              dataclasses.replace(off, route_head="sequence"))
    np.testing.assert_allclose(sequence.score_file(clips, path.name),
                               keras_sequence.score_file(clips, path.name), atol=1e-4)


def test_a_notebook_cache_without_our_columns_imports_and_bad_ones_are_named(tmp_path):
    from birdkeras.embeddings import cache  # noqa: PLC0415

    folder = tmp_path / "cache"
    folder.mkdir()
    name = "BC2026_Train_0001_S08_20250606_030007"
    pd.DataFrame({"row_id": [f"{name}_5", f"{name}_10"], "site": ["S08", "S08"],
                  "hour_utc": [3, 3]}).to_parquet(folder / cache.META)
    emb = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.savez(folder / cache.ARRAYS, emb_full=emb, scores_full_raw=np.ones((2, 3), np.float32))
    card = cache.import_(folder, str(tmp_path / "emb"), ["a", "b", "c"])
    table = extract.read(str(tmp_path / "emb"))
    assert card["windows"] == 2 and list(table.files) == [f"{name}.ogg"] * 2
    np.testing.assert_array_equal(table.starts, [0.0, 5.0])
    np.testing.assert_array_equal(table.embeddings, emb)
    assert list(table.sites) == ["S08", "S08"] and list(table.hours) == [3, 3]
    assert not table.labelled.any()
    with pytest.raises(cache.CacheError, match="scores_full_raw has 3 classes, the competition 2"):
        cache.import_(folder, str(tmp_path / "emb2"), ["a", "b"])
    np.savez(folder / cache.ARRAYS, emb_full=emb[:1])
    with pytest.raises(cache.CacheError, match="2 rows in full_perch_meta.parquet but 1"):
        cache.import_(folder, str(tmp_path / "emb3"), ["a", "b", "c"])
    np.savez(folder / cache.ARRAYS, embeddings=emb)
    with pytest.raises(cache.CacheError, match=r"emb_full in full_perch_arrays.npz \(has "):
        cache.import_(folder, str(tmp_path / "emb4"), ["a", "b", "c"])
    np.savez(folder / cache.ARRAYS, emb_full=emb)
    pd.DataFrame({"row_id": ["no_end_here", "x_5"]}).to_parquet(folder / cache.META)
    with pytest.raises(cache.CacheError, match="'no_end_here' \\(row 0\\)"):
        cache.import_(folder, str(tmp_path / "emb5"), ["a", "b", "c"])


def test_the_heads_blend_is_tuned_on_windows_every_head_scored():
    rng = np.random.default_rng(0)
    y = (rng.random((300, 4)) < 0.3).astype(np.float32)
    noise = lambda: rng.standard_normal(y.shape).astype(np.float32)  # noqa: E731
    # The MLP knows classes 0-1, the sequence head 2-3, the probe nothing; the sequence
    # head scored only the first 200 windows (soundscapes), the rest are NaN.
    oof = {"probe": noise(),
           "mlp": np.concatenate([3 * y[:, :2], np.zeros((300, 2))], axis=1) + noise(),
           "sequence": np.concatenate([np.zeros((300, 2)), 3 * y[:, 2:]], axis=1) + noise()}
    oof["sequence"][200:] = np.nan
    weights, blended = tuning.tune_head_blend(y, oof, np.arange(300))
    assert sum(weights.values()) == pytest.approx(1.0)
    assert weights["mlp"] > 0 and weights["sequence"] > 0 and weights["probe"] < 0.3
    np.testing.assert_allclose(blended[:200], sum(weights[h] * oof[h][:200] for h in oof),
                               rtol=1e-5)
    assert np.isnan(blended[200:]).all()
    blend_auc = metrics.macro_roc_auc(y[:200], blended[:200])
    for head in oof:
        assert blend_auc > metrics.macro_roc_auc(y[:200], oof[head][:200]) + 0.02
    # A head that scored nothing (no soundscapes) takes no part.
    oof["sequence"][:] = np.nan
    weights, _ = tuning.tune_head_blend(y, oof, np.arange(300))
    assert set(weights) == {"probe", "mlp"} and weights["mlp"] > weights["probe"]


@pytest.mark.slow
def test_the_blended_heads_predict_the_weighted_sum_of_each_heads_logits(trained_route,
                                                                         synth_root):
    route = trained_route[0]
    card = json.loads((route / route_runner.CARD).read_text())
    assert "blend" in card["heads"] and set(card["head_weights"]) == {"probe", "mlp", "sequence"}
    assert "blend" in card["oof_scores"]
    off = config_lib.InferConfig(taxon_temperature=False, site_prior=False, cnn_fusion=False,
                                 route_cross_window=False)
    path = audio_io.list_audio(synth_root / YEAR / "train_soundscapes")[0]
    clips = windows.cut(audio_io.load(path, 32000), 32000, np.arange(0, 60, 5.0), 5.0)
    logit = {h: scipy.special.logit(route_runner.RouteRunner(
        route, "onnx", dataclasses.replace(off, route_head=h)).score_file(clips, path.name)
        .astype(np.float64)) for h in ("probe", "mlp", "sequence")}
    blend = route_runner.RouteRunner(route, "onnx", dataclasses.replace(off, route_head="blend"))
    expected = scipy.special.expit(sum(card["head_weights"][h] * logit[h] for h in logit))
    # Near 0 or 1 a float32 probability does not give its logit back: compare the rest.
    exact = np.all([np.abs(v) < 9 for v in logit.values()], axis=0)
    assert exact.mean() > 0.8
    np.testing.assert_allclose(blend.score_file(clips, path.name)[exact], expected[exact],
                               atol=1e-4)


@pytest.mark.slow
def test_predict_fuses_the_prior_in_the_space_the_route_was_tuned_in(trained_route, synth_root,
                                                                     tmp_path):
    import shutil

    route = tmp_path / "route"
    shutil.copytree(trained_route[0], route)
    card = json.loads((route / route_runner.CARD).read_text())
    card.update(prior_space="logit", prior_weight=0.5)
    card.pop("prior_weight_by_taxon", None)
    (route / route_runner.CARD).write_text(json.dumps(card))
    off = config_lib.InferConfig(taxon_temperature=False, site_prior=False, cnn_fusion=False,
                                 route_cross_window=False)
    path = audio_io.list_audio(synth_root / YEAR / "train_soundscapes")[0]
    clips = windows.cut(audio_io.load(path, 32000), 32000, np.arange(0, 60, 5.0), 5.0)
    plain = route_runner.RouteRunner(route, "onnx", off).score_file(clips, path.name)
    fused = route_runner.RouteRunner(route, "onnx", dataclasses.replace(
        off, site_prior=True)).score_file(clips, path.name)
    prior = tuning.prior_of(card["prior"], *tuning.file_context(path.name))
    np.testing.assert_allclose(fused, postprocess.prior_fusion(plain, prior, 0.5, "logit"),
                               atol=1e-5)
    assert np.abs(fused - postprocess.prior_fusion(plain, prior, 0.5)).max() > 1e-3

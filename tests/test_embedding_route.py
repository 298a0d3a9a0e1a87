"""The embedding route: embed (stand-in Perch v2 SavedModel), heads, out-of-fold
tuning, ONNX export, predict."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from birdkeras import (audio, embed, embedders, heads, infer, route, route_runtime,
                       soundscapes, tfrecord, windows)
from birdkeras import config as config_lib
from birdkeras.config import load_config

YEAR = "birdclef-2026"
FAST = ["route.epochs=15", "route.seq_epochs=15", "route.pca_dim=16", "route.mlp_hidden=16",
        "route.d_model=16", "route.folds=2", "route.batch_size=16"]


def make_standin_perch(folder, labels, window=160_000, dim=48, outputs=("embedding", "label")):
    """A SavedModel with Perch v2's serving signature: `inputs` (batch, window) float32 ->
    {"embedding": (batch, dim), "label": (batch, len(labels))}, assets/labels.csv."""
    rng = np.random.default_rng(0)
    proj = tf.constant(rng.standard_normal((256, dim)).astype(np.float32) * 0.1)
    head = tf.constant(rng.standard_normal((dim, len(labels))).astype(np.float32))

    class StandIn(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, window], tf.float32, name="inputs")])
        def serve(self, inputs):
            frames = tf.reshape(inputs, (-1, 64, window // 64))
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
    card = embed.run(perch, str(out), audio=[synth_root / YEAR / "train_soundscapes"],
                     root=synth_root, labels_source=YEAR, classes=classes, files_per_shard=1,
                     progress=False)
    return out, card, classes


def test_standin_embeddings_are_written_and_read_back_exactly(embedded, perch, synth_root):
    out, card, classes = embedded
    table = embed.read(str(out))
    model = embedders.load(perch)
    labels = soundscapes.read_labels(synth_root, YEAR)
    assert card["windows"] == len(table.files) == 12 * len(
        windows.list_audio(synth_root / YEAR / "train_soundscapes"))
    for path in windows.list_audio(synth_root / YEAR / "train_soundscapes"):
        rows = np.flatnonzero(table.files == path.name)
        wave = audio.load(path, 32000, allow_silence=True)
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


def test_a_killed_embed_run_resumes_with_every_window_once(perch, synth_root, tmp_path):
    out = tmp_path / "emb"
    args = [sys.executable, "-m", "birdkeras", "embed", "--quiet", "--model", str(perch),
            "--out", str(out), "--files-per-shard", "1", "--audio",
            str(synth_root / YEAR / "train_soundscapes"), str(synth_root / "birdclef-2025" /
                                                              "train_soundscapes")]
    proc = subprocess.Popen(args, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list(out.glob("*.done.json")):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 0 < len(list(out.glob("*.done.json"))) < 4, "no kill between shards"
    audio_in = [synth_root / YEAR / "train_soundscapes", synth_root / "birdclef-2025" /
                "train_soundscapes"]
    embed.run(perch, str(out), audio=audio_in, files_per_shard=1, progress=False)
    embed.run(perch, str(tmp_path / "fresh"), audio=audio_in, files_per_shard=1, progress=False)
    resumed, fresh = embed.read(str(out)), embed.read(str(tmp_path / "fresh"))
    keys = list(zip(resumed.files, resumed.starts))
    assert len(keys) == len(set(keys)) == len(fresh.files)  # every window once
    np.testing.assert_array_equal(resumed.embeddings, fresh.embeddings)


def test_signature_mismatches_name_what_they_found(tmp_path):
    short = make_standin_perch(tmp_path / "short", ["a b"], window=80_000)
    with pytest.raises(embedders.EmbedderError, match=r"shape \(None, 80000\).*160000"):
        embedders.load(short)
    blind = make_standin_perch(tmp_path / "blind", ["a b"], outputs=("label",))
    with pytest.raises(embedders.EmbedderError, match=r"returns \['label'\], with no 'embedding'"):
        embedders.load(blind)
    with pytest.raises(embedders.EmbedderError, match="not a SavedModel folder"):
        embedders.load(tmp_path)


def test_species_are_mapped_exactly_then_by_genus_and_the_rest_listed(perch, taxonomy):
    model = embedders.load(perch)
    mapping = embedders.map_classes(model.classes, taxonomy)
    names = taxonomy["scientific_name"].str.strip().tolist()
    codes = taxonomy["primary_label"].tolist()
    assert mapping["mapped"] == codes[2:]
    assert mapping["proxied"] == [codes[0]] and mapping["unmapped"] == [codes[1]]
    logits = np.random.default_rng(0).standard_normal((3, len(model.classes))).astype(np.float32)
    mapped = embedders.mapped_logits(logits, mapping, fill=-10.0)
    np.testing.assert_array_equal(mapped[:, 2:], logits[:, :len(names) - 2])
    genus = [k for k, c in enumerate(model.classes) if c.split(" ")[0] == names[0].split(" ")[0]]
    np.testing.assert_array_equal(mapped[:, 0], logits[:, genus].max(axis=1))
    assert (mapped[:, 1] == -10.0).all()  # unmapped: reported, and not silently 0


def test_the_sequence_head_scores_a_file_the_same_whatever_its_batch_mates():
    model = heads.sequence_model(24, 5, seq_len=12, pca_dim=8, d_model=16, num_sites=2,
                                 fusion=True)
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((3, 12, 24)).astype(np.float32),
              np.array([0, 1, 2], np.int32), np.array([3, 24, 7], np.int32),
              rng.standard_normal((3, 12, 5)).astype(np.float32)]
    together = np.asarray(model(inputs))
    for i in range(3):
        alone = np.asarray(model([x[i:i + 1] for x in inputs]))
        np.testing.assert_allclose(alone[0], together[i], atol=1e-5)


def _random_embeddings(folder, n_files=12, windows_per_file=12, dim=16, classes=4, seed=0):
    """An embedding folder of random windows and random labels (nothing to learn)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    name = tfrecord.shard_name(-1, 0, 1)
    with open(folder / name, "wb") as f:
        for i in range(n_files):
            for w in range(windows_per_file):
                f.write(tfrecord.frame(tfrecord.encode_example({
                    embed.EMBEDDING: rng.standard_normal(dim).astype(np.float32),
                    embed.TARGETS: (rng.random(classes) < 0.3).astype(np.float32),
                    embed.FILE: f"BC2026_Train_{i:04d}_S{i % 4:02d}_20250301_{w:02d}0000.ogg",
                    embed.PATH: "", embed.START_S: 5.0 * w, embed.SITE: f"S{i % 4:02d}",
                    embed.DATE: "20250301", embed.HOUR: i % 24, embed.GROUP: f"S{i % 4:02d}"})))
    (folder / tfrecord.CARD).write_text(json.dumps({
        "model": "random", "kind": "test", "dim": dim, "model_classes": [],
        "classes": [f"c{k}" for k in range(classes)], "sample_rate_hz": 32000,
        "window_samples": 160000, "shards": [name], "windows": n_files * windows_per_file}))
    return [f"c{k}" for k in range(classes)]


def test_out_of_fold_predictions_never_come_from_the_folds_own_windows(tmp_path):
    classes = _random_embeddings(tmp_path / "emb")
    pd.DataFrame({"primary_label": classes, "scientific_name": classes,
                  "class_name": "Aves"}).to_csv(tmp_path / "taxonomy.csv", index=False)
    cfg = load_config(None, ["route.epochs=60", "route.seq_epochs=5", "route.pca_dim=0",
                             "route.mlp_hidden=64", "route.folds=2", "route.fusion=false",
                             "route.pseudo_unlabelled=false", "route.lr=0.03",
                             "route.batch_size=256"])
    card = route.train(cfg, [str(tmp_path / "emb")], tmp_path / "route", tmp_path / "taxonomy.csv")
    oof = np.load(tmp_path / "route" / "oof.npz")
    table = embed.read(str(tmp_path / "emb"))
    for group in np.unique(table.groups):  # a site's windows are all in one fold
        assert len(np.unique(oof["folds"][table.groups == group])) == 1
    # Random labels: heads that saw a window memorise it; out of fold they are at chance.
    import keras

    mlp = keras.models.load_model(tmp_path / "route" / "mlp.keras")
    from birdkeras import metrics

    seen = metrics.macro_roc_auc(table.targets, mlp.predict(table.embeddings, verbose=0))
    assert seen > 0.8
    assert abs(card["oof_scores"]["mlp"]["macro_auc"] - 0.5) < 0.12


def test_heads_in_onnx_match_keras(tmp_path):
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    for name, model, feeds in (
            ("probe", heads.probe_model(24, 6, pca_dim=8, hidden=16),
             {"embedding": rng.standard_normal((5, 24)).astype(np.float32)}),
            ("sequence", heads.sequence_model(24, 6, seq_len=12, pca_dim=8, d_model=16,
                                              num_sites=2, fusion=True),
             {"embedding": rng.standard_normal((3, 12, 24)).astype(np.float32),
              "site": np.array([0, 1, 2], np.int32), "hour": np.array([1, 24, 5], np.int32),
              "mapped_logits": rng.standard_normal((3, 12, 6)).astype(np.float32)})):
        model.get_layer("projection").fit(rng.standard_normal((40, 24)).astype(np.float32))
        route.export_onnx(model, tmp_path / f"{name}.onnx")
        session = ort.InferenceSession(str(tmp_path / f"{name}.onnx"),
                                       providers=["CPUExecutionProvider"])
        got = session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})[0]
        expected = np.asarray(model([feeds[t.name] for t in model.inputs]
                                    if len(model.inputs) > 1 else feeds["embedding"]))
        np.testing.assert_allclose(got, expected, atol=1e-4)


def test_a_route_trains_and_predict_writes_a_submission_with_it(embedded, perch, synth_root,
                                                                 taxonomy, tmp_path, capsys):
    from birdkeras import cli

    out, _, classes = embedded
    (tmp_path / "cfg.yaml").write_text("route:\n" + "".join(
        f"  {kv.split('=')[0].split('.')[1]}: {kv.split('=')[1]}\n" for kv in FAST))
    assert cli.main(["route", "--cfg", str(tmp_path / "cfg.yaml"), "--embeddings", str(out),
                     "--taxonomy", str(synth_root / YEAR / "taxonomy.csv"),
                     "--out", str(tmp_path / "route")]) == 0
    printed = capsys.readouterr().out
    assert "1 unmapped" in printed and taxonomy["primary_label"][1] in printed
    card = json.loads((tmp_path / "route" / route.CARD).read_text())
    assert card["head"] == "sequence" and set(card["heads"]) == {"probe", "mlp", "sequence"}
    sample = synth_root / YEAR / "sample_submission.csv"
    icfg = config_lib.InferConfig(class_order=str(sample), adaptive_smoothing=0.3)
    report = infer.predict([tmp_path / "route"], synth_root / YEAR / "train_soundscapes",
                           tmp_path / "sub.csv", "onnx", icfg, progress=False)
    sub = pd.read_csv(tmp_path / "sub.csv")
    assert list(sub.columns) == ["row_id", *classes] and len(sub) == report["rows"] > 0
    values = sub[classes].to_numpy()
    assert ((values >= 0) & (values <= 1)).all() and values.std() > 0
    runner = route_runtime.RouteRunner(tmp_path / "route", "tf", icfg)
    onnx_runner = route_runtime.RouteRunner(tmp_path / "route", "onnx", icfg)
    path = windows.list_audio(synth_root / YEAR / "train_soundscapes")[0]
    clips = windows.cut(audio.load(path, 32000), 32000, np.arange(0, 60, 5.0), 5.0)
    np.testing.assert_allclose(runner.score_file(clips, path.name),
                               onnx_runner.score_file(clips, path.name), atol=1e-4)
    moved = config_lib.InferConfig(embedder=str(tmp_path / "nowhere"))
    with pytest.raises(Exception, match="set infer.embedder"):
        route_runtime.RouteRunner(tmp_path / "route", "onnx", moved)

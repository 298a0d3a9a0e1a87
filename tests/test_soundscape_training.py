"""Learning from soundscapes: labelled windows, soft labels, pseudo-labels, mixing,
distillation, the SED frame-max loss, self-training stages."""

import json
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from birdkeras.train import trainer
from birdkeras.records import pipeline
from birdkeras.datasets import manifest
from birdkeras.model import classifier
from birdkeras.selftrain import pseudolabel, stages
from birdkeras.datasets import soundscapes
from birdkeras.records import shards
from birdkeras.records import format as record_format
from birdkeras import config as config_lib
from birdkeras import infer
from birdkeras.config import ConfigError, load_config
from birdkeras.datasets.sources import SourceError
from birdkeras.errors import PredictError

from conftest import REPO, kill_when, read_records
from test_embedding_route import make_standin_perch

SMALL_MODEL = ["audio.sample_rate_hz=16000", "audio.num_mel_bins=32", "audio.fft_length=1024",
               "audio.hop_length=512", "audio.fmax_hz=8000"]


def _teacher(folder: Path, classes, seed: int) -> Path:
    """A 'trained' model folder (model, config, classes) whose outputs spread out."""
    cfg = load_config(None, SMALL_MODEL)
    keras.utils.set_random_seed(seed)
    model = classifier.build_model(cfg, len(classes))
    kernel = np.random.default_rng(seed).standard_normal((1280, len(classes))) * 40.0
    model.get_layer("logits").set_weights([kernel.astype("float32"),
                                           np.zeros(len(classes), "float32")])
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "best.keras")
    config_lib.save_config(cfg, folder / "config.yaml")
    (folder / "name2label.json").write_text(json.dumps({c: i for i, c in enumerate(classes)}))
    return folder / "best.keras"


@pytest.fixture(scope="module")
def classes(synth_root):
    return list(pd.read_csv(synth_root / "birdclef-2026" / "sample_submission.csv",
                            nrows=0).columns[1:])


@pytest.fixture(scope="module")
def teachers(classes, tmp_path_factory):
    out = tmp_path_factory.mktemp("teachers")
    return [_teacher(out / f"t{seed}", classes, seed) for seed in (1, 2)]


def _soundscape_files(synth_root):
    return [synth_root / "birdclef-2026" / "train_soundscapes",
            synth_root / "birdclef-2025" / "train_soundscapes"]


def test_soft_labels_round_trip_through_shards_exactly(tmp_path):
    rng = np.random.default_rng(0)
    soft = rng.random((3, 7)).astype(np.float32)
    with open(tmp_path / record_format.shard_name(-1, 0, 1), "wb") as f:
        for i, row in enumerate(soft):
            f.write(record_format.frame(record_format.encode_example({
                record_format.AUDIO: np.full(16000 * 5, i, np.int16).tobytes(),
                record_format.SAMPLE_RATE: 16000, record_format.NUM_SAMPLES: 16000 * 5,
                record_format.LABEL: -1, record_format.SECONDARY_LABELS: [],
                record_format.RECORDING_ID: f"w{i}", record_format.SOURCE: "pseudo", record_format.FOLD: -1,
                record_format.REPEATS: 1, record_format.RATING: 0.0, record_format.SOFT_TARGETS: row})))
    records = read_records(tmp_path)
    for i, row in enumerate(soft):
        np.testing.assert_array_equal(records[f"w{i}"][record_format.SOFT_TARGETS], row)  # exact
    # ... and they are the training targets, unchanged, for records without hard labels.
    cfg = load_config(None, [*SMALL_MODEL, "input.val_fold=0", "data.num_folds=2"])
    ds = pipeline.make_dataset(cfg, 7, training=False, files=record_format.list_shards(str(tmp_path)))
    pairs = [(x.numpy(), y.numpy()) for x, y in ds]
    which = np.round(np.concatenate([x[:, 0] for x, _ in pairs]) * 32768).astype(int)
    got = np.concatenate([y for _, y in pairs])
    np.testing.assert_array_equal(got[np.argsort(which)], soft)


def test_teacher_weight_mixes_hard_and_soft_targets(tmp_path):
    soft = np.array([0.2, 0.6, 0.1, 0.1], np.float32)
    hard = np.array([0.0, 0.0, 1.0, 1.0], np.float32)
    examples = [{record_format.LABEL: 1, record_format.SOFT_TARGETS: soft},  # primary label + teacher
                {record_format.LABEL: -1, record_format.TARGETS: hard, record_format.SOFT_TARGETS: soft},
                {record_format.LABEL: -1, record_format.TARGETS: hard},  # labelled window only
                {record_format.LABEL: 3}]  # a plain focal record
    with open(tmp_path / record_format.shard_name(0, 0, 1), "wb") as f:
        for i, extra in enumerate(examples):
            f.write(record_format.frame(record_format.encode_example({
                record_format.AUDIO: np.zeros(80000, np.int16).tobytes(), record_format.SAMPLE_RATE: 16000,
                record_format.NUM_SAMPLES: 80000, record_format.SECONDARY_LABELS: [],
                record_format.RECORDING_ID: f"r{i}", record_format.SOURCE: "s", record_format.FOLD: 0,
                record_format.REPEATS: 1, record_format.RATING: 0.0, **extra})))
    cfg = load_config(None, [*SMALL_MODEL, "input.teacher_weight=0.25"])
    ds = pipeline.make_dataset(cfg, 4, training=False, files=record_format.list_shards(str(tmp_path)))
    got = np.concatenate([y.numpy() for _, y in ds])
    one_hot = np.eye(4, dtype=np.float32)
    np.testing.assert_allclose(got, [0.75 * one_hot[1] + 0.25 * soft,
                                     0.75 * hard + 0.25 * soft, hard, one_hot[3]], atol=1e-7)


def test_labelled_windows_become_records_folded_by_site(synth_root, tmp_path):
    cfg = load_config(None, [f"data.root={synth_root}",
                             "data.sources=[birdclef-2026, birdclef-2026-soundscapes]",
                             "data.label_map=competition", "data.num_folds=2",
                             "data.balance.filter_min_samples=0", "train.loss=bce",
                             f"tfrecords.dir={tmp_path}"])
    table, name2label, _ = manifest.build(cfg)
    windows = table[table["source"] == "birdclef-2026-soundscapes"]
    assert len(windows) == 24 and windows["site"].str.fullmatch(r"S\d\d").all()
    assert (windows.groupby("group")["fold"].nunique() == 1).all()  # no site split
    assert windows["fold"].nunique() == 2
    shards.build(table, name2label, cfg, progress=False)
    records = read_records(tmp_path)
    for row in windows.to_dict("records"):
        record = records[row["recording_id"]]
        assert record[record_format.LABEL] == -1 and record[record_format.START_S] == row["start_s"]
        expected = np.zeros(len(name2label), np.float32)
        expected[[name2label[c] for c in row["labels"]]] = 1.0
        np.testing.assert_array_equal(record[record_format.TARGETS], expected)
        assert len(record[record_format.AUDIO]) == 5 * 32000
    with pytest.raises(ConfigError, match="use train.loss=bce or focal"):
        load_config(None, ["data.sources=[birdclef-2026-soundscapes]", "train.loss=cce"])


def test_a_specialist_trains_on_its_taxonomy_classes_only(synth_root, classes):
    base = [f"data.root={synth_root}", "data.sources=[birdclef-2026, birdclef-2026-soundscapes]",
            "data.label_map=competition", "data.num_folds=2", "data.balance.filter_min_samples=0",
            "train.loss=bce"]
    taxonomy = pd.read_csv(synth_root / "birdclef-2026" / "taxonomy.csv", dtype=str)
    taxa = dict(zip(taxonomy["primary_label"], taxonomy["class_name"]))
    everything, _, _ = manifest.build(load_config(None, base))
    table, name2label, report = manifest.build(load_config(None, [*base, "data.specialist=[Amphibia, Insecta]"]))
    own = [c for c in classes if taxa[c] in ("Amphibia", "Insecta")]
    assert 0 < len(own) < len(classes) and list(name2label) == own  # the competition's order
    clips = table[table["primary_label"] != ""]
    assert set(clips["primary_label"]) <= set(own)
    assert report["outside_specialist"] == (
        (everything["primary_label"] != "") & ~everything["primary_label"].isin(own)).sum() > 0
    windows = table[table["primary_label"] == ""]
    assert len(windows) == (everything["primary_label"] == "").sum()  # kept, as negatives too
    assert all(set(labels) <= set(own) for labels in windows["labels"])
    assert any(labels for labels in windows["labels"])
    # The other classes are neither bad rows nor unknown labels: they are not the specialist's.
    assert not [r for r in report["rejected"] if "is not a class" in r["reason"]]
    assert not set(report["unknown_secondary_labels"]) & set(classes)
    with pytest.raises(SourceError, match=r"\['Reptilia'\] are not values of class_name"):
        manifest.build(load_config(None, [*base, "data.specialist=[Reptilia]"]))
    with pytest.raises(ConfigError, match="set data.label_map=competition"):
        load_config(None, ["data.specialist=[Amphibia]"])


def _pseudo_cfg(synth_root, *extra):
    return load_config(None, [f"data.root={synth_root}", "pseudo.threshold=0.5",
                              "pseudo.files_per_shard=1", *extra])


def test_pseudo_labels_are_selected_sharpened_and_reproducible(synth_root, teachers, classes,
                                                               tmp_path):
    cfg = _pseudo_cfg(synth_root, "pseudo.power=2", "pseudo.max_windows_per_file=5",
                      "pseudo.hard_labels=birdclef-2026")
    first = pseudolabel.run(teachers, _soundscape_files(synth_root), str(tmp_path / "a"), cfg,
                            progress=False)
    pseudolabel.run(teachers, _soundscape_files(synth_root), str(tmp_path / "b"), cfg,
                    progress=False)
    names = sorted(p.name for p in (tmp_path / "a").glob("*.tfrec"))
    assert names == sorted(p.name for p in (tmp_path / "b").glob("*.tfrec"))
    for name in names:  # the same teachers on the same files: the same bytes
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    records = read_records(tmp_path / "a")
    assert len(records) == first["windows_kept"] > 0
    labelled = soundscapes.read_labels(synth_root, "birdclef-2026")
    labels_at = {(f, float(s)): set(ls) for f, s, ls in
                 zip(labelled["file"], labelled["start_s"], labelled["labels"])}
    with_hard = 0
    for rid, rec in records.items():
        soft = rec[record_format.SOFT_TARGETS]
        assert np.sqrt(soft.max()) >= 0.5 - 1e-6  # kept: top teacher probability >= threshold
        assert rec[record_format.TEACHERS].decode() == ",".join(str(t) for t in teachers)
        name, start = rid.removeprefix("pseudo/").split("@")
        expected = labels_at.get((name, float(start)))
        if expected is not None:  # hard labels beside the soft ones, on their classes
            hard = rec[record_format.TARGETS]
            assert {classes[k] for k in np.flatnonzero(hard)} == expected & set(classes)
            assert set(np.unique(hard)) <= {0.0, 1.0}
            with_hard += 1
    assert with_hard > 0  # some kept windows are labelled ones
    per_file = pd.Series([r.split("@")[0] for r in records]).value_counts()
    assert per_file.max() <= 5
    assert sum(first["kept_per_class"].values()) == first["windows_kept"]
    tops = pd.Series([classes[int(np.argmax(r[record_format.SOFT_TARGETS]))]
                      for r in records.values()]).value_counts()
    assert {c: n for c, n in first["kept_per_class"].items() if n} == tops.to_dict()


def test_a_cap_model_caps_pseudo_labels_class_by_class(synth_root, teachers, classes,
                                                        tmp_path):
    from birdkeras.audio import io as audio_io  # noqa: PLC0415
    from birdkeras.embeddings import frozen  # noqa: PLC0415

    taxonomy = pd.read_csv(synth_root / "birdclef-2026" / "taxonomy.csv", dtype=str,
                           keep_default_na=False)
    names = taxonomy.set_index("primary_label").loc[classes, "scientific_name"].tolist()
    # It knows every class but the first by scientific name (the first stays uncapped).
    perch = make_standin_perch(tmp_path / "perch", [*names[1:], "Zzz zzz"])
    audio = [synth_root / "birdclef-2026" / "train_soundscapes"]
    plain_cfg = _pseudo_cfg(synth_root, "pseudo.threshold=0.0", "pseudo.max_windows_per_file=3")
    pseudolabel.run(teachers, audio, str(tmp_path / "plain"), plain_cfg, progress=False)
    capped_cfg = _pseudo_cfg(synth_root, "pseudo.threshold=0.0", "pseudo.max_windows_per_file=3",
                             f"pseudo.cap_model={perch}")
    pseudolabel.run(teachers, audio, str(tmp_path / "capped"), capped_cfg, progress=False)
    plain, capped = read_records(tmp_path / "plain"), read_records(tmp_path / "capped")
    assert plain.keys() == capped.keys() and plain
    model = frozen.load(perch)
    lowered = 0
    for rid, record in plain.items():
        name, start = rid.removeprefix("pseudo/").rsplit("@", 1)
        wave = audio_io.load(audio[0] / name, 32000, allow_silence=True)
        clip = np.zeros(160_000, np.float32)
        piece = wave[round(float(start) * 32000):][:160_000]
        clip[:len(piece)] = piece
        _, logits = model(clip[None])
        ceiling = 1 / (1 + np.exp(-logits[0, :len(classes) - 1]))  # classes 1.. in order
        soft, got = record[record_format.SOFT_TARGETS], capped[rid][record_format.SOFT_TARGETS]
        assert got[0] == soft[0]  # not mapped: as the teachers said
        np.testing.assert_allclose(got[1:], np.minimum(soft[1:], ceiling), rtol=1e-4, atol=1e-6)
        lowered += int((got < soft - 1e-6).sum())
    assert lowered > 0
    bad = _pseudo_cfg(synth_root, f"pseudo.cap_model={make_standin_perch(tmp_path / 'p2', ['Zzz zzz'])}")
    with pytest.raises(pseudolabel.PseudoError, match="none of the teachers' .* classes maps"):
        pseudolabel.run(teachers, audio, str(tmp_path / "bad"), bad, progress=False)


def test_select_keeps_confident_windows_and_soft_negatives():
    probs = np.array([[0.9, 0.1], [0.2, 0.3], [0.6, 0.7], [0.55, 0.1]], np.float32)
    starts = np.arange(4) * 5.0
    pcfg = config_lib.PseudoConfig(threshold=0.5, power=2.0)
    keep, soft = pseudolabel.select(probs, starts, pcfg)
    assert keep.tolist() == [0, 2, 3]
    np.testing.assert_allclose(soft, probs[[0, 2, 3]] ** 2)
    capped = config_lib.PseudoConfig(threshold=0.5, max_windows_per_file=2)
    assert pseudolabel.select(probs, starts, capped)[0].tolist() == [0, 2]  # top 0.9, 0.7
    negatives = config_lib.PseudoConfig(threshold=0.5, below_threshold="soft_negative")
    assert pseudolabel.select(probs, starts, negatives)[0].tolist() == [0, 1, 2, 3]


@pytest.mark.slow
def test_a_killed_pseudo_label_run_resumes_with_every_window_once(synth_root, teachers,
                                                                  tmp_path):
    out = tmp_path / "pseudo"
    args = [sys.executable, "-m", "birdkeras", "pseudolabel", "--quiet", "--out", str(out),
            "--set", f"data.root={synth_root}", "--set", "pseudo.files_per_shard=1",
            "--set", "pseudo.threshold=0.3", "--audio", *map(str, _soundscape_files(synth_root))]
    for teacher in teachers:
        args += ["--model", str(teacher)]
    kill_when(args, lambda: list(out.glob("*.done.json")), timeout_s=300)
    done = list(out.glob("*.done.json"))
    assert done and len(done) < 4, "no kill between shards"
    cfg = _pseudo_cfg(synth_root, "pseudo.threshold=0.3")
    report = pseudolabel.run(teachers, _soundscape_files(synth_root), str(out), cfg,
                             progress=False)
    fresh = pseudolabel.run(teachers, _soundscape_files(synth_root), str(tmp_path / "fresh"),
                            cfg, progress=False)
    resumed = read_records(out)  # asserts that no window is there twice
    assert set(resumed) == set(read_records(tmp_path / "fresh"))
    assert len(resumed) == report["windows_kept"] == fresh["windows_kept"]


def test_bad_soundscapes_are_recorded_and_mismatched_teachers_refused(
        synth_root, teachers, classes, tmp_path):
    folder = tmp_path / "audio"
    folder.mkdir()
    good = next((synth_root / "birdclef-2026" / "train_soundscapes").iterdir())
    (folder / good.name).write_bytes(good.read_bytes())
    (folder / "broken.ogg").write_bytes(good.read_bytes()[:200])
    report = pseudolabel.run(teachers, [folder], str(tmp_path / "out"), _pseudo_cfg(synth_root),
                             progress=False)
    failures = pd.read_csv(tmp_path / "out" / record_format.FAILURES)
    assert report["failures"] == 1 and failures["path"].str.endswith("broken.ogg").all()
    other = _teacher(tmp_path / "other", [*classes[1:], "notaclass"], 3)
    with pytest.raises(PredictError, match=r"cannot ensemble .* scores classes the first "
                                           r"model does not \(\['notaclass'\]\)"):
        pseudolabel.run([teachers[0], other], [folder], str(tmp_path / "x"),
                        _pseudo_cfg(synth_root), progress=False)
    for bad in ("-0.1", "1.5"):
        with pytest.raises(ConfigError, match=f"pseudo.threshold={float(bad)} must be in"):
            load_config(None, [f"pseudo.threshold={bad}"])


def test_a_specialist_scores_its_columns_and_leaves_the_others(synth_root, teachers, classes,
                                                               tmp_path):
    """A specialist (a subset of the classes, in its own order) ensembled after the full
    model: its classes are the mean of both, every other column the full model's alone."""
    audio = next((synth_root / "birdclef-2026" / "train_soundscapes").iterdir())
    icfg = config_lib.InferConfig(class_order=str(synth_root / "birdclef-2026" /
                                                  "sample_submission.csv"))
    own = [classes[4], classes[1], classes[2]]
    specialist = _teacher(tmp_path / "specialist", own, 5)
    tables = {}
    for name, models in (("full", [teachers[0]]), ("alone", [specialist]),
                         ("both", [teachers[0], specialist])):
        infer.predict(models, audio, tmp_path / f"{name}.csv", "tf", icfg, progress=False)
        tables[name] = pd.read_csv(tmp_path / f"{name}.csv").set_index("row_id")
    others = [c for c in classes if c not in own]
    np.testing.assert_allclose(tables["both"][others], tables["full"][others], atol=1e-6)
    np.testing.assert_allclose(tables["both"][own],
                               (tables["full"][own] + tables["alone"][own]) / 2, atol=1e-6)
    assert np.abs(tables["both"][own] - tables["full"][own]).to_numpy().max() > 1e-4
    with pytest.raises(PredictError, match="put the model scoring every class first"):
        infer.predict([specialist, teachers[0]], audio, tmp_path / "x.csv", "tf", icfg,
                      progress=False)


def test_predict_takes_a_blend_card_as_one_model(synth_root, teachers, tmp_path):
    from birdkeras.infer import blend  # noqa: PLC0415

    audio = sorted((synth_root / "birdclef-2026" / "train_soundscapes").iterdir())[:2]
    icfg = config_lib.InferConfig(time_budget_s=600)
    # Members as k-fold folders would be, written relative to the card.
    card = {"method": "rank", "weights": [0.7, 0.3],
            "members": [str(Path("..") / t.parent.name / t.name) for t in teachers]}
    (tmp_path / "cards").mkdir()
    for t in teachers:
        (tmp_path / t.parent.name).symlink_to(t.parent)
    blend.write_card(card, tmp_path / "cards" / "blend.json")
    report = infer.predict(str(tmp_path / "cards" / "blend.json"), audio, tmp_path / "sub.csv",
                           "tf", icfg, progress=False)
    for k, t in enumerate(teachers):
        infer.predict([t], audio, tmp_path / f"m{k}.csv", "tf", progress=False)
    expected = blend.apply(card, [tmp_path / "m0.csv", tmp_path / "m1.csv"], tmp_path / "e.csv")
    got = pd.read_csv(tmp_path / "sub.csv")
    pd.testing.assert_frame_equal(got, expected, atol=1e-6)
    assert report["rows"] == len(got) and len(report["members"]) == 2
    # Each member had an equal share of the time budget.
    assert [m["time_budget"]["budget_s"] for m in report["members"]] == [300, 300]
    with pytest.raises(PredictError, match="a blend card is the only --model"):
        infer.predict([str(tmp_path / "cards" / "blend.json"), teachers[0]], audio,
                      tmp_path / "x.csv", "tf", icfg, progress=False)


def test_mixing_ratio_holds_over_1000_draws(synth_root, teachers, tmp_path):
    main = tmp_path / "main"
    cfg = load_config(None, [*SMALL_MODEL, f"data.root={synth_root}",
                             "data.sources=[birdclef-2026]", "data.label_map=competition",
                             "data.num_folds=2", "data.balance.filter_min_samples=0",
                             f"tfrecords.dir={main}", "input.batch_size=8",
                             "input.shuffle_buffer=16"])
    table, name2label, _ = manifest.build(cfg)
    shards.build(table, name2label, cfg, progress=False)
    pseudo = tmp_path / "pseudo"
    pseudolabel.run(teachers, _soundscape_files(synth_root), str(pseudo),
                    _pseudo_cfg(synth_root, "pseudo.threshold=0.0"), progress=False)
    mixed = config_lib.from_dict(config_lib.to_dict(cfg) | {"input": {
        **config_lib.to_dict(cfg.input), "mix_dirs": [str(pseudo)], "mix_weights": [0.3]}})
    counter = pipeline.MixCounter([str(main), str(pseudo)])
    batches = iter(pipeline.make_dataset(mixed, len(name2label), True, mix_counter=counter))
    labels = np.concatenate([next(batches)[1].numpy() for _ in range(125)])  # 1,000 windows
    # Pseudo-labelled windows are the ones with soft (not 0/1) targets.
    share = np.mean(np.any((labels > 0) & (labels < 1), axis=1))
    sigma = np.sqrt(0.3 * 0.7 / 1000)
    assert abs(share - 0.3) < 3.5 * sigma, share
    # The counter saw the same mix (plus a few prefetched batches).
    assert abs(counter.fractions()[str(pseudo)] - share) < 3.5 * sigma
    # Capped: the pseudo-labelled windows of a batch weigh at most 0.25 x the others.
    capped = config_lib.from_dict(config_lib.to_dict(mixed) | {"input": {
        **config_lib.to_dict(mixed.input), "mix_loss_cap": 0.25}})
    batches = iter(pipeline.make_dataset(capped, len(name2label), True))
    for _ in range(20):
        _, labels, weights = (t.numpy() for t in next(batches))
        soft = np.any((labels > 0) & (labels < 1), axis=1)
        assert np.all(weights[~soft] == 1.0)
        if soft.any():
            assert weights[soft].sum() == pytest.approx(
                min(soft.sum(), 0.25 * (~soft).sum()), rel=1e-5)
    with pytest.raises(ConfigError, match="input.mix_dirs"):
        load_config(None, ["input.mix_dirs=[a, b]", "input.mix_weights=[0.6, 0.5]"])


@pytest.mark.slow
@pytest.mark.parametrize("head,changes", [("sed", True), ("gap", False)])
def test_frame_max_loss_changes_gradients_only_for_sed_heads(head, changes):
    x = np.random.default_rng(0).standard_normal((4, 16000 * 5)).astype(np.float32) * 0.1
    y = np.eye(3, dtype=np.float32)[[0, 1, 2, 0]]
    grads = []
    for weight in (0.0, 1.0):
        cfg = load_config(None, [*SMALL_MODEL, f"model.head={head}", "model.dropout=0",
                                 "model.mask_probability=0", "train.loss=bce",
                                 f"train.sed_frame_loss_weight={weight}"])
        keras.utils.set_random_seed(0)
        model = classifier.build_model(cfg, 3)
        loss, weights = trainer.losses_for(cfg)
        if isinstance(loss, dict):
            model = classifier.with_frame_max(model)
        with tf.GradientTape() as tape:
            out = model(x, training=False)
            total = (sum(weights[k] * loss[k](y, out[k]) for k in loss)
                     if isinstance(loss, dict) else loss(y, out))
        grads.append([g.numpy() for g in tape.gradient(total, model.trainable_variables)])
    differs = any(not np.allclose(a, b) for a, b in zip(*grads))
    assert differs == changes


@pytest.mark.slow
def test_self_training_stages_pseudo_label_then_train(synth_root, tmp_path):
    overrides = [f"data.root={synth_root}", "data.sources=[birdclef-2026, birdclef-2026-soundscapes]",
                 "data.label_map=competition", "data.num_folds=2",
                 "data.balance.filter_min_samples=0", "data.balance.upsample_min_samples=0",
                 f"data.manifest_dir={tmp_path / 'manifest'}", f"tfrecords.dir={tmp_path / 'sh'}",
                 "audio.num_mel_bins=32", "input.batch_size=8", "train.epochs=1",
                 "train.steps_per_epoch=2", "train.checkpoint_every_steps=0",
                 "wandb.mode=disabled"]
    # The shipped config's first round only (its second repeats the first, and each
    # training costs a minute here): round 0 trains, round 1 pseudo-labels with it.
    stages_ = [str(REPO / "configs" / "stages" / f"demo_round{k}.yaml") for k in (0, 1)]
    cfg = load_config(REPO / "configs" / "demo_selftrain.yaml",
                      [*overrides, f"train.stages=[{', '.join(stages_)}]"])
    table, name2label, report = manifest.build(cfg)
    manifest.save(cfg.data.manifest_dir, table, name2label, report)
    shards.build(table, name2label, cfg, progress=False)
    summary = stages.run_stages(cfg, tmp_path / "run", stage_overrides=tuple(overrides))
    assert Path(summary["workdir"]).name == "demo_round1"
    assert not (tmp_path / "run" / "demo_round0" / "pseudo").exists()
    card = json.loads((tmp_path / "run" / "demo_round1" / "pseudo" / record_format.CARD).read_text())
    assert card["name2label"] == name2label and card["records"] > 0
    used = (tmp_path / "run" / "demo_round1" / "config.yaml").read_text()
    assert str(tmp_path / "run" / "demo_round1" / "pseudo") in used  # mixed into its training
    history = pd.read_csv(tmp_path / "run" / "demo_round1" / "history.csv")
    assert "mix_share_pseudo" in history.columns
    teacher = json.loads((tmp_path / "run" / "demo_round1" / "pseudo" / "pseudo_report.json")
                         .read_text())["teachers"]
    assert teacher == [str(tmp_path / "run" / "demo_round0" / "best.keras")]

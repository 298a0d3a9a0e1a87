"""Weight averaging (EMA, SWA), early stopping, plateau, clipping and the schedules."""

import json

import keras
import numpy as np
import pandas as pd
import pytest

from birdkeras import metrics
from birdkeras.config import load_config
from birdkeras.records import format as record_format
from birdkeras.records import pipeline
from birdkeras.errors import ConfigError
from birdkeras.train import callbacks, optimization, trainer

from test_train import SMALL


def _toy(cfg_overrides=(), seed=0):
    keras.utils.set_random_seed(seed)
    cfg = load_config(None, ["train.warmup_epochs=0", "train.lr_max=0.05", *cfg_overrides])
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3),
                              keras.layers.BatchNormalization(), keras.layers.Dense(2)])
    model.compile(optimization.make_optimizer(cfg.train, global_batch=8, steps_per_epoch=4),
                  "mse")
    rng = np.random.default_rng(seed)
    return model, rng.normal(size=(32, 4)), rng.normal(size=(32, 2))


class _Record(keras.callbacks.Callback):
    """The model's trainable weights after each step, or at each epoch end."""

    def __init__(self, when="batch"):
        super().__init__()
        self.when, self.seen = when, []

    def _keep(self):
        self.seen.append([keras.ops.convert_to_numpy(v).copy()
                          for v in self.model.trainable_variables])

    def on_train_batch_end(self, batch, logs=None):
        if self.when == "batch":
            self._keep()

    def on_epoch_end(self, epoch, logs=None):
        if self.when == "epoch":
            self._keep()


def test_ema_weights_follow_their_formula_and_training_goes_on_with_the_live_ones():
    model, x, y = _toy(["train.ema=true", "train.ema_momentum=0.8"])
    steps, ema = _Record("batch"), callbacks.EMAWeights()
    validated, live_after = _Record("epoch"), _Record("epoch")
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0,
              callbacks=[steps, ema, validated, ema.restore, live_after])
    average = None
    for k, weights in enumerate(steps.seen):  # the first step starts the average
        average = weights if k == 0 else [0.8 * a + 0.2 * w for a, w in zip(average, weights)]
        if (k + 1) % 4 == 0:  # an epoch end: the callbacks between see the average
            for got, want in zip(validated.seen[k // 4], average):
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
            for got, want in zip(live_after.seen[k // 4], weights):
                np.testing.assert_allclose(got, want, rtol=1e-6)
    assert not np.allclose(average[0], steps.seen[-1][0])  # the two differ
    # After fit (which Keras ends by overwriting the weights with the average), the live
    # weights are back: the next fit call trains on from them.
    for got, want in zip(model.trainable_variables, steps.seen[-1]):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(got), want, rtol=1e-6)


def test_swa_averages_the_last_epochs_and_keeps_only_those(tmp_path):
    model, x, y = _toy()
    ends, swa = _Record("epoch"), callbacks.SWA(tmp_path / "swa", 2)
    everything = []
    keep_all = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda e, logs: everything.append(model.get_weights()))
    model.fit(x, y, batch_size=8, epochs=4, verbose=0, callbacks=[ends, swa, keep_all])
    assert [p.name for p in swa.files()] == ["epoch-003.weights.h5", "epoch-004.weights.h5"]
    assert swa.average(model) == [3, 4]
    # Every weight, BatchNorm's moving statistics included, is the mean of epochs 3, 4.
    for got, a, b in zip(model.get_weights(), everything[2], everything[3]):
        np.testing.assert_allclose(got, (a + b) / 2, rtol=1e-6, atol=1e-7)


class _Metric(keras.callbacks.Callback):
    """Logs a given sequence as val_macro_auc, one value per epoch."""

    def __init__(self, values):
        super().__init__()
        self.values = values

    def on_epoch_end(self, epoch, logs=None):
        logs["val_macro_auc"] = self.values[epoch]


def test_early_stopping_stops_at_the_patience_and_resumes_its_count(tmp_path):
    model, x, y = _toy()
    auc = [0.50, 0.60, 0.60, 0.58, 0.61, 0.59, 0.60, 0.55, 0.9, 0.9]
    stop = callbacks.EarlyStopping("val_macro_auc", patience=3)
    history = model.fit(x, y, batch_size=8, epochs=10, verbose=0,
                        callbacks=[_Metric(auc), stop])
    # Best 0.61 at epoch 4; epochs 5, 6, 7 do not beat it: stop after epoch 7 (8 run).
    assert len(history.history["loss"]) == 8 and stop.stopped == 8 and stop.best == 0.61
    # A resumed run counts on from its history: two epochs without gain already.
    csv = tmp_path / "history.csv"
    pd.DataFrame({"epoch": range(4), "val_macro_auc": auc[:4]}).to_csv(csv, index=False)
    resumed = callbacks.EarlyStopping("val_macro_auc", patience=3, history_csv=csv)
    assert (resumed.best, resumed.wait) == (0.60, 2)
    assert callbacks.EarlyStopping("val_loss", 2)._update(1.0) is False  # minimised


def test_plateau_lowers_the_rate_after_the_patience_down_to_the_floor():
    model, x, y = _toy(["train.schedule=plateau", "train.lr_min=0.01"])
    assert float(model.optimizer.learning_rate) == pytest.approx(0.05)  # lr_max, no warmup
    rates = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(
        float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))))
    seen = []
    plateau = callbacks.Plateau("val_macro_auc", patience=2, factor=0.5, floor=0.01)
    model.fit(x, y, batch_size=8, epochs=8, verbose=0,
              callbacks=[_Metric([0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]), plateau, rates])
    np.testing.assert_allclose(seen, [0.05, 0.05, 0.05, 0.025, 0.025, 0.0125, 0.0125, 0.01])


def test_clipping_bounds_the_gradient_the_update_is_made_from():
    for clip, want in ((0.5, 0.5), (0.0, 100.0)):
        cfg = load_config(None, [f"train.clip_norm={clip}"])
        optimizer = optimization.make_optimizer(cfg.train, global_batch=8, steps_per_epoch=4)
        variable = keras.Variable(np.zeros(4, "float32"))
        optimizer.apply([keras.ops.convert_to_tensor(np.full(4, 50.0, "float32"))], [variable])
        momentum = next(v for v in optimizer.variables if v.path.endswith("momentum"))
        # Adam's first moment after one step: (1 - beta_1) x the (clipped) gradient.
        assert np.linalg.norm(keras.ops.convert_to_numpy(momentum)) == pytest.approx(
            0.1 * want, rel=1e-5)


def test_restarts_and_one_cycle_curves():
    restarts = optimization.WarmupCosine(1e-5, 1e-3, 1e-6, warmup_steps=10, total_steps=110,
                                         cycle_steps=20)
    values = [float(restarts(s)) for s in (10, 20, 29, 30, 40, 50)]
    np.testing.assert_allclose(values, [1e-3, 5.005e-4, values[2], 1e-3, 5.005e-4, 1e-3],
                               rtol=1e-4)
    assert values[2] < 2e-5  # the end of a cycle, near lr_min
    cycle = optimization.WarmupCosine(0.0, 1e-3, 1e-6, warmup_steps=40, total_steps=140,
                                      warmup_shape="cosine")
    # A half cosine up: a quarter of the way, 0.5 (1 - cos(pi / 4)) of the peak.
    assert float(cycle(10)) == pytest.approx(1e-3 * 0.5 * (1 - np.cos(np.pi / 4)), rel=1e-4)
    cfg = load_config(None, ["train.schedule=cosine_restarts", "train.restart_epochs=2",
                             "train.epochs=6", "train.warmup_epochs=0"])
    schedule = optimization.make_optimizer(cfg.train, 8, steps_per_epoch=5)._learning_rate
    assert schedule.cycle_steps == 10 and float(schedule(10)) == pytest.approx(cfg.train.lr_max)


@pytest.mark.parametrize("override, named", [
    (["train.schedule=cosine_restarts"], "train.restart_epochs"),
    (["train.ema_momentum=1.0"], "train.ema_momentum"),
    (["train.swa_epochs=5", "train.epochs=3"], "train.swa_epochs"),
    (["train.clip_norm=-1"], "train.clip_norm"),
    (["train.early_stopping_patience=-2"], "train.early_stopping_patience"),
    (["train.plateau_factor=2"], "train.plateau_factor"),
])
def test_bad_settings_are_refused_by_name(override, named):
    with pytest.raises(ConfigError, match=named):
        load_config(None, override)


@pytest.mark.slow
def test_a_run_validates_and_saves_the_ema_weights_writes_swa_and_stops_early(
        demo_records, tmp_path, monkeypatch):
    overrides, name2label, _ = demo_records
    names = sorted(name2label, key=name2label.get)
    # The monitored metric never improves after epoch 1: patience 2 stops after epoch 3.
    evaluate = callbacks.ValidationMetrics.evaluate
    monkeypatch.setattr(callbacks.ValidationMetrics, "evaluate",
                        lambda self: {**evaluate(self), "val_padded_cmap": 0.5})
    cfg = load_config(None, [*SMALL, *overrides, "train.epochs=5", "train.ema=true",
                             "train.ema_momentum=0.9", "train.swa_epochs=2",
                             "train.clip_norm=1.0", "train.monitor=val_padded_cmap",
                             "train.early_stopping_patience=2", "train.loss=bce",
                             "train.pos_weight=sqrt"])
    summary = trainer.run(cfg, tmp_path / "run")
    run = tmp_path / "run"
    last = keras.models.load_model(run / "ckpt" / "last.keras")
    final = keras.models.load_model(run / "final.keras", compile=False)
    # final.keras holds the optimizer's average; the checkpoint trains on from the live
    # weights and carries the average beside them.
    averages = last.optimizer._model_variables_moving_average
    for variable, average, live in zip(final.trainable_variables, averages,
                                       last.trainable_variables):
        np.testing.assert_allclose(variable.numpy(), average.numpy(), rtol=1e-6)
    assert any(not np.allclose(a.numpy(), b.numpy())
               for a, b in zip(averages, last.trainable_variables))
    # The last epoch's validation scored those averaged weights.
    val = pipeline.make_dataset(cfg, len(names), False, global_batch_size=8)
    labels = np.concatenate([y.numpy() for _, y, *_ in val])
    logits = final.predict(val.map(lambda x, y, *w: x), verbose=0)
    history = pd.read_csv(run / "history.csv")
    assert history["val_macro_auc"].iloc[-1] == pytest.approx(
        metrics.macro_roc_auc(labels, logits), abs=1e-5)
    assert summary["swa_epochs"] == [2, 3] and (run / "swa.keras").is_file()
    assert 0 <= summary["swa_val_macro_auc"] <= 1
    # The loss trained with, in the checkpoint: BCE weighted from the card's counts.
    card = record_format.read_dataset_card(cfg.tfrecords.dir)
    assert isinstance(last.loss, optimization.PositiveWeightedBCE)
    np.testing.assert_allclose(last.loss.pos_weight,
                               optimization.positive_weights(card, cfg, names))
    assert max(last.loss.pos_weight) > 1
    report = json.loads((run / "run_report.json").read_text())
    assert report["status"] == "completed" and report["stopped_early_after_epoch"] == 3
    assert len(history) == 3


def test_positive_weighted_bce_is_keras_bce_at_weight_one_and_weights_the_positive_term():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (16, 5)).astype("float32")
    hard = (rng.random((16, 5)) < 0.3).astype("float32")
    for smoothing in (0.0, 0.1):  # any target, smoothed as Keras smooths it
        ours = optimization.PositiveWeightedBCE(np.ones(5), 0.0, smoothing)(hard, logits)
        keras_bce = keras.losses.BinaryCrossentropy(from_logits=True,
                                                    label_smoothing=smoothing)(hard, logits)
        assert float(ours) == pytest.approx(float(keras_bce), rel=1e-5)
    focal = optimization.PositiveWeightedBCE(np.ones(5), 2.0)(hard, logits)
    keras_focal = keras.losses.BinaryFocalCrossentropy(gamma=2.0, from_logits=True)(hard,
                                                                                     logits)
    assert float(focal) == pytest.approx(float(keras_focal), rel=1e-5)
    # Weight 3 on class 2: the loss grows by 2 x class 2's positive terms (a mean over
    # batch and classes), nothing else.
    weights = np.ones(5)
    weights[2] = 3.0
    grown = optimization.PositiveWeightedBCE(weights)(hard, logits)
    positive = hard[:, 2] * np.log1p(np.exp(-logits[:, 2]))
    base = optimization.PositiveWeightedBCE(np.ones(5))(hard, logits)
    assert float(grown) - float(base) == pytest.approx(2 * positive.sum() / hard.size, rel=1e-4)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(
        optimization.PositiveWeightedBCE(weights, 2.0, 0.05)))
    assert restored.pos_weight == list(weights) and restored.gamma == 2.0


def test_positive_weights_come_from_the_training_folds_counts():
    card = {"shards": [{"name": "fold0-00000-of-00001.tfrec", "records": 60},
                       {"name": "fold1-00000-of-00001.tfrec", "records": 40},
                       {"name": "fold2-00000-of-00001.tfrec", "records": 1000}],
            "counts_per_class_per_fold": {"a": {"0": 10, "1": 10, "2": 900},
                                          "b": {"0": 1}, "c": {"2": 5}}}
    # Validation fold 2: 100 training records; a: 20 positives, b: 1, c: none.
    cfg = load_config(None, ["train.loss=bce", "train.pos_weight=inverse",
                             "input.val_fold=2", "data.num_folds=3", "train.pos_weight_max=50"])
    np.testing.assert_allclose(optimization.positive_weights(card, cfg, ["a", "b", "c"]),
                               [80 / 20, 50, 50])
    cfg = load_config(None, ["train.loss=focal", "train.pos_weight=sqrt", "input.val_fold=2",
                             "data.num_folds=3"])
    np.testing.assert_allclose(optimization.positive_weights(card, cfg, ["a", "b", "c"]),
                               [2.0, np.sqrt(99), 50], rtol=1e-6)
    with pytest.raises(ConfigError, match="train.pos_weight=sqrt weights BCE"):
        load_config(None, ["train.pos_weight=sqrt"])  # the default loss is cce

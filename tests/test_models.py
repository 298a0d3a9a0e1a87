"""Models: shapes per backbone family, any input length, heads, .keras round trip."""

import keras
import numpy as np
import pytest

from birdkeras.model import backbones
from birdkeras.model import classifier
from birdkeras.config import ConfigError, load_config

from conftest import write_applications_file

SR = 32000


def _cfg(*overrides):
    return load_config(None, ["audio.num_mel_bins=64", *overrides])


def _waves(seconds, batch=2, seed=0):
    return (0.1 * np.random.default_rng(seed).standard_normal((batch, int(SR * seconds)))
            ).astype(np.float32)


@pytest.mark.parametrize("backbone", ["EfficientNetB0", "EfficientNetB1", "EfficientNetV2B0",
                                      "EfficientNetV2S"])
def test_each_family_gives_logits_for_any_length(backbone):
    model = classifier.build_model(_cfg(f"model.backbone={backbone}"), num_classes=5)
    for seconds in (5.0, 7.3, 20.0):
        assert tuple(model(_waves(seconds)).shape) == (2, 5)


@pytest.mark.parametrize("head", ["gap", "gem", "sed"])
def test_heads_and_save_load_round_trip(head, tmp_path):
    model = classifier.build_model(_cfg(f"model.head={head}"), num_classes=4)
    x = _waves(5.0)
    before = np.asarray(model(x))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(np.asarray(loaded(x)), before)
    longer = _waves(9.0, seed=1)
    np.testing.assert_array_equal(np.asarray(loaded(longer)), np.asarray(model(longer)))


def test_sed_head_gives_frame_and_clip_outputs():
    model = classifier.build_model(_cfg("model.head=sed"), num_classes=3)
    out = classifier.frame_model(model)(_waves(10.0))
    clip, frame = np.asarray(out["clip_logits"]), np.asarray(out["frame_logits"])
    assert clip.shape == (2, 3) and frame.shape[0] == 2 and frame.shape[2] == 3
    assert frame.shape[1] > classifier.frame_model(model)(_waves(5.0))["frame_logits"].shape[1]
    # Clip logits are an attention-weighted mean of frame logits: within their range.
    assert (clip <= frame.max(axis=1) + 1e-5).all() and (clip >= frame.min(axis=1) - 1e-5).all()
    np.testing.assert_allclose(np.asarray(model(_waves(10.0))), clip, atol=1e-5)


def test_frame_max_output_is_the_maximum_of_the_frame_logits():
    model = classifier.build_model(_cfg("model.head=sed"), num_classes=3)
    x = _waves(10.0)
    frames = np.asarray(classifier.frame_model(model)(x)["frame_logits"])
    out = classifier.with_frame_max(model)(x)
    np.testing.assert_allclose(np.asarray(out["frame_max"]), frames.max(axis=1), atol=1e-5)
    np.testing.assert_allclose(np.asarray(out["logits"]), np.asarray(model(x)), atol=1e-5)
    # And on a tensor whose mean, max and last frame all differ.
    frame_logits = np.array([[[1.0, -2.0], [5.0, -1.0], [0.0, -3.0]]], dtype=np.float32)
    np.testing.assert_array_equal(np.asarray(classifier.FrameMax()(frame_logits)),
                                  [[5.0, -1.0]])


def test_masks_change_the_spectrogram_only_when_training():
    model = classifier.build_model(_cfg("model.mask_probability=1.0", "model.dropout=0"), 3)
    unmasked = keras.Model(model.input, model.get_layer("log_mel").output)
    masked = keras.Model(model.input, model.get_layer("time_mask").output)
    x = _waves(5.0)
    reference = np.asarray(unmasked(x))
    # Inference: the mask layers are the identity, and the whole model is deterministic.
    np.testing.assert_array_equal(np.asarray(masked(x, training=False)), reference)
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(model(x)))
    # Training: every example loses whole mel bands and whole runs of frames.
    changed = (np.asarray(masked(x, training=True)) != reference)[..., 0]
    for example in changed:
        bands, frames = example.all(axis=1), example.all(axis=0)
        assert bands.any() and frames.any()
        assert (example == (bands[:, None] | frames[None, :])).all()


def test_gem_pooling_p_is_trainable_and_validated():
    layer = classifier.GeMPooling(p=3.0)
    layer.build((None, 2, 2, 4))
    assert [w.name for w in layer.trainable_weights] == ["p"]
    x = np.ones((1, 2, 2, 4), np.float32) * 2.0
    np.testing.assert_allclose(np.asarray(layer(x)), 2.0, rtol=1e-5)
    with pytest.raises(ValueError, match="p must be > 0"):
        classifier.GeMPooling(p=0)


def test_unknown_backbone_is_named():
    with pytest.raises(ConfigError, match="model.backbone='EffNetB0' is not one of"):
        _cfg("model.backbone=EffNetB0")


def _backbone_weights(cfg):
    return classifier.build_model(cfg, 3).get_layer("efficientnetb0").get_weights()


def test_imagenet_weights_come_from_the_keras_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(backbones, "_download", lambda *a: pytest.fail("must not download"))
    name = backbones.imagenet_file("EfficientNetB0")[0]
    assert name == "efficientnetb0_notop.h5"
    expected = write_applications_file(tmp_path / "keras" / "models" / name)
    loaded = _backbone_weights(_cfg("model.weights=imagenet"))
    assert len(loaded) == len(expected)
    for got, want in zip(loaded, expected):
        np.testing.assert_array_equal(got, want)


def test_weights_from_an_attached_folder_or_a_file(tmp_path, monkeypatch):
    monkeypatch.setattr(backbones, "_download", lambda *a: pytest.fail("must not download"))
    dataset = tmp_path / "input" / "keras-efficientnet"  # an attached Kaggle dataset
    expected = write_applications_file(dataset / "b0" / "efficientnetb0_notop.h5")
    for weights in (tmp_path / "input", dataset / "b0" / "efficientnetb0_notop.h5"):
        for got, want in zip(_backbone_weights(_cfg(f"model.weights={weights}")), expected):
            np.testing.assert_array_equal(got, want)


def test_offline_without_a_cached_file_names_the_file_to_attach(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty"))

    def offline(*args):
        raise OSError("URL fetch failure: Temporary failure in name resolution")

    monkeypatch.setattr(backbones, "_download", offline)
    cached = tmp_path / "empty" / "models" / "efficientnetb0_notop.h5"
    with pytest.raises(backbones.WeightsError) as err:
        classifier.build_model(_cfg("model.weights=imagenet"), 3)
    message = str(err.value)
    assert "efficientnetb0_notop.h5" in message and str(cached) in message
    assert "attach a Kaggle dataset" in message and "\n" not in message
    with pytest.raises(backbones.WeightsError, match="is a folder without efficientnetb0_notop.h5"):
        classifier.build_model(_cfg(f"model.weights={tmp_path}"), 3)
    with pytest.raises(backbones.WeightsError, match="neither 'imagenet', a weights file nor"):
        classifier.build_model(_cfg(f"model.weights={tmp_path / 'nope.h5'}"), 3)


# ResNet (V1) differs from V2 by its pixel scaling only (tested against Keras' own below):
# its run here would add ~25 s to the suite.
@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["ConvNeXtTiny", "MobileNetV3Small", "ResNet50V2"])
def test_each_new_family_builds_trains_a_step_and_exports_to_onnx_with_parity(backbone,
                                                                              tmp_path):
    import onnxruntime as ort  # noqa: PLC0415
    from birdkeras.export import convert  # noqa: PLC0415

    keras.utils.set_random_seed(0)
    cfg = _cfg("audio.num_mel_bins=32", "audio.window_s=1.0", "audio.hop_length=512",
               f"model.backbone={backbone}")
    model = classifier.build_model(cfg, num_classes=3)
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.BinaryCrossentropy(from_logits=True))
    x, y = _waves(1.0, batch=4), np.eye(3, dtype=np.float32)[[0, 1, 2, 0]]
    before = [w.copy() for w in model.get_weights()]
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert tuple(model(_waves(2.7)).shape) == (2, 3)  # any length
    # Make the outputs vary with the input, so parity means something: ConvNeXt's blocks
    # start scaled by 1e-6 (LayerScale), and BatchNorm's initial statistics flatten a
    # random network's features; set both from the data.
    waves = _waves(1.0, batch=3, seed=1)
    for layer in model._flatten_layers():
        if type(layer).__name__ == "LayerScale":
            layer.set_weights([np.ones_like(w) for w in layer.get_weights()])
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    model(np.concatenate([x, waves]), training=True)
    # Logits of about unit spread per class, so the probabilities are not saturated.
    head, logits = model.get_layer("logits"), np.asarray(model(waves))
    kernel, bias = head.get_weights()
    scale = 2.0 / np.maximum(logits.std(axis=0), 1e-6)
    head.set_weights([kernel * scale, (bias - logits.mean(axis=0)) * scale])
    exported = convert.inference_model(model)
    convert.to_onnx(convert._concrete(exported), tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    got = session.run(None, {session.get_inputs()[0].name: waves})[0]
    want = np.asarray(keras.ops.sigmoid(model(waves)))  # the trained model itself
    assert np.ptp(want, axis=0).min() > 0.1
    np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.parametrize("backbone", ["EfficientNetB0", "EfficientNetV2S", "ConvNeXtTiny",
                                      "MobileNetV3Large", "ResNet101", "ResNet50V2"])
def test_imagenet_file_is_the_one_keras_applications_fetches(backbone, monkeypatch):
    from keras.src.utils import file_utils  # noqa: PLC0415

    asked = {}

    def get_file(fname, origin, *args, file_hash=None, **kwargs):
        asked.update(name=fname, url=origin, md5=file_hash)
        raise RuntimeError("stop here")

    monkeypatch.setattr(file_utils, "get_file", get_file)
    with pytest.raises(RuntimeError, match="stop here"):
        getattr(keras.applications, backbone)(include_top=False, weights="imagenet",
                                              input_shape=(64, 64, 3))
    assert backbones.imagenet_file(backbone) == (asked["name"], asked["url"], asked["md5"])


def test_resnet_pixel_scaling_is_keras_applications_preprocessing():
    image = np.repeat(np.linspace(0, 255, 2 * 8 * 5, dtype=np.float32).reshape(2, 8, 5, 1),
                      3, axis=-1)
    v1 = np.asarray(backbones.pixel_scaling("ResNet50")(image))
    np.testing.assert_allclose(v1, keras.applications.resnet.preprocess_input(image.copy()),
                               atol=1e-4)
    v2 = np.asarray(backbones.pixel_scaling("ResNet152V2")(image))
    np.testing.assert_allclose(v2, keras.applications.resnet_v2.preprocess_input(image.copy()),
                               atol=1e-5)
    assert backbones.pixel_scaling("ConvNeXtTiny") is None

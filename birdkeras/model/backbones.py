"""Backbones: keras.applications CNNs built for a log-mel "image" of any width, and
their pretrained weights (random, ImageNet from Keras' cache or a download, a weights
file, or a folder holding keras.applications' file).
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
# keras.applications' weight URLs and hashes, and Keras' cache folder, are private constants.
from keras.src.applications import convnext, efficientnet, efficientnet_v2, mobilenet_v3, resnet
from keras.src.backend import config as keras_config

from birdkeras import config as config_lib
from birdkeras.errors import UserError


class WeightsError(UserError):
    """`model.weights` cannot be found or fetched; the message says what to attach."""


def imagenet_file(backbone: str) -> tuple[str, str, str | None]:
    """(file name, download URL, md5) of keras.applications' ImageNet weights without
    the top, e.g. ('efficientnetb0_notop.h5', 'https://storage.googleapis.com/...', ...)."""
    # The URLs and hashes are keras.applications' own constants (private modules).
    if backbone.startswith("EfficientNetV2"):
        module = efficientnet_v2
        size = backbone.removeprefix("EfficientNetV2").lower()  # b0..b3, s, m, l
        name, key = f"efficientnetv2-{size}_notop.h5", size if size.startswith("b") else f"-{size}"
    elif backbone.startswith("EfficientNet"):
        module = efficientnet
        key = backbone.removeprefix("EfficientNet").lower()  # b0..b7
        name = f"efficientnet{key}_notop.h5"
    elif backbone.startswith("ConvNeXt"):
        module = convnext
        key = "convnext_" + backbone.removeprefix("ConvNeXt").lower()  # tiny..xlarge
        name = f"{key}_notop.h5"
    elif backbone.startswith("MobileNetV3"):
        module = mobilenet_v3
        key = backbone.removeprefix("MobileNetV3").lower() + "_224_1.0_float"
        name = f"weights_mobilenet_v3_{key}_no_top_v2.h5"
    else:  # ResNet50 .. ResNet152V2
        module, key = resnet, backbone.lower()
        name = f"{key}_weights_tf_dim_ordering_tf_kernels_notop.h5"
    md5 = getattr(module, "WEIGHTS_HASHES", {}).get(key, (None, None))[1]
    base = getattr(module, "BASE_WEIGHTS_PATH", None) or module.BASE_WEIGHT_PATH  # MobileNetV3
    return name, base + name, md5


def pixel_scaling(backbone: str) -> keras.layers.Layer | None:
    """What a backbone needs between our [0, 255] image and its first layer: ResNet's
    Caffe-style ImageNet means (V1) or [-1, 1] (V2); EfficientNet, ConvNeXt and
    MobileNetV3 scale their pixels inside (None)."""
    if not backbone.startswith("ResNet"):
        return None
    if backbone.endswith("V2"):
        return keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="pixel_scaling")
    # The image's three channels are equal, so Caffe's RGB -> BGR flip changes nothing.
    return keras.layers.Normalization(mean=[103.939, 116.779, 123.68], variance=[1.0] * 3,
                                      name="pixel_scaling")


def keras_home() -> Path:
    """Where Keras caches downloads: $KERAS_HOME, else Keras' own default (~/.keras)."""
    return Path(os.environ.get("KERAS_HOME") or keras_config.keras_home())


def weights_file(backbone: str, weights: str | None) -> str | None:
    """The weights file `model.weights` names, fetched into Keras' cache if needed."""
    if weights is None:
        return None
    name, origin, md5 = imagenet_file(backbone)
    if weights == "imagenet":
        cached = keras_home() / "models" / name
        if cached.is_file():
            return str(cached)
        try:
            return _download(name, origin, md5)
        except Exception as err:  # noqa: BLE001 - urllib/HTTP errors vary; all mean offline
            raise WeightsError(
                f"model.weights=imagenet: {name} is not in Keras' cache ({cached.parent}) and "
                f"could not be downloaded ({type(err).__name__}). Offline: attach a Kaggle "
                f"dataset holding {name} and set model.weights to its folder, or copy the "
                f"file to {cached}") from err
    path = Path(weights)
    if path.is_dir():
        found = sorted(path.rglob(name))
        if not found:
            raise WeightsError(f"model.weights={weights} is a folder without {name} (the "
                               f"keras.applications weights of {backbone})")
        return str(found[0])
    if not path.is_file():
        raise WeightsError(f"model.weights={weights} is neither 'imagenet', a weights file nor "
                           f"a folder holding {name}")
    return str(path)


def _download(name: str, origin: str, md5: str | None) -> str:
    """The one network call of model building: keras.utils.get_file into Keras' cache."""
    return keras.utils.get_file(name, origin, cache_subdir="models",
                                cache_dir=str(keras_home()), file_hash=md5)


def backbone(cfg: config_lib.Config) -> keras.Model:
    """The keras.applications backbone, accepting any number of frames.

    B0-B7 compute their stem padding from a static input size, so the backbone is
    built for one window's frames and then re-wired, sharing its layers and weights,
    onto an input of free width.
    """
    mels, frames = cfg.audio.num_mel_bins, cfg.audio.window_frames
    fixed = getattr(keras.applications, cfg.model.backbone)(
        include_top=False, weights=weights_file(cfg.model.backbone, cfg.model.weights),
        input_shape=(mels, frames, 3))
    if cfg.model.bn_momentum is not None:
        for layer in fixed._flatten_layers():
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = cfg.model.bn_momentum
    return keras.models.clone_model(fixed, input_tensors=keras.Input((mels, None, 3)),
                                    clone_function=lambda layer: layer)

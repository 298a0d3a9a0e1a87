"""Models: raw waveform of any length -> logits.

    waveform -> LogMelSpectrogram -> FrequencyMasking, TimeMasking (training only)
             -> SpectrogramToImage -> keras.applications EfficientNet (B0-B7, V2)
             -> head (GAP | GeM | SED attention) -> dropout -> logits

The backbone is keras.applications' (`include_top=False`), built for one window and
re-wired onto any number of frames. Its weights (`model.weights`): random, ImageNet
(`weights_file`: Keras' cache, else a download when online, else one line saying which
file to attach), a weights file, or a folder holding keras.applications' file.
keras.applications EfficientNets rescale/normalise pixels inside, so the front end
hands them values in [0, 255].
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
from keras import ops

from birdkeras import config as config_lib
from birdkeras.errors import UserError
from birdkeras.augment import FrequencyMasking, TimeMasking
from birdkeras.features import LogMelSpectrogram, SpectrogramToImage


@keras.saving.register_keras_serializable(package="birdkeras")
class GeMPooling(keras.layers.Layer):
    """Generalised-mean pooling over (height, width) with a learned exponent p.

    Input shape: `(batch, h, w, channels)`. Output: `(batch, channels)`.
    """

    def __init__(self, p=3.0, eps=1e-6, **kwargs):
        super().__init__(**kwargs)
        if p <= 0:
            raise ValueError(f"p must be > 0. Received: p={p}")
        self.initial_p, self.eps = p, eps

    def build(self, input_shape):
        self.p = self.add_weight(shape=(), initializer=keras.initializers.Constant(self.initial_p),
                                 name="p")

    def call(self, inputs):
        x = ops.power(ops.maximum(inputs, self.eps), self.p)
        return ops.power(ops.mean(x, axis=(1, 2)), 1.0 / self.p)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "p": self.initial_p, "eps": self.eps}


@keras.saving.register_keras_serializable(package="birdkeras")
class AttentionSEDHead(keras.layers.Layer):
    """Sound-event-detection head (PANNs-style, as in top BirdCLEF solutions).

    Averages the feature map over frequency, smooths it over time (max + mean pooling,
    kernel 3), then per frame computes class logits and attention weights (softmax over
    time). Returns `(clip_logits, frame_logits)`: clip logits are the attention-weighted
    sum of frame logits.

    Input shape: `(batch, freq, time, channels)`. Outputs: `(batch, classes)` and
    `(batch, time, classes)`.
    """

    def __init__(self, num_classes, hidden_units=512, dropout=0.2, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.hidden_units, self.dropout = num_classes, hidden_units, dropout
        self.hidden = keras.layers.Dense(hidden_units, activation="relu", name="hidden")
        self.attention = keras.layers.Dense(num_classes, name="attention")
        self.classify = keras.layers.Dense(num_classes, name="classify")
        self.drop = keras.layers.Dropout(dropout)

    def build(self, input_shape):
        channels = input_shape[-1]
        self.hidden.build((None, None, channels))
        self.attention.build((None, None, self.hidden_units))
        self.classify.build((None, None, self.hidden_units))

    def call(self, inputs, training=False):
        x = ops.mean(inputs, axis=1)  # (batch, time, channels)
        x = (ops.max_pool(x, 3, strides=1, padding="same")
             + ops.average_pool(x, 3, strides=1, padding="same"))
        x = self.hidden(self.drop(x, training=training))
        x = self.drop(x, training=training)
        weights = ops.softmax(ops.tanh(self.attention(x)), axis=1)
        frame_logits = self.classify(x)
        return ops.sum(weights * frame_logits, axis=1), frame_logits

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes), (input_shape[0], input_shape[2],
                                                    self.num_classes)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "hidden_units": self.hidden_units, "dropout": self.dropout}


class WeightsError(UserError):
    """`model.weights` cannot be found or fetched; the message says what to attach."""


def imagenet_file(backbone: str) -> tuple[str, str, str | None]:
    """(file name, download URL, md5) of keras.applications' ImageNet weights without
    the top, e.g. ('efficientnetb0_notop.h5', 'https://storage.googleapis.com/...', ...)."""
    # The URL and hashes are keras.applications' own constants (private modules).
    if backbone.startswith("EfficientNetV2"):
        from keras.src.applications import efficientnet_v2 as module  # noqa: PLC0415

        size = backbone.removeprefix("EfficientNetV2").lower()  # b0..b3, s, m, l
        name, key = f"efficientnetv2-{size}_notop.h5", size if size.startswith("b") else f"-{size}"
    else:
        from keras.src.applications import efficientnet as module  # noqa: PLC0415

        key = backbone.removeprefix("EfficientNet").lower()  # b0..b7
        name = f"efficientnet{key}_notop.h5"
    md5 = getattr(module, "WEIGHTS_HASHES", {}).get(key, (None, None))[1]
    return name, module.BASE_WEIGHTS_PATH + name, md5


def keras_home() -> Path:
    """Where Keras caches downloads: $KERAS_HOME, else Keras' own default (~/.keras)."""
    from keras.src.backend import config as keras_config  # noqa: PLC0415

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


def _backbone(cfg: config_lib.Config) -> keras.Model:
    """The keras.applications backbone, accepting any number of frames.

    B0-B7 compute their stem padding from a static input size, so the backbone is
    built for one window's frames and then re-wired, sharing its layers and weights,
    onto an input of free width.
    """
    mels = cfg.audio.num_mel_bins
    frames = 1 + int(cfg.audio.window_s * cfg.audio.sample_rate_hz) // cfg.audio.hop_length
    fixed = getattr(keras.applications, cfg.model.backbone)(
        include_top=False, weights=weights_file(cfg.model.backbone, cfg.model.weights),
        input_shape=(mels, frames, 3))
    if cfg.model.bn_momentum is not None:
        for layer in fixed._flatten_layers():
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = cfg.model.bn_momentum
    return keras.models.clone_model(fixed, input_tensors=keras.Input((mels, None, 3)),
                                    clone_function=lambda layer: layer)


def build_model(cfg: config_lib.Config, num_classes: int) -> keras.Model:
    """The whole classifier, from raw waveform `(batch, samples)` to logits."""
    audio_cfg, model_cfg = cfg.audio, cfg.model
    waveform = keras.Input(shape=(None,), name="waveform")
    x = LogMelSpectrogram(
        sample_rate_hz=audio_cfg.sample_rate_hz, fft_length=audio_cfg.fft_length,
        hop_length=audio_cfg.hop_length, num_mel_bins=audio_cfg.num_mel_bins,
        fmin_hz=audio_cfg.fmin_hz, fmax_hz=audio_cfg.fmax_hz, top_db=model_cfg.top_db,
        name="log_mel")(waveform)
    x = FrequencyMasking(model_cfg.freq_masks, model_cfg.freq_mask_max_bins,
                         model_cfg.mask_probability, seed=cfg.seed, name="freq_mask")(x)
    x = TimeMasking(model_cfg.time_masks, model_cfg.time_mask_max_frames,
                    model_cfg.mask_probability, seed=cfg.seed + 1, name="time_mask")(x)
    x = SpectrogramToImage(name="to_image")(x)
    features = _backbone(cfg)(x)
    if model_cfg.head == "sed":
        clip, _ = AttentionSEDHead(num_classes, dropout=model_cfg.dropout, name="sed")(features)
        logits = keras.layers.Identity(name="logits")(clip)
    else:
        pool = (GeMPooling(name="gem") if model_cfg.head == "gem"
                else keras.layers.GlobalAveragePooling2D(name="gap"))
        x = keras.layers.Dropout(model_cfg.dropout, name="head_dropout")(pool(features))
        logits = keras.layers.Dense(num_classes, name="logits")(x)
    # A SED model's frame-wise logits share every layer: `frame_model(model)` exposes them.
    return keras.Model(waveform, logits, name=f"birdkeras_{model_cfg.backbone.lower()}")


@keras.saving.register_keras_serializable(package="birdkeras")
class FrameMax(keras.layers.Layer):
    """The maximum over time of frame-wise logits: `(batch, time, classes)` -> `(batch, classes)`."""

    def call(self, inputs):
        return ops.max(inputs, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])


def with_frame_max(model: keras.Model) -> keras.Model:
    """A SED model with two outputs sharing every layer: {"logits": clip logits,
    "frame_max": the maximum over frames of the frame logits}.

    Training with `train.sed_frame_loss_weight` puts a loss on both (the 2023 2nd place
    solution's frame term); inference may use either (`infer.sed_output`).
    """
    if isinstance(model.output, dict):
        return model
    _, frames = model.get_layer("sed").output
    return keras.Model(model.input, {"logits": model.output,
                                     "frame_max": FrameMax(name="frame_max")(frames)},
                       name=model.name)


def output_of(model: keras.Model, name: str = "logits"):
    """One output of a model: its only one, or `name` of a two-output SED model."""
    if isinstance(model.output, dict):
        return model.output[name]
    if name == "frame_max":
        return with_frame_max(model).output["frame_max"]
    return model.output


def frame_model(model: keras.Model) -> keras.Model:
    """For a SED model: waveform -> (clip logits, frame logits)."""
    head = model.get_layer("sed")
    clip, frame = head.output
    return keras.Model(model.input, {"clip_logits": clip, "frame_logits": frame})

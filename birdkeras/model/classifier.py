"""The classifier: raw waveform of any length -> logits.

    waveform -> LogMelSpectrogram -> FrequencyMasking, TimeMasking (training only)
             -> SpectrogramToImage -> keras.applications backbone (EfficientNet B0-B7
                and V2, ConvNeXt, MobileNetV3, ResNet and ResNetV2)
             -> head (GAP | GeM | SED attention) -> dropout -> logits

The backbone is keras.applications' (`include_top=False`), built for one window and
re-wired onto any number of frames. Its weights (`model.weights`): random, ImageNet
(`weights_file`: Keras' cache, else a download when online, else one line saying which
file to attach), a weights file, or a folder holding keras.applications' file.
EfficientNets, ConvNeXts and MobileNetV3s rescale/normalise pixels inside, so the front
end hands them values in [0, 255]; ResNets get their ImageNet scaling in a layer before
(`backbones.pixel_scaling`).
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import ops

from birdkeras import config as config_lib
from birdkeras.errors import UserError
from birdkeras.model import backbones
from birdkeras.model.frontend import LogMelSpectrogram, SpectrogramToImage
from birdkeras.model.specaugment import FilterAugment, FrequencyMasking, TimeMasking


class ModelFileError(UserError):
    """A model file cannot be loaded; the message names it."""


def load_keras(model_path: str | Path) -> keras.Model:
    """A `.keras` model saved by a training run (birdkeras' layers registered), computing
    in float32 for inference and export even when it was trained under a mixed policy."""
    path = Path(model_path)
    if not path.is_file() or path.suffix != ".keras":
        raise ModelFileError(f"{path} is not a .keras model file")
    try:
        return in_float32(keras.models.load_model(path, compile=False))
    except Exception as err:  # noqa: BLE001 - any load failure is the same user error
        raise ModelFileError(f"{path} could not be loaded as a Keras model: {err}") from err


def in_float32(model: keras.Model) -> keras.Model:
    """`model` rebuilt with every layer computing in float32 (its weights, float32 under
    any mixed policy, copied); `model` itself when no layer has a mixed policy.

    A model trained under `mixed_bfloat16` (TPU) or `mixed_float16` (GPU) keeps each
    layer's policy in its config; exported as is, its graph would mix half types.
    """
    changed = []

    def walk(node):
        if isinstance(node, dict):
            if (node.get("class_name") == "DTypePolicy"
                    and str(node.get("config", {}).get("name", "")).startswith("mixed_")):
                changed.append(node["config"]["name"])
                return {**node, "config": {**node["config"], "name": "float32"}}
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    config = walk(model.get_config())
    if not changed:
        return model
    rebuilt = type(model).from_config(config)
    rebuilt.set_weights(model.get_weights())
    return rebuilt


@keras.saving.register_keras_serializable(package="birdkeras")
class GeMPooling(keras.layers.Layer):
    """Generalised-mean pooling over (height, width) with a learned exponent p.

    Input shape: `(batch, h, w, channels)`. Output: `(batch, channels)`.

    Args:
        p: the initial exponent.
        eps: the floor before the power.
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

    Args:
        num_classes: classes.
        hidden_units: the frame features' width.
        dropout: before and after the hidden layer.
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


def build_model(cfg: config_lib.Config, num_classes: int) -> keras.Model:
    """The whole classifier, from raw waveform `(batch, samples)` to logits."""
    audio_cfg, model_cfg = cfg.audio, cfg.model
    waveform = keras.Input(shape=(None,), name="waveform")
    x = LogMelSpectrogram(
        sample_rate_hz=audio_cfg.sample_rate_hz, fft_length=audio_cfg.fft_length,
        hop_length=audio_cfg.hop_length, num_mel_bins=audio_cfg.num_mel_bins,
        fmin_hz=audio_cfg.fmin_hz, fmax_hz=audio_cfg.fmax_hz, top_db=model_cfg.top_db,
        dtype="float32", name="log_mel")(waveform)
    # The front end and its masks stay float32 under any mixed policy (bf16 on a TPU, f16
    # on a GPU): the log-mel a model learns from is the one f32 inference computes; the
    # backbone casts the image to its compute dtype.
    x = FrequencyMasking(model_cfg.freq_masks, model_cfg.freq_mask_max_bins,
                         model_cfg.mask_probability, seed=cfg.seed, dtype="float32",
                         name="freq_mask")(x)
    x = TimeMasking(model_cfg.time_masks, model_cfg.time_mask_max_frames,
                    model_cfg.mask_probability, seed=cfg.seed + 1, dtype="float32",
                    name="time_mask")(x)
    if cfg.augment.filter_augment_probability:
        x = FilterAugment(cfg.augment.filter_augment_db, cfg.augment.filter_augment_bands,
                          cfg.augment.filter_augment_probability, seed=cfg.seed + 2,
                          dtype="float32", name="filter_mask")(x)
    x = SpectrogramToImage(name="to_image")(x)
    scaling = backbones.pixel_scaling(model_cfg.backbone)
    if scaling is not None:
        x = scaling(x)
    features = backbones.backbone(cfg)(x)
    if model_cfg.head == "sed":
        clip, _ = AttentionSEDHead(num_classes, dropout=model_cfg.dropout, name="sed")(features)
        logits = keras.layers.Identity(dtype="float32", name="logits")(clip)
    else:
        pool = (GeMPooling(name="gem") if model_cfg.head == "gem"
                else keras.layers.GlobalAveragePooling2D(name="gap"))
        x = keras.layers.Dropout(model_cfg.dropout, name="head_dropout")(pool(features))
        logits = keras.layers.Dense(num_classes, dtype="float32", name="logits")(x)
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
    outputs = dict(model.output) if isinstance(model.output, dict) else {"logits": model.output}
    if "frame_max" in outputs:
        return model
    _, frames = model.get_layer("sed").output
    outputs["frame_max"] = FrameMax(name="frame_max")(frames)
    return keras.Model(model.input, outputs, name=model.name)


TEACHER_PROJECTION = "teacher_projection"


def pooled_features(model: keras.Model):
    """The pooled features the classifier reads (the gap or gem layer's output); for a
    SED head, the backbone's features averaged over frequency and time."""
    pooled = next((layer for layer in model.layers
                   if layer.name in ("gap", "gem", "teacher_pool")), None)
    if pooled is not None:
        return pooled.output
    features = model.get_layer("sed").input  # the backbone's, in this model's graph
    return keras.layers.GlobalAveragePooling2D(name="teacher_pool")(features)


def with_teacher_projection(model: keras.Model, dim: int) -> keras.Model:
    """`model` with one more output, "teacher": a linear projection of its pooled
    features to a teacher's `dim`-d embedding (embedding distillation). Its outputs are
    a dict ("logits", "frame_max" when it had it, "teacher"), sharing every layer.

    The projection only trains: `output_of` and every export read the logits, so it is
    absent from exported models.
    """
    outputs = dict(model.output) if isinstance(model.output, dict) else {"logits": model.output}
    if "teacher" in outputs:
        return model
    outputs["teacher"] = keras.layers.Dense(dim, dtype="float32",
                                            name=TEACHER_PROJECTION)(pooled_features(model))
    return keras.Model(model.input, outputs, name=model.name)


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

"""Heads on frozen embeddings (the Perch v2 + ProtoSSM route): Keras models, exportable.

    probe_model     per-class logistic probes: (windows, dim) -> (windows, classes)
                    logits, on standardised (optionally PCA-reduced) embeddings
    mlp_model       the same with one hidden layer
    sequence_model  ProtoSSM-style, over a file's `seq_len` windows at once:
                    projection -> + site and hour embeddings (+ positions) ->
                    bidirectional selective state-space layers (stacked) -> [attention
                    between the windows] -> cross-attention to learned class prototypes
                    -> cosine head against the prototypes -> optional gated fusion with
                    the embedding model's mapped logits

Every operation is per example (no batch statistics at inference), so a file's
output never depends on the other files in its batch, and every layer is Keras 3 on
`keras.ops`, so the heads save as `.keras` and convert to ONNX.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="birdkeras")
class Projection(keras.layers.Layer):
    """`(x - mean) @ components`, constants fitted on training embeddings (`fit`).

    Standardisation (components = diag(1/std)) or PCA with whitening. Stored as
    non-trainable weights, so a saved head carries them.

    Args:
        input_dim: the embedding size.
        output_dim: the projected size (input_dim: standardise; less: PCA-whiten).
    """

    def __init__(self, input_dim, output_dim, **kwargs):
        super().__init__(**kwargs)
        self.input_dim, self.output_dim = int(input_dim), int(output_dim)
        self.mean = self.add_weight(shape=(self.input_dim,), initializer="zeros",
                                    trainable=False, name="mean")
        self.components = self.add_weight(shape=(self.input_dim, self.output_dim),
                                          initializer="identity" if input_dim == output_dim
                                          else "zeros", trainable=False, name="components")

    def fit(self, x: np.ndarray) -> Projection:
        """Standardises (output_dim == input_dim) or PCA-whitens `x` (n, input_dim)."""
        mean = x.mean(axis=0)
        centred = x - mean
        if self.output_dim == self.input_dim:
            components = np.diag(1.0 / (centred.std(axis=0) + 1e-6))
        else:
            _, s, vt = np.linalg.svd(centred, full_matrices=False)
            scale = s[:self.output_dim] / np.sqrt(max(len(x) - 1, 1)) + 1e-6
            components = np.zeros((self.input_dim, self.output_dim))
            # Fewer windows than components: the missing directions stay zero.
            components[:, :len(scale)] = vt[:self.output_dim].T / scale
        self.mean.assign(mean.astype(np.float32))
        self.components.assign(components.astype(np.float32))
        return self

    def call(self, inputs):
        return ops.matmul(inputs - self.mean, self.components)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.output_dim)

    def get_config(self):
        return {**super().get_config(), "input_dim": self.input_dim,
                "output_dim": self.output_dim}


def probe_model(dim: int, num_classes: int, pca_dim: int = 0, hidden: int = 0,
                dropout: float = 0.2) -> keras.Model:
    """Logistic probes (hidden = 0) or a one-hidden-layer MLP on projected embeddings.

    Args:
        dim: the embedding size.
        num_classes: classes.
        pca_dim: PCA size (0: standardise only).
        hidden: hidden units (0: logistic probes).
        dropout: after the hidden layer.

    Returns:
        A Keras model: embeddings (n, dim) -> logits (n, classes).
    """
    inputs = keras.Input((dim,), name="embedding")
    x = Projection(dim, pca_dim or dim, name="projection")(inputs)
    if hidden:
        x = keras.layers.Dense(hidden, activation="relu", name="hidden")(x)
        x = keras.layers.Dropout(dropout, name="hidden_dropout")(x)
    logits = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, logits, name="mlp" if hidden else "probe")


@keras.saving.register_keras_serializable(package="birdkeras")
class SelectiveSSM(keras.layers.Layer):
    """A selective (Mamba-style) diagonal state-space layer, run both ways over time.

    Per channel i and state j: h_t = exp(delta_t A_ij) h_{t-1} + delta_t B_tj x_ti and
    y_ti = sum_j C_tj h_tij + D_i x_ti, where the step delta_t, B_t and C_t depend on the
    input (that is the "selective" part) and A < 0 is learned. The forward and the
    backward scans are summed. The time loop is unrolled over the static sequence length
    (12 windows of a 60 s soundscape), which keeps it exportable.

    Input and output shape: `(batch, time, channels)`.
    """

    def __init__(self, state_size=8, **kwargs):
        super().__init__(**kwargs)
        self.state_size = int(state_size)

    def build(self, input_shape):
        channels = input_shape[-1]
        n = self.state_size
        self.delta = keras.layers.Dense(channels, name="delta")
        self.to_b = keras.layers.Dense(n, use_bias=False, name="to_b")
        self.to_c = keras.layers.Dense(n, use_bias=False, name="to_c")
        for layer in (self.delta, self.to_b, self.to_c):
            layer.build(input_shape)
        init = np.log(np.tile(np.arange(1, n + 1, dtype=np.float32), (channels, 1)))
        self.a_log = self.add_weight(shape=(channels, n), initializer=keras.initializers.Constant(init),
                                     name="a_log")
        self.skip = self.add_weight(shape=(channels,), initializer="ones", name="skip")

    def _scan(self, x, reverse: bool):
        steps = x.shape[1]
        a = -ops.exp(self.a_log)  # (channels, n)
        delta = ops.softplus(self.delta(x))  # (batch, time, channels)
        b, c = self.to_b(x), self.to_c(x)  # (batch, time, n)
        h = ops.zeros_like(ops.einsum("bc,cn->bcn", x[:, 0], a))
        outputs = [None] * steps
        for t in (reversed(range(steps)) if reverse else range(steps)):
            decay = ops.exp(delta[:, t, :, None] * a)  # (batch, channels, n)
            h = decay * h + (delta[:, t] * x[:, t])[:, :, None] * b[:, t, None, :]
            outputs[t] = ops.einsum("bcn,bn->bc", h, c[:, t]) + self.skip * x[:, t]
        return ops.stack(outputs, axis=1)

    def call(self, inputs):
        return self._scan(inputs, reverse=False) + self._scan(inputs, reverse=True)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "state_size": self.state_size}


@keras.saving.register_keras_serializable(package="birdkeras")
class PrototypeHead(keras.layers.Layer):
    """Cross-attention from each window to learned class prototypes, then cosine logits.

    Logits are `scale * cos(window, prototype_k) + bias_k`. With `fusion`, the model's
    own mapped logits (an extra input) are mixed in with a learned per-class gate:
    `g_k * logits + (1 - g_k) * mapped_k`.

    Inputs: `(batch, time, channels)` [and `(batch, time, classes)` mapped logits].
    Output: `(batch, time, classes)` logits.

    Args:
        num_classes: classes (one prototype each).
        heads: attention heads.
        fusion: a second input of mapped logits, gated in per class.
    """

    def __init__(self, num_classes, heads=4, fusion=False, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.heads, self.fusion = int(num_classes), int(heads), bool(fusion)

    def build(self, input_shape):
        shape = input_shape[0] if self.fusion else input_shape
        channels = shape[-1]
        self.prototypes = self.add_weight(shape=(self.num_classes, channels),
                                          initializer="glorot_uniform", name="prototypes")
        self.attention = keras.layers.MultiHeadAttention(self.heads, channels // self.heads,
                                                         name="attention")
        self.attention.build(shape, (None, self.num_classes, channels))
        self.norm = keras.layers.LayerNormalization(name="norm")
        self.norm.build(shape)
        self.scale = self.add_weight(shape=(), initializer=keras.initializers.Constant(10.0),
                                     name="scale")
        self.bias = self.add_weight(shape=(self.num_classes,), initializer="zeros", name="bias")
        if self.fusion:
            self.gate = self.add_weight(shape=(self.num_classes,), initializer="zeros",
                                        name="gate")

    def call(self, inputs):
        x, mapped = (inputs[0], inputs[1]) if self.fusion else (inputs, None)
        batch = ops.shape(x)[0]
        keys = ops.broadcast_to(self.prototypes[None], (batch, *self.prototypes.shape))
        x = self.norm(x + self.attention(x, keys, keys))
        unit = x / (ops.norm(x, axis=-1, keepdims=True) + 1e-6)
        protos = self.prototypes / (ops.norm(self.prototypes, axis=-1, keepdims=True) + 1e-6)
        logits = self.scale * ops.einsum("btc,kc->btk", unit, protos) + self.bias
        if self.fusion:
            gate = ops.sigmoid(self.gate)
            logits = gate * logits + (1.0 - gate) * mapped
        return logits

    def compute_output_shape(self, input_shape):
        shape = input_shape[0] if self.fusion else input_shape
        return (*shape[:-1], self.num_classes)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "heads": self.heads,
                "fusion": self.fusion}


def init_prototypes(model: keras.Model, inputs, targets: np.ndarray, mask: np.ndarray) -> int:
    """Sets each class's prototype of a `sequence_model` to the mean of the features that
    reach the prototype head for the windows of that class (the 2026 notebook's
    initialisation from class means, instead of random vectors); a class without a
    positive window keeps its random prototype.

    Args:
        model: a `sequence_model` (its projection already fitted).
        inputs: its inputs for the training sequences.
        targets: (sequences, seq_len, classes) targets; >= 0.5 counts as positive.
        mask: (sequences, seq_len) true for real windows (padding is left out).

    Returns:
        How many classes got a prototype from their mean.
    """
    head = model.get_layer("prototypes")
    features_in = head.input[0] if head.fusion else head.input
    features = np.asarray(keras.Model(model.inputs, features_in).predict(inputs, verbose=0))
    features, positive = features[mask], np.asarray(targets)[mask] >= 0.5
    counts = positive.sum(axis=0)
    means = (positive.T.astype(np.float32) @ features) / np.maximum(counts, 1)[:, None]
    prototypes = np.asarray(head.prototypes)
    prototypes[counts > 0] = means[counts > 0]
    head.prototypes.assign(prototypes)
    return int((counts > 0).sum())


@keras.saving.register_keras_serializable(package="birdkeras")
class PositionEmbedding(keras.layers.Layer):
    """A learned vector per position of the sequence, added: `(batch, time, channels)`."""

    def build(self, input_shape):
        self.positions = self.add_weight(shape=tuple(input_shape[1:]), initializer="zeros",
                                         name="positions")

    def call(self, inputs):
        return inputs + self.positions[None]

    def compute_output_shape(self, input_shape):
        return input_shape


def sequence_model(dim: int, num_classes: int, seq_len: int = 12, pca_dim: int = 0,
                   d_model: int = 64, num_sites: int = 1, state_size: int = 8,
                   fusion: bool = False, dropout: float = 0.1, ssm_layers: int = 1,
                   window_heads: int = 0) -> keras.Model:
    """The ProtoSSM-style head over `seq_len` consecutive windows of one file.

    Inputs: embeddings (batch, seq_len, dim), site index (batch,) in [0, num_sites),
    hour (batch,) in [0, 24] (24: unknown) [, mapped logits (batch, seq_len, classes)].
    Output: logits (batch, seq_len, classes).

    Args:
        dim: the embedding size.
        num_classes: classes.
        seq_len: windows per sequence.
        pca_dim: PCA size (0: standardise only).
        d_model: the width of the sequence layers.
        num_sites: known sites (one more index: unknown).
        state_size: the SSM's state per channel.
        fusion: gate in the frozen model's mapped logits.
        dropout: after the input projection.
        ssm_layers: stacked residual SSM blocks (the 2026 notebook: 4).
        window_heads: > 0: a position embedding at the input and, after the SSM blocks,
            a residual multi-head self-attention between the windows with this many
            heads (the notebook: 8); 0: neither.

    Returns:
        A Keras model (see above).
    """
    emb = keras.Input((seq_len, dim), name="embedding")
    site = keras.Input((), dtype="int32", name="site")
    hour = keras.Input((), dtype="int32", name="hour")
    inputs = [emb, site, hour]
    x = Projection(dim, pca_dim or dim, name="projection")(emb)
    x = keras.layers.Dense(d_model, name="input_proj")(x)
    context = (keras.layers.Embedding(num_sites + 1, d_model, name="site_embedding")(site)
               + keras.layers.Embedding(25, d_model, name="hour_embedding")(hour))
    x = x + keras.layers.Reshape((1, d_model))(context)
    if window_heads:
        x = PositionEmbedding(name="positions")(x)
    x = keras.layers.Dropout(dropout)(x)
    for k in range(ssm_layers):
        x = x + SelectiveSSM(state_size, name="ssm" if k == 0 else f"ssm_{k}")(
            keras.layers.LayerNormalization()(x))
    if window_heads:
        normed = keras.layers.LayerNormalization()(x)
        x = x + keras.layers.MultiHeadAttention(window_heads, max(d_model // window_heads, 1),
                                                name="window_attention")(normed, normed)
    head = PrototypeHead(num_classes, fusion=fusion, name="prototypes")
    if fusion:
        mapped = keras.Input((seq_len, num_classes), name="mapped_logits")
        inputs.append(mapped)
        logits = head([x, mapped])
    else:
        logits = head(x)
    return keras.Model(inputs, keras.layers.Identity(name="logits")(logits), name="protossm")

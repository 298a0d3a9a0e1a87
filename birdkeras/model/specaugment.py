"""Training-time augmentation inside the model: SpecAugment masks.

(Augmentations that change labels or need a noise pool, MixUp, CutMix, Gaussian noise
and background mixing, run in the input pipeline: `birdkeras.mixing`.)

Every layer here is the identity at inference (`training=False`), draws its
randomness from a `keras.random.SeedGenerator`, and round-trips through `get_config`.
"""

from __future__ import annotations

import keras
from keras import ops


class _AxisMasking(keras.layers.Layer):
    """Masks up to `num_masks` bands of width <= `max_width` along one axis.

    Input shape: `(batch, mels, frames, channels)`. Output: the same. Each example gets
    its own masks, applied with `probability`; masked cells take the example's mean.
    """

    axis = None  # 1: mel bins, 2: frames

    def __init__(self, num_masks=2, max_width=10, probability=1.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if num_masks < 0:
            raise ValueError(f"num_masks must be >= 0. Received: num_masks={num_masks}")
        if max_width < 0:
            raise ValueError(f"max_width must be >= 0. Received: max_width={max_width}")
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1]. Received: probability={probability}")
        self.num_masks, self.max_width, self.probability, self.seed = (
            num_masks, max_width, probability, seed)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False):
        if not training or self.num_masks == 0 or self.max_width == 0 or self.probability == 0:
            return inputs
        shape = ops.shape(inputs)
        batch, size = shape[0], shape[self.axis]
        positions = ops.arange(size, dtype="int32")[None, :]
        masked = ops.zeros((batch, size), dtype="bool")
        for _ in range(self.num_masks):
            width = keras.random.randint((batch, 1), 0, self.max_width + 1,
                                         seed=self.seed_generator, dtype="int32")
            width = ops.minimum(width, size)
            start = ops.cast(keras.random.uniform((batch, 1), seed=self.seed_generator)
                             * ops.cast(size - width + 1, "float32"), "int32")
            masked = masked | ((positions >= start) & (positions < start + width))
        apply = keras.random.uniform((batch, 1), seed=self.seed_generator) < self.probability
        masked = masked & apply
        # Broadcast (batch, size) over (batch, mels, frames, channels) along self.axis.
        masked = ops.reshape(masked, (batch, size, 1, 1) if self.axis == 1 else (batch, 1, size, 1))
        fill = ops.mean(inputs, axis=(1, 2, 3), keepdims=True)
        return ops.where(masked, fill, inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "num_masks": self.num_masks,
                "max_width": self.max_width, "probability": self.probability, "seed": self.seed}


@keras.saving.register_keras_serializable(package="birdkeras")
class FrequencyMasking(_AxisMasking):
    """SpecAugment frequency masks (bands of mel bins), applied only when training.

    Args:
        num_masks: masks per example.
        max_width: widest mask, in mel bins.
        probability: chance that an example is masked at all.
        seed: seed for the layer's `SeedGenerator`.
    """

    axis = 1


@keras.saving.register_keras_serializable(package="birdkeras")
class TimeMasking(_AxisMasking):
    """SpecAugment time masks (runs of frames), applied only when training.

    Args:
        num_masks: masks per example.
        max_width: widest mask, in frames.
        probability: chance that an example is masked at all.
        seed: seed for the layer's `SeedGenerator`.
    """

    axis = 2


@keras.saving.register_keras_serializable(package="birdkeras")
class FilterAugment(keras.layers.Layer):
    """FilterAugment (Nam et al., 2022), step type: the mel axis cut into `bands` bands at
    random boundaries, each band of an example's log-mel raised or lowered by its own
    random dB; applied only when training.

    Input shape: `(batch, mels, frames, channels)`, log-mel in dB. Output: the same.

    Args:
        db: [low, high] gain per band, in dB.
        bands: [fewest, most] bands per example.
        probability: chance that an example is filtered at all.
        seed: seed for the layer's `SeedGenerator`.
    """

    def __init__(self, db=(-6.0, 6.0), bands=(2, 5), probability=1.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if db[0] > db[1] or bands[0] > bands[1] or bands[0] < 1:
            raise ValueError(f"need db low <= high and 1 <= bands low <= high. Received: "
                             f"db={db}, bands={bands}")
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1]. Received: probability={probability}")
        self.db, self.bands = (float(db[0]), float(db[1])), (int(bands[0]), int(bands[1]))
        self.probability, self.seed = probability, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False):
        if not training or self.probability == 0:
            return inputs
        shape = ops.shape(inputs)
        batch, mels, most = shape[0], shape[1], self.bands[1]
        count = keras.random.randint((batch, 1), self.bands[0], most + 1,
                                     seed=self.seed_generator, dtype="int32")
        # most - 1 sorted boundaries; those past an example's count move beyond the axis.
        cuts = ops.sort(keras.random.uniform((batch, most - 1), seed=self.seed_generator)
                        * ops.cast(mels, "float32"), axis=1)
        active = ops.arange(most - 1, dtype="int32")[None, :] < count - 1
        cuts = ops.where(active, cuts, ops.cast(mels, "float32") + 1.0)
        position = ops.cast(ops.arange(mels), "float32")[None, :, None]
        band = ops.sum(ops.cast(position >= cuts[:, None, :], "int32"), axis=2)  # (b, mels)
        gains = keras.random.uniform((batch, most), self.db[0], self.db[1],
                                     seed=self.seed_generator)
        gain = ops.take_along_axis(gains, band, axis=1)
        apply = keras.random.uniform((batch, 1), seed=self.seed_generator) < self.probability
        gain = ops.where(apply, gain, 0.0)
        return inputs + ops.cast(gain[:, :, None, None], inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "db": list(self.db), "bands": list(self.bands),
                "probability": self.probability, "seed": self.seed}

"""Typed, validated run configuration.

Defaults and types live here, in frozen dataclasses, with the cross-field checks in
each `__post_init__`. Loading (YAML, one level of `base:`, `--set a.b=c` overrides,
casting to each field's type, unknown keys with the nearest valid one) is the generic
`birdkeras.config.loader`; the sources birdkeras knows are `birdkeras.config.catalog`. This module is declarative, one dataclass per config
section, which is why it is longer than most.

    cfg = load_config("configs/demo_pre.yaml", ["data.num_folds=3"])
    cfg.audio.sample_rate_hz  # 32000
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, Literal

from birdkeras.config import catalog
from birdkeras.config import loader as config_loader
from birdkeras.config.loader import unknown_choice as _unknown_choice
from birdkeras.errors import ConfigError

SOURCES = catalog.NAMES
# The classification head's layers (models.build_model names them): what a model
# initialised from another run (train.init_from) does not load by default.
HEAD_LAYERS = ("logits", "sed")


@dataclasses.dataclass(frozen=True)
class AudioConfig:
    """How audio is decoded, stored and turned into features."""

    sample_rate_hz: int = 32000
    window_s: float = 5.0
    # Recordings longer than this are cropped (from the start) when TFRecords are built.
    max_duration_s: float | None = None
    num_mel_bins: int = 128
    fmin_hz: float = 50.0
    fmax_hz: float = 14000.0
    fft_length: int = 2048
    hop_length: int = 512

    def __post_init__(self):
        if self.sample_rate_hz < 8000:
            raise ConfigError(f"audio.sample_rate_hz={self.sample_rate_hz} must be >= 8000")
        if self.window_s <= 0:
            raise ConfigError(f"audio.window_s={self.window_s} must be > 0")
        if self.max_duration_s is not None and self.max_duration_s < self.window_s:
            raise ConfigError(
                f"audio.max_duration_s={self.max_duration_s} must be >= "
                f"audio.window_s={self.window_s}"
            )
        if self.fmax_hz > self.sample_rate_hz / 2:
            raise ConfigError(
                f"audio.fmax_hz={self.fmax_hz} must be <= sample_rate_hz / 2 = "
                f"{self.sample_rate_hz / 2:g}"
            )
        if not 0 <= self.fmin_hz < self.fmax_hz:
            raise ConfigError(
                f"audio.fmin_hz={self.fmin_hz} must be >= 0 and < audio.fmax_hz={self.fmax_hz}"
            )
        if self.hop_length <= 0 or self.fft_length < self.hop_length:
            raise ConfigError(
                f"audio.fft_length={self.fft_length} must be >= "
                f"audio.hop_length={self.hop_length} > 0"
            )

    @property
    def window_samples(self) -> int:
        """Samples in one window: the one place this is computed."""
        return window_samples(self.window_s, self.sample_rate_hz)

    @property
    def window_frames(self) -> int:
        """Log-mel frames of one window (centred frames: 1 + samples // hop)."""
        return 1 + self.window_samples // self.hop_length


def window_samples(window_s: float, sample_rate_hz: int) -> int:
    """`window_s` seconds at `sample_rate_hz`, rounded to the nearest sample."""
    return int(round(window_s * sample_rate_hz))


@dataclasses.dataclass(frozen=True)
class BalanceConfig:
    """Class balancing of the manifest, as the public pretraining notebooks do it.

    filter: classes with fewer than `filter_min_samples` rows get `cv=False` (they are
        kept in every training fold and never used for validation).
    upsample: rows of classes with fewer than `upsample_min_samples` are repeated.
    downsample: classes with more than `downsample_max_samples` rows are cut.
    site_weight: labelled soundscape windows drawn by site: `inverse_sqrt` weighs each
        window 1/sqrt(its site's window count) (the 2026 3rd place), as an integer
        `repeats` round(sqrt(largest site's count / its site's count)); `none`: as read.
    """

    filter_min_samples: int = 0
    upsample_min_samples: int = 0
    downsample_max_samples: int = 0
    site_weight: Literal["none", "inverse_sqrt"] = "none"

    def __post_init__(self):
        for name in ("filter_min_samples", "upsample_min_samples", "downsample_max_samples"):
            if getattr(self, name) < 0:
                raise ConfigError(f"data.balance.{name}={getattr(self, name)} must be >= 0")
        if self.downsample_max_samples and (
            self.upsample_min_samples > self.downsample_max_samples
        ):
            raise ConfigError(
                f"data.balance.upsample_min_samples={self.upsample_min_samples} must be <= "
                f"data.balance.downsample_max_samples={self.downsample_max_samples}"
            )


@dataclasses.dataclass(frozen=True)
class AnnotationsConfig:
    """Your own labelled recordings as training windows (`data.annotations`).

    tables: annotation tables or class folders (Raven selection tables, Audacity
        labels, CSV `file,start,end,label`, one folder per class), under data.root or
        absolute; empty: none.
    audio_dir: the folder (under data.root) the annotated recordings are in.
    format: auto | raven | audacity | csv | folders.
    hop_s: seconds between windows (0: the window, audio.window_s).
    min_overlap_s: an annotation labels a window it overlaps this much (or by half of
        itself); unannotated stretches of an annotated recording are negatives.
    """

    tables: tuple[str, ...] = ()
    audio_dir: str | None = None
    format: Literal["auto", "raven", "audacity", "csv", "folders"] = "auto"
    hop_s: float = 0.0
    min_overlap_s: float = 0.5

    def __post_init__(self):
        if self.tables and not self.audio_dir:
            raise ConfigError("data.annotations.tables needs data.annotations.audio_dir (the "
                              "folder under data.root the annotated recordings are in)")
        if self.hop_s < 0 or self.min_overlap_s < 0:
            raise ConfigError(f"data.annotations.hop_s={self.hop_s} and .min_overlap_s="
                              f"{self.min_overlap_s} must be >= 0")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which metadata feeds a run and how the manifest is cleaned and split."""

    # Folder holding the Kaggle downloads (birdclef-2021/, xeno-canto-extended/, ...).
    # Relative data paths elsewhere in the config (data.corrupt_files,
    # augment.background_dir) are relative to this folder.
    root: str = "data/synth"
    sources: tuple[str, ...] = ("birdclef-2026",)
    # The competition year being trained for: pretraining rows whose xc_id appears in
    # it are dropped (leakage), and its taxonomy defines the fine-tuning classes.
    target_source: str = "birdclef-2026"
    drop_target_xc_ids: bool = True
    dedupe: bool = True
    # JSON list of audio paths (relative to data.root, or bare file names) to skip.
    corrupt_files: str | None = None
    min_rating: float = 0.0
    num_folds: int = 5
    balance: BalanceConfig = BalanceConfig()
    # The classes: "rows" = every primary label of the rows read (pretraining);
    # "competition" = the target source's sample submission columns, in order, with or
    # without clips (fine-tuning: the model predicts exactly the submission's columns).
    label_map: Literal["rows", "competition"] = "rows"
    # A specialist (label_map: competition): only the competition's classes whose
    # taxonomy `specialist_column` is one of these (e.g. [Amphibia, Insecta]); clips of
    # other classes are left out, soundscape windows keep only these labels. predict
    # scatters its scores into the full model's columns (`--model FULL --model SPEC`).
    specialist: tuple[str, ...] = ()
    specialist_column: str = "class_name"
    # Your own annotated recordings, as labelled windows beside (or instead of) the
    # sources: one row per window, grouped by recording for the folds.
    annotations: AnnotationsConfig = AnnotationsConfig()
    # Manifest and label map are written here.
    manifest_dir: str = "work/manifest"

    def __post_init__(self):
        for name in self.sources:
            if name not in SOURCES:
                raise ConfigError(_unknown_choice("data.sources", name, SOURCES))
        if not self.sources and not self.annotations.tables:
            raise ConfigError("data.sources must name at least one source (or give "
                              "data.annotations.tables)")
        if self.target_source not in catalog.SOURCES:
            raise ConfigError(_unknown_choice("data.target_source", self.target_source,
                                              list(catalog.SOURCES)))
        if self.num_folds < 2:
            raise ConfigError(f"data.num_folds={self.num_folds} must be >= 2")
        if self.specialist and self.label_map != "competition":
            raise ConfigError(f"data.specialist={list(self.specialist)} picks among the "
                              "competition's classes: set data.label_map=competition")


@dataclasses.dataclass(frozen=True)
class TFRecordConfig:
    """Where and how TFRecord shards are written."""

    # A local folder or a gs:// URL.
    dir: str = "tfrecords/demo"
    shard_size_mb: float = 100.0
    workers: int = 2

    def __post_init__(self):
        if self.shard_size_mb <= 0:
            raise ConfigError(f"tfrecords.shard_size_mb={self.shard_size_mb} must be > 0")
        if self.workers < 1:
            raise ConfigError(f"tfrecords.workers={self.workers} must be >= 1")


@dataclasses.dataclass(frozen=True)
class InputConfig:
    """The tf.data pipeline: crops, labels, batching."""

    batch_size: int = 32  # per replica; global = batch_size x replicas
    shuffle_buffer: int = 256  # clips (a 5 s clip at 32 kHz is 640 kB as float32)
    # Label form: 'onehot' (primary only, for CCE) or 'multihot' (primary 1, secondary
    # labels at secondary_label_weight, for BCE).
    label_mode: Literal["onehot", "multihot"] = "onehot"
    secondary_label_weight: float = 0.5
    # Short clips are padded with zeros or by repeating themselves.
    pad_mode: Literal["zeros", "repeat"] = "repeat"
    # Random crops drawn per record per epoch: 0 = one per window_s of audio it holds
    # (long recordings give more clips), capped by max_crops_per_record.
    crops_per_record: int = 0
    max_crops_per_record: int = 8
    # Evaluation takes this many consecutive windows from the start of each record.
    eval_windows: int = 1
    sample_weight_from_rating: bool = False
    drop_remainder: bool = True
    # Shards whose size differs from what their build wrote (a partial download or copy)
    # or that are missing stop a run before its first step; true: train on the others
    # (each one left out is logged and listed in the run's run_report.json).
    skip_damaged_shards: bool = False
    val_fold: int = 0
    # Records with both hard labels and teachers' soft targets (distillation) train on
    # (1 - teacher_weight) x hard + teacher_weight x soft; records with only one use it.
    teacher_weight: float = 0.5
    # Other shard folders mixed into training (e.g. pseudo-labelled soundscape windows),
    # each drawn with its weight; tfrecords.dir gets 1 - sum(mix_weights). Their label
    # map must be the run's. Every fold of theirs trains.
    mix_dirs: tuple[str, ...] = ()
    mix_weights: tuple[float, ...] = ()
    # > 0: in each batch the mixed-in windows' share of the loss is at most this times
    # the tfrecords.dir windows' (their sample weights scaled down when they would
    # weigh more; the 2026 winners capped pseudo-labels so); 0: every window weighs 1.
    mix_loss_cap: float = 0.0

    def __post_init__(self):
        if self.mix_loss_cap < 0:
            raise ConfigError(f"input.mix_loss_cap={self.mix_loss_cap} must be >= 0 (0: off)")
        if self.batch_size < 1:
            raise ConfigError(f"input.batch_size={self.batch_size} must be >= 1")
        if not 0.0 <= self.secondary_label_weight <= 1.0:
            raise ConfigError(f"input.secondary_label_weight={self.secondary_label_weight} "
                              "must be in [0, 1]")
        if not 0.0 <= self.teacher_weight <= 1.0:
            raise ConfigError(f"input.teacher_weight={self.teacher_weight} must be in [0, 1]")
        if len(self.mix_dirs) != len(self.mix_weights) or any(
                w <= 0 for w in self.mix_weights) or sum(self.mix_weights) >= 1:
            raise ConfigError(f"input.mix_dirs={list(self.mix_dirs)} needs one weight > 0 each "
                              f"in input.mix_weights={list(self.mix_weights)}, summing to < 1")
        if self.crops_per_record < 0 or self.max_crops_per_record < 1 or self.eval_windows < 1:
            raise ConfigError("input.crops_per_record must be >= 0, input.max_crops_per_record "
                              "and input.eval_windows >= 1; got "
                              f"{self.crops_per_record}, {self.max_crops_per_record}, "
                              f"{self.eval_windows}")


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Batch-level waveform augmentation in the training pipeline (birdkeras.mixing)."""

    mixup_probability: float = 0.0
    mixup_alpha: float = 0.4
    cutmix_probability: float = 0.0
    cutmix_alpha: float = 1.0
    noise_probability: float = 0.0
    noise_snr_db: tuple[float, ...] = (10.0, 30.0)
    background_probability: float = 0.0
    # A folder of noise clips, e.g. birdclef-2024/unlabeled_soundscapes.
    background_dir: str | None = None
    background_snr_db: tuple[float, ...] = (0.0, 15.0)
    # mix: MixUp's labels mixed as the waves are; max: a mixed example carries both
    # examples' labels in full (multi-label clips).
    mixup_label_rule: Literal["mix", "max"] = "mix"
    # Each: a chance per example and a [low, high] range drawn from uniformly.
    gain_probability: float = 0.0
    gain_db: tuple[float, ...] = (-6.0, 6.0)
    shift_probability: float = 0.0  # a circular roll by up to this share of the window
    shift_max_fraction: float = 0.5
    coloured_noise_probability: float = 0.0  # power ~ 1/f^exponent: 1 pink, 2 brown
    coloured_noise_snr_db: tuple[float, ...] = (10.0, 30.0)
    coloured_noise_exponent: tuple[float, ...] = (1.0, 2.0)
    pitch_shift_probability: float = 0.0  # duration kept
    pitch_shift_semitones: tuple[float, ...] = (-2.0, 2.0)
    time_stretch_probability: float = 0.0  # pitch kept; > 1 faster
    time_stretch_rate: tuple[float, ...] = (0.8, 1.25)
    # FilterAugment, in the model after the log-mel: the mel axis cut into a random
    # number of bands (filter_augment_bands), each raised or lowered by a random dB.
    filter_augment_probability: float = 0.0
    filter_augment_db: tuple[float, ...] = (-6.0, 6.0)
    filter_augment_bands: tuple[int, ...] = (2, 5)

    _RANGES = ("noise_snr_db", "background_snr_db", "gain_db", "coloured_noise_snr_db",
               "coloured_noise_exponent", "pitch_shift_semitones", "time_stretch_rate",
               "filter_augment_db", "filter_augment_bands")

    def __post_init__(self):
        for name in ("mixup_probability", "cutmix_probability", "noise_probability",
                     "background_probability", "gain_probability", "shift_probability",
                     "coloured_noise_probability", "pitch_shift_probability",
                     "time_stretch_probability", "filter_augment_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"augment.{name}={getattr(self, name)} must be in [0, 1]")
        for name in self._RANGES:
            value = getattr(self, name)
            if len(value) != 2 or value[0] > value[1]:
                raise ConfigError(f"augment.{name}={list(value)} must be [low, high] with "
                                  "low <= high")
        if not 0 <= self.shift_max_fraction <= 1:
            raise ConfigError(f"augment.shift_max_fraction={self.shift_max_fraction} must be "
                              "in [0, 1]")
        if self.time_stretch_rate[0] <= 0 or self.filter_augment_bands[0] < 1:
            raise ConfigError("augment.time_stretch_rate must be > 0 and "
                              "augment.filter_augment_bands >= 1; got "
                              f"{list(self.time_stretch_rate)}, {list(self.filter_augment_bands)}")
        if self.mixup_alpha <= 0 or self.cutmix_alpha <= 0:
            raise ConfigError("augment.mixup_alpha and augment.cutmix_alpha must be > 0; got "
                              f"{self.mixup_alpha}, {self.cutmix_alpha}")
        if self.background_probability and not self.background_dir:
            raise ConfigError(f"augment.background_probability={self.background_probability} "
                              "needs augment.background_dir (a folder of noise clips)")


BACKBONES = (
    "EfficientNetB0", "EfficientNetB1", "EfficientNetB2", "EfficientNetB3", "EfficientNetB4",
    "EfficientNetB5", "EfficientNetB6", "EfficientNetB7", "EfficientNetV2B0",
    "EfficientNetV2B1", "EfficientNetV2B2", "EfficientNetV2B3", "EfficientNetV2S",
    "EfficientNetV2M", "EfficientNetV2L",
    "ConvNeXtTiny", "ConvNeXtSmall", "ConvNeXtBase", "ConvNeXtLarge", "ConvNeXtXLarge",
    "MobileNetV3Small", "MobileNetV3Large",
    "ResNet50", "ResNet101", "ResNet152", "ResNet50V2", "ResNet101V2", "ResNet152V2",
)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Backbone, head and the in-model augmentation."""

    backbone: str = "EfficientNetB0"
    # None: random init. "imagenet": keras.applications' ImageNet weights, from Keras'
    # cache (~/.keras/models, or $KERAS_HOME/models), downloaded there when online. Or
    # a weights file, or a folder (an attached Kaggle dataset) holding the file
    # keras.applications names, e.g. efficientnetb0_notop.h5. Checked when the model
    # is built, not here, so a run's saved config loads anywhere.
    weights: str | None = None
    head: Literal["gap", "gem", "sed"] = "gap"
    # Batch-norm momentum of the backbone (keras.applications uses 0.99); a lower value
    # lets the moving statistics catch up in short runs. None keeps the backbone's.
    bn_momentum: float | None = None
    dropout: float = 0.2
    top_db: float = 80.0
    freq_masks: int = 2
    freq_mask_max_bins: int = 12
    time_masks: int = 2
    time_mask_max_frames: int = 25
    mask_probability: float = 0.5

    def __post_init__(self):
        if self.backbone not in BACKBONES:
            raise ConfigError(_unknown_choice("model.backbone", self.backbone, BACKBONES))
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout={self.dropout} must be in [0, 1)")
        if self.bn_momentum is not None and not 0.0 < self.bn_momentum < 1.0:
            raise ConfigError(f"model.bn_momentum={self.bn_momentum} must be in (0, 1)")


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """Embedding distillation (the 2026 winners' recipe): a projection head from the
    CNN's pooled features to a teacher's embedding of the same window, trained beside the
    classification loss and left out of every export.

    teacher: a `birdkeras embed --manifest` folder of the training clips' windows, from
        any embedder (Perch v2, BirdNET, a larger birdkeras model); None: off. Each
        training crop is cut at one of its recording's teacher windows and carries that
        window's embedding; windows with none (labelled soundscape and pseudo-labelled
        records) add nothing to this loss. Mixup and cutmix keep the first clip's.
    weight: the loss's weight beside the classification loss (the 5th place: 0.1).
    loss: cosine (1 - cos) or mse (between the L2-normalised vectors).
    dim: the projection's size; 0: the teacher's, else it must equal the teacher's.
    """

    teacher: str | None = None
    weight: float = 0.1
    loss: Literal["cosine", "mse"] = "cosine"
    dim: int = 0

    def __post_init__(self):
        if self.weight < 0 or self.dim < 0:
            raise ConfigError(f"train.distill_embedding.weight={self.weight} and "
                              f".dim={self.dim} must be >= 0")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation, distribution, checkpoints and stages."""

    epochs: int = 10
    # 0: one pass over the training records per epoch (records / global batch).
    steps_per_epoch: int = 0
    loss: Literal["cce", "bce", "focal"] = "cce"
    label_smoothing: float = 0.05
    focal_gamma: float = 2.0
    # bce and focal: each class's positive term weighted by its negatives / positives in
    # the training records (inverse), or the square root of that (sqrt), capped at
    # pos_weight_max; none: unweighted.
    pos_weight: Literal["none", "sqrt", "inverse"] = "none"
    pos_weight_max: float = 50.0
    optimizer: Literal["adam", "adamw"] = "adam"
    weight_decay: float = 1e-4  # adamw only
    # Learning rate: linear warmup from lr_start to lr_max, cosine decay to lr_min, per
    # step. lr_max_per_sample > 0 sets lr_max = lr_max_per_sample x global batch (the
    # public TPU notebooks' preset).
    lr_start: float = 1e-5
    lr_max: float = 1e-3
    lr_min: float = 1e-6
    lr_max_per_sample: float = 0.0
    warmup_epochs: float = 1.0
    # The curve after the warmup: cosine (to lr_min); cosine_restarts (cosine cycles of
    # restart_epochs each, back to lr_max at each restart); one_cycle (a cosine rise over
    # warmup_epochs, then cosine to lr_min, as PyTorch's OneCycleLR); plateau (lr_max,
    # no warmup, times plateau_factor when train.monitor has not improved for
    # plateau_patience epochs, down to lr_min).
    schedule: Literal["cosine", "cosine_restarts", "one_cycle", "plateau"] = "cosine"
    restart_epochs: float = 0.0
    plateau_factor: float = 0.5
    plateau_patience: int = 1
    # Gradients clipped to this global norm before each update (0: off).
    clip_norm: float = 0.0
    # An exponential moving average of the weights, kept by the optimizer (Keras'
    # use_ema): validation, best.keras and final.keras use the averaged weights,
    # training goes on with the live ones (ckpt/last.keras holds both).
    ema: bool = False
    ema_momentum: float = 0.999
    # > 0: swa.keras, the mean of the weights at the ends of the last this many epochs
    # (the EMA weights when ema is on; BatchNorm statistics averaged too), validated
    # beside the final model.
    swa_epochs: int = 0
    # > 0: stop when train.monitor has not improved for this many epochs.
    early_stopping_patience: int = 0
    # The Keras backend of the model and training loop (the data path is TensorFlow on
    # both): jax for Kaggle's TPU v5e-8, either on GPUs and CPUs. Chosen before Keras is
    # imported (birdkeras.backend); a process already on the other one refuses the run.
    backend: Literal["tensorflow", "jax"] = "tensorflow"
    # auto: the accelerators there are (TPU, then GPUs), else the CPU, said in the log;
    # tpu | gpu | cpu: those or an error. TensorFlow also has multiworker and mirrored
    # (default: one device). On JAX: keras.distribution.DataParallel over the devices.
    strategy: Literal["auto", "tpu", "gpu", "cpu", "multiworker", "mirrored",
                      "default"] = "auto"
    # true: bfloat16 on TPU, float16 on GPU, float32 on CPU; bfloat16 | float16: that
    # policy on any device. The log-mel front end and the logits stay float32.
    mixed_precision: Literal[False, True, "bfloat16", "float16"] = False
    # TensorFlow only (XLA is ~7x slower on a CPU); JAX always compiles.
    jit_compile: bool = False
    monitor: Literal["val_macro_auc", "val_padded_cmap", "val_loss",
                     "val_soundscape_macro_auc", "val_soundscape_padded_cmap"] = "val_macro_auc"
    # A source whose labelled soundscapes (either label form) are scored at each epoch
    # end, as val_soundscape_macro_auc / val_soundscape_padded_cmap (None: off).
    val_soundscapes: str | None = None
    # Start from another run's model (.keras): every layer but init_skip is loaded.
    init_from: str | None = None
    init_skip: tuple[str, ...] = HEAD_LAYERS
    # Train only the head for this many epochs first.
    freeze_backbone_epochs: int = 0
    checkpoint_every_steps: int = 50
    # SED heads: the loss on the clip logits plus this weight times the loss on the
    # maximum over frames of the frame logits (0: clip loss only; other heads: unused).
    sed_frame_loss_weight: float = 0.0
    # A projection head learning a teacher's embedding of each window (DistillConfig).
    distill_embedding: DistillConfig = DistillConfig()
    # Stage files run in sequence by one command, each initialised from the previous
    # stage's best model; a stage file states what differs from this config (or names
    # its own base:). See birdkeras.stages (self-training: pseudo.audio_dirs).
    stages: tuple[str, ...] = ()
    # k-fold training (birdkeras.train.folds): one run per listed fold, each validated on
    # it, in <workdir>/fold<k>/, with out-of-fold predictions and an ensemble.json that
    # `predict --model <workdir>` takes as one model. Empty: one run on input.val_fold.
    folds: tuple[int, ...] = ()

    def __post_init__(self):
        if len(set(self.folds)) != len(self.folds) or any(k < 0 for k in self.folds):
            raise ConfigError(f"train.folds={list(self.folds)} must be distinct fold numbers "
                              ">= 0")
        if self.folds and self.stages:
            raise ConfigError("train.folds and train.stages together are not supported: run "
                              "the stages per fold (--set input.val_fold=K)")
        if self.epochs < 1 or self.steps_per_epoch < 0:
            raise ConfigError(f"train.epochs={self.epochs} must be >= 1 and "
                              f"train.steps_per_epoch={self.steps_per_epoch} >= 0")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"train.label_smoothing={self.label_smoothing} must be in [0, 1)")
        if not 0 < self.lr_min <= self.lr_max or self.lr_start <= 0:
            raise ConfigError(f"need 0 < train.lr_min <= train.lr_max and train.lr_start > 0; "
                              f"got lr_start={self.lr_start}, lr_max={self.lr_max}, "
                              f"lr_min={self.lr_min}")
        if self.schedule == "cosine_restarts" and self.restart_epochs <= 0:
            raise ConfigError("train.schedule=cosine_restarts needs train.restart_epochs > 0 "
                              f"(the length of one cycle), got {self.restart_epochs}")
        if not 0 < self.plateau_factor < 1 or self.plateau_patience < 1:
            raise ConfigError(f"train.plateau_factor={self.plateau_factor} must be in (0, 1) "
                              f"and train.plateau_patience={self.plateau_patience} >= 1")
        if self.pos_weight != "none" and self.loss == "cce":
            raise ConfigError(f"train.pos_weight={self.pos_weight} weights BCE's positive "
                              "terms: set train.loss to bce or focal, or pos_weight to none")
        if self.pos_weight_max < 1:
            raise ConfigError(f"train.pos_weight_max={self.pos_weight_max} must be >= 1")
        if self.clip_norm < 0:
            raise ConfigError(f"train.clip_norm={self.clip_norm} must be >= 0 (0: off)")
        if not 0 < self.ema_momentum < 1:
            raise ConfigError(f"train.ema_momentum={self.ema_momentum} must be in (0, 1)")
        if not 0 <= self.swa_epochs <= self.epochs:
            raise ConfigError(f"train.swa_epochs={self.swa_epochs} must be in "
                              f"[0, train.epochs={self.epochs}]")
        if self.early_stopping_patience < 0:
            raise ConfigError(f"train.early_stopping_patience={self.early_stopping_patience} "
                              "must be >= 0 (0: off)")
        if self.sed_frame_loss_weight < 0:
            raise ConfigError(f"train.sed_frame_loss_weight={self.sed_frame_loss_weight} "
                              "must be >= 0")
        if self.monitor.startswith("val_soundscape") and not self.val_soundscapes:
            raise ConfigError(f"train.monitor={self.monitor} needs train.val_soundscapes "
                              "(a source with labelled soundscapes)")
        if self.val_soundscapes is not None and self.val_soundscapes not in SOURCES:
            raise ConfigError(_unknown_choice("train.val_soundscapes", self.val_soundscapes,
                                              SOURCES))


@dataclasses.dataclass(frozen=True)
class WandbConfig:
    """Weights & Biases logging. Keys come from WANDB_API_KEY and are never written."""

    mode: Literal["disabled", "offline", "online"] = "offline"
    project: str = "birdkeras"
    num_audio_examples: int = 8


@dataclasses.dataclass(frozen=True)
class InferConfig:
    """Soundscape inference (`birdkeras predict`): windows, post-processing, outputs.

    The sample rate, window length and classes come from the model, not from here.
    """

    # Seconds between window starts; row_id ends are start + the model's window.
    hop_s: float = 5.0
    batch_size: int = 8
    # Decode threads running ahead of inference (0: decode in the calling thread).
    workers: int = 1
    # For .keras models; an export folder carries the activation it was exported with.
    activation: Literal["sigmoid", "softmax"] = "sigmoid"
    # Export folders with a log-mel CNN (ONNX, OpenVINO): "numpy" computes the log-mel in
    # the decode threads (a real FFT) and runs the CNN; "graph" runs the whole exported
    # model on raw audio. int8: the quantised CNN (birdkeras export --int8).
    front_end: Literal["numpy", "graph"] = "numpy"
    int8: bool = False
    # Arithmetic precision of the runtime: float32 unless asked. bf16 and f16 are OpenVINO
    # options for CPUs that have them (avx512_bf16/AMX; AVX-512 FP16); int8 is `int8`.
    precision: Literal["f32", "bf16", "f16"] = "f32"
    # For .keras SED models: score windows by their clip logits or by the maximum over
    # their frames (an export folder carries the output it was exported with).
    sed_output: Literal["clip", "frame_max"] = "clip"
    # Column order: a sample_submission.csv (columns after row_id) or a taxonomy.csv
    # (primary_label rows). None: the model's classes in label order.
    class_order: str | None = None
    # Post-processing, each off by default. Smoothing: weights over neighbouring
    # windows, centred, e.g. [0.25, 0.5, 0.25].
    smoothing: tuple[float, ...] = ()
    # File-level scaling: p <- (1 - w) p + w * (the file's max | mean of its top k).
    file_scaling: Literal["none", "max", "topk"] = "none"
    file_scaling_weight: float = 0.3
    file_scaling_top_k: int = 3
    # Time-shift TTA: also score windows shifted by these seconds, and average.
    tta_shifts_s: tuple[float, ...] = ()
    # Cross-window steps (any model; 0 = off): multiplicative file-level confidence
    # p * topk_mean^power, rank-aware p * file_max^power, and confidence-adaptive
    # delta-shift smoothing p + s (1 - p)(neighbours - p).
    file_topk_power: float = 0.0
    rank_power: float = 0.0
    adaptive_smoothing: float = 0.0
    # The embedding route's tuned steps (birdkeras.route): per-taxon temperatures, the
    # site/hour prior, per-class thresholds, fusion with the CNN it was tuned with, and
    # the cross-window steps above at the strengths its out-of-fold scores chose
    # (applied inside the route's runner, before any set by hand here).
    taxon_temperature: bool = True
    site_prior: bool = True
    class_thresholds: bool = False
    # How the tuned thresholds act: "zero" sets what is below a class's cut to 0;
    # "sharpen" maps it to cut x (p / cut)^threshold_power (the ranking kept).
    threshold_mode: Literal["zero", "sharpen"] = "zero"
    threshold_power: float = 2.0
    cnn_fusion: bool = True
    route_cross_window: bool = True
    # Where the route's embedding model and fused CNN are on this machine (None: the
    # paths recorded when it was trained).
    embedder: str | None = None
    route_cnn: str | None = None
    route_head: Literal["probe", "mlp", "sequence", "blend"] | None = None  # None: the route's own
    # The sequence head's free TTA (the 2026 ProtoSSM notebook's): also run it on the
    # file's window sequence rotated by these many windows (e.g. [1, -1]), rotate each
    # output back and average the logits with the unshifted run's. No second pass
    # through the embedding model. Empty: off.
    route_shift_tta: tuple[int, ...] = ()
    # Only these classes in every output: a text file, one per line (a class name, a
    # scientific name, or BirdNET's "Scientific name_Common name"). None: all.
    species_list: str | None = None
    # A frozen model's windows when it scores its own classes (BirdNET: 3 s crops pooled
    # over longer windows); None: its own (BirdNET 3 s).
    frozen_window_s: float | None = None
    # Raven tables and the BirdNET-style CSV: join up to this many consecutive windows
    # of one class into one detection, scored by their maximum (1: one per window).
    merge_consecutive: int = 1
    # A file that cannot be decoded gets rows for its header duration, or this many
    # seconds if even the header is unreadable, filled with the mean prediction.
    broken_file_duration_s: float = 60.0
    # Wall-clock budget of a run (None: none). When the projected time passes it,
    # optional work is dropped (TTA shifts, then later ensemble members) and, as a
    # last resort, the remaining files get the mean prediction, so a submission is
    # always written in time. predict_report.json says what was dropped and when.
    time_budget_s: float | None = None
    # With no test audio (Kaggle's save run): score this many files of a dry-run
    # folder to estimate the hidden run of hidden_test_files soundscapes.
    dry_run_files: int = 3
    hidden_test_files: int = 700
    # Long-format CSV and Raven tables keep scores at or above these.
    long_min_score: float = 0.1
    raven_min_score: float = 0.5

    def __post_init__(self):
        if self.threshold_power < 1:
            raise ConfigError(f"infer.threshold_power={self.threshold_power} must be >= 1 "
                              "(1: sharpen leaves the scores as they are)")
        if self.hop_s <= 0 or self.batch_size < 1 or self.workers < 0:
            raise ConfigError(f"need infer.hop_s > 0, infer.batch_size >= 1 and "
                              f"infer.workers >= 0; got hop_s={self.hop_s}, "
                              f"batch_size={self.batch_size}, workers={self.workers}")
        if self.smoothing and (len(self.smoothing) % 2 == 0 or min(self.smoothing) < 0
                               or sum(self.smoothing) <= 0):
            raise ConfigError(f"infer.smoothing={list(self.smoothing)} must be an odd number "
                              "of non-negative weights with a positive sum")
        if not 0 <= self.file_scaling_weight <= 1 or self.file_scaling_top_k < 1:
            raise ConfigError(f"need infer.file_scaling_weight in [0, 1] and "
                              f"infer.file_scaling_top_k >= 1; got "
                              f"{self.file_scaling_weight}, {self.file_scaling_top_k}")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise ConfigError(f"infer.time_budget_s={self.time_budget_s} must be > 0 or null")
        if self.dry_run_files < 0 or self.hidden_test_files < 0:
            raise ConfigError(f"infer.dry_run_files={self.dry_run_files} and "
                              f"infer.hidden_test_files={self.hidden_test_files} must be >= 0")
        if self.broken_file_duration_s <= 0:
            raise ConfigError(f"infer.broken_file_duration_s={self.broken_file_duration_s} "
                              "must be > 0")
        if self.merge_consecutive < 1:
            raise ConfigError(f"infer.merge_consecutive={self.merge_consecutive} must be >= 1 "
                              "(1: one detection per window)")
        if self.frozen_window_s is not None and self.frozen_window_s <= 0:
            raise ConfigError(f"infer.frozen_window_s={self.frozen_window_s} must be > 0 or null")


@dataclasses.dataclass(frozen=True)
class PseudoConfig:
    """Pseudo-labelling (`birdkeras pseudolabel`, and self-training stages)."""

    # A window is kept when its top averaged teacher probability reaches this...
    threshold: float = 0.5
    # ... else dropped, or kept as a soft negative (its low targets teach "nothing here").
    below_threshold: Literal["drop", "soft_negative"] = "drop"
    power: float = 1.0  # targets = averaged probabilities ** power (sharpening when > 1)
    max_windows_per_file: int = 0  # 0: no cap; else the most confident windows
    hop_s: float = 5.0
    batch_size: int = 16
    files_per_shard: int = 32
    # A source with labelled soundscapes: its labels go beside the soft targets of the
    # windows they cover (distillation: input.teacher_weight).
    hard_labels: str | None = None
    # Self-training (train.stages): a stage with audio_dirs (under data.root) first
    # pseudo-labels them with the previous stage's best model and `teachers`, then
    # trains with those windows mixed in at mix_weight.
    audio_dirs: tuple[str, ...] = ()
    teachers: tuple[str, ...] = ()
    mix_weight: float = 0.3
    runtime: Literal["tf", "tflite", "onnx", "openvino"] = "tf"
    # A model whose own probabilities cap the pseudo-labels class by class (the 2026
    # winners capped with Perch v2's): a frozen model (Perch v2, BirdNET) mapped to the
    # teachers' classes by data.target_source's taxonomy (scientific name, then genus),
    # or any model scoring those classes. Classes it cannot map stay uncapped.
    cap_model: str | None = None

    def __post_init__(self):
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"pseudo.threshold={self.threshold} must be in [0, 1]")
        if self.power <= 0 or self.hop_s <= 0:
            raise ConfigError(f"pseudo.power={self.power} and pseudo.hop_s={self.hop_s} "
                              "must be > 0")
        if self.max_windows_per_file < 0 or self.batch_size < 1 or self.files_per_shard < 1:
            raise ConfigError("pseudo.max_windows_per_file must be >= 0, pseudo.batch_size "
                              f"and pseudo.files_per_shard >= 1; got {self.max_windows_per_file},"
                              f" {self.batch_size}, {self.files_per_shard}")
        if not 0.0 < self.mix_weight < 1.0:
            raise ConfigError(f"pseudo.mix_weight={self.mix_weight} must be in (0, 1)")
        if self.hard_labels is not None and self.hard_labels not in catalog.SOURCES:
            raise ConfigError(_unknown_choice("pseudo.hard_labels", self.hard_labels,
                                              list(catalog.SOURCES)))


@dataclasses.dataclass(frozen=True)
class RouteConfig:
    """The embedding route's heads (`birdkeras route`; see birdkeras.route)."""

    # The head predict runs; "blend": every head's logits, weighted as their
    # out-of-fold predictions chose (`route.json`'s head_weights).
    head: Literal["probe", "mlp", "sequence", "blend"] = "sequence"
    pca_dim: int = 128  # 0: standardise only
    mlp_hidden: int = 256
    epochs: int = 60  # probe and MLP
    seq_epochs: int = 80
    seq_len: int = 12  # windows per sequence (a 60 s soundscape)
    d_model: int = 64  # the 2026 notebook's: 320
    state_size: int = 8  # the notebook's: 32
    ssm_layers: int = 1  # stacked SSM blocks (the notebook's: 4)
    window_heads: int = 0  # > 0: attention between windows + positions (the notebook's: 8)
    # The class prototypes' start: random, or each class's mean of the features reaching
    # the prototype head over its positive training windows (the notebook's).
    prototype_init: Literal["random", "class_mean"] = "random"
    fusion: bool = True  # gate the embedding model's own mapped logits into the sequence head
    pseudo_unlabelled: bool = True  # the sequence head also learns unlabelled files' probe scores
    # Tune the cross-window steps' strengths per taxon (Aves, Amphibia, Insecta, ...)
    # rather than one set for every class; predict applies each taxon's own.
    cross_window_by_taxon: bool = False
    # Tune the site/hour prior's weight per taxon too (a chorus is more site-bound than
    # a passing bird); predict uses each taxon's own, the global one for the rest.
    prior_by_taxon: bool = False
    # Where the prior is fused: "probability" ((1 - w) p + w prior) or "logit" (the 2026
    # notebook's: logit(p) + w logit(prior)); its weight is tuned out of fold either way.
    prior_space: Literal["probability", "logit"] = "probability"
    # The probe's and MLP's inputs with temporal context (the 2026 notebook's): each
    # window's embedding, its neighbours' mean and maximum, its position in the file.
    probe_temporal: bool = False
    folds: int = 4
    lr: float = 1e-3
    batch_size: int = 64
    # How every head trains (the 2026 notebook: focal BCE, positive weights, label
    # smoothing, AdamW, one-cycle or cosine, clipping); the defaults are plain BCE and
    # Adam at a constant rate.
    loss: Literal["bce", "focal"] = "bce"
    focal_gamma: float = 2.0
    label_smoothing: float = 0.0
    pos_weight_max: float = 0.0  # > 0: positives weighted negatives/positives, capped
    optimizer: Literal["adam", "adamw"] = "adam"
    weight_decay: float = 1e-4
    schedule: Literal["constant", "cosine", "one_cycle"] = "constant"
    clip_norm: float = 0.0
    swa_epochs: int = 0  # > 1: each head ends at the mean of its last N epochs' weights
    # > 0: the heads learn (1 - w) labels + w the frozen model's own probabilities, for
    # the classes it maps (distillation to the teacher as soft targets).
    distill_weight: float = 0.0

    def __post_init__(self):
        if not 0 <= self.distill_weight < 1:
            raise ConfigError(f"route.distill_weight={self.distill_weight} must be in [0, 1)")
        if not 0 <= self.label_smoothing < 1 or self.pos_weight_max < 0 or self.clip_norm < 0:
            raise ConfigError(f"route.label_smoothing={self.label_smoothing} must be in [0, 1), "
                              f"route.pos_weight_max={self.pos_weight_max} and "
                              f"route.clip_norm={self.clip_norm} >= 0")
        if self.window_heads < 0 or (self.window_heads and self.d_model % self.window_heads):
            raise ConfigError(f"route.window_heads={self.window_heads} must be >= 0 and divide "
                              f"route.d_model={self.d_model}")
        for name in ("epochs", "seq_epochs", "seq_len", "d_model", "state_size", "batch_size",
                     "ssm_layers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"route.{name}={getattr(self, name)} must be >= 1")
        if self.folds < 2 or self.pca_dim < 0 or self.mlp_hidden < 0 or self.swa_epochs < 0:
            raise ConfigError(f"need route.folds >= 2, route.pca_dim, route.mlp_hidden and "
                              f"route.swa_epochs >= 0; got {self.folds}, {self.pca_dim}, "
                              f"{self.mlp_hidden}, {self.swa_epochs}")


@dataclasses.dataclass(frozen=True)
class Config:
    """A whole run: what data, how it is stored, and where outputs go."""

    name: str = "run"
    workdir: str = "work/run"
    seed: int = 0
    audio: AudioConfig = AudioConfig()
    data: DataConfig = DataConfig()
    tfrecords: TFRecordConfig = TFRecordConfig()
    input: InputConfig = InputConfig()
    augment: AugmentConfig = AugmentConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    wandb: WandbConfig = WandbConfig()
    infer: InferConfig = InferConfig()
    pseudo: PseudoConfig = PseudoConfig()
    route: RouteConfig = RouteConfig()

    def __post_init__(self):
        if self.input.val_fold >= self.data.num_folds:
            raise ConfigError(f"input.val_fold={self.input.val_fold} must be < "
                              f"data.num_folds={self.data.num_folds}")
        if self.data.target_source == "birdclef-2020" and self.audio.sample_rate_hz < 22050:
            raise ConfigError("birdclef-2020 audio needs audio.sample_rate_hz >= 22050")
        windows = [s for s in self.data.sources if s in catalog.SOUNDSCAPE_SOURCES]
        if windows and self.train.loss == "cce":
            raise ConfigError(f"data.sources {windows} are multi-label soundscape windows: "
                              "use train.loss=bce or focal (categorical cross-entropy "
                              "assumes one class per example)")

    def data_path(self, path: str | None) -> str | None:
        """A data path of this config: absolute (or a URL) as given, else under data.root.

        So a config states `augment.background_dir: birdclef-2026/train_soundscapes` and
        the same file works wherever the data root is (a Kaggle notebook's input folder,
        a VM's disk) with only `data.root` changed.
        """
        if path is None or Path(path).is_absolute() or "://" in path:
            return path
        return str(Path(self.data.root) / path)


# ----------------------------------------------------------------------------------
# Loading: the generic loader (birdkeras.config_loader) applied to this schema.


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Loads `path` (or the defaults), applies `a.b=c` overrides, validates, returns."""
    return config_loader.load(Config, path, overrides)


def load_stage(parent: dict[str, Any], path: str | Path,
               overrides: typing.Sequence[str] = ()) -> Config:
    """A stage of `train.stages`: its file on top of the `parent` config (a plain dict,
    `to_dict` of the config listing the stages), unless the file names its own `base:`;
    then `overrides`."""
    stage = config_loader.read_yaml(Path(path))
    if "base" in stage:
        return load_config(path, overrides)
    raw = config_loader.deep_merge(parent, stage)
    for item in overrides:
        config_loader.set_dotted(raw, *config_loader.parse_override(item))
    return from_dict(raw)


def from_dict(raw: dict[str, Any]) -> Config:
    """Builds a validated `Config` from nested plain values."""
    return config_loader.build(Config, raw)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples as lists), suitable for YAML or JSON."""
    return config_loader.to_dict(cfg)


def save_config(cfg: Config, path: str | Path) -> Path:
    """Writes the resolved config as YAML (every field, defaults included)."""
    return config_loader.save(cfg, path, header="Resolved birdkeras config")

"""tf.data input pipeline: shards -> (waveform windows, labels[, weights]) batches.

Training: list the shards of every fold but the validation fold (train-only shards
included), interleave parallel reads, shuffle, parse, draw random `window_s` crops
(several per long recording: one per window of audio it holds, up to a cap, times the
record's `repeats` from class upsampling), build labels, batch at the global batch size
with `drop_remainder`, prefetch. Evaluation: the validation fold, consecutive windows
from the start of each record, in order.

Records were cut by recording, not into pre-cut 5 s clips: crops are drawn here, so a
long recording gives a different 5 s view every epoch. With a teacher
(`train.distill_embedding`) the crops are cut at the teacher's windows of each record
and carry its embedding of them (`birdkeras.records.teacher`).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from birdkeras import config as config_lib
from birdkeras import storage
from birdkeras.records import format as record_format
from birdkeras.records import mixing
from birdkeras.records import teacher as teacher_lib
from birdkeras.records.format import RecordsError, list_shards, read_dataset_card


class DataError(RecordsError):
    """The shards cannot feed this config; the message names what differs."""


def check_card(card: dict, cfg: config_lib.Config, name2label: dict | None = None) -> None:
    """Fails before training when the records disagree with the config."""
    if card["sample_rate_hz"] != cfg.audio.sample_rate_hz:
        raise DataError(f"records in {cfg.tfrecords.dir} are at {card['sample_rate_hz']} Hz "
                        f"but audio.sample_rate_hz={cfg.audio.sample_rate_hz}")
    if name2label is not None and card["name2label"] != name2label:
        missing = sorted(set(name2label) ^ set(card["name2label"]))[:5]
        raise DataError(f"the label map of {cfg.tfrecords.dir} differs from the run's "
                        f"(e.g. {missing}); rebuild the records or fix data.sources")


def damaged_shards(folder: str, card: dict | None = None) -> dict:
    """{shard path: what is wrong} for the shards of `folder`'s card that are missing or
    whose size differs from what their build wrote (one stat each, local or gs://)."""
    card = card or read_dataset_card(folder)
    damaged = {}
    for shard in card.get("shards", []):
        path = storage.join(folder, shard["name"])
        size = storage.size(path)
        if size is None:
            damaged[path] = "is missing"
        elif shard.get("bytes") is not None and size != shard["bytes"]:
            damaged[path] = (f"is {size:,} bytes but its build wrote {shard['bytes']:,} "
                             "(truncated, or changed since)")
    return damaged


def usable_shards(folder: str, cfg: config_lib.Config) -> list[str]:
    """The shards of `folder` to read: all of them but those `check_shards` leaves out."""
    damaged = check_shards(folder, cfg)
    return [path for path in list_shards(folder) if path not in damaged]


def check_shards(folder: str, cfg: config_lib.Config) -> dict:
    """`damaged_shards(folder)`, which are an error naming each one and how to rebuild it
    unless `input.skip_damaged_shards` (then returned, to be left out and reported)."""
    damaged = damaged_shards(folder)
    if damaged and not cfg.input.skip_damaged_shards:
        listed = "; ".join(f"shard {path} {why}" for path, why in damaged.items())
        raise DataError(
            f"{len(damaged)} damaged shard(s) in {folder}: {listed}. Copy them again, or "
            "delete each with its .done.json and run `birdkeras tfrecords build --cfg "
            "<config>` to rewrite them (`birdkeras tfrecords verify` re-reads every "
            "record); or set input.skip_damaged_shards=true to train on the others")
    return damaged


def _crop_count(num_samples, window, cfg: config_lib.InputConfig):
    if cfg.crops_per_record:
        count = tf.constant(cfg.crops_per_record, tf.int64)
    else:
        count = tf.maximum(num_samples // window, 1)
    return tf.minimum(count, cfg.max_crops_per_record)


def pad_to(audio, window, pad_mode):
    """Pads a clip shorter than `window` with zeros or by repeating it; longer: as is."""
    n = tf.shape(audio)[0]
    if pad_mode == "repeat":
        reps = (window + n - 1) // tf.maximum(n, 1)
        audio = tf.tile(audio, [tf.maximum(reps, 1)])
    return tf.pad(audio, [[0, tf.maximum(window - tf.shape(audio)[0], 0)]])


def _labels(example, num_classes, cfg: config_lib.InputConfig):
    """The target vector of a record.

    Hard: the primary label one-hot (with secondary labels at their weight in
    multihot mode), or a window's multi-hot `targets`. Soft: the teachers'
    `soft_targets`. Both: (1 - teacher_weight) x hard + teacher_weight x soft (the
    cross-entropy of a mixed target is the mix of the two cross-entropies).
    """
    label = example[record_format.LABEL]
    hard = tf.one_hot(label, num_classes)  # label -1 (a soundscape window): zeros
    if cfg.label_mode == "multihot":
        secondary = tf.reduce_max(
            tf.one_hot(example[record_format.SECONDARY_LABELS], num_classes), axis=0)
        secondary = tf.reshape(secondary, [num_classes]) * cfg.secondary_label_weight
        hard = tf.maximum(hard, secondary)
    targets, soft = example[record_format.TARGETS], example[record_format.SOFT_TARGETS]
    has_targets, has_soft = tf.size(targets) > 0, tf.size(soft) > 0
    hard = tf.cond(has_targets, lambda: tf.reshape(targets, [num_classes]), lambda: hard)
    soft = tf.cond(has_soft, lambda: tf.reshape(soft, [num_classes]),
                   lambda: tf.zeros([num_classes]))
    has_hard = (label >= 0) | has_targets
    mixed = (1.0 - cfg.teacher_weight) * hard + cfg.teacher_weight * soft
    return tf.where(has_soft, tf.where(has_hard, mixed, soft), hard)


def _weight(example):
    rating = example[record_format.RATING]
    return tf.where(rating > 0, tf.maximum(rating / 5.0, 0.2), 1.0)


def make_dataset(cfg: config_lib.Config, num_classes: int, training: bool,
                 files: list[str] | None = None, seed: int | None = None,
                 global_batch_size: int | None = None,
                 mix_counter: MixCounter | None = None,
                 teacher: teacher_lib.Teacher | None = None) -> tf.data.Dataset:
    """The training or evaluation dataset of `cfg` (files: override the fold choice).

    Training with `input.mix_dirs`: windows are drawn from tfrecords.dir and each mix
    folder at their weights; `mix_counter` (if given) counts where each came from.
    Training with a `teacher`: crops at its windows, each batch `(waveforms, targets,
    teacher embeddings[, weights])`.

    Args:
        cfg: the run's config.
        num_classes: classes of the targets.
        training: training (random crops, shuffled, repeated, augmented) or evaluation.
        files: shards to read (None: by fold).
        seed: the pipeline's seed (None: cfg.seed).
        global_batch_size: batch size (None: input.batch_size).
        mix_counter: counts the mixed sources' windows.
        teacher: embeddings of the training windows (`train.distill_embedding`).

    Returns:
        batches of (waveforms, targets[, teacher embeddings][, weights]).
    """
    files = files if files is not None else fold_files(cfg, training)
    if not files:
        raise DataError(f"no shards for {'training' if training else 'validation'} in "
                        f"{cfg.tfrecords.dir} (val_fold={cfg.input.val_fold})")
    seed = cfg.seed if seed is None else seed
    teacher = teacher if training else None
    ds = windows(files, cfg, num_classes, training, seed, teacher)
    if training and cfg.input.mix_dirs:
        ds, mix_counter = _mixed(ds, cfg, num_classes, seed, mix_counter, teacher)
    if training:
        ds = ds.shuffle(cfg.input.shuffle_buffer, seed=seed).repeat()
    ds = ds.batch(global_batch_size or cfg.input.batch_size,
                  drop_remainder=cfg.input.drop_remainder and training,
                  num_parallel_calls=tf.data.AUTOTUNE)
    if training and cfg.input.mix_dirs:
        if cfg.input.mix_loss_cap:
            ds = ds.map(loss_capper(cfg.input.mix_loss_cap, cfg.input.sample_weight_from_rating))
        ds = ds.map(mix_counter.count)
    augmenter = mixing.batch_augmenter(cfg) if training else None
    if augmenter is not None:
        ds = ds.enumerate().map(augmenter, num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.FILE if len(files) >= 2
        else tf.data.experimental.AutoShardPolicy.DATA)
    options.deterministic = not training
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def windows(files: list[str], cfg: config_lib.Config, num_classes: int, training: bool,
            seed: int, teacher: teacher_lib.Teacher | None = None) -> tf.data.Dataset:
    """The windows `(clip, label[, teacher embedding][, weight])` of the records in `files`.

    Args:
        files: shards.
        cfg: the run's config.
        num_classes: classes.
        training: random crops, else consecutive windows.
        seed: the shuffles' seed.
        teacher: training crops at its windows, with their embeddings.

    Returns:
        A dataset of (clip, label[, teacher embedding][, weight]).
    """
    ds = read_records(files, training, seed, cfg.audio.sample_rate_hz)
    return ds.interleave(window_maker(cfg, num_classes, training, teacher=teacher),
                         cycle_length=4,
                         num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training)


def identified_windows(cfg: config_lib.Config, num_classes: int, files: list[str],
                       batch_size: int) -> tf.data.Dataset:
    """The evaluation windows of `files` in batches of (clips, labels, recording ids,
    start seconds), in a fixed order (out-of-fold predictions).

    Args:
        cfg: the run's config.
        num_classes: classes of the targets.
        files: shards.
        batch_size: windows per batch.

    Returns:
        A dataset of (clips, labels, recording ids, start seconds) batches.
    """
    ds = read_records(files, False, cfg.seed, cfg.audio.sample_rate_hz)
    ds = ds.interleave(window_maker(cfg, num_classes, False, ids=True), cycle_length=4,
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


class MixCounter:
    """Windows drawn from each source of a mixed training dataset, counted per batch.

    `counts` is a variable the input pipeline adds to as it makes batches (a few
    batches ahead of training, because of prefetching).
    """

    def __init__(self, names: list[str]):
        self.names = list(names)
        with tf.device("/cpu:0"):
            self.counts = tf.Variable(tf.zeros(len(self.names), tf.int64), trainable=False)

    def count(self, *batch):
        """Adds a batch's source ids to `counts`; returns the batch without them."""
        *rest, ids = batch
        n = len(self.names)
        self.counts.assign_add(tf.math.bincount(ids, minlength=n, maxlength=n, dtype=tf.int64))
        return tuple(rest)

    def fractions(self) -> dict[str, float]:
        counts = self.counts.numpy()
        return {name: float(c / max(counts.sum(), 1)) for name, c in zip(self.names, counts)}


def _mixed(main: tf.data.Dataset, cfg: config_lib.Config, num_classes: int, seed: int,
           counter: MixCounter | None, teacher: teacher_lib.Teacher | None = None):
    """`main` and every `input.mix_dirs` folder's windows, drawn at their weights, each
    window tagged with its source's index (for `MixCounter.count`)."""
    name2label = read_dataset_card(cfg.tfrecords.dir)["name2label"]
    sources = [main]
    for folder in cfg.input.mix_dirs:
        card = read_dataset_card(folder)
        if card["name2label"] != name2label or card["sample_rate_hz"] != cfg.audio.sample_rate_hz:
            raise DataError(f"input.mix_dirs: {folder} holds records of another label map or "
                            f"sample rate than {cfg.tfrecords.dir}; they cannot be mixed")
        sources.append(windows(usable_shards(folder, cfg), cfg, num_classes, True, seed,
                               teacher))
    tagged = [ds.repeat().map(lambda *e, k=k: (*e, tf.constant(k, tf.int64)))
              for k, ds in enumerate(sources)]
    weights = [1.0 - sum(cfg.input.mix_weights), *cfg.input.mix_weights]
    counter = counter or MixCounter([cfg.tfrecords.dir, *cfg.input.mix_dirs])
    return tf.data.Dataset.sample_from_datasets(tagged, weights=weights, seed=seed), counter


def loss_capper(cap: float, weighted: bool):
    """A map over mixed batches `(..., [weights,] source ids)`: each mixed-in window's
    weight scaled so that together they weigh at most `cap` x the main windows
    (`input.mix_loss_cap`); `weighted`: the batch has weights (from ratings) to scale,
    else they are added (1 for every main window)."""

    def apply(*batch):
        *rest, ids = batch
        main = tf.cast(ids == 0, tf.float32)
        mixed = tf.reduce_sum(1.0 - main)
        scale = tf.minimum(1.0, cap * tf.reduce_sum(main) / tf.maximum(mixed, 1.0))
        weights = main + (1.0 - main) * scale
        if weighted:
            rest[-1] = rest[-1] * weights
        else:
            rest.append(weights)
        return (*rest, ids)

    return apply


def fold_files(cfg: config_lib.Config, training: bool) -> list[str]:
    """Training: every fold but `input.val_fold` (train-only shards included);
    evaluation: the validation fold. The card is checked against the config first."""
    folder = cfg.tfrecords.dir
    check_card(read_dataset_card(folder), cfg)
    usable = usable_shards(folder, cfg)
    if training:
        return [p for p in usable if record_format.shard_fold(p) != cfg.input.val_fold]
    return [p for p in usable if record_format.shard_fold(p) == cfg.input.val_fold]


def read_records(files: list[str], training: bool, seed: int,
                 sample_rate_hz: int) -> tf.data.Dataset:
    """Parsed records from `files`: parallel reads; shuffled (files, then serialised
    records) when training; each record's sample rate checked against the config's.

    Args:
        files: shards.
        training: shuffle files and records.
        seed: the shuffles' seed.
        sample_rate_hz: the rate every record must have.

    Returns:
        A dataset of parsed records.
    """
    ds = tf.data.Dataset.from_tensor_slices(files)
    if training:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8),
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training)
    if training:
        ds = ds.shuffle(64, seed=seed)  # serialised records: int16, half the memory
    ds = ds.map(record_format.parse_example, num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=not training)

    def check_rate(ex):
        tf.debugging.assert_equal(
            ex[record_format.SAMPLE_RATE], tf.constant(sample_rate_hz, tf.int64),
            message=f"record sample rate differs from audio.sample_rate_hz={sample_rate_hz}")
        return ex

    return ds.map(check_rate)


def window_maker(cfg: config_lib.Config, num_classes: int, training: bool, ids: bool = False,
                 teacher: teacher_lib.Teacher | None = None):
    """record -> dataset of its windows, each `(clip, label[, weight])`, or with `ids`
    `(clip, label, recording_id, start_s)`, or with a `teacher`
    `(clip, label, teacher embedding[, weight])`.

    Training: random crops, `_crop_count` per record times its `repeats` (with a
    teacher: at its windows of the record, see `teacher.crop_starts`); evaluation: up
    to `input.eval_windows` consecutive windows from the start.

    Args:
        cfg: the run's config.
        num_classes: classes of the targets.
        training: random crops, else consecutive windows.
        ids: also each window's recording id and start (seconds).
        teacher: training only: crops at its windows, with their embeddings.

    Returns:
        A function from a parsed record to a dataset of its windows.
    """
    inp = cfg.input
    window = cfg.audio.window_samples

    def windows(ex):
        audio = pad_to(ex[record_format.AUDIO], window, inp.pad_mode)
        n = tf.shape(audio, out_type=tf.int64)[0]
        if training:
            count = _crop_count(n, window, inp) * ex[record_format.REPEATS]
            if teacher is not None:
                audio, starts, embeddings = teacher_lib.crop_starts(
                    teacher, ex[record_format.RECORDING_ID], ex[record_format.AUDIO], audio,
                    window, count, cfg.audio.sample_rate_hz)
            else:
                starts = tf.random.uniform([count], 0, n - window + 1, dtype=tf.int64)
        else:
            count = tf.minimum(tf.maximum(n // window, 1), inp.eval_windows)
            starts = tf.range(count) * window
        label, weight = _labels(ex, num_classes, inp), _weight(ex)

        def cut(start, *embedding):
            clip = tf.slice(audio, [start], [window])
            if ids:
                return (clip, label, ex[record_format.RECORDING_ID],
                        tf.cast(start, tf.float32) / cfg.audio.sample_rate_hz)
            weights = (weight,) if inp.sample_weight_from_rating else ()
            return (clip, label, *embedding, *weights)

        if teacher is not None and training:
            return tf.data.Dataset.from_tensor_slices((starts, embeddings)).map(cut)
        return tf.data.Dataset.from_tensor_slices(starts).map(cut)

    return windows


def sample_waves(cfg: config_lib.Config, count: int = 4) -> np.ndarray:
    """`count` evaluation windows from cfg's TFRecords, for looking at (notebooks, logs)."""
    card = read_dataset_card(cfg.tfrecords.dir)
    batch = next(iter(make_dataset(cfg, len(card["name2label"]), training=False,
                                   global_batch_size=count)))
    return np.asarray(batch[0])[:count]

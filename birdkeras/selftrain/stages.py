"""Several training runs in a row (`train.stages`), and self-training rounds.

    python scripts/train.py --cfg configs/demo_selftrain.yaml --set train.init_from=...

Each stage starts from the previous stage's best model. A stage with
`pseudo.audio_dirs` first pseudo-labels those soundscapes with the previous stage's best
model (`birdkeras.pseudolabel`), then trains with the pseudo-labelled windows mixed in.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from birdkeras import config as config_lib
from birdkeras.selftrain import pseudolabel
from birdkeras.train import distribute
from birdkeras.train.trainer import InitError, run

log = logging.getLogger(__name__)


def run_stages(cfg: config_lib.Config, workdir: str | Path | None = None,
               stage_overrides: tuple = (), placement=None) -> dict:
    """Runs each stage of `train.stages` in order, each from the previous stage's best.

    A stage file states only what differs from `cfg` (the config that lists the stages),
    and may itself name a `base:` instead. Paths are relative to the working directory;
    `stage_overrides` (the command's --set values) apply to every stage; every stage
    shares `placement` (a TPU is initialised once) and writes to `workdir/<stage name>`.

    Self-training: a stage with `pseudo.audio_dirs` first pseudo-labels them with the
    previous stage's best model (and `pseudo.teachers`), then trains on its records
    with those windows mixed in at `pseudo.mix_weight`.

    Args:
        cfg: the config listing `train.stages`.
        workdir: the run folder (None: cfg.workdir); stage s writes to workdir/<stage
            name>.
        stage_overrides: `--set` values applied to every stage.
        placement: the devices, chosen already (None: from cfg; `distribute.select`).

    Returns:
        The last stage's summary.
    """
    workdir = Path(workdir or cfg.workdir)
    placement = placement or distribute.select(cfg.train.strategy)
    parent = config_lib.to_dict(cfg)
    parent["train"]["stages"] = []
    previous, summary, names = cfg.train.init_from, {}, set()
    for stage_path in cfg.train.stages:
        overrides = [item for item in stage_overrides if not item.startswith("train.stages=")]
        if previous:
            overrides.append(f"train.init_from={previous}")
        stage = config_lib.load_stage(parent, Path(stage_path), overrides)
        if stage.name in names:
            raise config_lib.ConfigError(f"train.stages: {stage_path} is a second stage named "
                                         f"{stage.name!r}; give each stage its own name")
        names.add(stage.name)
        if stage.pseudo.audio_dirs:
            stage = _pseudo_label(stage, previous, workdir / stage.name / "pseudo")
        summary = run(stage, workdir / stage.name, placement=placement)
        previous = summary["best"]
    return summary


def _pseudo_label(stage: config_lib.Config, teacher: str | None, out: Path) -> config_lib.Config:
    """Pseudo-labels the stage's soundscapes; the stage, with them mixed into training."""
    if not teacher:
        raise InitError(f"stage {stage.name}: pseudo-labelling needs a teacher (a previous "
                        "stage, or train.init_from)")
    folders = [stage.data_path(d) for d in stage.pseudo.audio_dirs]
    report = pseudolabel.run([teacher, *stage.pseudo.teachers], folders, str(out), stage,
                             stage.pseudo.runtime, progress=False)
    log.info(f"{stage.name}: pseudo-labelled {report['windows_kept']} of "
          f"{report['windows_seen']} windows -> {out}")
    return dataclasses.replace(stage, input=dataclasses.replace(
        stage.input, mix_dirs=(*stage.input.mix_dirs, str(out)),
        mix_weights=(*stage.input.mix_weights, stage.pseudo.mix_weight)))

"""Training: the trainer (`trainer`: `run` trains one config), its callbacks
(validation, checkpoints), losses and schedules (`optimization`), distribution
strategies (`distribute`) and experiment tracking (`tracking`).

    from birdkeras import train
    summary = train.run(cfg)
"""

from birdkeras.train.trainer import run  # noqa: F401 - the documented entry point

"""The run configuration: schema (typed defaults and checks), loader (YAML, `base:`,
`--set`), catalog (the Kaggle sources birdkeras knows).

    from birdkeras import config
    cfg = config.load_config("configs/demo_pre.yaml", ["data.num_folds=3"])
"""

from birdkeras.config.schema import (  # noqa: F401 - the package's public names
    BACKBONES, HEAD_LAYERS, SOURCES, AnnotationsConfig, AudioConfig, AugmentConfig, BalanceConfig, Config,
    ConfigError, DataConfig, DistillConfig, InferConfig, InputConfig, ModelConfig, PseudoConfig,
    RouteConfig, TFRecordConfig, TrainConfig, WandbConfig, from_dict, load_config,
    load_stage, save_config, to_dict, window_samples)

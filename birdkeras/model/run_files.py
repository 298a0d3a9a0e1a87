"""What a training run writes beside its `.keras` models, read back: the resolved
`config.yaml` and `name2label.json`. No Keras: export, inference and embedding code
read a model's settings without loading it.
"""

from __future__ import annotations

import json
from pathlib import Path

from birdkeras import config as config_lib
from birdkeras.errors import UserError

CONFIG = "config.yaml"
NAME2LABEL = "name2label.json"


class RunFilesError(UserError):
    """A model's run files are missing; the message names them."""


def read(model_path: str | Path) -> tuple[config_lib.Config, list[str]]:
    """The config and class names (in label order) saved next to a `.keras` model."""
    folder = Path(model_path).parent
    cfg_path, names_path = folder / CONFIG, folder / NAME2LABEL
    for path in (cfg_path, names_path):
        if not path.is_file():
            raise RunFilesError(f"{path} not found: a model needs the {CONFIG} and "
                                f"{NAME2LABEL} its training run wrote next to it")
    name2label = json.loads(names_path.read_text())
    return config_lib.load_config(cfg_path), sorted(name2label, key=name2label.get)


def write(folder: str | Path, cfg: config_lib.Config, name2label: dict) -> None:
    """Writes the run files of a training run's folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config_lib.save_config(cfg, folder / CONFIG)
    (folder / NAME2LABEL).write_text(json.dumps(name2label, indent=1) + "\n")


ENSEMBLE = "ensemble.json"  # a k-fold run's models (birdkeras.train.folds)


def write_ensemble(folder: str | Path, members: list[str], **fields) -> Path:
    """`folder`/ensemble.json listing `members` (paths relative to `folder`)."""
    path = Path(folder) / ENSEMBLE
    path.write_text(json.dumps({"members": list(members), **fields}, indent=1) + "\n")
    return path


def ensemble_members(path: str | Path) -> list[str] | None:
    """The member model paths of an ensemble folder (one holding ensemble.json), or None
    for anything else; a member that is missing is an error naming it."""
    card = Path(path) / ENSEMBLE
    if not card.is_file():
        return None
    members = [str(Path(path) / m) for m in json.loads(card.read_text())["members"]]
    for member in members:
        if not Path(member).exists():
            raise RunFilesError(f"{card} lists {member}, which is missing: train that fold "
                                "again (the same k-fold command resumes it)")
    return members

"""The generic loader, on toy dataclasses: files, base, overrides, casting, errors."""

import dataclasses
from typing import Literal

import pytest

from birdkeras.config import loader as config_loader
from birdkeras.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Optim:
    lr: float = 0.1
    name: Literal["sgd", "adam"] = "sgd"
    betas: tuple[float, ...] = (0.9, 0.99)


@dataclasses.dataclass(frozen=True)
class Toy:
    steps: int = 10
    tag: str | None = None
    shuffle: bool = True
    optim: Optim = Optim()

    def __post_init__(self):
        if self.steps < 1:
            raise ConfigError(f"steps={self.steps} must be >= 1")


def test_defaults_file_base_and_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text("steps: 5\noptim: {lr: 0.5, name: adam}\n")
    (tmp_path / "run.yaml").write_text("base: base.yaml\noptim: {lr: 0.2}\ntag: x\n")
    toy = config_loader.load(Toy, tmp_path / "run.yaml", ["optim.betas=[0.8, 0.9]", "steps=7"])
    assert toy == Toy(steps=7, tag="x", optim=Optim(lr=0.2, name="adam", betas=(0.8, 0.9)))
    assert config_loader.load(Toy) == Toy()


def test_values_are_cast_to_the_field_type():
    toy = config_loader.load(Toy, None, ["optim.lr=1", "steps=3.0", "tag=12", "optim.betas=[1]"])
    assert toy.optim.lr == 1.0 and isinstance(toy.optim.lr, float)
    assert toy.steps == 3 and isinstance(toy.steps, int)
    assert toy.tag == "12" and toy.optim.betas == (1.0,) and isinstance(toy.optim.betas[0], float)


@pytest.mark.parametrize("override,match", [
    ("optim.lrr=1", r"unknown key 'optim\.lrr' \(did you mean 'optim\.lr'\?\)"),
    ("steps=many", r"steps must be int, got 'many'"),
    ("shuffle=1", r"shuffle must be bool, got 1"),
    ("optim.name=adamw", r"optim.name='adamw' is not one of \['sgd', 'adam'\]"),
    ("optim=3", r"'optim' must be a mapping"),
    ("steps=0", r"steps=0 must be >= 1"),
    ("optim.betas=0.5", r"optim.betas must be a list, got 0.5"),
    ("steps", r"must look like 'section.key=value'"),
])
def test_errors_name_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        config_loader.load(Toy, None, [override])


def test_saved_file_loads_back_equal(tmp_path):
    toy = Toy(steps=4, tag="a", optim=Optim(betas=(0.1,)))
    path = config_loader.save(toy, tmp_path / "toy.yaml")
    assert config_loader.load(Toy, path) == toy
    assert config_loader.to_dict(toy)["optim"]["betas"] == [0.1]

"""Loading any tree of frozen dataclasses from YAML, with `base:` and `--set` overrides.

The schema (birdkeras' own dataclasses) lives in `birdkeras.config`; this module knows
nothing about it, so it is tested on toy dataclasses:

    load(MyConfig, "run.yaml", ["train.epochs=3"])

A YAML file states only what differs from the dataclass defaults and may name one
`base:` file (relative to itself; one level, no chains). Overrides `a.b=c` are parsed as
YAML and win over both. Every value is cast to its field's type (int, float, str, bool,
`X | None`, `Literal[...]`, `tuple[X, ...]`, nested dataclasses); an unknown key fails
naming the nearest valid one, a wrong type names the key, the type and the value.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from birdkeras.errors import ConfigError


def load(cls, path: str | Path | None = None, overrides: typing.Sequence[str] = ()):
    """Reads `path` (or nothing: the defaults), applies overrides, builds `cls`."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = read_yaml_with_base(Path(path))
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(raw, key, value)
    return build(cls, raw)


def build(cls, raw: dict[str, Any]):
    """An instance of dataclass `cls` from nested plain values, cast and validated."""
    return _build(cls, raw, prefix="", root=cls)


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain nested dict (tuples as lists), suitable for YAML or JSON."""

    def plain(value):
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(obj))


def save(obj: Any, path: str | Path, header: str = "Resolved config") -> Path:
    """Writes every field of `obj` (defaults included) as YAML."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {header}: every field, defaults included.\n"
                    + yaml.safe_dump(to_dict(obj), sort_keys=False))
    return path


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from err
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping, got {type(raw).__name__}")
    return raw


def read_yaml_with_base(path: Path) -> dict[str, Any]:
    raw = read_yaml(path)
    base = raw.pop("base", None)
    if base is None:
        return raw
    base_path = (path.parent / str(base)).resolve()
    base_raw = read_yaml(base_path)
    if "base" in base_raw:
        raise ConfigError(f"{path}: base file {base_path} has a 'base:' of its own; "
                          "only one level of inheritance is allowed")
    return deep_merge(base_raw, raw)


def deep_merge(base: dict, over: dict) -> dict:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_override(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like 'section.key=value'")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"override {item!r}: value is not valid YAML: {err}") from err
    return key.strip(), value


def set_dotted(raw: dict, key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def unknown_choice(key: str, value: Any, choices: typing.Sequence[str]) -> str:
    """The message for a value that is not one of `choices`, with the nearest one."""
    near = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.5)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return f"{key}={value!r} is not one of {list(choices)}{hint}"


def all_keys(cls, prefix: str = "") -> list[str]:
    """Every dotted key of dataclass `cls`, nested sections included."""
    keys = []
    for name, tp in typing.get_type_hints(cls).items():
        keys.append(f"{prefix}{name}")
        if dataclasses.is_dataclass(tp):
            keys.extend(all_keys(tp, f"{prefix}{name}."))
    return keys


def _build(cls, raw: Any, prefix: str, root):
    if not isinstance(raw, dict):
        raise ConfigError(f"'{prefix.rstrip('.') or 'config'}' must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            dotted = f"{prefix}{key}"
            near = difflib.get_close_matches(dotted, all_keys(root), n=1, cutoff=0.6)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ConfigError(f"unknown key {dotted!r}{hint}")
    kwargs = {f.name: _cast(hints[f.name], raw[f.name], f"{prefix}{f.name}", root)
              for f in dataclasses.fields(cls) if f.name in raw}
    return cls(**kwargs)


# Numbers as people write them, which YAML 1.1 (PyYAML) leaves as strings: 1e-3, 3e-4,
# 1E6 (its floats need a dot and a signed exponent), with or without underscores.
_NUMBER = re.compile(r"[+-]?(\d[\d_]*(\.[\d_]*)?|\.\d[\d_]*)([eE][+-]?\d+)?")


def _number(value: Any) -> Any:
    """`value` as a float when it is a string spelling a decimal number, else unchanged."""
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        return float(value.strip().replace("_", ""))
    return value


def _cast(tp, value: Any, key: str, root):
    """Casts a YAML value to `tp`, or raises naming `key`, the type and the value."""
    if dataclasses.is_dataclass(tp):
        return _build(tp, value if value is not None else {}, key + ".", root)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _cast(inner[0], value, key, root)
    if origin is Literal:
        if value not in args:
            raise ConfigError(unknown_choice(key, value, [str(a) for a in args]))
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return tuple(_cast(args[0], v, f"{key}[{i}]", root) for i, v in enumerate(value))
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        value = _number(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, float):
            raise ConfigError(f"{key} must be a whole number, got {value!r}")
    elif tp is float:
        value = _number(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    else:  # pragma: no cover - a field type this loader does not know is a bug here.
        raise TypeError(f"unsupported config field type {tp} for {key}")
    raise ConfigError(f"{key} must be {tp.__name__}, got {value!r} ({type(value).__name__})")

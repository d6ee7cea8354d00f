"""Strict typed views of YAML documents: frozen dataclasses built from mappings (unknown or
missing keys and wrong types are errors naming the dotted key), dotted-key access to nested
dicts and lists, and the project's one YAML library (ruamel.yaml, YAML 1.2 as DVC reads it)."""

from __future__ import annotations

import collections.abc
import dataclasses
import io
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from ruamel.yaml import YAML, YAMLError

from mnist_cnn import atomic
from mnist_cnn.errors import ConfigError


def check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key} {message}")


# --- dotted keys ----------------------------------------------------------------------------


def _child(node: Any, part: str, dotted: str, any_index: bool = False) -> Any:
    if isinstance(node, Mapping) and part in node:
        return node[part]
    if isinstance(node, list | tuple) and part.isdigit():
        if int(part) < len(node):
            return node[int(part)]
        if any_index:
            return None
    if not isinstance(node, Mapping | list | tuple):
        raise KeyError(f"{part!r} is below a value that is not a section in {dotted!r}")
    raise KeyError(f"no {part!r} in {dotted!r}")


def lookup(tree: Any, dotted: str, any_index: bool = False) -> Any:
    """The value at `dotted` (e.g. `model.filters.0`) in a nested dict/list; KeyError names the
    bad part. With `any_index`, an index past the end of a list is accepted (and gives None):
    the tuning space may address a block that only exists once `model.filters` grows."""
    node = tree
    for part in dotted.split("."):
        node = _child(node, part, dotted, any_index)
    return node


def set_dotted(tree: Any, dotted: str, value: Any, create: bool = False) -> None:
    """Set `dotted` in a nested dict/list in place (list entries by index). Without `create`
    the key must exist; with it, missing sections along the way are made. KeyError names the
    bad part."""
    *parents, last = dotted.split(".")
    node = tree
    for part in parents:
        if create and isinstance(node, collections.abc.MutableMapping) and part not in node:
            node[part] = {}
        node = _child(node, part, dotted)
        if create and not isinstance(node, Mapping | list):
            raise KeyError(f"{part!r} is not a section in {dotted!r}")
    if isinstance(node, list):
        if not (last.isdigit() and int(last) < len(node)):
            raise KeyError(f"no index {last!r} in the {len(node)}-entry list of {dotted!r}")
        node[int(last)] = value
    elif isinstance(node, collections.abc.MutableMapping) and (create or last in node):
        node[last] = value
    else:
        raise KeyError(f"no {last!r} in {dotted!r}")


# --- dataclasses from mappings --------------------------------------------------------------


def _coerce(value: Any, tp: Any, key: str) -> Any:
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping, got {type(value).__name__}")
        return from_mapping(tp, value, prefix=key)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{key} must be one of {list(allowed)}, got {value!r}")
        return value
    if origin is tuple:
        (item_tp, _ellipsis) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list, got {type(value).__name__} {value!r}")
        return tuple(_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (dict, collections.abc.Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping, got {type(value).__name__}")
        _key_tp, val_tp = typing.get_args(tp)
        return {str(k): _coerce(v, val_tp, f"{key}.{k}") for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r} for {key}")


def from_mapping(cls: type, data: Mapping[str, Any], prefix: str = "") -> Any:
    """Build dataclass `cls` from `data`, rejecting unknown and missing keys and wrong types."""
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    names = {f.name for f in fields}
    where = f"{prefix}." if prefix else ""
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(where + k for k in unknown)}; "
            f"valid keys{' under ' + prefix if prefix else ''}: {', '.join(sorted(names))}"
        )
    required = dataclasses.MISSING
    missing = [f.name for f in fields if f.name not in data and f.default is required and f.default_factory is required]
    if missing:
        raise ConfigError(f"missing key(s) {', '.join(where + k for k in missing)}")
    return cls(**{k: _coerce(v, hints[k], where + k) for k, v in data.items()})


def to_dict(obj: Any) -> Any:
    """Plain, YAML/JSON-friendly dict of a params dataclass (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple | list):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """`{"train.learning_rate": 0.001, "model.filters": "[32, 64]", ...}` for MLflow params."""
    out: dict[str, Any] = {}
    for key, value in to_dict(obj).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, list):
            out[name] = "[" + ", ".join(str(v) for v in value) + "]"
        else:
            out[name] = value
    return out


# --- YAML -----------------------------------------------------------------------------------


def parse_yaml(text: str) -> Any:
    """YAML 1.2, as DVC reads params.yaml (PyYAML's 1.1 would turn `on` into True, `1e-3` into a string)."""
    return YAML(typ="safe", pure=True).load(text)


def dump_yaml(data: Any) -> str:
    """Block-style YAML of plain data, keys in their given order."""
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False
    buf = io.StringIO()
    yaml.dump(data, buf)
    return buf.getvalue()


def read_yaml(path: str | Path, what: str = "params file") -> dict[str, Any]:
    """A YAML file holding a mapping; ConfigError naming the file when it is missing or bad."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} not found; run from the project root or pass --params") from None
    try:
        raw = parse_yaml(text) or {}
    except YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must be a mapping of sections")
    return raw


def edit_yaml_file(path: str | Path, edit: Callable[[Any], None], validate: Callable[[Path], Any]) -> None:
    """Round-trip edit of a YAML file with its comments and layout kept: `edit` changes the
    parsed document in place, `validate` must accept the result, which then replaces the file
    atomically."""
    path = Path(path)
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    try:
        doc = yaml.load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"params file {path} not found; run from the project root or pass --params") from None
    edit(doc)
    buf = io.StringIO()
    yaml.dump(doc, buf)
    with atomic.atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())
        validate(tmp)

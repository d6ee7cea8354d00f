"""Strict typed views of YAML documents: frozen pydantic sections whose every error names the
dotted key and the fix, dotted-key access to nested dicts and lists, and the project's one YAML
library (ruamel.yaml, YAML 1.2 as DVC reads it)."""

from __future__ import annotations

import collections.abc
import io
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Strict, ValidationError
from ruamel.yaml import YAML, YAMLError

from mnist_cnn import atomic
from mnist_cnn.errors import ConfigError

S = TypeVar("S", bound="Section")


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


# --- validated sections ---------------------------------------------------------------------

Int = Annotated[int, Strict()]  # a YAML 10, never "10", 10.0 or true
Float = Annotated[float, Strict()]  # a YAML number; an int becomes a float
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]


class Section(BaseModel):
    """A frozen params section: unknown keys, missing keys and wrong types are errors. `key`
    is its dotted place in params.yaml, so its errors name the full key when built alone."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    key: ClassVar[str] = ""


def rule(ok: Callable[[Any], bool], message: str) -> AfterValidator:
    """A check of one value; `message` follows the dotted key in the error (`must be positive`)."""

    def check(value: Any) -> Any:
        if not ok(value):
            raise ValueError(message)
        return value

    return AfterValidator(check)


def interval(spec: str, note: str = "") -> AfterValidator:
    """The value must lie in `spec`, written as in mathematics: `[0, 1)`, `(0, 100]`."""
    low, high = (float(v) for v in spec[1:-1].split(","))
    lower = (lambda v: v >= low) if spec[0] == "[" else (lambda v: v > low)
    upper = (lambda v: v <= high) if spec[-1] == "]" else (lambda v: v < high)
    return rule(lambda v: lower(v) and upper(v), f"must be in {spec}" + (f" ({note})" if note else ""))


def at_least(low: int, note: str = "") -> AfterValidator:
    said = "must be >= 0" if low == 0 else f"must be at least {low}"
    return rule(lambda v: v >= low, said + (f" ({note})" if note else ""))


POSITIVE = rule(lambda v: v > 0, "must be positive")

_WANTED = {"int_type": "an integer", "float_type": "a number", "bool_type": "true or false", "string_type": "a string"}


def _dotted(prefix: str, loc: tuple[str | int, ...]) -> str:
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _annotation_at(cls: type, loc: tuple[str | int, ...]) -> Any:
    tp: Any = cls
    for part in loc:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            tp = tp.model_fields[str(part)].annotation
        else:  # a dict's values or a tuple's items (tuple[X, ...]: X)
            tp = [arg for arg in typing.get_args(tp) if arg is not Ellipsis][-1]
        while typing.get_origin(tp) is Annotated:
            tp = typing.get_args(tp)[0]
    return tp


def _describe(error: Any, cls: type, prefix: str) -> str:
    loc, kind, value = tuple(error["loc"]), error["type"], error.get("input")
    key = _dotted(prefix, loc)
    if kind in _WANTED:
        return f"{key} must be {_WANTED[kind]}, got {value!r}"
    if kind in ("tuple_type", "list_type"):
        return f"{key} must be a list, got {type(value).__name__} {value!r}"
    if kind in ("dict_type", "model_type"):
        return f"{key} must be a mapping, got {type(value).__name__}"
    if kind == "literal_error":
        return f"{key} must be one of {list(typing.get_args(_annotation_at(cls, loc)))}, got {value!r}"
    if kind in ("value_error", "assertion_error"):
        return f"{key} {error['ctx']['error']}".strip()
    return f"{key}: {error['msg']}"


def _grouped(errors: list[Any], kind: str, cls: type, prefix: str) -> list[str]:
    """One line per section for its unknown (`extra_forbidden`) or `missing` keys."""
    by_parent: dict[tuple[str | int, ...], list[str]] = {}
    for error in errors:
        if error["type"] == kind:
            by_parent.setdefault(tuple(error["loc"][:-1]), []).append(_dotted(prefix, tuple(error["loc"])))
    if kind == "missing":
        return [f"missing key(s) {', '.join(keys)}" for keys in by_parent.values()]
    lines = []
    for parent, keys in by_parent.items():
        under = _dotted(prefix, parent)
        valid = ", ".join(sorted(_annotation_at(cls, parent).model_fields))
        lines.append(f"unknown key(s) {', '.join(keys)}; valid keys{' under ' + under if under else ''}: {valid}")
    return lines


def from_mapping(cls: type[S], data: Any, prefix: str | None = None) -> S:
    """Validate `data` as section `cls`; ConfigError naming every bad dotted key otherwise."""
    prefix = cls.key if prefix is None else prefix
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        lines = _grouped(errors, "extra_forbidden", cls, prefix) + _grouped(errors, "missing", cls, prefix)
        lines += [_describe(e, cls, prefix) for e in errors if e["type"] not in ("extra_forbidden", "missing")]
        raise ConfigError("; ".join(lines)) from None


def replace(section: S, **changes: Any) -> S:
    """`section` with `changes`, validated (pydantic's `model_copy(update=...)` is not)."""
    return from_mapping(type(section), {**dict(section), **changes})


def to_dict(obj: BaseModel) -> dict[str, Any]:
    """Plain, YAML/JSON-friendly dict of a section (tuples become lists)."""
    return obj.model_dump(mode="json")


def flatten(obj: BaseModel | Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"train.learning_rate": 0.001, "model.filters": "[32, 64]", ...}` for MLflow params."""
    out: dict[str, Any] = {}
    for key, value in (to_dict(obj) if isinstance(obj, BaseModel) else obj).items():
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

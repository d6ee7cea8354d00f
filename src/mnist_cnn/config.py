"""Typed, frozen view of params.yaml.

Every section is a frozen dataclass; unknown keys, wrong types and out-of-range values are
rejected with a message that names the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

from mnist_cnn.errors import ConfigError

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key} {message}")


@dataclass(frozen=True)
class DataParams:
    mirrors: tuple[str, ...] = (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    )
    # SHA-256 of each file's *decompressed* content: mirrors recompress, content is what counts.
    sha256: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 30.0
    retries: int = 3
    backoff_s: float = 1.0
    val_fraction: float = 0.1
    split_seed: int = 42

    def __post_init__(self) -> None:
        _check(0.0 < self.val_fraction < 1.0, "data.val_fraction", "must be between 0 and 1")
        _check(self.timeout_s > 0, "data.timeout_s", "must be positive")
        _check(self.retries >= 1, "data.retries", "must be at least 1")
        _check(len(self.mirrors) > 0, "data.mirrors", "needs at least one mirror")
        missing = [n for n in MNIST_FILES if n not in self.sha256]
        unknown = [n for n in self.sha256 if n not in MNIST_FILES]
        _check(not missing, "data.sha256", f"is missing checksums for {missing}")
        _check(not unknown, "data.sha256", f"has unknown files {unknown}; expected {list(MNIST_FILES)}")


@dataclass(frozen=True)
class AugmentParams:
    """Random training-only transforms, as Keras layers inside the model (inactive at inference)."""

    rotation_deg: float = 0.0
    shift: float = 0.0
    zoom: float = 0.0

    def __post_init__(self) -> None:
        _check(0 <= self.rotation_deg <= 45, "model.augment.rotation_deg", "must be in [0, 45]")
        _check(0 <= self.shift < 0.5, "model.augment.shift", "must be in [0, 0.5)")
        _check(0 <= self.zoom < 0.5, "model.augment.zoom", "must be in [0, 0.5)")

    @property
    def active(self) -> bool:
        return bool(self.rotation_deg or self.shift or self.zoom)


@dataclass(frozen=True)
class ModelParams:
    filters: tuple[int, ...] = (32, 64)
    convs_per_block: int = 1
    kernel_size: int = 3
    padding: Literal["valid", "same"] = "valid"
    downsample: Literal["maxpool", "strided"] = "maxpool"
    batch_norm: bool = False
    block_dropout: float = 0.0
    dense_units: tuple[int, ...] = (128,)
    dropout: float = 0.5
    augment: AugmentParams = AugmentParams()

    def __post_init__(self) -> None:
        _check(len(self.filters) >= 1, "model.filters", "needs at least one conv block")
        _check(all(f >= 1 for f in self.filters), "model.filters", "must be positive")
        _check(all(u >= 1 for u in self.dense_units), "model.dense_units", "must be positive")
        _check(self.convs_per_block >= 1, "model.convs_per_block", "must be at least 1")
        _check(self.kernel_size in (1, 3, 5, 7), "model.kernel_size", "must be 1, 3, 5 or 7")
        _check(0 <= self.dropout < 1, "model.dropout", "must be in [0, 1)")
        _check(0 <= self.block_dropout < 1, "model.block_dropout", "must be in [0, 1)")


@dataclass(frozen=True)
class ScheduleParams:
    """Learning-rate schedule. `onecycle` warms up linearly to train.learning_rate then
    anneals with a cosine; `plateau` divides it when validation loss stalls."""

    name: Literal["constant", "onecycle", "cosine", "exponential", "plateau"] = "constant"
    warmup_fraction: float = 0.3
    final_fraction: float = 0.01
    decay_rate: float = 0.9
    plateau_factor: float = 0.5
    plateau_patience: int = 2

    def __post_init__(self) -> None:
        _check(0 <= self.warmup_fraction < 1, "train.schedule.warmup_fraction", "must be in [0, 1)")
        _check(0 < self.final_fraction <= 1, "train.schedule.final_fraction", "must be in (0, 1]")
        _check(0 < self.decay_rate <= 1, "train.schedule.decay_rate", "must be in (0, 1]")
        _check(0 < self.plateau_factor < 1, "train.schedule.plateau_factor", "must be in (0, 1)")


@dataclass(frozen=True)
class TrainParams:
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    batch_size: int = 128
    epochs: int = 10
    seed: int = 42
    schedule: ScheduleParams = ScheduleParams()
    early_stopping_patience: int = 5
    mixed_precision: Literal["auto", "on", "off"] = "auto"

    def __post_init__(self) -> None:
        _check(self.learning_rate > 0, "train.learning_rate", "must be positive")
        _check(self.weight_decay >= 0, "train.weight_decay", "must be >= 0")
        _check(0 <= self.label_smoothing < 1, "train.label_smoothing", "must be in [0, 1)")
        _check(self.batch_size >= 1, "train.batch_size", "must be positive")
        _check(self.epochs >= 1, "train.epochs", "must be at least 1")
        _check(self.early_stopping_patience >= 0, "train.early_stopping_patience", "must be >= 0 (0 turns it off)")
        _check(
            self.weight_decay == 0 or self.optimizer in ("adamw", "sgd"),
            "train.weight_decay",
            "needs optimizer adamw or sgd (Adam's L2 is not decoupled weight decay)",
        )


@dataclass(frozen=True)
class EvaluateParams:
    batch_size: int = 1024
    grid_size: int = 25
    worst: int = 25


@dataclass(frozen=True)
class RegisterParams:
    model_name: str = "mnist-cnn"
    min_test_accuracy: float = 0.99
    champion_alias: str = "champion"
    challenger_alias: str = "challenger"

    def __post_init__(self) -> None:
        _check(0 <= self.min_test_accuracy <= 1, "register.min_test_accuracy", "must be in [0, 1]")
        _check(self.champion_alias != self.challenger_alias, "register.challenger_alias", "must differ from champion_alias")


@dataclass(frozen=True)
class TrackingParams:
    experiment: str = "mnist-cnn"


@dataclass(frozen=True)
class Params:
    data: DataParams
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    register: RegisterParams = RegisterParams()
    tracking: TrackingParams = TrackingParams()


def _coerce(value: Any, tp: Any, key: str) -> Any:
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
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {type(value).__name__} {value!r}")
        return tuple(_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (dict, collections.abc.Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping, got {type(value).__name__}")
        key_tp, val_tp = typing.get_args(tp)
        if val_tp is Any:
            return dict(value)
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
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r} for {key}")


def from_mapping(cls: type, data: Mapping[str, Any], prefix: str = "") -> Any:
    """Build dataclass `cls` from `data`, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    where = f"{prefix}." if prefix else ""
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(where + k for k in unknown)}; "
            f"valid keys{' under ' + prefix if prefix else ''}: {', '.join(sorted(names))}"
        )
    kwargs = {k: _coerce(v, hints[k], where + k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required key is missing
        raise ConfigError(f"{prefix or 'params'}: {exc}") from None


def to_dict(obj: Any) -> Any:
    """Plain, YAML/JSON-friendly dict of a params dataclass (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """`{"train.learning_rate": 0.001, "model.filters": "[32, 64]", ...}` for MLflow params."""
    out: dict[str, Any] = {}
    data = to_dict(obj)
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, list):
            out[name] = "[" + ", ".join(str(v) for v in value) + "]"
        else:
            out[name] = value
    return out


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.key=value` overrides (values parsed as YAML) to a raw params dict.
    `key=` with an empty value keeps the file's value (MLproject passes unset parameters so)."""
    import copy

    from ruamel.yaml import YAMLError

    result = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        dotted, text = item.split("=", 1)
        if not text.strip():
            continue
        parts = dotted.strip().split(".")
        node = result
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {dotted!r}: {part!r} is not a section")
            node = child
        try:
            node[parts[-1]] = _yaml_load(text)
        except YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from None
    return result


def _yaml_load(text: str) -> Any:
    """YAML 1.2, as DVC reads params.yaml (PyYAML's 1.1 would turn `on` into True, `1e-3` into a string)."""
    from ruamel.yaml import YAML

    return YAML(typ="safe", pure=True).load(text)


def read_yaml(path: str | Path) -> dict[str, Any]:
    from ruamel.yaml import YAMLError

    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"params file {path} not found; run from the project root or pass --params") from None
    try:
        raw = _yaml_load(text) or {}
    except YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must be a mapping of sections")
    return raw


def load_params(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> Params:
    raw = read_yaml(path)
    if overrides:
        raw = apply_overrides(raw, overrides)
    try:
        return from_mapping(Params, raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None

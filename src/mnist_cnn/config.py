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
class SearchParam:
    """One dimension of the tuning search space: which params key it sets and its range.
    `param` is a dotted params path; list entries are addressed by index (`model.filters.0`)."""

    param: str
    type: Literal["int", "float", "categorical"]
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()


@dataclass(frozen=True)
class SamplerParams:
    name: Literal["tpe", "random"] = "tpe"
    n_startup_trials: int = 5  # random trials before TPE takes over
    multivariate: bool = True

    def __post_init__(self) -> None:
        _check(self.n_startup_trials >= 0, "tune.sampler.n_startup_trials", "must be >= 0")


@dataclass(frozen=True)
class PrunerParams:
    """`percentile` stops a trial whose validation accuracy after an epoch is outside the top
    `percentile` % of earlier trials at that epoch; `median` is the same at 50%."""

    name: Literal["percentile", "median", "hyperband", "none"] = "percentile"
    percentile: float = 25.0  # percentile: the share of trials kept at each epoch
    n_startup_trials: int = 1  # percentile/median: trials finished before pruning starts
    n_warmup_steps: int = 0  # percentile/median: epochs of a trial never pruned (0: prune from the first)
    min_resource: int = 1  # hyperband: epochs before the first cut
    reduction_factor: int = 3  # hyperband

    def __post_init__(self) -> None:
        _check(0 < self.percentile <= 100, "tune.pruner.percentile", "must be in (0, 100]")
        _check(self.n_startup_trials >= 0, "tune.pruner.n_startup_trials", "must be >= 0")
        _check(self.n_warmup_steps >= 0, "tune.pruner.n_warmup_steps", "must be >= 0")
        _check(self.min_resource >= 1, "tune.pruner.min_resource", "must be at least 1")
        _check(self.reduction_factor >= 2, "tune.pruner.reduction_factor", "must be at least 2")


def _default_space() -> dict[str, SearchParam]:
    return {
        "conv1_filters": SearchParam("model.filters.0", "int", 16, 64, 8),
        "conv2_filters": SearchParam("model.filters.1", "int", 32, 128, 16),
        "dense_units": SearchParam("model.dense_units.0", "int", 64, 256, 32),
        "dropout": SearchParam("model.dropout", "float", 0.1, 0.6),
        "learning_rate": SearchParam("train.learning_rate", "float", 3e-4, 1e-2, log=True),
        "batch_size": SearchParam("train.batch_size", "categorical", choices=(64, 128, 256)),
        "schedule": SearchParam("train.schedule.name", "categorical", choices=("constant", "onecycle", "cosine")),
        "label_smoothing": SearchParam("train.label_smoothing", "float", 0.0, 0.15),
    }


@dataclass(frozen=True)
class TuneParams:
    """Optuna study settings. Trials train `epochs` epochs on a stratified `train_fraction` of
    the training split and are scored on the validation split (never the test set)."""

    study_name: str = "mnist-cnn"
    storage: str = ""  # empty: journal file optuna/<study_name>.journal; else an Optuna storage URL
    n_trials: int = 20  # finished trials (complete or pruned) the study should hold
    timeout_s: float = 0.0  # stop starting trials after this long; 0: no limit
    workers: int = 1
    epochs: int = 5
    train_fraction: float = 0.25
    seed: int = 42
    sampler: SamplerParams = SamplerParams()
    pruner: PrunerParams = PrunerParams()
    space: dict[str, SearchParam] = field(default_factory=_default_space)

    def __post_init__(self) -> None:
        _check(bool(self.study_name.strip()), "tune.study_name", "must not be empty")
        _check(self.n_trials >= 1, "tune.n_trials", "must be at least 1")
        _check(self.timeout_s >= 0, "tune.timeout_s", "must be >= 0 (0: no limit)")
        _check(self.workers >= 1, "tune.workers", "must be at least 1")
        _check(self.epochs >= 1, "tune.epochs", "must be at least 1")
        _check(0 < self.train_fraction <= 1, "tune.train_fraction", "must be in (0, 1]")
        _check(bool(self.space), "tune.space", "needs at least one parameter")
        for name, spec in self.space.items():
            _check_search_param(f"tune.space.{name}", spec)


def _check_search_param(key: str, spec: SearchParam) -> None:
    if spec.type == "categorical":
        _check(len(spec.choices) >= 1, key, "is categorical and needs a non-empty `choices` list")
        _check(spec.low is None and spec.high is None and spec.step is None and not spec.log, key,
               "is categorical: give `choices` only (no low, high, step or log)")
        _check(len(set(map(repr, spec.choices))) == len(spec.choices), key, f"has repeated choices {list(spec.choices)}")
        return
    _check(not spec.choices, key, f"is {spec.type}: give low and high, not choices")
    _check(spec.low is not None and spec.high is not None, key, "needs both low and high")
    assert spec.low is not None and spec.high is not None
    _check(spec.low < spec.high, key, f"has an empty or inverted range: low {spec.low:g} must be below high {spec.high:g}")
    if spec.type == "int":
        ints = [v for v in (spec.low, spec.high, spec.step) if v is not None]
        _check(all(float(v).is_integer() for v in ints), key, "is int: low, high and step must be whole numbers")
    if spec.log:
        _check(spec.low > 0, key, f"is log-scaled: low must be positive, got {spec.low:g}")
        _check(spec.step is None or (spec.type == "int" and spec.step == 1), key, "cannot combine log with a step")
    if spec.step is not None:
        _check(spec.step > 0, key, "step must be positive")
        _check(spec.step <= spec.high - spec.low, key, f"step {spec.step:g} is wider than the range {spec.low:g}..{spec.high:g}")


@dataclass(frozen=True)
class Params:
    data: DataParams
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    register: RegisterParams = RegisterParams()
    tracking: TrackingParams = TrackingParams()
    tune: TuneParams = TuneParams()

    def __post_init__(self) -> None:
        for name, spec in self.tune.space.items():
            try:
                lookup(to_dict(self), spec.param, any_index=True)
            except KeyError as exc:
                raise ConfigError(f"tune.space.{name}.param {spec.param!r} is not a params key: {exc.args[0]}") from None
            _check(spec.param.split(".")[0] in ("model", "train"), f"tune.space.{name}.param",
                   f"must be under model or train, got {spec.param!r}")


def lookup(tree: Any, dotted: str, any_index: bool = False) -> Any:
    """The value at `dotted` (e.g. `model.filters.0`) in a nested dict/list; KeyError names the
    bad part. With `any_index`, an index past the end of a list is accepted (and gives None):
    the space may address a block that only exists once `model.filters` grows."""
    node = tree
    for part in dotted.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif any_index and isinstance(node, (list, tuple)) and part.isdigit():
            node = None
        else:
            raise KeyError(f"no {part!r} in {dotted!r}")
    return node


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


def edit_params_file(path: str | Path, edit: typing.Callable[[Any], None]) -> None:
    """Round-trip edit of a params file with its comments and layout kept: `edit` changes the
    parsed document in place; the result must still load, and it replaces the file atomically."""
    import io

    from ruamel.yaml import YAML

    from mnist_cnn import atomic

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
        load_params(tmp)  # the result must still be a valid params file

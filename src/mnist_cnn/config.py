"""Typed, frozen view of params.yaml, the one home of every setting.

Every section is a frozen dataclass without defaults: a key missing from params.yaml, an
unknown key, a wrong type or an out-of-range value is an error naming the key, so nothing
silently falls back to a value written somewhere else.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ruamel.yaml import YAMLError

from mnist_cnn.errors import ConfigError
from mnist_cnn.schema import check as _check
from mnist_cnn.schema import edit_yaml_file, from_mapping, lookup, parse_yaml, read_yaml, set_dotted, to_dict

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
USPS_FILES = ("zip.train", "zip.test")


@dataclass(frozen=True)
class UspsParams:
    """USPS postal digits (Hastie et al.'s `zip.train`/`zip.test`): evaluation data only."""

    mirrors: tuple[str, ...]
    sha256: dict[str, str]  # of each file's decompressed content

    def __post_init__(self) -> None:
        _check(len(self.mirrors) > 0, "data.usps.mirrors", "needs at least one mirror")
        missing = [n for n in USPS_FILES if n not in self.sha256]
        unknown = [n for n in self.sha256 if n not in USPS_FILES]
        _check(not missing, "data.usps.sha256", f"is missing checksums for {missing}")
        _check(not unknown, "data.usps.sha256", f"has unknown files {unknown}; expected {list(USPS_FILES)}")


@dataclass(frozen=True)
class DataParams:
    mirrors: tuple[str, ...]
    sha256: dict[str, str]  # of each file's *decompressed* content: mirrors recompress
    timeout_s: float
    retries: int
    backoff_s: float
    val_fraction: float
    split_seed: int
    feedback_use: str  # evaluate: feedback_accuracy of its own; train: folded into the training split
    usps: UspsParams

    def __post_init__(self) -> None:
        _check(0.0 < self.val_fraction < 1.0, "data.val_fraction", "must be between 0 and 1")
        _check(self.timeout_s > 0, "data.timeout_s", "must be positive")
        _check(self.retries >= 1, "data.retries", "must be at least 1")
        _check(len(self.mirrors) > 0, "data.mirrors", "needs at least one mirror")
        _check(self.feedback_use in ("evaluate", "train"), "data.feedback_use", "must be evaluate or train")
        missing = [n for n in MNIST_FILES if n not in self.sha256]
        unknown = [n for n in self.sha256 if n not in MNIST_FILES]
        _check(not missing, "data.sha256", f"is missing checksums for {missing}")
        _check(not unknown, "data.sha256", f"has unknown files {unknown}; expected {list(MNIST_FILES)}")


@dataclass(frozen=True)
class AugmentParams:
    """Random training-only transforms, as Keras layers inside the model (inactive at inference)."""

    rotation_deg: float
    shift: float
    zoom: float

    def __post_init__(self) -> None:
        _check(0 <= self.rotation_deg <= 45, "model.augment.rotation_deg", "must be in [0, 45]")
        _check(0 <= self.shift < 0.5, "model.augment.shift", "must be in [0, 0.5)")
        _check(0 <= self.zoom < 0.5, "model.augment.zoom", "must be in [0, 0.5)")

    @property
    def active(self) -> bool:
        return bool(self.rotation_deg or self.shift or self.zoom)


@dataclass(frozen=True)
class ModelParams:
    filters: tuple[int, ...]
    convs_per_block: int
    kernel_size: int
    padding: Literal["valid", "same"]
    downsample: Literal["maxpool", "strided"]
    batch_norm: bool
    block_dropout: float
    dense_units: tuple[int, ...]
    dropout: float
    augment: AugmentParams

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

    name: Literal["constant", "onecycle", "cosine", "exponential", "plateau"]
    warmup_fraction: float
    final_fraction: float
    decay_rate: float
    plateau_factor: float
    plateau_patience: int

    def __post_init__(self) -> None:
        _check(0 <= self.warmup_fraction < 1, "train.schedule.warmup_fraction", "must be in [0, 1)")
        _check(0 < self.final_fraction <= 1, "train.schedule.final_fraction", "must be in (0, 1]")
        _check(0 < self.decay_rate <= 1, "train.schedule.decay_rate", "must be in (0, 1]")
        _check(0 < self.plateau_factor < 1, "train.schedule.plateau_factor", "must be in (0, 1)")


@dataclass(frozen=True)
class TrainParams:
    optimizer: Literal["adam", "adamw", "sgd"]
    learning_rate: float
    weight_decay: float
    label_smoothing: float
    batch_size: int
    epochs: int
    seed: int
    schedule: ScheduleParams
    early_stopping_patience: int
    mixed_precision: Literal["auto", "on", "off"]
    nondigits: float  # outlier exposure: generated non-digits as this share of the training set

    def __post_init__(self) -> None:
        _check(0 <= self.nondigits <= 1, "train.nondigits", "must be in [0, 1] (0 turns outlier exposure off)")
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
    batch_size: int
    grid_size: int
    worst: int
    nondigits: int  # held-out generated non-digits whose "not sure" share is measured

    def __post_init__(self) -> None:
        _check(self.nondigits >= 0, "evaluate.nondigits", "must be >= 0 (0: not measured)")


@dataclass(frozen=True)
class CalibrationParams:
    """Fitted on the validation split after training: a temperature for the probabilities and
    the confidence below which an answer is "not sure"."""

    abstain_rate: float  # share of validation digits answered "not sure"
    bins: int  # of the expected calibration error and the reliability diagram

    def __post_init__(self) -> None:
        _check(0 <= self.abstain_rate < 0.5, "calibration.abstain_rate", 'must be in [0, 0.5) (0: never "not sure")')
        _check(2 <= self.bins <= 100, "calibration.bins", "must be in [2, 100]")


@dataclass(frozen=True)
class RegisterParams:
    model_name: str
    min_test_accuracy: float
    real_digits_tolerance: float  # usps_accuracy this much below the champion's keeps a model out
    champion_alias: str
    challenger_alias: str

    def __post_init__(self) -> None:
        _check(0 <= self.min_test_accuracy <= 1, "register.min_test_accuracy", "must be in [0, 1]")
        _check(0 <= self.real_digits_tolerance <= 1, "register.real_digits_tolerance", "must be in [0, 1]")
        _check(
            self.champion_alias != self.challenger_alias, "register.challenger_alias", "must differ from champion_alias"
        )


@dataclass(frozen=True)
class TrackingParams:
    experiment: str


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
    name: Literal["tpe", "random"]
    n_startup_trials: int  # random trials before TPE takes over
    multivariate: bool

    def __post_init__(self) -> None:
        _check(self.n_startup_trials >= 0, "tune.sampler.n_startup_trials", "must be >= 0")


@dataclass(frozen=True)
class PrunerParams:
    """`percentile` stops a trial whose validation accuracy after an epoch is outside the top
    `percentile` % of earlier trials at that epoch; `median` is the same at 50%."""

    name: Literal["percentile", "median", "hyperband", "none"]
    percentile: float  # percentile: the share of trials kept at each epoch
    n_startup_trials: int  # percentile/median: trials finished before pruning starts
    n_warmup_steps: int  # percentile/median: epochs of a trial never pruned (0: prune from the first)
    min_resource: int  # hyperband: epochs before the first cut
    reduction_factor: int  # hyperband

    def __post_init__(self) -> None:
        _check(0 < self.percentile <= 100, "tune.pruner.percentile", "must be in (0, 100]")
        _check(self.n_startup_trials >= 0, "tune.pruner.n_startup_trials", "must be >= 0")
        _check(self.n_warmup_steps >= 0, "tune.pruner.n_warmup_steps", "must be >= 0")
        _check(self.min_resource >= 1, "tune.pruner.min_resource", "must be at least 1")
        _check(self.reduction_factor >= 2, "tune.pruner.reduction_factor", "must be at least 2")


@dataclass(frozen=True)
class TuneParams:
    """Optuna study settings. Trials train `epochs` epochs on a stratified `train_fraction` of
    the training split and are scored on the validation split (never the test set)."""

    study_name: str
    storage: str  # empty: journal file optuna/<study_name>.journal; else an Optuna storage URL
    n_trials: int  # finished trials (complete or pruned) the study should hold
    timeout_s: float  # stop starting trials after this long; 0: no limit
    workers: int
    heartbeat_s: float  # on a database: trial heartbeat interval; silent for 4x this long: failed
    epochs: int
    train_fraction: float
    seed: int
    sampler: SamplerParams
    pruner: PrunerParams
    space: dict[str, SearchParam]

    def __post_init__(self) -> None:
        _check(bool(self.study_name.strip()), "tune.study_name", "must not be empty")
        _check(self.n_trials >= 1, "tune.n_trials", "must be at least 1")
        _check(self.timeout_s >= 0, "tune.timeout_s", "must be >= 0 (0: no limit)")
        _check(self.workers >= 1, "tune.workers", "must be at least 1")
        _check(self.heartbeat_s >= 1, "tune.heartbeat_s", "must be at least 1 second")
        _check(self.epochs >= 1, "tune.epochs", "must be at least 1")
        _check(0 < self.train_fraction <= 1, "tune.train_fraction", "must be in (0, 1]")
        _check(bool(self.space), "tune.space", "needs at least one parameter")
        for name, spec in self.space.items():
            _check_search_param(f"tune.space.{name}", spec)


def _check_search_param(key: str, spec: SearchParam) -> None:
    if spec.type == "categorical":
        _check(len(spec.choices) >= 1, key, "is categorical and needs a non-empty `choices` list")
        _check(
            spec.low is None and spec.high is None and spec.step is None and not spec.log,
            key,
            "is categorical: give `choices` only (no low, high, step or log)",
        )
        _check(
            len(set(map(repr, spec.choices))) == len(spec.choices), key, f"has repeated choices {list(spec.choices)}"
        )
        return
    _check(not spec.choices, key, f"is {spec.type}: give low and high, not choices")
    _check(spec.low is not None and spec.high is not None, key, "needs both low and high")
    assert spec.low is not None and spec.high is not None
    _check(
        spec.low < spec.high, key, f"has an empty or inverted range: low {spec.low:g} must be below high {spec.high:g}"
    )
    if spec.type == "int":
        ints = [v for v in (spec.low, spec.high, spec.step) if v is not None]
        _check(all(float(v).is_integer() for v in ints), key, "is int: low, high and step must be whole numbers")
    if spec.log:
        _check(spec.low > 0, key, f"is log-scaled: low must be positive, got {spec.low:g}")
        _check(spec.step is None or (spec.type == "int" and spec.step == 1), key, "cannot combine log with a step")
    if spec.step is not None:
        _check(spec.step > 0, key, "step must be positive")
        _check(
            spec.step <= spec.high - spec.low,
            key,
            f"step {spec.step:g} is wider than the range {spec.low:g}..{spec.high:g}",
        )


@dataclass(frozen=True)
class Params:
    data: DataParams
    model: ModelParams
    train: TrainParams
    calibration: CalibrationParams
    evaluate: EvaluateParams
    register: RegisterParams
    tracking: TrackingParams
    tune: TuneParams

    def __post_init__(self) -> None:
        for name, spec in self.tune.space.items():
            try:
                lookup(to_dict(self), spec.param, any_index=True)
            except KeyError as exc:
                raise ConfigError(
                    f"tune.space.{name}.param {spec.param!r} is not a params key: {exc.args[0]}"
                ) from None
            _check(
                spec.param.split(".")[0] in ("model", "train"),
                f"tune.space.{name}.param",
                f"must be under model or train, got {spec.param!r}",
            )


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.key=value` overrides (values parsed as YAML; list entries by index,
    `model.filters.0=48`) to a copy of a raw params dict. `key=` with an empty value keeps the
    file's value (MLproject passes unset parameters so)."""
    result = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        dotted, text = item.split("=", 1)
        if not text.strip():
            continue
        try:
            value = parse_yaml(text)
        except YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from None
        try:
            set_dotted(result, dotted.strip(), value, create=True)
        except KeyError as exc:
            raise ConfigError(f"override {dotted!r}: {exc.args[0]}") from None
    return result


def load_params(path: str | Path = "params.yaml", overrides: list[str] | None = None) -> Params:
    raw = read_yaml(path)
    if overrides:
        raw = apply_overrides(raw, overrides)
    try:
        return from_mapping(Params, raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def with_values(params: Params, values: dict[str, Any]) -> Params:
    """`params` with existing dotted keys set (`{"model.filters.0": 48}`), validated whole."""
    tree = to_dict(params)
    for dotted, value in values.items():
        try:
            set_dotted(tree, dotted, value)
        except KeyError as exc:
            raise ConfigError(f"{dotted!r} is not a params key ({exc.args[0]})") from None
    return from_mapping(Params, tree)


def edit_params_file(path: str | Path, edit: Callable[[Any], None]) -> None:
    """Round-trip edit of a params file (comments and layout kept); the result must still load."""
    edit_yaml_file(path, edit, validate=load_params)


def project_root(start: str | Path | None = None) -> Path:
    """Nearest ancestor holding dvc.yaml. Inside `dvc exp run --temp` (a copy under
    `<root>/.dvc/tmp/exps/`) this is the real project root, so runs land in one store."""
    here = Path(start or Path.cwd()).resolve()
    parts = here.parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    for candidate in (here, *here.parents):
        if (candidate / "dvc.yaml").is_file():
            return candidate
    return here

"""Typed, frozen view of params.yaml, the one home of every setting.

Every section is a frozen pydantic model without defaults: a key missing from params.yaml, an
unknown key, a wrong type or an out-of-range value is an error naming the dotted key and the
fix, so nothing silently falls back to a value written somewhere else.
"""

from __future__ import annotations

import copy
import typing
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, ValidationInfo, field_validator, model_validator
from ruamel.yaml import YAMLError

from mnist_cnn.errors import ConfigError
from mnist_cnn.schema import (
    POSITIVE,
    Bool,
    Float,
    Int,
    Section,
    Str,
    at_least,
    edit_yaml_file,
    from_mapping,
    interval,
    lookup,
    parse_yaml,
    read_yaml,
    rule,
    set_dotted,
    to_dict,
)

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
USPS_FILES = ("zip.train", "zip.test")


def _checksums_of(files: tuple[str, ...]) -> AfterValidator:
    def check(sha256: dict[str, str]) -> dict[str, str]:
        missing = [n for n in files if n not in sha256]
        unknown = [n for n in sha256 if n not in files]
        if missing:
            raise ValueError(f"is missing checksums for {missing}")
        if unknown:
            raise ValueError(f"has unknown files {unknown}; expected {list(files)}")
        return sha256

    return AfterValidator(check)


Mirrors = Annotated[tuple[Str, ...], rule(len, "needs at least one mirror")]
Share = Annotated[Float, interval("[0, 1]")]
Dropout = Annotated[Float, interval("[0, 1)")]
Count = Annotated[Int, at_least(0)]


class UspsParams(Section):
    """USPS postal digits (Hastie et al.'s `zip.train`/`zip.test`): evaluation data only."""

    key: ClassVar[str] = "data.usps"
    mirrors: Mirrors
    sha256: Annotated[dict[Str, Str], _checksums_of(USPS_FILES)]  # of each file's decompressed content


class DataParams(Section):
    key: ClassVar[str] = "data"
    mirrors: Mirrors
    sha256: Annotated[dict[Str, Str], _checksums_of(MNIST_FILES)]  # of the *decompressed* content: mirrors recompress
    timeout_s: Annotated[Float, POSITIVE]
    retries: Annotated[Int, at_least(1)]
    backoff_s: Float
    val_fraction: Annotated[Float, rule(lambda v: 0 < v < 1, "must be between 0 and 1")]
    split_seed: Int
    feedback_use: Literal["evaluate", "train"]  # evaluate: feedback_accuracy of its own; train: in the training split
    usps: UspsParams


class AugmentParams(Section):
    """Random transforms of the training images (`augmentation.RandomAffine`); not part of the saved model."""

    key: ClassVar[str] = "model.augment"
    rotation_deg: Annotated[Float, interval("[0, 45]")]
    shift: Annotated[Float, interval("[0, 0.5)")]
    zoom: Annotated[Float, interval("[0, 0.5)")]

    @property
    def active(self) -> bool:
        return bool(self.rotation_deg or self.shift or self.zoom)


class ModelParams(Section):
    key: ClassVar[str] = "model"
    filters: Annotated[tuple[Annotated[Int, at_least(1)], ...], rule(len, "needs at least one conv block")]
    # one number for every block, or one per block ([1, 2]: a single conv at full size, where it costs most)
    convs_per_block: Int | tuple[Int, ...]
    kernel_size: Annotated[Int, rule(lambda v: v in (1, 3, 5, 7), "must be 1, 3, 5 or 7")]
    padding: Literal["valid", "same"]
    downsample: Literal["maxpool", "strided"]
    batch_norm: Bool
    block_dropout: Dropout
    spatial_dropout: Bool  # block dropout drops whole feature maps (Keras' SpatialDropout2D), not single values
    dense_units: tuple[Annotated[Int, at_least(1)], ...]
    dropout: Dropout
    augment: AugmentParams

    @field_validator("convs_per_block")
    @classmethod
    def _one_per_block(cls, convs: int | tuple[int, ...], info: ValidationInfo) -> int | tuple[int, ...]:
        if min(convs if isinstance(convs, tuple) else (convs,), default=0) < 1:
            raise ValueError("must be at least 1" + (" in every block" if isinstance(convs, tuple) else ""))
        filters = info.data.get("filters")
        if isinstance(convs, tuple) and filters is not None and len(convs) != len(filters):
            raise ValueError(f"lists {len(convs)} blocks but model.filters lists {len(filters)}; give one per block")
        return convs

    def block_convs(self) -> tuple[int, ...]:
        """The number of convs of each block."""
        convs = self.convs_per_block
        return convs if isinstance(convs, tuple) else (convs,) * len(self.filters)


class ScheduleParams(Section):
    """Learning-rate schedule. `onecycle` warms up linearly to train.learning_rate then
    anneals with a cosine; `plateau` divides it when validation loss stalls."""

    key: ClassVar[str] = "train.schedule"
    name: Literal["constant", "onecycle", "cosine", "exponential", "plateau"]
    warmup_fraction: Annotated[Float, interval("[0, 1)")]
    final_fraction: Annotated[Float, interval("(0, 1]")]
    decay_rate: Annotated[Float, interval("(0, 1]")]
    plateau_factor: Annotated[Float, interval("(0, 1)")]
    plateau_patience: Int


class TrainParams(Section):
    key: ClassVar[str] = "train"
    optimizer: Literal["adam", "adamw", "sgd"]
    learning_rate: Annotated[Float, POSITIVE]
    weight_decay: Annotated[Float, at_least(0)]
    label_smoothing: Dropout
    batch_size: Annotated[Int, POSITIVE]
    epochs: Annotated[Int, at_least(1)]
    seed: Int
    schedule: ScheduleParams
    early_stopping_patience: Annotated[Int, at_least(0, "0 turns it off")]
    # auto: float16 on a GPU, bfloat16 on a CPU that computes it natively (AVX512-BF16, AMX), else off;
    # on = float16. The saved model computes in float32 whatever trained it.
    mixed_precision: Literal["auto", "on", "off", "float16", "bfloat16"]
    # outlier exposure: generated non-digits as this share of the training set
    nondigits: Annotated[Float, interval("[0, 1]", "0 turns outlier exposure off")]

    @field_validator("weight_decay")
    @classmethod
    def _decoupled(cls, weight_decay: float, info: ValidationInfo) -> float:
        if weight_decay and info.data.get("optimizer", "adamw") not in ("adamw", "sgd"):
            raise ValueError("needs optimizer adamw or sgd (Adam's L2 is not decoupled weight decay)")
        return weight_decay


class EvaluateParams(Section):
    key: ClassVar[str] = "evaluate"
    batch_size: Int
    grid_size: Int
    worst: Int
    nondigits: Annotated[Int, at_least(0, "0: not measured")]  # held-out generated non-digits scored "not sure"


class CalibrationParams(Section):
    """Fitted on the validation split after training: a temperature for the probabilities and
    the confidence below which an answer is "not sure"."""

    key: ClassVar[str] = "calibration"
    abstain_rate: Annotated[Float, interval("[0, 0.5)", '0: never "not sure"')]  # of validation digits
    bins: Annotated[Int, interval("[2, 100]")]  # of the expected calibration error and the reliability diagram


class RegisterParams(Section):
    key: ClassVar[str] = "register"
    model_name: Str
    min_test_accuracy: Share
    real_digits_tolerance: Share  # usps_accuracy this much below the champion's keeps a model out
    champion_alias: Str
    challenger_alias: Str
    # a registry gate lock held this long by a process on another machine is taken over (its
    # machine may have died; on this machine a dead holder is seen at once)
    gate_stale_s: Annotated[Float, at_least(1)]

    @field_validator("challenger_alias")
    @classmethod
    def _distinct(cls, alias: str, info: ValidationInfo) -> str:
        if alias == info.data.get("champion_alias"):
            raise ValueError("must differ from champion_alias")
        return alias


class TrackingParams(Section):
    key: ClassVar[str] = "tracking"
    experiment: Str


class SearchParam(Section):
    """One dimension of the tuning search space: which params key it sets and its range.
    `param` is a dotted params path; list entries are addressed by index (`model.filters.0`)."""

    param: Str
    type: Literal["int", "float", "categorical"]
    low: Float | None = None
    high: Float | None = None
    step: Float | None = None
    log: Bool = False
    choices: tuple[Any, ...] = ()

    @model_validator(mode="after")
    def _range(self) -> SearchParam:
        if self.type == "categorical":
            _require(len(self.choices) >= 1, "is categorical and needs a non-empty `choices` list")
            _require(
                self.low is None and self.high is None and self.step is None and not self.log,
                "is categorical: give `choices` only (no low, high, step or log)",
            )
            _require(
                len(set(map(repr, self.choices))) == len(self.choices), f"has repeated choices {list(self.choices)}"
            )
            return self
        _require(not self.choices, f"is {self.type}: give low and high, not choices")
        _require(self.low is not None and self.high is not None, "needs both low and high")
        low, high, step = typing.cast(float, self.low), typing.cast(float, self.high), self.step
        _require(low < high, f"has an empty or inverted range: low {low:g} must be below high {high:g}")
        if self.type == "int":
            ints = [v for v in (low, high, step) if v is not None]
            _require(all(float(v).is_integer() for v in ints), "is int: low, high and step must be whole numbers")
        if self.log:
            _require(low > 0, f"is log-scaled: low must be positive, got {low:g}")
            _require(step is None or (self.type == "int" and step == 1), "cannot combine log with a step")
        if step is not None:
            _require(step > 0, "step must be positive")
            _require(step <= high - low, f"step {step:g} is wider than the range {low:g}..{high:g}")
        return self


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


class SamplerParams(Section):
    key: ClassVar[str] = "tune.sampler"
    name: Literal["tpe", "random"]
    n_startup_trials: Count  # random trials before TPE takes over
    multivariate: Bool


class PrunerParams(Section):
    """`percentile` stops a trial whose validation accuracy after an epoch is outside the top
    `percentile` % of earlier trials at that epoch; `median` is the same at 50%."""

    key: ClassVar[str] = "tune.pruner"
    name: Literal["percentile", "median", "hyperband", "none"]
    percentile: Annotated[Float, interval("(0, 100]")]  # percentile: the share of trials kept at each epoch
    n_startup_trials: Count  # percentile/median: trials finished before pruning starts
    n_warmup_steps: Count  # percentile/median: epochs of a trial never pruned (0: prune from the first)
    min_resource: Annotated[Int, at_least(1)]  # hyperband: epochs before the first cut
    reduction_factor: Annotated[Int, at_least(2)]  # hyperband


class TuneParams(Section):
    """Optuna study settings. Trials train `epochs` epochs on a stratified `train_fraction` of
    the training split and are scored on the validation split (never the test set)."""

    key: ClassVar[str] = "tune"
    study_name: Annotated[Str, rule(lambda v: bool(v.strip()), "must not be empty")]
    storage: Str  # empty: journal file optuna/<study_name>.journal; else an Optuna storage URL
    n_trials: Annotated[Int, at_least(1)]  # finished trials (complete or pruned) the study should hold
    # what the study optimises: val_accuracy, and for a multi-objective study any of train_seconds,
    # parameters, latency_ms (see tuning.objectives)
    objectives: tuple[Literal["val_accuracy", "train_seconds", "parameters", "latency_ms"], ...]
    # on a front: --apply takes the cheapest trial within this much val_accuracy of the best
    choose_within: Share
    timeout_s: Annotated[Float, at_least(0, "0: no limit")]  # stop starting trials after this long
    workers: Annotated[Int, at_least(1)]
    # on a database: trial heartbeat interval; silent for 4x this long: failed
    heartbeat_s: Annotated[Float, rule(lambda v: v >= 1, "must be at least 1 second")]
    # on a database: how long a worker waits out a lost connection (a restart, a network cut)
    reconnect_s: Annotated[Float, at_least(0)]
    epochs: Annotated[Int, at_least(1)]
    train_fraction: Annotated[Float, interval("(0, 1]")]
    seed: Int
    sampler: SamplerParams
    pruner: PrunerParams
    space: Annotated[dict[Str, SearchParam], rule(len, "needs at least one parameter")]

    @field_validator("objectives")
    @classmethod
    def _with_quality(cls, objectives: tuple[str, ...]) -> tuple[str, ...]:
        if "val_accuracy" not in objectives:
            raise ValueError(f"must include val_accuracy, got {list(objectives)}")
        if len(set(objectives)) != len(objectives):
            raise ValueError(f"lists an objective twice: {list(objectives)}")
        return objectives


# `register` is only ABCMeta's method on the class: on instances the field wins.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message='Field name "register" in "Params" shadows')

    class Params(Section):
        data: DataParams
        model: ModelParams
        train: TrainParams
        calibration: CalibrationParams
        evaluate: EvaluateParams
        register: RegisterParams
        tracking: TrackingParams
        tune: TuneParams

        @model_validator(mode="after")
        def _space_keys(self) -> Params:
            tree = to_dict(self)
            for name, spec in self.tune.space.items():
                try:
                    lookup(tree, spec.param, any_index=True)
                except KeyError as exc:
                    raise ValueError(
                        f"tune.space.{name}.param {spec.param!r} is not a params key: {exc.args[0]}"
                    ) from None
                _require(
                    spec.param.split(".")[0] in ("model", "train"),
                    f"tune.space.{name}.param must be under model or train, got {spec.param!r}",
                )
            return self


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

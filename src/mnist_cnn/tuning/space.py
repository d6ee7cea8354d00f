"""The search space of params.yaml's `tune.space`: validating it against the model and train
sections, and sampling one trial's params from it."""

from __future__ import annotations

from typing import Any

import optuna

from mnist_cnn.config import ModelParams, Params, SearchParam, TrainParams, with_values
from mnist_cnn.errors import ConfigError
from mnist_cnn.schema import replace


def _endpoints(spec: SearchParam) -> list[Any]:
    if spec.type == "categorical":
        return list(spec.choices)
    cast = int if spec.type == "int" else float
    return [cast(spec.low), cast(spec.high)]


def check_space(params: Params) -> None:
    """Every search dimension must address an existing key, and every value it can take must
    give valid model/train params; raises ConfigError naming the dimension otherwise."""
    for name, spec in params.tune.space.items():
        for value in _endpoints(spec):
            try:
                with_values(params, {spec.param: value})
            except ConfigError as exc:
                raise ConfigError(f"tune.space.{name} ({spec.param} = {value!r}): {exc}") from None


def suggest(trial: optuna.Trial, name: str, spec: SearchParam) -> Any:
    if spec.type == "categorical":
        return trial.suggest_categorical(name, list(spec.choices))
    if spec.type == "int":
        step = int(spec.step) if spec.step is not None else 1
        return trial.suggest_int(name, int(spec.low), int(spec.high), step=step, log=spec.log)
    return trial.suggest_float(name, spec.low, spec.high, step=spec.step, log=spec.log)


def trial_params(params: Params, trial: optuna.Trial) -> tuple[ModelParams, TrainParams, dict[str, Any]]:
    """Sample the trial's values and build its params: the tune epochs, no early stopping.
    Returns the model and train params and the sampled values by params key."""
    values = {spec.param: suggest(trial, name, spec) for name, spec in params.tune.space.items()}
    sampled = with_values(params, values)
    train = replace(sampled.train, epochs=params.tune.epochs, early_stopping_patience=0)
    return sampled.model, train, values

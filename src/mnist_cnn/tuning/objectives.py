"""What a study optimises (`tune.objectives`): each objective's direction and how a trial measures
it, the Pareto front of a study, and the documented choice on it that `--apply` takes.

One objective (`[val_accuracy]`, the default) is a single-objective study, pruned as before. Two
or more make an Optuna multi-objective study (`directions=[...]`): its result is a front of trials
no other trial beats on every objective, and Optuna has no pruning for it."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import optuna

QUALITY = "val_accuracy"
DIRECTIONS = {
    QUALITY: "maximize",  # best validation accuracy of the trial's epochs
    "train_seconds": "minimize",  # the trial's training time (fit, validation included)
    "parameters": "minimize",  # the network's weights
    "latency_ms": "minimize",  # scoring one image with the trained network (median)
}
LATENCY_CALLS = 30


def directions(objectives: Sequence[str]) -> list[str]:
    return [DIRECTIONS[name] for name in objectives]


def latency_ms(model: Any, calls: int = LATENCY_CALLS) -> float:
    """Median milliseconds to score one 28x28 image with `model` (after a warm-up call)."""
    import numpy as np

    image = np.zeros((1, 28, 28, 1), dtype="float32")
    model.predict_on_batch(image)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        model.predict_on_batch(image)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def measure(objectives: Sequence[str], result: Any, model: Any) -> list[float]:
    """The trial's value of each objective, in order; `result` is training's TrainResult."""
    measured = {
        QUALITY: lambda: float(result.best[QUALITY]),
        "train_seconds": lambda: float(result.seconds),
        "parameters": lambda: float(model.count_params()),
        "latency_ms": lambda: latency_ms(model),
    }
    return [measured[name]() for name in objectives]


def front(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The complete trials no other complete trial beats on every objective, by trial number."""
    return sorted(study.best_trials, key=lambda t: t.number)


def choose(trials: Sequence[optuna.trial.FrozenTrial], objectives: Sequence[str], within: float):
    """The documented choice on a front: among trials whose val_accuracy is within `within` of the
    best one's, the cheapest by the first other objective listed (ties: the more accurate, then
    the earlier). One objective: the best trial."""
    q = list(objectives).index(QUALITY)
    best = max(t.values[q] for t in trials)
    near = [t for t in trials if t.values[q] >= best - within]
    costs = [i for i, name in enumerate(objectives) if name != QUALITY]
    if not costs:
        return min(near, key=lambda t: (-t.values[q], t.number))
    c = costs[0]
    return min(near, key=lambda t: (t.values[c], -t.values[q], t.number))


def rule(objectives: Sequence[str], within: float) -> str:
    """The choice of `choose` in words, for the best params file and the MLflow run."""
    costs = [name for name in objectives if name != QUALITY]
    if not costs:
        return f"the highest {QUALITY}"
    return f"the lowest {costs[0]} among front trials within {within:g} of the best {QUALITY}"

"""Helpers of the tuning tests: a quick study's `mnist-cnn tune` command and its environment, and
a reader of the study it left (its MLflow runs: helpers.experiment_runs). The `workdir` fixture is in
conftest.py."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from mnist_cnn.tuning import storage

# Small and quick: the fast preset's network, 2 epochs on half of a 1,600-image training split.
QUICK = [
    "tune.epochs=2",
    "tune.train_fraction=0.5",
    "tune.sampler.n_startup_trials=2",
    "tune.pruner.n_startup_trials=1",
]


def env_for(workdir: Path) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}", "TF_CPP_MIN_LOG_LEVEL": "2"}


def tune_cmd(processed: Path, *extra: str) -> list[str]:
    sets = [f"--set={o}" for o in QUICK]
    return ["mnist-cnn", "tune", "--data-dir", str(processed), "--no-progress", *sets, *extra]


def run_tune(workdir: Path, processed: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        tune_cmd(processed, *extra), cwd=workdir, env=env_for(workdir), capture_output=True, text=True, timeout=600
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"tune exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def load_study(workdir: Path, name: str = "mnist-cnn"):
    import optuna

    return optuna.load_study(
        study_name=name, storage=storage.open_storage(str(workdir / "optuna" / f"{name}.journal"), 1)
    )


def states(study) -> list[str]:
    return [t.state.name for t in study.get_trials(deepcopy=False)]


MULTI = "--set=tune.objectives=[val_accuracy,parameters]"  # accuracy against the network's size


def check_pareto_study(study, runs: list, best_file: dict, client) -> None:
    """What a finished two-objective study (val_accuracy, parameters) must show: a front no trial
    beats, each trial run tagged on or off it, the parent run's front table and figure, and the
    best params file's front and choice (the cheapest within tune.choose_within of the best)."""
    from mnist_cnn.tuning import objectives

    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    front = {t.number for t in study.best_trials}
    assert front and all(len(t.values) == 2 for t in complete)
    for t in complete:  # nothing off the front beats a front trial on both objectives
        dominated = any(o.values[0] >= t.values[0] and o.values[1] <= t.values[1] and o.values != t.values
                        for o in complete)  # fmt: skip
        assert dominated == (t.number not in front), t.number
    (parent,) = [r for r in runs if r.data.tags.get("mnist_cnn.stage") == "tune"]
    children = {
        r.data.tags["optuna.trial_number"]: r
        for r in runs
        if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    for t in complete:
        tags, metrics = children[str(t.number)].data.tags, children[str(t.number)].data.metrics
        assert tags["optuna.pareto_front"] == str(t.number in front).lower()
        assert metrics["best_val_accuracy"] == t.values[0] and metrics["parameters"] == t.values[1]
    assert parent.data.metrics["front_trials"] == len(front)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "tuning")}
    assert {"tuning/pareto_front.csv", "tuning/pareto_front.json", "tuning/pareto_front.png"} <= artifacts

    chosen = objectives.choose(study.best_trials, ("val_accuracy", "parameters"), 0.002)
    assert best_file["best_trial"] == chosen.number and best_file["objectives"] == ["val_accuracy", "parameters"]
    assert sorted(e["trial"] for e in best_file["front"]) == sorted(front)
    assert "lowest parameters among front trials within 0.002" in best_file["chosen_by"]

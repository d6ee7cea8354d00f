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

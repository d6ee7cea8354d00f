"""Helpers of the team tests (test_team.py on loopback, test_hosts.py across network namespaces):
two clones of the project, a quick `mnist-cnn tune` on a shared study, a registration script."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from helpers import copy_project, run, subset_sha256, usps_params
from mnist_cnn.schema import dump_yaml, parse_yaml

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@l"]
QUICK_TUNE = ["tune.epochs=2", "tune.train_fraction=0.5", "tune.sampler.n_startup_trials=2", "tune.pruner.name=none"]


def make_clones(base: Path, mnist_mirror: str, usps_dir: Path) -> tuple[Path, Path]:
    """Clone A (the project, committed, fast preset, 1 epoch on the subset) and clone B, a
    `git clone` of A: two machines' working copies of one repository."""
    a = copy_project(base / "a")
    run(["mnist-cnn", "preset", "fast"], a)
    params = parse_yaml((a / "params.yaml").read_text())
    params["data"]["mirrors"] = [mnist_mirror]
    params["data"]["sha256"] = subset_sha256()
    params["data"]["usps"] = usps_params(usps_dir)
    params["train"]["epochs"] = 1
    params["register"]["min_test_accuracy"] = 0.1
    (a / "params.yaml").write_text(dump_yaml(params))
    run([*GIT, "commit", "-qam", "team test params"], a)
    run(["git", "clone", "-q", str(a), str(base / "b")], base)
    return a, base / "b"


def tune_cmd(processed: Path, location: str, study: str, *extra: str) -> list[str]:
    """`mnist-cnn tune` on the shared study; the best params file goes beside the data, out of the clones' git."""
    sets = [f"--set={o}" for o in QUICK_TUNE]
    best = processed / f"best-{uuid.uuid4().hex[:8]}.yaml"
    return [
        "mnist-cnn", "tune", "--data-dir", str(processed), "--no-progress",
        "--storage", location, "--study-name", study, "--best", str(best), *sets, *extra,
    ]  # fmt: skip


def wait_for(condition, timeout: float, what: str, every: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


# Registers a constant model once per accuracy given, through registry.register (the gate and its
# lock); GATE_STALE_S sets register.gate_stale_s. Prints "version accuracy alias" per model.
REGISTER_SCRIPT = """
import os, sys, mlflow
from mnist_cnn import registry
from mnist_cnn.config import RegisterParams

class Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input):
        return model_input

name, accuracies = sys.argv[1], [float(a) for a in sys.argv[2:]]
params = RegisterParams(model_name=name, min_test_accuracy=0.5, real_digits_tolerance=0.005, champion_alias="champion",
                        challenger_alias="challenger", gate_stale_s=float(os.environ.get("GATE_STALE_S", "300")))
experiment = mlflow.set_experiment(name)
for accuracy in accuracies:
    with mlflow.start_run() as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=Constant(), pip_requirements=[])
    report = registry.register(info.model_uri, run.info.run_id, {"test_accuracy": accuracy}, {}, params)
    print(report["version"], accuracy, report["alias"], flush=True)
"""

# Takes the registry gate of model argv[1], says so, and holds it until killed.
HOLD_GATE_SCRIPT = """
import sys, time
from mnist_cnn import registry
with registry.gate_lock(sys.argv[1]):
    print("holding", flush=True)
    time.sleep(3600)
"""

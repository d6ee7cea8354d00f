"""Team scale on one machine: `mnist-cnn stack` starts PostgreSQL (Debian's package) and an MLflow
server over it on 127.0.0.1, which keep everything across `down` and `up`, refuse a taken port,
hold the claim lock for every machine, outlive a restart of the MLflow server mid-trial and
release a registry gate lock left by a dead process. Across real hosts (partitions, a killed
host, a database restart, two workstations): test_hosts.py. Nothing is skipped: without
PostgreSQL these tests fail (.ci/run installs it)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import ROOT, clean_env, copy_project, free_port, run
from mnist_cnn.tuning import storage
from mnist_stack import mlflow_server
from mnist_stack.settings import Settings, load_settings
from team_kit import tune_cmd, wait_for
from tuning_kit import MULTI, check_pareto_study

pytestmark = pytest.mark.slow


@dataclass
class Stack:
    folder: Path
    settings: Settings

    @property
    def tracking_uri(self) -> str:
        return self.settings.tracking_uri()

    def optuna(self) -> str:
        return self.settings.database_url("optuna")

    def cli(self, action: str, check: bool = True) -> subprocess.CompletedProcess:
        return run(["mnist-cnn", "stack", action, "--dir", str(self.folder)], ROOT, check=check, timeout=300)


@pytest.fixture(scope="module")
def team_stack():
    # PostgreSQL runs as the `postgres` user when the tests run as root: its folder must be
    # reachable by that user, which pytest's 0700 temporary folders are not.
    base = Path(tempfile.mkdtemp(prefix="mnist-cnn-stack-"))
    base.chmod(0o755)
    folder = base / "stack"
    pg_port, mlflow_port = free_port(), free_port()
    up = run(
        [
            "mnist-cnn",
            "stack",
            "up",
            "--dir",
            str(folder),
            "--pg-port",
            str(pg_port),
            "--mlflow-port",
            str(mlflow_port),
        ],
        ROOT,
        timeout=300,
    )
    assert f"export MLFLOW_TRACKING_URI=http://127.0.0.1:{mlflow_port}" in up.stdout
    settings = load_settings(folder)
    assert f"export OPTUNA_STORAGE=postgresql://mnist:{settings.password}@127.0.0.1:{pg_port}/optuna" in up.stdout
    yield Stack(folder, settings)
    run(["mnist-cnn", "stack", "down", "--dir", str(folder)], ROOT, check=False, timeout=300)
    shutil.rmtree(base, ignore_errors=True)


def env(team: Stack, **extra: str) -> dict[str, str]:
    return clean_env(MLFLOW_TRACKING_URI=team.tracking_uri, **extra)


def load_study(location: str, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=storage.open_storage(location, 1))


def counts(study) -> dict[str, int]:
    return storage.count_trials(study)


# --- the stack ------------------------------------------------------------------------------


def test_stack_down_and_up_again_keeps_every_run_model_version_and_trial(team_stack):
    import mlflow
    import optuna
    from mlflow import MlflowClient

    client = MlflowClient(team_stack.tracking_uri)
    exp = client.create_experiment(f"persist-{uuid.uuid4().hex[:8]}")
    run_ = client.create_run(exp)
    client.log_metric(run_.info.run_id, "val_accuracy", 0.97)
    client.log_text(run_.info.run_id, "kept", "notes/kept.txt")
    client.set_terminated(run_.info.run_id)
    name = f"persist-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    version = client.create_model_version(name, source=f"{run_.info.artifact_uri}/notes", run_id=run_.info.run_id)
    client.set_registered_model_alias(name, "champion", version.version)
    study = optuna.create_study(study_name=name, storage=storage.open_storage(team_stack.optuna(), 1))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    # artifacts are proxied: the client sent them over HTTP into the stack's folder
    assert list((team_stack.folder / "artifacts").rglob("kept.txt"))
    assert run_.info.artifact_uri.startswith("mlflow-artifacts:")

    assert team_stack.cli("up").returncode == 0  # idempotent: both already run
    assert "stopped: mlflow server, postgresql" in team_stack.cli("down").stdout
    status = team_stack.cli("status", check=False)
    assert status.returncode == 3 and "postgresql  stopped" in status.stdout and "mlflow      stopped" in status.stdout
    assert not mlflow_server.healthy(team_stack.tracking_uri)
    team_stack.cli("up")
    assert team_stack.cli("status").returncode == 0

    again = MlflowClient(team_stack.tracking_uri)
    assert again.get_run(run_.info.run_id).data.metrics == {"val_accuracy": 0.97}
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(
            run_id=run_.info.run_id, artifact_path="notes/kept.txt", dst_path=tmp, tracking_uri=team_stack.tracking_uri
        )
        assert Path(path).read_text() == "kept"
    assert again.get_model_version_by_alias(name, "champion").version == version.version
    assert len(load_study(team_stack.optuna(), name).trials) == 2


def test_stack_refuses_a_taken_port_with_a_clear_error(team_stack):
    base = Path(tempfile.mkdtemp(prefix="mnist-cnn-stack-"))
    base.chmod(0o755)
    try:
        proc = run(
            [
                "mnist-cnn",
                "stack",
                "up",
                "--dir",
                str(base / "s"),
                "--pg-port",
                str(team_stack.settings.pg_port),
                "--mlflow-port",
                str(free_port()),
            ],
            ROOT,
            check=False,
            timeout=300,
        )
        assert proc.returncode == 1
        assert f"port {team_stack.settings.pg_port} on 127.0.0.1 is taken; pass --pg-port" in proc.stderr
        assert "Traceback" not in proc.stderr
    finally:
        run(["mnist-cnn", "stack", "down", "--dir", str(base / "s")], ROOT, check=False)
        shutil.rmtree(base, ignore_errors=True)


# --- Optuna on PostgreSQL -------------------------------------------------------------------


def test_a_claim_waits_for_another_machine_s_claim_through_the_database(team_stack, tmp_path):
    """The claim lock is PostgreSQL's, not a file's: a claim with a different lock file (another
    machine) still waits while one is held."""
    location, name = team_stack.optuna(), f"lock-{uuid.uuid4().hex[:8]}"
    import optuna

    study = optuna.create_study(study_name=name, storage=storage.open_storage(location, 1), direction="maximize")
    got = []
    with storage.claim_lock(location, name, tmp_path / "machine-1.lock"):
        worker = threading.Thread(
            target=lambda: got.append(
                storage.claim(study, 1, storage.claim_lock(location, name, tmp_path / "machine-2.lock"))
            )
        )
        worker.start()
        worker.join(3.0)
        assert worker.is_alive() and not got, "the second machine's claim did not wait"
    worker.join(30)
    assert got and got[0] is not None
    assert storage.claim(study, 1, storage.claim_lock(location, name, tmp_path / "machine-2.lock")) is None  # full


def test_a_multi_objective_study_on_postgresql_with_two_workers_fills_exactly_and_logs_its_front(
    team_stack, processed, tmp_path
):
    from mlflow import MlflowClient

    from mnist_cnn.schema import read_yaml

    workdir = copy_project(tmp_path / "a")
    run(["mnist-cnn", "preset", "fast"], workdir)
    name, location = f"pareto-{uuid.uuid4().hex[:8]}", team_stack.optuna()
    best = tmp_path / "best.yaml"
    run(
        tune_cmd(processed, location, name, "--trials", "5", "--workers", "2", MULTI, "--best", best),
        workdir,
        env(team_stack),
    )
    study = load_study(location, name)
    assert counts(study)["COMPLETE"] == 5 and counts(study)["RUNNING"] == 0
    client = MlflowClient(team_stack.tracking_uri)
    experiment = client.get_experiment_by_name("mnist-cnn").experiment_id
    runs = client.search_runs([experiment], f"tags.`optuna.study_name` = '{name}'", max_results=1000)
    check_pareto_study(study, runs, read_yaml(best), client)


def _running_with_run(location: str, name: str) -> bool:
    try:
        study = load_study(location, name)
    except KeyError:
        return False
    running = study.get_trials(states=[storage.TrialState.RUNNING])
    return (
        bool(running)
        and "mlflow_run_id" in running[0].user_attrs
        and running[0].user_attrs.get("epochs_trained", 0) >= 1
    )


def test_a_study_finishes_when_the_mlflow_server_dies_and_is_restarted_mid_trial(team_stack, processed, tmp_path):
    from mlflow import MlflowClient

    workdir = copy_project(tmp_path / "a")
    run(["mnist-cnn", "preset", "fast"], workdir)
    name, location = f"restart-{uuid.uuid4().hex[:8]}", team_stack.optuna()
    tune = subprocess.Popen(
        tune_cmd(processed, location, name, "--trials", "2", "--set=tune.epochs=4"),
        cwd=workdir,
        env=env(team_stack),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wait_for(lambda: _running_with_run(location, name), 300, "a trial logging epochs")
    pid = mlflow_server.running_pid(team_stack.folder)
    os.killpg(pid, signal.SIGKILL)  # the server dies mid-trial...
    wait_for(lambda: not mlflow_server.healthy(team_stack.tracking_uri), 30, "the server to be gone")
    time.sleep(3)
    team_stack.cli("up")  # ...and is restarted: `up` starts what is not running
    out = tune.communicate(timeout=600)[0]
    assert tune.returncode == 0, out[-4000:]
    study = load_study(location, name)
    assert counts(study)["COMPLETE"] + counts(study)["PRUNED"] == 2
    client = MlflowClient(team_stack.tracking_uri)
    for trial in study.trials:
        logged = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert logged.info.status == "FINISHED"
        history = client.get_metric_history(logged.info.run_id, "epoch/val_accuracy")
        assert [m.step for m in history] == list(range(1, trial.user_attrs["epochs_trained"] + 1)), "no epoch lost"


# --- the registry gate ----------------------------------------------------------------------


def test_a_gate_lock_left_by_a_dead_process_is_taken_over(team_stack, tmp_path):
    import mlflow
    from mlflow import MlflowClient

    from mnist_cnn import registry

    name = f"stale-{uuid.uuid4().hex[:8]}"
    dead = subprocess.run(
        [sys.executable, "-c", "from mnist_cnn import liveness; print(liveness.owner_token())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    client = MlflowClient(team_stack.tracking_uri)
    client.create_registered_model(name + registry.LOCK_SUFFIX, tags={"owner": dead, "since": f"{time.time():.3f}"})
    mlflow.set_tracking_uri(team_stack.tracking_uri)
    try:
        start = time.monotonic()
        with registry.gate_lock(name, timeout=30):
            assert client.get_registered_model(name + registry.LOCK_SUFFIX).tags["owner"] != dead
        assert time.monotonic() - start < 10
    finally:
        mlflow.set_tracking_uri(None)
    assert client.search_registered_models(f"name='{name}{registry.LOCK_SUFFIX}'") == []

"""Tracking and tuning under concurrency: many processes on a fresh SQLite store, tuning
workers against a real `mlflow server`, and a tuning worker killed mid-trial."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from helpers import experiment_runs, free_port, wait_until_up
from mnist_cnn.tuning.storage import WORKER_ATTR as WORKER
from tuning_kit import load_study, states, tune_cmd

pytestmark = pytest.mark.slow

LOGGER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import mlflow
    from mnist_cnn.tracking import store
    from mnist_cnn.config import TrackingParams
    experiment = store.configure(TrackingParams(experiment="mnist-cnn"), Path(sys.argv[1]))
    with mlflow.start_run(experiment_id=experiment, run_name=sys.argv[2]):
        mlflow.log_params({"worker": sys.argv[2]})
        for step in range(30):
            mlflow.log_metric("value", step, step=step)
    """
)


def test_processes_logging_at_once_on_a_fresh_sqlite_store(tmp_path):
    db = tmp_path / "mlflow.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{db}"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", LOGGER, str(tmp_path), f"w{i}"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(6)
    ]
    results = [(p.wait(180), p.stderr.read()) for p in procs]
    for code, err in results:
        assert code == 0, err[-2000:]
        assert "database is locked" not in err
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert con.execute("SELECT count(*) FROM alembic_version").fetchone()[0] == 1, "migrated exactly once"
        assert con.execute("SELECT count(*) FROM runs WHERE status = 'FINISHED'").fetchone()[0] == 6
        assert con.execute("SELECT count(*) FROM metrics WHERE key = 'value'").fetchone()[0] == 6 * 30


def test_tuning_workers_on_a_fresh_default_store(workdir, processed):
    """No MLFLOW_TRACKING_URI: the project's own sqlite store, created by the parent before fan-out."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run(
        tune_cmd(processed, "--trials", "6", "--workers", "3", "--set=tune.pruner.name=none"),
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "database is locked" not in proc.stderr and "Traceback" not in proc.stderr
    assert states(load_study(workdir)) == ["COMPLETE"] * 6
    assert len([r for r in experiment_runs(workdir) if "mlflow.parentRunId" in r.data.tags]) == 6


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--default-artifact-root",
            str(tmp_path / "artifacts"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/health", proc)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def test_tuning_workers_against_a_real_tracking_server(workdir, processed, mlflow_server):
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        tune_cmd(processed, "--trials", "4", "--workers", "2", "--set=tune.pruner.name=none"),
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("mnist-cnn")
    found = client.search_runs([experiment.experiment_id], max_results=100)
    parents = [r for r in found if r.data.tags.get("mnist_cnn.stage") == "tune"]
    children = [r for r in found if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(r.data.tags["optuna.state"] for r in children) == ["COMPLETE"] * 4
    assert {a.path for a in client.list_artifacts(parents[0].info.run_id, "tuning")} >= {"tuning/trials.csv"}


def started(owner: str) -> tuple[float, int]:
    """A worker's liveness owner token (`host:pid:start-time`) as (start time, pid): the order
    the parent started its workers in, even two within one clock tick."""
    _host, pid, start = owner.rsplit(":", 2)
    return float(start), int(pid)


def test_a_tuning_worker_killed_mid_trial_is_failed_and_the_study_still_completes(workdir, processed):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}", "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = tune_cmd(processed, "--trials", "6", "--workers", "2", "--set=tune.pruner.name=none", "--set=tune.epochs=3")
    main = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim = None
    deadline = time.time() + 300
    try:
        while victim is None and time.time() < deadline and main.poll() is None:
            time.sleep(0.2)
            try:
                trials = load_study(workdir).get_trials(deepcopy=False)
            except KeyError:  # the journal file is made a moment before the study is written into it
                continue
            running = sorted(
                (t for t in trials if t.state.name == "RUNNING" and WORKER in t.user_attrs),
                key=lambda t: started(t.user_attrs[WORKER]),
            )
            # Two workers each in a trial, the later-started one past its first epoch: killing it
            # while the parent is still joining the first leaves it an unreaped zombie, which the
            # survivor must judge dead.
            if len(running) == 2 and {"mlflow_run_id", "epochs_trained"} <= running[1].user_attrs.keys():
                victim = running[1]
        assert victim is not None, f"no two trials ran at once (tune exited {main.poll()})"
        _start, pid = started(victim.user_attrs[WORKER])
        assert pid != main.pid and psutil.Process(pid).parent().pid == main.pid, "trials run in worker processes"
        os.kill(pid, signal.SIGKILL)
        out, err = main.communicate(timeout=600)
    finally:
        if main.poll() is None:
            main.kill()
    assert main.returncode == 0, err[-3000:]
    study = load_study(workdir)
    trial = next(t for t in study.get_trials(deepcopy=False) if t.number == victim.number)
    assert trial.state.name == "FAIL", "the killed worker's trial does not stay RUNNING"
    assert states(study).count("COMPLETE") == 6 and "RUNNING" not in states(study), "the study still reaches its count"
    from mlflow.tracking import MlflowClient

    run = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}").get_run(victim.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED"
    assert "worker(s) were killed" in err

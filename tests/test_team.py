"""Team scale on real servers: `mnist-cnn stack` starts PostgreSQL (Debian's package) and an
MLflow server over it on 127.0.0.1; two clones of the project ("two machines": their own
working directories, processes and lock files) tune one study and run `dvc repro` against them,
register at once, survive a killed worker and a restarted server, and share results through a
DVC remote. Nothing is skipped: without PostgreSQL these tests fail (.ci/run installs it)."""

from __future__ import annotations

import json
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

from helpers import ROOT, SUBSET, MirrorServer, clean_env, copy_project, free_port, run, subset_sha256, usps_params
from mnist_cnn.schema import dump_yaml, parse_yaml
from mnist_cnn.tuning import storage
from mnist_stack import mlflow_server
from mnist_stack.settings import Settings, load_settings

pytestmark = pytest.mark.slow

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@l"]
QUICK_TUNE = ["tune.epochs=2", "tune.train_fraction=0.5", "tune.sampler.n_startup_trials=2", "tune.pruner.name=none"]


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


@pytest.fixture(scope="module")
def mirror_url():
    server = MirrorServer(SUBSET)
    yield server.url
    server.close()


def make_clones(base: Path, mirror_url: str, usps_dir: Path) -> tuple[Path, Path]:
    """Clone A (the project, committed, fast preset, 1 epoch on the subset) and clone B, a
    `git clone` of A: two machines' working copies of one repository."""
    a = copy_project(base / "a")
    run(["mnist-cnn", "preset", "fast"], a)
    params = parse_yaml((a / "params.yaml").read_text())
    params["data"]["mirrors"] = [mirror_url]
    params["data"]["sha256"] = subset_sha256()
    params["data"]["usps"] = usps_params(usps_dir)
    params["train"]["epochs"] = 1
    params["register"]["min_test_accuracy"] = 0.1
    (a / "params.yaml").write_text(dump_yaml(params))
    run([*GIT, "commit", "-qam", "team test params"], a)
    run(["git", "clone", "-q", str(a), str(base / "b")], base)
    return a, base / "b"


def env(team: Stack, **extra: str) -> dict[str, str]:
    return clean_env(MLFLOW_TRACKING_URI=team.tracking_uri, **extra)


def tune_cmd(processed: Path, location: str, study: str, *extra: str) -> list[str]:
    """`mnist-cnn tune` on the shared study; the best params file goes beside the data, out of the clones' git."""
    sets = [f"--set={o}" for o in QUICK_TUNE]
    best = processed / f"best-{uuid.uuid4().hex[:8]}.yaml"
    return [
        "mnist-cnn",
        "tune",
        "--data-dir",
        str(processed),
        "--no-progress",
        "--storage",
        location,
        "--study-name",
        study,
        "--best",
        str(best),
        *sets,
        *extra,
    ]


def load_study(location: str, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=storage.open_storage(location, 1))


def counts(study) -> dict[str, int]:
    return storage.count_trials(study)


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)


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


def test_two_clones_tune_one_study_and_run_dvc_repro_at_once_then_share_through_a_dvc_remote(
    team_stack, processed, mirror_url, usps_subset_dir, tmp_path
):
    from mlflow import MlflowClient

    a, b = make_clones(tmp_path, mirror_url, usps_subset_dir)
    name, n_trials = f"team-{uuid.uuid4().hex[:8]}", 5
    location = team_stack.optuna()
    procs = [
        subprocess.Popen(
            tune_cmd(processed, location, name, "--trials", str(n_trials), "--workers", "2"),
            cwd=a,
            env=env(team_stack),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ),
        subprocess.Popen(
            tune_cmd(processed, location, name, "--trials", str(n_trials)),
            cwd=b,
            env=env(team_stack),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ),
        subprocess.Popen(
            ["dvc", "repro"], cwd=a, env=env(team_stack), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ),
    ]
    outputs = [p.communicate(timeout=900)[0] for p in procs]
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out[-4000:]

    study = load_study(location, name)
    c = counts(study)
    assert c["COMPLETE"] + c["PRUNED"] == n_trials and c["RUNNING"] == 0, c  # exactly, across both machines
    client = MlflowClient(team_stack.tracking_uri)
    parents = set()
    for trial in study.trials:
        trial_run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert trial_run.info.status == "FINISHED"
        parents.add(trial_run.data.tags["mlflow.parentRunId"])
    assert len(parents) == 2, "each clone's tune is one parent run on the shared server"
    pids = {t.user_attrs["worker"].rsplit(":", 2)[1] for t in study.trials}
    assert len(pids) >= 2, "trials from more than one worker process"

    # dvc repro registered into the shared registry
    report = json.loads((a / "reports" / "register.json").read_text())
    assert client.get_model_version("mnist-cnn", str(report["version"])).run_id == report["run_id"]
    assert client.get_run(report["run_id"]).info.artifact_uri.startswith("mlflow-artifacts:")

    # A shares: commit dvc.lock and the uncached reports, push the cached outputs to the remote
    remote = tmp_path / "remote"
    for clone in (a, b):
        run(["dvc", "remote", "modify", "--local", "team", "url", str(remote)], clone)
    run(["git", "add", "dvc.lock", "reports", "models/run.json", ".gitignore", "data", "models"], a)
    run([*GIT, "commit", "-qm", "trained model"], a)
    assert run(["git", "status", "--porcelain"], a).stdout == "", "every output is committed or ignored"
    run(["dvc", "push"], a, env=env(team_stack))
    runs_before = {
        r.info.run_id
        for r in client.search_runs([client.get_experiment_by_name("mnist-cnn").experiment_id], max_results=1000)
    }

    # B gets it: git pull, dvc pull, and dvc repro does nothing
    run(["git", "pull", "-q"], b)
    run(["dvc", "pull"], b, env=env(team_stack))
    repro = run(["dvc", "repro"], b, env=env(team_stack))
    assert "didn't change, skipping" in repro.stdout and "Running stage" not in repro.stdout, repro.stdout
    assert (b / "models" / "model.keras").read_bytes() == (a / "models" / "model.keras").read_bytes()
    assert run(["dvc", "status"], b).stdout.strip() == "Data and pipelines are up to date."
    runs_after = {
        r.info.run_id
        for r in client.search_runs([client.get_experiment_by_name("mnist-cnn").experiment_id], max_results=1000)
    }
    assert runs_after == runs_before, "a no-op repro logs no run"


def test_a_dead_machine_s_trial_is_failed_by_its_heartbeat_and_its_run_killed(
    team_stack, processed, mirror_url, usps_subset_dir, tmp_path
):
    """Another machine's worker is SIGKILLed mid-trial. Liveness cannot judge another machine's
    process, so its trial is failed only when its heartbeats stop."""
    from mlflow import MlflowClient

    a, b = make_clones(tmp_path, mirror_url, usps_subset_dir)
    name, location = f"dead-{uuid.uuid4().hex[:8]}", team_stack.optuna()
    beat = ["--set=tune.heartbeat_s=1"]
    victim = subprocess.Popen(
        tune_cmd(processed, location, name, "--trials", "3", "--set=tune.epochs=30", *beat),
        cwd=b,
        env=env(team_stack),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(lambda: _running_with_run(location, name), 300, "a running trial with its MLflow run")
    finally:
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
    study = load_study(location, name)
    (trial,) = study.get_trials(states=[storage.TrialState.RUNNING])
    # it ran on another machine: this machine's liveness checks must not be what fails it
    elsewhere = "another-machine:4242:1.000"
    study._storage.set_trial_user_attr(trial._trial_id, storage.WORKER_ATTR, elsewhere)
    MlflowClient(team_stack.tracking_uri).set_tag(trial.user_attrs["mlflow_run_id"], "mnist_cnn.owner", elsewhere)
    time.sleep(5)  # > the grace period, 4 heartbeats

    run(tune_cmd(processed, location, name, "--trials", "3", *beat), a, env=env(team_stack), timeout=900)
    study = load_study(location, name)
    assert study.trials[trial.number].state.name == "FAIL"
    c = counts(study)
    assert c["COMPLETE"] + c["PRUNED"] == 3 and c["RUNNING"] == 0, c
    killed = MlflowClient(team_stack.tracking_uri).get_run(trial.user_attrs["mlflow_run_id"])
    assert killed.info.status == "KILLED"


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

REGISTER_SCRIPT = """
import sys, mlflow
from mnist_cnn import registry
from mnist_cnn.config import RegisterParams

class Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input):
        return model_input

name, accuracies = sys.argv[1], [float(a) for a in sys.argv[2:]]
params = RegisterParams(model_name=name, min_test_accuracy=0.5, real_digits_tolerance=0.005, champion_alias="champion",
                        challenger_alias="challenger")
experiment = mlflow.set_experiment(name)
for accuracy in accuracies:
    with mlflow.start_run() as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=Constant(), pip_requirements=[])
    report = registry.register(info.model_uri, run.info.run_id, {"test_accuracy": accuracy}, {}, params)
    print(report["version"], accuracy, report["alias"], flush=True)
"""


def test_clones_registering_at_once_leave_one_champion_the_best_and_lose_no_version(team_stack, tmp_path):
    from mlflow import MlflowClient

    name = f"gate-{uuid.uuid4().hex[:8]}"
    script = tmp_path / "register.py"
    script.write_text(REGISTER_SCRIPT)
    accuracies = [["0.91", "0.97", "0.93"], ["0.95", "0.92", "0.99"], ["0.96", "0.94", "0.98"]]
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), name, *acc],
            cwd=tmp_path,
            env=env(team_stack),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for acc in accuracies
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for proc, (_out, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err[-4000:]
    client = MlflowClient(team_stack.tracking_uri)
    versions = client.search_model_versions(f"name='{name}'")
    assert len(versions) == 9, "no version lost"
    by_accuracy = {float(v.tags["test_accuracy"]): v.version for v in versions}
    assert client.get_model_version_by_alias(name, "champion").version == by_accuracy[0.99]
    assert client.search_registered_models(f"name='{name}.gate-lock'") == []


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

"""`mnist-cnn ui`: `mlflow ui` over the project's store, and links that land on the model-training
view in a real browser (MLflow 3.17's UI ignores the experiment-kind tag and opens on GenAI)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import chromium, clean_env, copy_project, free_port, run, wait_until_up

CLI = [sys.executable, "-c", "from mnist_cnn.cli import main; main()"]

pytestmark = pytest.mark.slow  # subprocesses: dvc, stages, servers; Chromium


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, str]:
    """A project copy whose store holds the experiment and one finished run."""
    root = copy_project(tmp_path_factory.mktemp("ui-project"))
    script = (
        "import mlflow; from mnist_cnn import config\nfrom mnist_cnn.tracking import store\n"
        "params = config.load_params('params.yaml')\n"
        "experiment = store.configure(params.tracking)\n"
        "with mlflow.start_run(experiment_id=experiment, run_name='ui-test-run') as r: mlflow.log_metric('val_accuracy', 0.5)\n"
        "print(r.info.experiment_id)\n"
    )
    experiment_id = run([sys.executable, "-c", script], cwd=root).stdout.split()[-1]
    return root, experiment_id


def start_ui(root: Path, port: int, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, dict[str, str]]:
    proc = subprocess.Popen(CLI + ["ui", "--port", str(port)], cwd=root, env=env or clean_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    links = {}
    while len(links) < 2:
        line = proc.stdout.readline()
        if not line:
            pytest.fail(f"mnist-cnn ui exited {proc.wait()}: {proc.stderr.read()[-2000:]}")
        name, _, url = line.partition(":")
        links[name] = url.strip()
    return proc, links


def stop(proc: subprocess.Popen) -> None:
    """The server and its workers (it runs in a session of its own)."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_ui_serves_the_project_store_and_its_links_open_the_model_training_view(project):
    from playwright.sync_api import sync_playwright

    root, experiment_id = project
    port = free_port()
    proc, links = start_ui(root, port)
    try:
        base = f"http://127.0.0.1:{port}"
        assert links["runs"] == f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
        assert links["model"] == f"{base}/#/models/mnist-cnn?workflowType=machine_learning"
        wait_until_up(f"{base}/health", proc)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium(), headless=True)
            try:
                page = browser.new_page()
                page.goto(links["runs"])
                page.get_by_text("ui-test-run").first.wait_for(timeout=60_000)
                assert "workflowType=machine_learning" in page.url
                # Why the links carry the view: without it, the tagged experiment still opens on GenAI.
                page.goto(f"{base}/#/experiments/{experiment_id}")
                deadline = time.monotonic() + 30
                while "workflowType=" not in page.url and time.monotonic() < deadline:
                    page.wait_for_timeout(200)
                assert "workflowType=genai" in page.url, f"MLflow may now honour the experiment kind: {page.url}"
            finally:
                browser.close()
    finally:
        stop(proc)


@pytest.mark.parametrize("verbose", ["", "1"])
def test_ui_keeps_mlflow_uvicorn_and_starlette_lines_off_the_terminal_unless_verbose(project, verbose):
    root, _ = project
    port = free_port()
    proc, _ = start_ui(root, port, clean_env(MNIST_CNN_VERBOSE=verbose))
    try:
        wait_until_up(f"http://127.0.0.1:{port}/health", proc)
    finally:
        stop(proc)
    noise = [line for line in proc.stderr.read().splitlines() if " INFO" in line or "DeprecationWarning" in line]
    if verbose:
        assert noise, "MNIST_CNN_VERBOSE=1 brings MLflow's and uvicorn's lines back"
    else:
        assert not noise, noise


def test_ui_against_a_tracking_server_prints_the_servers_links_and_starts_nothing(project):
    root, experiment_id = project
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=root, env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        wait_until_up(f"http://127.0.0.1:{port}/health", server)
        proc = run(CLI + ["ui"], cwd=root, env=clean_env(MLFLOW_TRACKING_URI=f"http://127.0.0.1:{port}"), timeout=120)
        assert (
            f"http://127.0.0.1:{port}/#/experiments/{experiment_id}/runs?workflowType=machine_learning" in proc.stdout
        )
        assert "is the UI" in proc.stderr
    finally:
        stop(server)


def test_ui_on_a_fresh_clone_says_there_are_no_runs_yet(tmp_path):
    root = copy_project(tmp_path)
    port = free_port()
    proc, links = start_ui(root, port)
    try:
        assert links["runs"] == f"http://127.0.0.1:{port}/#/experiments?workflowType=machine_learning"
        wait_until_up(f"http://127.0.0.1:{port}/health", proc)
    finally:
        stop(proc)
    assert "has no runs yet" in proc.stderr.read()

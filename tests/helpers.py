"""Test helpers (not fixtures): the repository's paths, the MNIST subset's checksums, a loopback
HTTP mirror that can misbehave on demand, a committed copy of the project, stage commands, a
user's environment, subprocess and server waits, Debian's chromium. Fixtures live in conftest.py."""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUBSET = ROOT / "tests" / "fixtures" / "mnist-subset"


def read_sha256sums(directory: Path) -> dict[str, str]:
    sums = {}
    for line in (directory / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        sums[name] = digest
    return sums


def subset_sha256() -> dict[str, str]:
    return read_sha256sums(SUBSET)


def usps_params(directory: Path) -> dict:
    """params.yaml's `data.usps` section for the fixture files in `directory`: that folder as the
    only mirror, their checksums. `params["data"]["usps"] = usps_params(usps_subset_dir)`."""
    return {"mirrors": [str(directory)], "sha256": read_sha256sums(directory)}


class MirrorServer:
    """Serves a directory on 127.0.0.1. `faults[filename]` is a list of behaviours consumed one
    per request: an int status code, "truncate", "flip" (one byte changed), "hang", or
    ("redirect", url)."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.faults: dict[str, list] = {}
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                server.requests.append(self.path)
                queue = server.faults.get(name) or []
                fault = queue.pop(0) if queue else None
                if isinstance(fault, int):
                    self.send_error(fault)
                    return
                if isinstance(fault, tuple) and fault[0] == "redirect":
                    self.send_response(302)
                    self.send_header("Location", fault[1])
                    self.end_headers()
                    return
                if fault == "hang":
                    time.sleep(30)
                    return
                path = server.directory / name
                if not path.is_file():
                    self.send_error(404)
                    return
                body = path.read_bytes()
                if fault == "flip":
                    body = body[:-20] + bytes([body[-20] ^ 0xFF]) + body[-19:]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if fault == "truncate":
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/mnist/"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def store_client(project: Path):
    """An MLflow client on the project's default store, `mlflow.db` in it."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")


def experiment_runs(project: Path):
    """Every run of the project's mnist-cnn experiment (stage runs, tuning parents and trials)."""
    client = store_client(project)
    experiment = client.get_experiment_by_name("mnist-cnn")
    return client.search_runs([experiment.experiment_id], max_results=1000)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_project(dest: Path) -> Path:
    """A git-committed copy of the project's tracked and untracked-not-ignored files."""
    files = (
        subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file() and not rel.startswith("tests/"):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost"]
    subprocess.run(git + ["init", "-q"], cwd=dest, check=True)
    subprocess.run(git + ["add", "-A"], cwd=dest, check=True)
    subprocess.run(git + ["commit", "-qm", "snapshot"], cwd=dest, check=True)
    return dest


def stage_cmd(stage: str, *extra: str) -> list[str]:
    """dvc.yaml's command of `stage` (its paths relative to the project root), then `extra`
    arguments: a repeated option overrides dvc.yaml's value."""
    import shlex

    from mnist_cnn.schema import read_yaml

    cmd = shlex.split(read_yaml(ROOT / "dvc.yaml")["stages"][stage]["cmd"])
    assert cmd[0] == "python"
    return [sys.executable, *cmd[1:], *extra]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: no tracking URI, mirror, MLflow run or experiment of the test's own.

    `mlflow.set_experiment` in an in-process test exports MLFLOW_EXPERIMENT_ID into os.environ.
    """
    dropped = ("MLFLOW_TRACKING_URI", "MNIST_MIRROR", "USPS_MIRROR", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID",
               "MLFLOW_EXPERIMENT_NAME")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", **extra)
    return env


def run(cmd: list, cwd: Path, env: dict[str, str] | None = None, check: bool = True, timeout: int = 600):
    proc = subprocess.run(cmd, cwd=cwd, env=env or clean_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} exited {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
        )
    return proc


def wait_until_up(url: str, proc: subprocess.Popen | None = None, timeout: float = 180) -> None:
    """Poll `url` until it answers 200; fail early if `proc` (the server) exits."""
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"server exited {proc.returncode} before answering {url}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} did not answer within {timeout:.0f}s")


def chromium() -> str:
    """Debian's chromium, for Playwright's `executable_path`."""
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("Debian's chromium is missing: tests/system-packages.sh installs it (or set CHROMIUM)")
    return path

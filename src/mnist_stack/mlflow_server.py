"""The `mlflow server` in front of the stack's PostgreSQL: it proxies artifacts (kept in
`artifacts/`), so clients need only its URL, no shared filesystem. Its log is `logs/mlflow.log`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from mnist_stack.settings import ANY, LOOPBACK, USER, Settings, StackError, port_free


def _pid_path(folder: Path) -> Path:
    return folder / "mlflow.pid"


def running_pid(folder: Path) -> int | None:
    """The MLflow server's process id, if the process recorded in mlflow.pid still runs."""
    try:
        pid = int(_pid_path(folder).read_text().split()[0])
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, IndexError, ProcessLookupError):
        return None
    except PermissionError:
        return pid
    return pid


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def security_options(settings: Settings) -> list[str]:
    """The Host headers and browser origins the server admits: its advertised address (the URL
    clients were given) and this machine's loopback; any other Host header gets HTTP 403."""
    local = ["localhost", "127.0.0.1", "[::1]"]
    served = [settings.client_host()] if settings.client_host() not in LOOPBACK else []
    hosts = [f"{h}:{settings.mlflow_port}" for h in served + local] + served + local
    origins = [f"http://{h}:{settings.mlflow_port}" for h in served + local]
    return ["--allowed-hosts", ",".join(hosts), "--cors-allowed-origins", ",".join(origins)]


def start(folder: Path, settings: Settings, timeout: float = 180.0) -> None:
    if not port_free(settings.host, settings.mlflow_port):
        raise StackError(
            f"port {settings.mlflow_port} on {settings.host} is taken (an `mlflow ui`?); pass --mlflow-port"
        )
    log = folder / "logs" / "mlflow.log"
    store = f"postgresql://{USER}@127.0.0.1:{settings.pg_port}/mlflow"
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        store,
        "--artifacts-destination",
        str((folder / "artifacts").resolve()),
        "--host",
        settings.host,
        "--port",
        str(settings.mlflow_port),
    ]
    cmd += security_options(settings)
    env = {**os.environ, "PGPASSWORD": settings.password}  # libpq's own variable: no password in `ps`
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            cwd=folder,
        )
    _pid_path(folder).write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + timeout
    local = "127.0.0.1" if settings.host in ANY + LOOPBACK else settings.host
    url = f"http://{local}:{settings.mlflow_port}"
    while not healthy(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(folder)
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            raise StackError(f"the MLflow server did not start; {log} ends with:\n  " + "\n  ".join(tail))
        time.sleep(0.5)


def stop(folder: Path, timeout: float = 30.0) -> bool:
    pid = running_pid(folder)
    if pid is None:
        _pid_path(folder).unlink(missing_ok=True)
        return False
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)  # the server and its uvicorn workers
        except ProcessLookupError:
            break
        if _gone(pid, wait):
            break
    _pid_path(folder).unlink(missing_ok=True)
    return True


def _gone(pid: int, wait: float) -> bool:
    """Whether process `pid` ends within `wait` seconds (reaped if it is our child)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:
            pass  # started by another process: poll
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False

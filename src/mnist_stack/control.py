"""The stack's commands: `up` (idempotent: starts whatever is not running, creates the cluster and
databases on first use), `down` (stops both servers cleanly; `up` again finds every run, model
version and trial) and `status`."""

from __future__ import annotations

import secrets
from pathlib import Path

from mnist_stack import mlflow_server, postgres
from mnist_stack.settings import Settings, StackError, advertised_address, load_settings, save_settings


def up(
    folder: Path,
    host: str | None = None,
    pg_port: int | None = None,
    mlflow_port: int | None = None,
    advertise: str | None = None,
) -> Settings:
    """Start whatever is not running; create the cluster and databases on first use. What is not
    given is kept from the folder's last `up`, then defaulted."""
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "logs").mkdir(exist_ok=True)
    (folder / "artifacts").mkdir(exist_ok=True)
    saved = load_settings(folder)
    host = host or (saved.host if saved else "127.0.0.1")
    if advertise is None and saved and saved.host == host:
        advertise = saved.advertise or None
    settings = Settings(
        host=host,
        pg_port=pg_port or (saved.pg_port if saved else 5433),
        mlflow_port=mlflow_port or (saved.mlflow_port if saved else 5000),
        password=saved.password if saved else secrets.token_urlsafe(24),
        advertise=advertised_address(host, advertise),
    )
    bindir = postgres.bindir()
    if not (folder / "pgdata" / "PG_VERSION").is_file():
        if (folder / "pgdata").exists():
            raise StackError(f"{folder / 'pgdata'} exists but holds no PostgreSQL cluster; move it away first")
        postgres.init_cluster(folder, settings, bindir)
    if settings != saved:
        save_settings(folder, settings)
    if not postgres.running(folder):
        postgres.start(folder, settings, bindir)
    postgres.create_databases(settings)
    if mlflow_server.running_pid(folder) is None:
        mlflow_server.start(folder, settings)
    return settings


def down(folder: Path) -> list[str]:
    """Stop the MLflow server, then PostgreSQL (fast shutdown: clients are disconnected, nothing
    committed is lost). Returns what was stopped."""
    folder = folder.resolve()
    stopped = []
    if mlflow_server.stop(folder):
        stopped.append("mlflow server")
    if (folder / "pgdata").is_dir() and postgres.running(folder):
        postgres.stop(folder)
        stopped.append("postgresql")
    return stopped


def status(folder: Path) -> dict[str, object]:
    folder = folder.resolve()
    settings = load_settings(folder)
    pid = mlflow_server.running_pid(folder)
    return {
        "folder": str(folder),
        "settings": settings,
        "postgresql": settings is not None and (folder / "pgdata").is_dir() and postgres.running(folder),
        "mlflow": pid is not None
        and settings is not None
        and mlflow_server.healthy(f"http://127.0.0.1:{settings.mlflow_port}"),
        "mlflow_pid": pid,
    }

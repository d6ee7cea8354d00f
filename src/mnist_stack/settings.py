"""The stack's settings (`stack.json`: host, ports, the generated database password; mode 0600),
its errors, and what a client exports to use it."""

from __future__ import annotations

import json
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from mnist_cnn.atomic import atomic_path
from mnist_runtime.errors import MnistCnnError

USER = "mnist"
DATABASES = ("mlflow", "optuna")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class StackError(MnistCnnError):
    """The team servers cannot be started, stopped or reached."""


@dataclass(frozen=True)
class Settings:
    host: str
    pg_port: int
    mlflow_port: int
    password: str

    def client_host(self) -> str:
        """The name other machines use: this machine's name when the servers listen beyond it."""
        return "127.0.0.1" if self.host in LOOPBACK else socket.getfqdn()

    def tracking_uri(self) -> str:
        return f"http://{self.client_host()}:{self.mlflow_port}"

    def database_url(self, database: str, host: str | None = None) -> str:
        return f"postgresql://{USER}:{self.password}@{host or self.client_host()}:{self.pg_port}/{database}"


def settings_path(folder: Path) -> Path:
    return folder / "stack.json"


def load_settings(folder: Path) -> Settings | None:
    path = settings_path(folder)
    if not path.is_file():
        return None
    try:
        return Settings(**json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise StackError(
            f"{path} is damaged ({exc}); restore it from a backup (it holds the database password)"
        ) from None


def save_settings(folder: Path, settings: Settings) -> None:
    with atomic_path(settings_path(folder), mode=0o600) as tmp:  # it holds the database password
        tmp.write_text(json.dumps(asdict(settings), indent=2) + "\n")


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def exports(settings: Settings) -> str:
    """The shell lines a client runs to use the stack."""
    return (
        f"export MLFLOW_TRACKING_URI={settings.tracking_uri()}\n"
        f"export OPTUNA_STORAGE={settings.database_url('optuna')}\n"
    )

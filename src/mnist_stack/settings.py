"""The stack's settings (`stack.json`: host, the address it advertises, ports, the generated
database password; mode 0600), its errors, and what a client exports to use it."""

from __future__ import annotations

import ipaddress
import json
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from mnist_cnn.atomic import atomic_path
from mnist_runtime.errors import MnistCnnError

USER = "mnist"
DATABASES = ("mlflow", "optuna")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
ANY = ("0.0.0.0", "::")


class StackError(MnistCnnError):
    """The team servers cannot be started, stopped or reached."""


@dataclass(frozen=True)
class Settings:
    host: str
    pg_port: int
    mlflow_port: int
    password: str
    advertise: str = ""  # the address clients reach the servers at; "" for a loopback stack

    def client_host(self) -> str:
        """The address in the printed URLs: what other machines connect to."""
        return self.advertise or ("127.0.0.1" if self.host in LOOPBACK + ANY else self.host)

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


def advertised_address(host: str, given: str | None) -> str:
    """The address other machines reach the servers at: `given` (--advertise), else the one
    `host` names, else (servers on every interface) this machine's only non-loopback IPv4
    address. "" for a stack on loopback."""
    if given:
        return given.strip()
    if host in LOOPBACK:
        return ""
    if host not in ANY:
        return host
    import psutil

    up = {name for name, stats in psutil.net_if_stats().items() if stats.isup}
    found = sorted({
        a.address
        for name, addresses in psutil.net_if_addrs().items()
        if name in up
        for a in addresses
        if a.family == socket.AF_INET and not ipaddress.ip_address(a.address).is_loopback
    })  # fmt: skip
    if len(found) == 1:
        return found[0]
    raise StackError(
        f"the servers listen on every interface ({host}) and this machine has "
        + (f"several addresses ({', '.join(found)})" if found else "no network address")
        + "; pass --advertise ADDR, the address or name the other machines reach it at"
    )


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

"""The team's servers, run from one folder: PostgreSQL (Debian's `postgresql` package) holding
the MLflow tracking store, the model registry and the Optuna studies, and an `mlflow server` in
front of it that proxies artifacts, so clients need only its URL, no shared filesystem.

The folder holds `pgdata/` (the cluster), `artifacts/` (MLflow's artifacts), `logs/`, and
`stack.json` (host, ports, the generated database password; mode 0600). `up` is idempotent,
`down` stops both servers cleanly, and `up` again finds every run, model version and trial.
PostgreSQL refuses to run as root; as root the cluster runs as the `postgres` user."""

from __future__ import annotations

import glob
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from mnist_cnn.atomic import atomic_path
from mnist_cnn.errors import MnistCnnError

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


# --- settings and the PostgreSQL binaries ---------------------------------------------------


def _settings_path(folder: Path) -> Path:
    return folder / "stack.json"


def load_settings(folder: Path) -> Settings | None:
    path = _settings_path(folder)
    if not path.is_file():
        return None
    try:
        return Settings(**json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise StackError(f"{path} is damaged ({exc}); restore it from a backup (it holds the database password)") from None


def _save_settings(folder: Path, settings: Settings) -> None:
    with atomic_path(_settings_path(folder)) as tmp:
        tmp.write_text(json.dumps(asdict(settings), indent=2) + "\n")
        tmp.chmod(0o600)


def pg_bindir() -> Path:
    """The directory of `initdb`/`pg_ctl`: $PG_BINDIR, `pg_config --bindir`, or Debian's newest
    /usr/lib/postgresql/N/bin (Debian keeps them off PATH)."""
    candidates = [os.environ.get("PG_BINDIR", "")]
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        candidates.append(out.stdout.strip())
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0)
    candidates += reversed(versions)
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").is_file() and (Path(candidate) / "pg_ctl").is_file():
            return Path(candidate)
    raise StackError("PostgreSQL's server programs (initdb, pg_ctl) were not found; install Debian's package: "
                     "sudo apt-get install -y postgresql (or set PG_BINDIR)")


def _as_db_owner(cmd: list[str]) -> list[str]:
    """PostgreSQL will not run as root: as root, run its programs as the `postgres` user."""
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


def _db_owner() -> tuple[int, int] | None:
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        raise StackError("running as root, PostgreSQL needs the `postgres` user (Debian's postgresql package makes it)") from None
    return entry.pw_uid, entry.pw_gid


def _run(cmd: list[str], what: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise StackError(f"{what} failed: {detail[-1] if detail else f'exit {proc.returncode}'}")
    return proc.stdout


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


# --- PostgreSQL -----------------------------------------------------------------------------


def _init_cluster(folder: Path, settings: Settings, bindir: Path) -> None:
    pgdata = folder / "pgdata"
    owner = _db_owner()
    pgdata.mkdir(mode=0o700)
    pwfile = folder / ".initdb-password"
    try:
        pwfile.write_text(settings.password + "\n")
        pwfile.chmod(0o600)
        if owner:
            os.chown(pgdata, *owner)
            os.chown(pwfile, *owner)
            probe = subprocess.run(_as_db_owner(["test", "-r", str(pwfile)]))
            if probe.returncode != 0:
                raise StackError(f"the postgres user cannot reach {folder}; choose a folder whose parents it can enter "
                                 "(chmod o+x on them) or run as a normal user")
        _run(_as_db_owner([str(bindir / "initdb"), "-D", str(pgdata), "-U", USER, f"--pwfile={pwfile}",
                           "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C"]), "initdb")
    except BaseException:
        shutil.rmtree(pgdata, ignore_errors=True)  # a half-made cluster would never start
        raise
    finally:
        pwfile.unlink(missing_ok=True)
    with open(pgdata / "postgresql.conf", "a") as conf:
        conf.write("\n# mnist-cnn stack: TCP only; host and port are given at start\nunix_socket_directories = ''\n")
    if settings.host not in LOOPBACK:
        with open(pgdata / "pg_hba.conf", "a") as hba:
            hba.write("host all all samenet scram-sha-256\n")


def pg_running(folder: Path) -> bool:
    pgdata = folder / "pgdata"
    if not (pgdata / "postmaster.pid").is_file():
        return False
    return subprocess.run(_as_db_owner([str(pg_bindir() / "pg_ctl"), "-D", str(pgdata), "status"]),
                          capture_output=True).returncode == 0


def _start_pg(folder: Path, settings: Settings, bindir: Path) -> None:
    if not _port_free(settings.host, settings.pg_port):
        raise StackError(f"port {settings.pg_port} on {settings.host} is taken; pass --pg-port")
    log = folder / "logs" / "postgresql.log"
    log.touch()
    owner = _db_owner()
    if owner:
        os.chown(log, *owner)
    listen = "*" if settings.host in ("0.0.0.0", "::") else settings.host
    _run(_as_db_owner([str(bindir / "pg_ctl"), "-D", str(folder / "pgdata"), "-l", str(log), "-w", "-t", "60",
                       "-o", f"-c listen_addresses='{listen}' -p {settings.pg_port}", "start"]),
         f"starting PostgreSQL (see {log})")


def _create_databases(settings: Settings) -> None:
    import psycopg  # SQLAlchemy 2.1's postgresql:// driver, so MLflow and Optuna use it too

    try:
        con = psycopg.connect(host="127.0.0.1", port=settings.pg_port, user=USER, password=settings.password,
                              dbname="postgres", connect_timeout=10, autocommit=True)  # CREATE DATABASE: no transaction
    except psycopg.Error as exc:
        raise StackError(f"cannot connect to PostgreSQL on port {settings.pg_port}: {str(exc).strip()}") from None
    try:
        for name in DATABASES:
            if con.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
                con.execute(f'CREATE DATABASE "{name}"')
    finally:
        con.close()


# --- the MLflow server ----------------------------------------------------------------------


def _pid_path(folder: Path) -> Path:
    return folder / "mlflow.pid"


def mlflow_pid(folder: Path) -> int | None:
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


def _start_mlflow(folder: Path, settings: Settings, timeout: float = 180.0) -> None:
    if not _port_free(settings.host, settings.mlflow_port):
        raise StackError(f"port {settings.mlflow_port} on {settings.host} is taken (an `mlflow ui`?); pass --mlflow-port")
    log = folder / "logs" / "mlflow.log"
    store = f"postgresql://{USER}@127.0.0.1:{settings.pg_port}/mlflow"
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store,
           "--artifacts-destination", str((folder / "artifacts").resolve()),
           "--host", settings.host, "--port", str(settings.mlflow_port)]
    if settings.host not in LOOPBACK:
        cmd += ["--allowed-hosts", f"{settings.client_host()}:{settings.mlflow_port},{settings.client_host()},localhost:*,127.0.0.1:*"]
    env = {**os.environ, "PGPASSWORD": settings.password}  # libpq's own variable: no password in `ps`
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True, cwd=folder)
    _pid_path(folder).write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + timeout
    local = "127.0.0.1" if settings.host in ("0.0.0.0", "::") + LOOPBACK else settings.host
    url = f"http://{local}:{settings.mlflow_port}"
    while not healthy(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop_mlflow(folder)
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            raise StackError(f"the MLflow server did not start; {log} ends with:\n  " + "\n  ".join(tail))
        time.sleep(0.5)


def _stop_mlflow(folder: Path, timeout: float = 30.0) -> bool:
    pid = mlflow_pid(folder)
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


# --- commands -------------------------------------------------------------------------------


def up(folder: Path, host: str | None = None, pg_port: int | None = None, mlflow_port: int | None = None) -> Settings:
    """Start whatever is not running; create the cluster and databases on first use."""
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "logs").mkdir(exist_ok=True)
    (folder / "artifacts").mkdir(exist_ok=True)
    saved = load_settings(folder)
    settings = Settings(
        host=host or (saved.host if saved else "127.0.0.1"),
        pg_port=pg_port or (saved.pg_port if saved else 5433),
        mlflow_port=mlflow_port or (saved.mlflow_port if saved else 5000),
        password=saved.password if saved else secrets.token_urlsafe(24),
    )
    bindir = pg_bindir()
    if not (folder / "pgdata" / "PG_VERSION").is_file():
        if (folder / "pgdata").exists():
            raise StackError(f"{folder / 'pgdata'} exists but holds no PostgreSQL cluster; move it away first")
        _init_cluster(folder, settings, bindir)
    if settings != saved:
        _save_settings(folder, settings)
    if not pg_running(folder):
        _start_pg(folder, settings, bindir)
    _create_databases(settings)
    if mlflow_pid(folder) is None:
        _start_mlflow(folder, settings)
    return settings


def down(folder: Path) -> list[str]:
    """Stop the MLflow server, then PostgreSQL (fast shutdown: clients are disconnected, nothing
    committed is lost). Returns what was stopped."""
    folder = folder.resolve()
    stopped = []
    if _stop_mlflow(folder):
        stopped.append("mlflow server")
    if (folder / "pgdata").is_dir() and pg_running(folder):
        _run(_as_db_owner([str(pg_bindir() / "pg_ctl"), "-D", str(folder / "pgdata"), "-m", "fast", "-w", "stop"]),
             "stopping PostgreSQL")
        stopped.append("postgresql")
    return stopped


def status(folder: Path) -> dict[str, object]:
    folder = folder.resolve()
    settings = load_settings(folder)
    pid = mlflow_pid(folder)
    return {
        "folder": str(folder),
        "settings": settings,
        "postgresql": settings is not None and (folder / "pgdata").is_dir() and pg_running(folder),
        "mlflow": pid is not None and settings is not None and healthy(f"http://127.0.0.1:{settings.mlflow_port}"),
        "mlflow_pid": pid,
    }


def exports(settings: Settings) -> str:
    """The shell lines a client runs to use the stack."""
    return (f"export MLFLOW_TRACKING_URI={settings.tracking_uri()}\n"
            f"export OPTUNA_STORAGE={settings.database_url('optuna')}\n")

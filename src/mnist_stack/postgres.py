"""PostgreSQL (Debian's `postgresql` package) run from the stack's folder: `pgdata/` the cluster,
`logs/postgresql.log` its log. PostgreSQL refuses to run as root; as root the cluster runs as the
`postgres` user."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from pathlib import Path

from mnist_stack.settings import DATABASES, LOOPBACK, USER, Settings, StackError, port_free


def bindir() -> Path:
    """The directory of `initdb`/`pg_ctl`: $PG_BINDIR, `pg_config --bindir`, or Debian's newest
    /usr/lib/postgresql/N/bin (Debian keeps them off PATH)."""
    candidates = [os.environ.get("PG_BINDIR", "")]
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        candidates.append(out.stdout.strip())
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
    )
    candidates += reversed(versions)
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").is_file() and (Path(candidate) / "pg_ctl").is_file():
            return Path(candidate)
    raise StackError(
        "PostgreSQL's server programs (initdb, pg_ctl) were not found; install Debian's package: "
        "sudo apt-get install -y postgresql (or set PG_BINDIR)"
    )


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
        raise StackError(
            "running as root, PostgreSQL needs the `postgres` user (Debian's postgresql package makes it)"
        ) from None
    return entry.pw_uid, entry.pw_gid


def _run(cmd: list[str], what: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise StackError(f"{what} failed: {detail[-1] if detail else f'exit {proc.returncode}'}")
    return proc.stdout


def init_cluster(folder: Path, settings: Settings, bindir: Path) -> None:
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
                raise StackError(
                    f"the postgres user cannot reach {folder}; choose a folder whose parents it can enter "
                    "(chmod o+x on them) or run as a normal user"
                )
        _run(
            _as_db_owner(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(pgdata),
                    "-U",
                    USER,
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                ]
            ),
            "initdb",
        )
    except BaseException:
        shutil.rmtree(pgdata, ignore_errors=True)  # a half-made cluster would never start
        raise
    finally:
        pwfile.unlink(missing_ok=True)
    with open(pgdata / "postgresql.conf", "a") as conf:
        conf.write("\n# mnist-cnn stack: TCP only; host and port are given at start\nunix_socket_directories = ''\n")


def running(folder: Path) -> bool:
    pgdata = folder / "pgdata"
    if not (pgdata / "postmaster.pid").is_file():
        return False
    return (
        subprocess.run(
            _as_db_owner([str(bindir() / "pg_ctl"), "-D", str(pgdata), "status"]), capture_output=True
        ).returncode
        == 0
    )


HBA_NETWORK = "host all all samenet scram-sha-256"


def _admit_same_subnets(pgdata: Path) -> None:
    """Password logins from this machine's subnets, for a stack that listens beyond loopback (also
    one made on loopback and brought up again with --host)."""
    hba = pgdata / "pg_hba.conf"
    if HBA_NETWORK not in hba.read_text().splitlines():
        with open(hba, "a") as out:
            out.write(HBA_NETWORK + "\n")


def start(folder: Path, settings: Settings, bindir: Path) -> None:
    if not port_free(settings.host, settings.pg_port):
        raise StackError(f"port {settings.pg_port} on {settings.host} is taken; pass --pg-port")
    if settings.host not in LOOPBACK:
        _admit_same_subnets(folder / "pgdata")
    log = folder / "logs" / "postgresql.log"
    log.touch()
    owner = _db_owner()
    if owner:
        os.chown(log, *owner)
    listen = "*" if settings.host in ("0.0.0.0", "::") else settings.host
    _run(
        _as_db_owner(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(folder / "pgdata"),
                "-l",
                str(log),
                "-w",
                "-t",
                "60",
                "-o",
                f"-c listen_addresses='{listen}' -p {settings.pg_port}",
                "start",
            ]
        ),
        f"starting PostgreSQL (see {log})",
    )


def create_databases(settings: Settings) -> None:
    import psycopg  # SQLAlchemy 2.1's postgresql:// driver, so MLflow and Optuna use it too

    try:
        con = psycopg.connect(
            host="127.0.0.1",
            port=settings.pg_port,
            user=USER,
            password=settings.password,
            dbname="postgres",
            connect_timeout=10,
            autocommit=True,
        )  # CREATE DATABASE: no transaction
    except psycopg.Error as exc:
        raise StackError(f"cannot connect to PostgreSQL on port {settings.pg_port}: {str(exc).strip()}") from None
    try:
        for name in DATABASES:
            if con.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
                con.execute(f'CREATE DATABASE "{name}"')
    finally:
        con.close()


def stop(folder: Path) -> None:
    """Fast shutdown: clients are disconnected, nothing committed is lost."""
    _run(
        _as_db_owner([str(bindir() / "pg_ctl"), "-D", str(folder / "pgdata"), "-m", "fast", "-w", "stop"]),
        "stopping PostgreSQL",
    )

"""A study on a database server that rides out a database restart or a network cut.

- Every connection has timeouts and TCP keepalives both ways (libpq's client options, and the
  server's for its session), derived from the heartbeat: a cut link errors within seconds instead
  of hanging for the kernel's 15 minutes, and the server drops a vanished client's session (and
  the claim lock it held) as quickly.
- `ResilientRDBStorage` retries Optuna's idempotent storage calls on a lost connection until
  `reconnect_s` has passed. Optuna's own RDBStorage raises at the first one (a restart of
  PostgreSQL mid-trial fails the trial: tests/test_hosts.py); `create_new_trial` is left to the
  claim, which retries as a whole.
- The claim's lock is PostgreSQL's session advisory lock, held on a connection of its own.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import optuna

log = logging.getLogger(__name__)

# Optuna calls that give the same result when repeated after a connection was lost mid-call.
# set_trial_state_values is among them: a repeat of one that was committed raises
# UpdateFinishedTrialError, which the trial's owner checks (trial.settle).
IDEMPOTENT = (
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_all_studies",
    "get_trial_id_from_study_id_trial_number",
    "get_trial",
    "get_all_trials",
    "get_best_trial",
    "get_trial_param",
    "get_trial_user_attrs",
    "get_trial_system_attrs",
    "set_trial_param",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "set_trial_state_values",
)


def is_postgresql(location: str) -> bool:
    return location.split("://", 1)[0].split("+", 1)[0] in ("postgresql", "postgres")


def is_transient(exc: BaseException | None) -> bool:
    """A lost or refused connection (the server restarts, the network is cut), not a bad query;
    also when Optuna wrapped it (StorageInternalError from the driver's error)."""
    import sqlalchemy.exc

    while exc is not None:
        if isinstance(exc, sqlalchemy.exc.DBAPIError):
            return exc.connection_invalidated or isinstance(
                exc, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)
            )
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return True
        exc = exc.__cause__
    return False


def first_line(exc: BaseException) -> str:
    while exc.__cause__ is not None and not getattr(exc, "orig", None):
        exc = exc.__cause__
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def connect_args(location: str, heartbeat_s: float) -> dict[str, Any]:
    """libpq options for every connection of a study on PostgreSQL: a dead peer is noticed within
    about twice the heartbeat, by this client and by the server."""
    if not is_postgresql(location):
        return {}
    beat = max(1, round(heartbeat_s))
    interval = max(1, beat // 2)
    server = (
        f"-c tcp_keepalives_idle={beat} -c tcp_keepalives_interval={interval} -c tcp_keepalives_count=3 "
        f"-c tcp_user_timeout={2 * beat * 1000}"
    )
    return {
        "connect_timeout": max(2, beat),
        "keepalives": 1,
        "keepalives_idle": beat,
        "keepalives_interval": interval,
        "keepalives_count": 3,
        "tcp_user_timeout": 2 * beat * 1000,  # ms unacknowledged before the connection is dropped
        "options": server,
    }


def retry(call: Callable[[], Any], what: str, patience_s: float) -> Any:
    """`call()`, again after a lost connection, with a growing pause, for up to `patience_s`."""
    deadline = time.monotonic() + patience_s
    pause, warned = 0.5, False
    while True:
        try:
            result = call()
        except Exception as exc:
            if not is_transient(exc) or time.monotonic() + pause > deadline:
                raise
            if not warned:
                log.warning("%s: the study's database is unreachable (%s); retrying", what, first_line(exc))
                warned = True
            time.sleep(pause)
            pause = min(2 * pause, 5.0)
            continue
        if warned:
            log.warning("%s: the study's database answers again", what)
        return result


def _retrying(name: str) -> Callable[..., Any]:
    method = getattr(optuna.storages.RDBStorage, name)

    @functools.wraps(method)
    def call(self: ResilientRDBStorage, *args: Any, **kwargs: Any) -> Any:
        return retry(lambda: method(self, *args, **kwargs), f"optuna {name}", self.reconnect_s)

    return call


class ResilientRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDBStorage whose idempotent calls wait out a lost connection (see IDEMPOTENT)."""

    def __init__(self, url: str, reconnect_s: float, **kwargs: Any) -> None:
        self.reconnect_s = reconnect_s
        super().__init__(url, **kwargs)


for _name in IDEMPOTENT:
    setattr(ResilientRDBStorage, _name, _retrying(_name))


@functools.cache
def _lock_engine(location: str, heartbeat_s: float):
    import sqlalchemy

    return sqlalchemy.create_engine(
        location, poolclass=sqlalchemy.pool.NullPool, connect_args=connect_args(location, heartbeat_s)
    )


class LockLost(Exception):
    """The claim lock's connection broke while it was held: another machine may have claimed too."""


@contextlib.contextmanager
def advisory_lock(location: str, key: str, heartbeat_s: float) -> Iterator[None]:
    """PostgreSQL's session advisory lock, held on a connection of its own: every machine's
    workers wait on it, and one whose worker dies or is cut off loses it with its connection
    (the server notices within the keepalives above). Raises LockLost at the end of the block
    if the connection broke while the block ran."""
    import sqlalchemy

    lock = sqlalchemy.text("SELECT pg_advisory_lock(hashtextextended(:key, 0))")
    unlock = sqlalchemy.text("SELECT pg_advisory_unlock(hashtextextended(:key, 0))")
    with _lock_engine(location, heartbeat_s).connect() as conn:
        conn.execute(lock, {"key": key})
        conn.commit()
        yield
        try:
            held = conn.execute(unlock, {"key": key}).scalar()
            conn.commit()
        except Exception as exc:
            if is_transient(exc):
                raise LockLost(first_line(exc)) from None
            raise
        if not held:
            raise LockLost("the database no longer held it")

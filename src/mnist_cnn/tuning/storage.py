"""Where a study lives (the default journal file or any Optuna storage URL), and the claim of
a trial slot: a trial starts only while the study holds fewer than `n_trials` complete, pruned
or running trials, so N workers and M trials give M distinct trials. On PostgreSQL the claim
holds a database advisory lock, so workers on any number of machines reach exactly `n_trials`;
elsewhere it holds a file lock, exact on one machine, and each further machine may start one
trial too many at the end. Trials left RUNNING by a dead worker are failed: by process liveness
on this machine (journal files have no heartbeats) and by Optuna's heartbeats on a database. A
database restart or network cut is waited out (see `database`)."""

from __future__ import annotations

import contextlib
import datetime
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import optuna
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from mnist_cnn import liveness
from mnist_cnn.atomic import file_lock
from mnist_cnn.config import Params
from mnist_cnn.errors import TuneError
from mnist_cnn.tuning.database import LockLost, ResilientRDBStorage, advisory_lock, connect_args, is_postgresql
from mnist_cnn.tuning.trial import MLFLOW_RUN_ATTR, PARENT_RUN_ATTR

WORKER_ATTR = "worker"  # the owner token (liveness) of the process running the trial
ORPHAN_S = 900  # a claim sets WORKER_ATTR at once, or within tune.reconnect_s while the database is away

log = logging.getLogger(__name__)


def storage_location(params: Params, root: Path) -> str:
    """The study's storage as given (a URL) or the default journal file, as an absolute path."""
    storage = params.tune.storage.strip()
    if not storage:
        return str(root / "optuna" / f"{params.tune.study_name}.journal")
    if "://" in storage:
        return storage
    return str((root / storage).resolve())


def redact(location: str) -> str:
    """A storage URL without its password, for logs and tags."""
    if "://" in location and "@" in location:
        scheme, rest = location.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return location


def _kill_trial_run(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Optuna failed a trial whose heartbeat stopped (its machine died or was cut off): its MLflow
    run too, and its `tune` parent run once none of that parent's trials runs any more (a machine
    that comes back ends its own parent run as it really ended)."""
    liveness.kill_run(trial.user_attrs.get(MLFLOW_RUN_ATTR))
    parent = trial.user_attrs.get(PARENT_RUN_ATTR)
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if parent and not any(t.user_attrs.get(PARENT_RUN_ATTR) == parent for t in running):
        liveness.kill_run(parent)
    log.warning(
        "trial %d stopped sending heartbeats (worker %s); marked failed",
        trial.number,
        trial.user_attrs.get(WORKER_ATTR),
    )


def open_storage(
    location: str, workers: int, heartbeat_s: float = 30, reconnect_s: float = 300
) -> optuna.storages.BaseStorage:
    """An Optuna storage for `location`; raises TuneError, before any trial, when it is unusable.
    A database's lost connections are retried for `reconnect_s`."""
    if "://" not in location:
        path = Path(location)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        except OSError as exc:
            raise TuneError(f"cannot use the journal storage {path}: {exc}") from None
    if location.startswith("sqlite") and workers > 1:
        raise TuneError(
            f"SQLite storage {redact(location)} is not safe for {workers} parallel workers; use the default journal "
            "file (leave tune.storage empty), a journal path, or a server database such as postgresql://..."
        )
    try:
        # Optuna creates its tables on first use, and two machines doing it at once collide
        # (a duplicate key in PostgreSQL's catalog): one at a time.
        schema_lock = (
            advisory_lock(location, "mnist-cnn optuna schema", heartbeat_s)
            if is_postgresql(location)
            else contextlib.nullcontext()
        )
        with _known_experimental(), schema_lock:
            return ResilientRDBStorage(
                location,
                reconnect_s,
                heartbeat_interval=max(1, round(heartbeat_s)),
                grace_period=max(4, round(4 * heartbeat_s)),
                engine_kwargs={"pool_pre_ping": True, "connect_args": connect_args(location, heartbeat_s)},
                heartbeat_stale_trial_callback=_kill_trial_run,
            )
    except Exception as exc:  # sqlalchemy errors, missing drivers, bad URLs
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = " (install the database driver, e.g. psycopg[binary])" if "DB access module" in first else ""
        raise TuneError(
            f"cannot open the Optuna storage {redact(location)}: {first.replace(location, redact(location))}{hint}"
        ) from None


def lock_path(location: str, root: Path, study_name: str) -> Path:
    if "://" not in location:
        return Path(location).with_name(Path(location).name + ".claim")  # not ".lock": Optuna's own
    return root / "optuna" / f".{study_name}.lock"


def count_trials(study: optuna.Study) -> dict[str, int]:
    counts = {s.name: 0 for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)}
    for trial in study.get_trials(deepcopy=False):
        if trial.state.name in counts:
            counts[trial.state.name] += 1
    return counts


def fail_stale_trials(study: optuna.Study) -> list[int]:
    """Mark RUNNING trials whose worker died as FAIL, and their MLflow runs KILLED."""
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not liveness.is_dead(trial.user_attrs.get(WORKER_ATTR)):
            continue
        try:
            study.tell(trial.number, state=TrialState.FAIL)
        except (ValueError, RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # finished meanwhile
        failed.append(trial.number)
        liveness.kill_run(trial.user_attrs.get(MLFLOW_RUN_ATTR))
        log.warning("trial %d was left running by a worker that died; marked failed", trial.number)
    with _known_experimental():
        optuna.storages.fail_stale_trials(study)  # other machines' trials, by heartbeat (RDB storages)
    return failed + _fail_orphans(study)


def _fail_orphans(study: optuna.Study) -> list[int]:
    """RUNNING trials that no worker took (the connection broke just as one was made: no owner, no
    heartbeat), ORPHAN_S after they began: failed, as they would hold a slot forever."""
    now = datetime.datetime.now()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if WORKER_ATTR in trial.user_attrs or trial.datetime_start is None:
            continue
        if (now - trial.datetime_start).total_seconds() < ORPHAN_S:
            continue
        with contextlib.suppress(ValueError, RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
            study.tell(trial.number, state=TrialState.FAIL)
            failed.append(trial.number)
            log.warning(
                "trial %d was started by no worker (a connection broke as it was made); marked failed", trial.number
            )
    return failed


@contextlib.contextmanager
def _known_experimental() -> Iterator[None]:
    """Optuna's heartbeats are experimental and used by choice: no warning for every caller."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def claim_lock(
    location: str, study_name: str, lock: Path, heartbeat_s: float = 30
) -> contextlib.AbstractContextManager:
    """What "count, then start a trial" holds: the database's advisory lock for a study on
    PostgreSQL (all machines), else a file lock (the workers of this machine)."""
    if is_postgresql(location):
        return advisory_lock(location, f"mnist-cnn tune claim {study_name}", heartbeat_s)
    return file_lock(lock)


def claim(study: optuna.Study, n_trials: int, lock: contextlib.AbstractContextManager) -> optuna.Trial | None:
    """Start a trial if the study holds fewer than `n_trials` complete, pruned or running ones.
    None when it is full, or when the lock was lost while held (the connection broke): then
    another machine may have claimed at the same time, so a trial made meanwhile is given back."""
    trial = None
    try:
        with lock:
            fail_stale_trials(study)
            counts = count_trials(study)
            if counts["COMPLETE"] + counts["PRUNED"] + counts["RUNNING"] >= n_trials:
                return None
            with warnings.catch_warnings():
                warnings.filterwarnings(
                    "ignore", "Heartbeat of storage is supposed to be used with Study.optimize"
                )  # trial.heartbeat runs it
                trial = study.ask()
            trial.set_user_attr(WORKER_ATTR, liveness.owner_token())
    except LockLost as exc:
        log.warning("lost the claim lock while holding it (%s); claiming again", exc)
        if trial is not None:
            study.tell(trial, state=TrialState.FAIL)
        return None
    return trial

"""Where a study lives (the default journal file or any Optuna storage URL), and the claim of
a trial slot: a trial starts only while the study holds fewer than `n_trials` complete, pruned
or running trials, so N workers and M trials give M distinct trials. The claim lock is per
machine: with a database shared by several machines, each may start one trial too many at the
end. Trials left RUNNING by a dead worker are failed: by process liveness on this machine
(journal files have no heartbeats) and by Optuna's heartbeats on a database."""

from __future__ import annotations

import logging
from pathlib import Path

import optuna
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from mnist_cnn import liveness
from mnist_cnn.atomic import file_lock
from mnist_cnn.config import Params
from mnist_cnn.errors import TuneError
from mnist_cnn.tuning.trial import MLFLOW_RUN_ATTR

WORKER_ATTR = "worker"  # the owner token (liveness) of the process running the trial

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


def open_storage(location: str, workers: int) -> optuna.storages.BaseStorage:
    """An Optuna storage for `location`; raises TuneError, before any trial, when it is unusable."""
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
        return optuna.storages.RDBStorage(
            location, heartbeat_interval=30, grace_period=120, engine_kwargs={"pool_pre_ping": True}
        )
    except Exception as exc:  # sqlalchemy errors, missing drivers, bad URLs
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = " (install the database driver, e.g. psycopg2-binary)" if "DB access module" in first else ""
        raise TuneError(f"cannot open the Optuna storage {redact(location)}: {first.replace(location, redact(location))}{hint}") from None


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
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except (RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # finished meanwhile
        failed.append(trial.number)
        liveness.kill_run(trial.user_attrs.get(MLFLOW_RUN_ATTR))
        log.warning("trial %d was left running by a worker that died; marked failed", trial.number)
    optuna.storages.fail_stale_trials(study)  # other machines' trials, by heartbeat (RDB storages)
    return failed


def claim(study: optuna.Study, n_trials: int, lock: Path) -> optuna.Trial | None:
    """Start a trial if the study holds fewer than `n_trials` complete, pruned or running ones."""
    with file_lock(lock):  # "count, then start a trial" by one worker of this machine at a time
        fail_stale_trials(study)
        counts = count_trials(study)
        if counts["COMPLETE"] + counts["PRUNED"] + counts["RUNNING"] >= n_trials:
            return None
        trial = study.ask()
        trial.set_user_attr(WORKER_ATTR, liveness.owner_token())
        return trial

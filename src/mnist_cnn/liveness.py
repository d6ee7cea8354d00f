"""Which processes still run, and cleaning up after those that died (`kill -9`, a power cut):
MLflow runs they left RUNNING are marked KILLED. A process is named by an owner token,
`host:pid:start-time`; the start time tells a reused pid from the original process."""

from __future__ import annotations

import logging
import os
import socket

import psutil
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

TAG_OWNER = "mnist_cnn.owner"  # MLflow tag holding the owner token of the run's process

log = logging.getLogger(__name__)


def owner_token() -> str:
    """`host:pid:start-time` of this process."""
    return f"{socket.gethostname()}:{os.getpid()}:{psutil.Process().create_time():.3f}"


def is_dead(owner: object) -> bool:
    """True when `owner` names a process of this machine that no longer runs. Other machines'
    processes are never judged dead here (for Optuna on a database, heartbeats decide). A zombie
    (exited, not yet reaped by a parent that is busy waiting on another child) is dead."""
    if not isinstance(owner, str):
        return False
    try:
        host, pid, started = owner.rsplit(":", 2)
        if host != socket.gethostname():
            return False
        process = psutil.Process(int(pid))
        return abs(process.create_time() - float(started)) > 1.0 or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except (ValueError, psutil.Error):
        return False


def reap_stale_runs(experiment_id: str) -> list[str]:
    """Mark KILLED the runs still RUNNING whose owner process is gone; returns their ids."""
    client = MlflowClient()
    try:
        running = client.search_runs(
            [experiment_id],
            filter_string="attributes.status = 'RUNNING'",
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=1000,
        )
    except Exception:  # never block a run on housekeeping
        return []
    reaped = []
    for run in running:
        if is_dead(run.data.tags.get(TAG_OWNER)):
            client.set_terminated(run.info.run_id, "KILLED")
            reaped.append(run.info.run_id)
    return reaped


def kill_run(run_id: str | None) -> None:
    """Mark one MLflow run KILLED if it is still RUNNING; a store that is down only logs a warning."""
    if not run_id:
        return
    try:
        client = MlflowClient()
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, "KILLED")
    except Exception as exc:  # the caller's work must go on even if the tracking store is down
        log.warning("could not mark MLflow run %s killed: %s", run_id, exc)

"""Which pipeline and commit a run belongs to: one id for every stage of one `dvc repro` (keyed
on that DVC process), the parent run those stages nest under, and the git state."""

from __future__ import annotations

import hashlib
import os
import subprocess
import uuid
from pathlib import Path

import mlflow
import psutil

from mnist_cnn.tracking import store

PIPELINE_ID_ENV = "MNIST_CNN_PIPELINE_ID"
TAG_STAGE = "mnist_cnn.stage"
TAG_PIPELINE = "mnist_cnn.pipeline_id"
TAG_COMMIT = "mnist_cnn.git_commit"
TAG_DIRTY = "mnist_cnn.git_dirty"
TAG_NOTE = "mlflow.note.content"  # the run's description in the MLflow UI


def dvc_ancestor() -> tuple[int, float] | None:
    """Pid and start time of the `dvc` process this one runs under, if any."""
    try:
        proc = psutil.Process().parent()
        while proc is not None:
            cmd = proc.cmdline()
            names = [Path(c).name for c in cmd[:2]]
            if "dvc" in names or (len(cmd) > 2 and cmd[1:3] == ["-m", "dvc"]):
                return proc.pid, proc.create_time()
            proc = proc.parent()
    except (psutil.Error, OSError):
        return None
    return None


def shared_pipeline_id() -> str | None:
    """$MNIST_CNN_PIPELINE_ID, else an id derived from the `dvc` ancestor; None outside both."""
    env = os.environ.get(PIPELINE_ID_ENV, "").strip()
    if env:
        return env
    ancestor = dvc_ancestor()
    if ancestor is None:
        return None
    return hashlib.sha1(f"{ancestor[0]}:{ancestor[1]:.3f}".encode()).hexdigest()[:12]


def pipeline_id() -> str:
    """Same for every stage of one `dvc repro` / `dvc exp run`, or $MNIST_CNN_PIPELINE_ID when
    set; a fresh id for a stage run on its own."""
    return shared_pipeline_id() or uuid.uuid4().hex[:12]


def git_state(root: Path) -> dict[str, str]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {TAG_COMMIT: "unknown", TAG_DIRTY: "unknown"}
    return {TAG_COMMIT: commit, TAG_DIRTY: str(dirty).lower()}


def pipeline_run(experiment_id: str, pipeline: str, root: Path) -> str:
    """The parent run `pipeline-<id>` that the stage runs of one `dvc repro` nest under, so the
    UI shows them as a unit: found by its tags, or made (and marked FINISHED: it only groups)."""
    client = mlflow.MlflowClient()
    query = f"tags.`{TAG_STAGE}` = 'pipeline' and tags.`{TAG_PIPELINE}` = '{pipeline}'"
    with store.setup_lock(mlflow.get_tracking_uri()):
        found = client.search_runs([experiment_id], filter_string=query, max_results=1)
        if found:
            return found[0].info.run_id
        tags = {
            TAG_STAGE: "pipeline",
            TAG_PIPELINE: pipeline,
            **git_state(root),
            TAG_NOTE: "dvc repro: the stages nest here",
        }
        run = client.create_run(experiment_id, run_name=f"pipeline-{pipeline}", tags=tags)
        client.set_terminated(run.info.run_id, "FINISHED")
        return run.info.run_id

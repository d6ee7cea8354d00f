"""MLflow set-up shared by every stage: one store whatever the working directory, one
experiment, runs tagged so that all runs of one `dvc repro` are found together."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import tempfile
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping

import mlflow
import pandas as pd
import psutil

from mnist_cnn import liveness
from mnist_cnn.atomic import file_lock
from mnist_cnn.config import TrackingParams, project_root
from mnist_cnn.errors import TrackingError
from mnist_cnn.liveness import TAG_OWNER

PIPELINE_ID_ENV = "MNIST_CNN_PIPELINE_ID"
TAG_STAGE = "mnist_cnn.stage"
TAG_PIPELINE = "mnist_cnn.pipeline_id"
TAG_COMMIT = "mnist_cnn.git_commit"
TAG_DIRTY = "mnist_cnn.git_dirty"


def tracking_uri(root: Path | None = None) -> str:
    """$MLFLOW_TRACKING_URI, else the embedded default `sqlite:///<project root>/mlflow.db`."""
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if env:
        return env
    return f"sqlite:///{(root or project_root()) / 'mlflow.db'}"


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, with the fix in the message, when the tracking store cannot be used."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
                return
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                return  # reachable; credentials are MLflow's business (MLFLOW_TRACKING_USERNAME/PASSWORD)
            raise TrackingError(f"MLflow tracking server {uri} answered HTTP {exc.code} on /health; check MLFLOW_TRACKING_URI") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackingError(
                f"MLflow tracking server {uri} is unreachable ({reason}); start it, fix MLFLOW_TRACKING_URI, "
                "or unset it to use the local store mlflow.db"
            ) from None
    elif uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///") :]).parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise TrackingError(f"cannot write the tracking store {uri}: folder {folder} is missing or read-only")


def configure(params: TrackingParams, root: Path | None = None) -> str:
    """Point MLflow at the project's store, make sure the experiment exists; return its id."""
    root = root or project_root()
    uri = tracking_uri(root)
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    with _store_setup_lock(uri):
        return _ensure_experiment(params, root, uri)


def _store_setup_lock(uri: str):
    """Processes starting at once on a fresh SQLite store (tuning workers, two `dvc repro`)
    create and migrate it one at a time, so none sees a half-made schema or "database is locked"."""
    if not uri.startswith("sqlite:///"):
        return contextlib.nullcontext()
    return file_lock(uri[len("sqlite:///") :] + ".setup-lock")


def _ensure_experiment(params: TrackingParams, root: Path, uri: str) -> str:
    try:
        experiment = mlflow.get_experiment_by_name(params.experiment)
        if experiment is not None:
            return experiment.experiment_id
        location = None
        if uri.startswith("sqlite:///"):
            # Artifacts next to the store, not in ./mlruns of whatever directory created it.
            location = (Path(uri[len("sqlite:///") :]).parent / "mlartifacts").as_uri()
        try:
            return mlflow.create_experiment(params.experiment, artifact_location=location)
        except mlflow.exceptions.MlflowException:
            experiment = mlflow.get_experiment_by_name(params.experiment)  # created concurrently
            if experiment is None:
                raise
            return experiment.experiment_id
    except mlflow.exceptions.MlflowException as exc:
        raise TrackingError(f"tracking store {uri} cannot be used: {exc.message.splitlines()[0]}") from None


def _dvc_ancestor() -> tuple[int, float] | None:
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


def pipeline_id() -> str:
    """Same for every stage of one `dvc repro` / `dvc exp run` (keyed on that DVC process),
    or $MNIST_CNN_PIPELINE_ID when set; a fresh id for a stage run on its own."""
    env = os.environ.get(PIPELINE_ID_ENV, "").strip()
    if env:
        return env
    ancestor = _dvc_ancestor()
    if ancestor is None:
        return uuid.uuid4().hex[:12]
    return hashlib.sha1(f"{ancestor[0]}:{ancestor[1]:.3f}".encode()).hexdigest()[:12]


def git_state(root: Path) -> dict[str, str]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {TAG_COMMIT: "unknown", TAG_DIRTY: "unknown"}
    return {TAG_COMMIT: commit, TAG_DIRTY: str(dirty).lower()}


@contextlib.contextmanager
def stage_run(stage: str, experiment_id: str, root: Path, run_id: str | None = None) -> Iterator[Any]:
    """An MLflow run for one stage (or, with `run_id`, the reopened run of an earlier stage).
    It ends FINISHED on success and FAILED (KILLED on Ctrl-C) on any error."""
    tags = {TAG_STAGE: stage, TAG_PIPELINE: pipeline_id(), **git_state(root), TAG_OWNER: liveness.owner_token()}
    liveness.reap_stale_runs(experiment_id)
    if run_id:
        run = mlflow.start_run(run_id=run_id)
        mlflow.set_tags({f"{TAG_STAGE}.{stage}": "done", f"{TAG_PIPELINE}.{stage}": tags[TAG_PIPELINE], TAG_OWNER: tags[TAG_OWNER]})
    elif os.environ.get("MLFLOW_RUN_ID"):  # launched by `mlflow run`: log into its run
        run = mlflow.start_run()
        mlflow.set_tags(tags)
    else:
        run = mlflow.start_run(experiment_id=experiment_id, run_name=f"{stage}-{tags[TAG_PIPELINE]}", tags=tags)
    try:
        yield run
    except KeyboardInterrupt:
        mlflow.end_run("KILLED")
        raise
    except BaseException:
        mlflow.end_run("FAILED")
        raise
    mlflow.end_run("FINISHED")


def log_params(flat: Mapping[str, Any]) -> None:
    items = list(flat.items())
    for i in range(0, len(items), 100):
        mlflow.log_params(dict(items[i : i + 100]))


def log_figure(fig, artifact_file: str) -> None:
    mlflow.log_figure(fig, artifact_file)


def log_dict(obj: Any, artifact_file: str) -> None:
    mlflow.log_dict(obj, artifact_file)


def log_table(rows: list[dict[str, Any]], artifact_file: str) -> None:
    """A table both as MLflow's JSON table (viewable in the UI) and, beside it, as CSV."""
    frame = pd.DataFrame(rows)
    mlflow.log_table(frame, artifact_file=artifact_file)
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / (Path(artifact_file).stem + ".csv")
        frame.to_csv(csv, index=False)
        mlflow.log_artifact(str(csv), str(Path(artifact_file).parent) if Path(artifact_file).parent != Path(".") else None)


def epoch_logger():
    """A training hook logging each epoch's metrics as MLflow curves (step = epoch)."""

    def hook(epoch: int, row: dict[str, float]) -> None:
        mlflow.log_metrics(row, step=epoch)

    return hook


def run_info(run: Any, model_uri: str) -> dict[str, str]:
    """What the train stage hands to evaluate and register (models/run.json)."""
    return {
        "run_id": run.info.run_id,
        "experiment_id": run.info.experiment_id,
        "model_uri": model_uri,
        "tracking_uri": mlflow.get_tracking_uri(),
    }


def read_run_info(path: str | Path) -> dict[str, str]:
    try:
        info = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise TrackingError(f"{path} is missing; run the train stage first (dvc repro train)") from None
    except json.JSONDecodeError as exc:
        raise TrackingError(f"{path} is not valid JSON ({exc}); re-run the train stage") from None
    for key in ("run_id", "model_uri"):
        if key not in info:
            raise TrackingError(f"{path} lacks {key!r}; re-run the train stage")
    return info

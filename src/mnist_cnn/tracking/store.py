"""The tracking store: its URI ($MLFLOW_TRACKING_URI or the project's `mlflow.db`), whether it can
be used, and the experiment every stage logs to."""

from __future__ import annotations

import contextlib
import os
import urllib.error
import urllib.request
from pathlib import Path

import mlflow

from mnist_cnn.atomic import file_lock
from mnist_cnn.config import TrackingParams, project_root
from mnist_cnn.errors import TrackingError

SQLITE = "sqlite:///"
# MLflow's own label for a model-training experiment. MLflow 3.17's UI does not read it for the
# landing view (that follows a per-browser switch, GenAI by default): links carry ML_VIEW.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
ML_VIEW = "workflowType=machine_learning"


def tracking_uri(root: Path | None = None) -> str:
    """$MLFLOW_TRACKING_URI, else the embedded default `sqlite:///<project root>/mlflow.db`."""
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if env:
        return env
    return f"{SQLITE}{(root or project_root()) / 'mlflow.db'}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI; None for any other store."""
    return Path(uri[len(SQLITE) :]) if uri.startswith(SQLITE) else None


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, with the fix in the message, when the tracking store cannot be used."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
                return
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                return  # reachable; credentials are MLflow's business (MLFLOW_TRACKING_USERNAME/PASSWORD)
            raise TrackingError(
                f"MLflow tracking server {uri} answered HTTP {exc.code} on /health; check MLFLOW_TRACKING_URI"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackingError(
                f"MLflow tracking server {uri} is unreachable ({reason}); start it, fix MLFLOW_TRACKING_URI, "
                "or unset it to use the local store mlflow.db"
            ) from None
    elif (path := sqlite_path(uri)) is not None:
        folder = path.parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise TrackingError(f"cannot write the tracking store {uri}: folder {folder} is missing or read-only")


def setup_lock(uri: str) -> contextlib.AbstractContextManager:
    """Processes starting at once on a fresh SQLite store (tuning workers, two `dvc repro`)
    create and migrate it one at a time, so none sees a half-made schema or "database is locked"."""
    path = sqlite_path(uri)
    return file_lock(Path(f"{path}.setup-lock")) if path is not None else contextlib.nullcontext()


def configure(params: TrackingParams, root: Path | None = None) -> str:
    """Point MLflow at the project's store, make sure the experiment exists; return its id."""
    uri = tracking_uri(root)
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    with setup_lock(uri):
        return _ensure_experiment(params, uri)


def _ensure_experiment(params: TrackingParams, uri: str) -> str:
    try:
        experiment = mlflow.get_experiment_by_name(params.experiment)
        if experiment is not None:
            if EXPERIMENT_KIND[0] not in experiment.tags:  # a kind the user chose stays
                mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, *EXPERIMENT_KIND)
            return experiment.experiment_id
        path = sqlite_path(uri)
        # Artifacts next to the store, not in ./mlruns of whatever directory created it.
        location = (path.parent / "mlartifacts").as_uri() if path is not None else None
        try:
            return mlflow.create_experiment(params.experiment, artifact_location=location, tags=dict([EXPERIMENT_KIND]))
        except mlflow.exceptions.MlflowException:
            experiment = mlflow.get_experiment_by_name(params.experiment)  # created concurrently
            if experiment is None:
                raise
            return experiment.experiment_id
    except mlflow.exceptions.MlflowException as exc:
        raise TrackingError(f"tracking store {uri} cannot be used: {exc.message.splitlines()[0]}") from None


def ui_links(base_url: str, experiment_id: str | None, model_name: str) -> dict[str, str]:
    """Links into an MLflow UI at base_url that open on the model-training view."""
    base = base_url.rstrip("/")
    runs = (
        f"{base}/#/experiments/{experiment_id}/runs?{ML_VIEW}" if experiment_id else f"{base}/#/experiments?{ML_VIEW}"
    )
    return {"runs": runs, "models": f"{base}/#/models/{model_name}?{ML_VIEW}"}

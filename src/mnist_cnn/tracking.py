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
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
import mlflow.data
import pandas as pd
import psutil
from mlflow.data.dataset_source_registry import resolve_dataset_source

from mnist_cnn import liveness
from mnist_cnn.atomic import atomic_path, file_lock
from mnist_cnn.config import Params, TrackingParams, project_root
from mnist_cnn.data import Split
from mnist_cnn.errors import TrackingError
from mnist_cnn.liveness import TAG_OWNER
from mnist_cnn.schema import flatten

PIPELINE_ID_ENV = "MNIST_CNN_PIPELINE_ID"
TAG_STAGE = "mnist_cnn.stage"
TAG_PIPELINE = "mnist_cnn.pipeline_id"
TAG_COMMIT = "mnist_cnn.git_commit"
TAG_DIRTY = "mnist_cnn.git_dirty"
TAG_NOTE = "mlflow.note.content"  # the run's description in the MLflow UI
# MLflow's own label for a model-training experiment. MLflow 3.17's UI does not read it for the
# landing view (that follows a per-browser switch, GenAI by default): links carry ML_VIEW.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
ML_VIEW = "workflowType=machine_learning"
EPOCH_PREFIX = "epoch/"


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
            raise TrackingError(
                f"MLflow tracking server {uri} answered HTTP {exc.code} on /health; check MLFLOW_TRACKING_URI"
            ) from None
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
            if EXPERIMENT_KIND[0] not in experiment.tags:  # a kind the user chose stays
                mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, *EXPERIMENT_KIND)
            return experiment.experiment_id
        location = None
        if uri.startswith("sqlite:///"):
            # Artifacts next to the store, not in ./mlruns of whatever directory created it.
            location = (Path(uri[len("sqlite:///") :]).parent / "mlartifacts").as_uri()
        try:
            return mlflow.create_experiment(params.experiment, artifact_location=location, tags=dict([EXPERIMENT_KIND]))
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


def _shared_pipeline_id() -> str | None:
    env = os.environ.get(PIPELINE_ID_ENV, "").strip()
    if env:
        return env
    ancestor = _dvc_ancestor()
    if ancestor is None:
        return None
    return hashlib.sha1(f"{ancestor[0]}:{ancestor[1]:.3f}".encode()).hexdigest()[:12]


def pipeline_id() -> str:
    """Same for every stage of one `dvc repro` / `dvc exp run` (keyed on that DVC process),
    or $MNIST_CNN_PIPELINE_ID when set; a fresh id for a stage run on its own."""
    return _shared_pipeline_id() or uuid.uuid4().hex[:12]


def pipeline_run(experiment_id: str, pipeline: str, root: Path) -> str:
    """The parent run `pipeline-<id>` that the stage runs of one `dvc repro` nest under, so the
    UI shows them as a unit: found by its tags, or made (and marked FINISHED: it only groups)."""
    client = mlflow.MlflowClient()
    query = f"tags.`{TAG_STAGE}` = 'pipeline' and tags.`{TAG_PIPELINE}` = '{pipeline}'"
    with _store_setup_lock(mlflow.get_tracking_uri()):
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


@contextlib.contextmanager
def stage_run(
    stage: str, experiment_id: str, root: Path, run_id: str | None = None, system_metrics: bool = False
) -> Iterator[Any]:
    """An MLflow run for one stage (or, with `run_id`, the reopened run of an earlier stage),
    with MLflow's system metrics (CPU, memory, disk, GPU) when asked. It ends FINISHED on
    success and FAILED (KILLED on Ctrl-C) on any error."""
    shared = _shared_pipeline_id()
    tags = {
        TAG_STAGE: stage,
        TAG_PIPELINE: shared or uuid.uuid4().hex[:12],
        **git_state(root),
        TAG_OWNER: liveness.owner_token(),
    }
    liveness.reap_stale_runs(experiment_id)
    parent = None
    if run_id:
        run = mlflow.start_run(run_id=run_id)
        mlflow.set_tags(
            {f"{TAG_STAGE}.{stage}": "done", f"{TAG_PIPELINE}.{stage}": tags[TAG_PIPELINE], TAG_OWNER: tags[TAG_OWNER]}
        )
    elif os.environ.get("MLFLOW_RUN_ID"):  # launched by `mlflow run`: log into its run
        run = mlflow.start_run(log_system_metrics=system_metrics or None)
        mlflow.set_tags(tags)
    else:
        parent = pipeline_run(experiment_id, shared, root) if shared else None
        run = mlflow.start_run(
            experiment_id=experiment_id,
            run_name=f"{stage}-{tags[TAG_PIPELINE]}",
            tags=tags,
            parent_run_id=parent,
            log_system_metrics=system_metrics
            or None,  # None: MLflow's own setting (MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING)
        )
    status = "FINISHED"
    try:
        yield run
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        mlflow.end_run(status)
        if parent:  # the pipeline run spans its stages and shows the last one's outcome
            mlflow.MlflowClient().set_terminated(parent, status)


def log_params(flat: Mapping[str, Any]) -> None:
    items = list(flat.items())
    for i in range(0, len(items), 100):
        mlflow.log_params(dict(items[i : i + 100]))


def log_figure(fig, artifact_file: str, copy_dir: Path | None = None) -> None:
    """Log a figure to MLflow; with `copy_dir`, write it there as `<name>.png` (a DVC plot) and
    log that file, so the figure is rendered once."""
    if copy_dir is None:
        mlflow.log_figure(fig, artifact_file)
        return
    path = Path(copy_dir) / Path(artifact_file).name
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    mlflow.log_artifact(str(path), str(Path(artifact_file).parent))


def log_dict(obj: Any, artifact_file: str) -> None:
    mlflow.log_dict(obj, artifact_file)


def log_table(rows: list[dict[str, Any]], artifact_file: str) -> None:
    """A table both as MLflow's JSON table (viewable in the UI) and, beside it, as CSV."""
    frame = pd.DataFrame(rows)
    mlflow.log_table(frame, artifact_file=artifact_file)
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / (Path(artifact_file).stem + ".csv")
        frame.to_csv(csv, index=False)
        mlflow.log_artifact(
            str(csv), str(Path(artifact_file).parent) if Path(artifact_file).parent != Path(".") else None
        )


def log_epoch(epoch: int, row: dict[str, float]) -> None:
    """One epoch's values (a row of the history CSV) as MLflow curves, step = epoch, named
    `epoch/<column>`: the UI shows a `prefix/` section before its "Model metrics", so the curves
    come first and the run's single values (test_*, best_*) follow as bars."""
    mlflow.log_metrics({EPOCH_PREFIX + name: value for name, value in row.items()}, step=epoch)


def run_info(run: Any, model_info: Any) -> dict[str, str]:
    """What the train stage hands to evaluate and register (models/run.json)."""
    return {
        "run_id": run.info.run_id,
        "experiment_id": run.info.experiment_id,
        "model_uri": model_info.model_uri,
        "model_id": model_info.model_id,
        "tracking_uri": mlflow.get_tracking_uri(),
    }


def ui_links(base_url: str, experiment_id: str | None, model_name: str) -> dict[str, str]:
    """Links into an MLflow UI at base_url that open on the model-training view."""
    base = base_url.rstrip("/")
    runs = (
        f"{base}/#/experiments/{experiment_id}/runs?{ML_VIEW}" if experiment_id else f"{base}/#/experiments?{ML_VIEW}"
    )
    return {"runs": runs, "models": f"{base}/#/models/{model_name}?{ML_VIEW}"}


def log_dataset(split: Split, name: str, source: Path, sha256: str, context: str) -> Any:
    """Log a data split as an input of the active run (the UI's Dataset column); its digest is
    the file's content SHA-256, cut to the 36 characters MLflow stores."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow registers its local-file source twice, then warns of the tie
        origin = resolve_dataset_source(str(source))
    dataset = mlflow.data.from_numpy(split.x, targets=split.y, source=origin, name=name, digest=sha256[:36])
    mlflow.log_input(dataset, context=context)
    return dataset


def log_training_inputs(params: Params, data_dir: Path, splits: dict[str, Split], checksums: dict[str, str]) -> None:
    """The train run's params, data checksums and its train and validation datasets."""
    log_params({
        **flatten(params.model, "model."), **flatten(params.train, "train."),
        "data.val_fraction": params.data.val_fraction, "data.split_seed": params.data.split_seed,
        **{f"data.{name}_images": len(split) for name, split in splits.items()},
    })  # fmt: skip
    mlflow.set_tags({f"data.sha256.{k}": v for k, v in checksums.items()})
    for name, split in splits.items():
        log_dataset(
            split,
            name,
            Path(data_dir) / f"{name}.npz",
            checksums[name],
            "training" if name == "train" else "validation",
        )


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

"""A stage's MLflow run, start to end, and what a stage logs to it: `stage_run` opens it (nested
under the pipeline's run, or reopening an earlier stage's) and yields a `StageRun`, the one API
stage scripts log through; it ends FINISHED, FAILED on an error or KILLED on Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.data
import pandas as pd

from mnist_cnn import liveness
from mnist_cnn.atomic import atomic_path
from mnist_cnn.config import Params, TrackingParams
from mnist_cnn.data import Split
from mnist_cnn.schema import flatten
from mnist_cnn.tracking import lineage, store

EPOCH_PREFIX = "epoch/"
PARAMS_PER_CALL = 100  # MLflow's limit for one log_params batch


def log_params(flat: Mapping[str, Any]) -> None:
    """Params of the active run, in batches MLflow accepts."""
    items = list(flat.items())
    for i in range(0, len(items), PARAMS_PER_CALL):
        mlflow.log_params(dict(items[i : i + PARAMS_PER_CALL]))


def log_epoch(epoch: int, row: dict[str, float]) -> None:
    """One epoch's values (a row of the history CSV) as curves of the active run, step = epoch,
    named `epoch/<column>`: the UI shows a `prefix/` section before its "Model metrics", so the
    curves come first and the run's single values (test_*, best_*) follow as bars."""
    mlflow.log_metrics({EPOCH_PREFIX + name: value for name, value in row.items()}, step=epoch)


@dataclass(frozen=True)
class StageRun:
    """The open run of one stage. Every method logs to it; values become floats, tables get a
    CSV twin, figures an optional DVC copy."""

    run: Any  # mlflow.ActiveRun
    experiment_id: str

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    log_params = staticmethod(log_params)
    log_epoch = staticmethod(log_epoch)

    def log_metrics(self, values: Mapping[str, Any], dataset: Any = None, model_id: str | None = None) -> None:
        """Single values (numpy scalars too), optionally tied to a logged dataset and model."""
        mlflow.log_metrics({k: float(v) for k, v in values.items()}, dataset=dataset, model_id=model_id)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def note(self, text: str) -> None:
        """The run's description in the MLflow UI."""
        mlflow.set_tag(lineage.TAG_NOTE, text)

    def log_document(self, obj: Any, artifact_file: str) -> None:
        """A dict as a JSON or YAML artifact (by the file's extension)."""
        mlflow.log_dict(obj, artifact_file)

    def log_table(self, rows: list[dict[str, Any]], artifact_file: str) -> None:
        """A table both as MLflow's JSON table (viewable in the UI) and, beside it, as CSV."""
        frame = pd.DataFrame(rows)
        mlflow.log_table(frame, artifact_file=artifact_file)
        folder = str(Path(artifact_file).parent) if Path(artifact_file).parent != Path(".") else None
        with tempfile.TemporaryDirectory() as tmp:
            csv = Path(tmp) / (Path(artifact_file).stem + ".csv")
            frame.to_csv(csv, index=False)
            mlflow.log_artifact(str(csv), folder)

    def log_figure(self, fig, artifact_file: str, copy_dir: Path | None = None) -> None:
        """A figure; with `copy_dir`, written there as `<name>.png` (a DVC plot) and that file
        logged, so the figure is rendered once."""
        if copy_dir is None:
            mlflow.log_figure(fig, artifact_file)
            return
        path = Path(copy_dir) / Path(artifact_file).name
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
        mlflow.log_artifact(str(path), str(Path(artifact_file).parent))

    def log_dataset(self, split: Split, name: str, source: Path, sha256: str, context: str) -> Any:
        """A data split as an input of the run (the UI's Dataset column); its digest is the
        file's content SHA-256, cut to the 36 characters MLflow stores."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MLflow registers its local-file source twice, then warns of the tie
            dataset = mlflow.data.from_numpy(
                split.x, targets=split.y, source=str(source), name=name, digest=sha256[:36]
            )
        mlflow.log_input(dataset, context=context)
        return dataset

    def log_training_inputs(
        self, params: Params, data_dir: Path, splits: dict[str, Split], checksums: dict[str, str]
    ) -> None:
        """The train run's params, data checksums and its train and validation datasets."""
        self.log_params({
            **flatten(params.model, "model."), **flatten(params.train, "train."),
            "data.val_fraction": params.data.val_fraction, "data.split_seed": params.data.split_seed,
            **{f"data.{name}_images": len(split) for name, split in splits.items()},
        })  # fmt: skip
        self.set_tags({f"data.sha256.{k}": v for k, v in checksums.items()})
        for name, split in splits.items():
            context = "training" if name == "train" else "validation"
            self.log_dataset(split, name, Path(data_dir) / f"{name}.npz", checksums[name], context)


@contextlib.contextmanager
def stage_run(
    stage: str, params: TrackingParams, root: Path, run_id: str | None = None, system_metrics: bool = False
) -> Iterator[StageRun]:
    """An MLflow run for one stage in the project's store (or, with `run_id`, the reopened run
    of an earlier stage), with MLflow's system metrics (CPU, memory, disk, GPU) when asked."""
    experiment_id = store.configure(params, root)
    shared = lineage.shared_pipeline_id()
    tags = {
        lineage.TAG_STAGE: stage,
        lineage.TAG_PIPELINE: shared or uuid.uuid4().hex[:12],
        **lineage.git_state(root),
        liveness.TAG_OWNER: liveness.owner_token(),
    }
    liveness.reap_stale_runs(experiment_id)
    parent = None
    if run_id:
        run = mlflow.start_run(run_id=run_id)
        mlflow.set_tags({
            f"{lineage.TAG_STAGE}.{stage}": "done",
            f"{lineage.TAG_PIPELINE}.{stage}": tags[lineage.TAG_PIPELINE],
            liveness.TAG_OWNER: tags[liveness.TAG_OWNER],
        })  # fmt: skip
    elif os.environ.get("MLFLOW_RUN_ID"):  # launched by `mlflow run`: log into its run
        run = mlflow.start_run(log_system_metrics=system_metrics or None)
        mlflow.set_tags(tags)
    else:
        parent = lineage.pipeline_run(experiment_id, shared, root) if shared else None
        run = mlflow.start_run(
            experiment_id=experiment_id,
            run_name=f"{stage}-{tags[lineage.TAG_PIPELINE]}",
            tags=tags,
            parent_run_id=parent,
            log_system_metrics=system_metrics or None,  # None: MLflow's own setting
        )
    status = "FINISHED"
    try:
        yield StageRun(run, experiment_id)
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

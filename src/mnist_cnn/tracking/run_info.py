"""models/run.json: what the train stage hands to evaluate and register (its MLflow run and the
logged model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow

from mnist_cnn.atomic import write_json
from mnist_cnn.errors import TrackingError

REQUIRED = ("run_id", "model_uri")


def write(path: str | Path, run_id: str, experiment_id: str, model_info: Any) -> None:
    write_json(path, {
        "run_id": run_id,
        "experiment_id": experiment_id,
        "model_uri": model_info.model_uri,
        "model_id": model_info.model_id,
        "tracking_uri": mlflow.get_tracking_uri(),
    })  # fmt: skip


def read(path: str | Path) -> dict[str, str]:
    try:
        info = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise TrackingError(f"{path} is missing; run the train stage first (dvc repro train)") from None
    except json.JSONDecodeError as exc:
        raise TrackingError(f"{path} is not valid JSON ({exc}); re-run the train stage") from None
    for key in REQUIRED:
        if key not in info:
            raise TrackingError(f"{path} lacks {key!r}; re-run the train stage")
    return info

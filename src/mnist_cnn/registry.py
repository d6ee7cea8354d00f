"""The champion gate: register a trained model and move `@champion` only when it is at least
as good as the current champion and above the minimum; otherwise it becomes `@challenger`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mnist_cnn import data, tracking
from mnist_cnn.config import Params, RegisterParams
from mnist_cnn.errors import TrackingError
from mnist_cnn.schema import to_dict


def _client():
    return MlflowClient()


def alias_version(name: str, alias: str):
    """The model version behind `name@alias`, or None."""
    try:
        return _client().get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def champion_uri(name: str, alias: str = "champion") -> str:
    """`models:/name@champion`, after checking the registry has one (a clear error otherwise)."""
    if alias_version(name, alias) is None:
        raise TrackingError(
            f"the model registry at {mlflow.get_tracking_uri()} has no {name}@{alias}; "
            "run `dvc repro` to train and register one, or pass --model"
        )
    return f"models:/{name}@{alias}"


def read_test_metrics(path: Path) -> dict[str, float]:
    """The evaluate stage's metrics; a clear error when they are missing or lack test_accuracy."""
    try:
        metrics = json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError) as exc:
        raise TrackingError(f"cannot read test metrics {path} ({exc}); run the evaluate stage first") from None
    if "test_accuracy" not in metrics:
        raise TrackingError(f"{path} has no test_accuracy; re-run the evaluate stage")
    return metrics


def version_tags(params: Params, data_dir: Path, root: Path) -> dict[str, str]:
    """What a model version is tagged with: git state, pipeline, params and data checksums."""
    git = tracking.git_state(root)
    return {
        "git_commit": git[tracking.TAG_COMMIT],
        "git_dirty": git[tracking.TAG_DIRTY],
        "pipeline_id": tracking.pipeline_id(),
        "params": json.dumps({"model": to_dict(params.model), "train": to_dict(params.train)}, sort_keys=True),
        **{f"data_sha256_{k}": v for k, v in data.processed_checksums(data_dir).items()},
    }


def _accuracy(version) -> float | None:
    value = (version.tags or {}).get("test_accuracy")
    if value is not None:
        return float(value)
    if version.run_id:
        return _client().get_run(version.run_id).data.metrics.get("test_accuracy")
    return None


def register(
    model_uri: str,
    run_id: str,
    metrics: Mapping[str, float],
    tags: Mapping[str, str],
    params: RegisterParams,
    summary: str = "",
) -> dict[str, Any]:
    """Register (or find, if this run was registered before) and apply the gate. The version's
    description (the registry's one line) gives its test accuracy, `summary` and the gate's verdict.

    Returns a report of what was done. A version created here is deleted again if anything
    after its creation fails, so the registry is never left half-updated.
    """
    client = _client()
    name = params.model_name
    accuracy = float(metrics["test_accuracy"])
    all_tags = {**tags, **{k: f"{v:.6f}" for k, v in metrics.items() if k.startswith("test_") and "digit" not in k}}

    existing = []
    try:
        existing = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    except MlflowException:
        existing = []
    created = None
    try:
        if existing:
            version = max(existing, key=lambda v: int(v.version))
        else:
            version = mlflow.register_model(model_uri, name, tags=all_tags)
            created = version
        champion = alias_version(name, params.champion_alias)
        previous = None
        if champion is not None and champion.version != version.version:
            previous = {"version": int(champion.version), "test_accuracy": _accuracy(champion)}
        prev_acc = previous["test_accuracy"] if previous else None

        if champion is not None and champion.version == version.version:
            promoted, reason = True, "already the champion"
        elif accuracy < params.min_test_accuracy:
            promoted, reason = False, f"test_accuracy {accuracy:.4f} is below the minimum {params.min_test_accuracy:.4f}"
        elif prev_acc is not None and accuracy < prev_acc:
            promoted, reason = False, f"test_accuracy {accuracy:.4f} is below the champion's {prev_acc:.4f} (version {previous['version']})"
        elif previous is None:
            promoted, reason = True, "no champion yet"
        else:
            promoted, reason = True, f"test_accuracy {accuracy:.4f} >= champion's {prev_acc:.4f} (version {previous['version']})"

        alias = params.champion_alias if promoted else params.challenger_alias
        client.set_registered_model_alias(name, alias, version.version)
        if promoted:
            challenger = alias_version(name, params.challenger_alias)
            if challenger is not None and challenger.version == version.version:
                client.delete_registered_model_alias(name, params.challenger_alias)
        line = ", ".join(p for p in (f"test_accuracy {accuracy:.4f}", summary, f"@{alias}: {reason}") if p)
        client.update_model_version(name, version.version, description=line)
    except BaseException:
        if created is not None:
            try:
                client.delete_model_version(name, created.version)
            except MlflowException:
                pass
        raise
    return {
        "model_name": name,
        "version": int(version.version),
        "alias": alias,
        "promoted": promoted,
        "reason": reason,
        "test_accuracy": accuracy,
        "previous_champion": previous,
        "model_uri": f"models:/{name}/{version.version}",
        "run_id": run_id,
        "newly_registered": created is not None,
    }

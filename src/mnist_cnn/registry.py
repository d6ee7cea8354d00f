"""The champion gate: register a trained model and move `@champion` only when it is above the
minimum, reads real digits from outside MNIST (`usps_accuracy`) no worse than the champion by more
than a tolerance, and is at least as good on MNIST's test set; otherwise it becomes `@challenger`."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mnist_cnn import data, liveness, model_card
from mnist_cnn.config import Params, RegisterParams
from mnist_cnn.entrypoint import verbose
from mnist_cnn.errors import TrackingError
from mnist_cnn.schema import to_dict
from mnist_cnn.tracking import lineage

LOCK_SUFFIX = ".gate-lock"
REGISTRATION_CHATTER = ("Successfully registered model", "Created version")  # mlflow.register_model's prints
_OWNER, _SINCE = "owner", "since"

log = logging.getLogger(__name__)


def _client():
    return MlflowClient()


@contextlib.contextmanager
def gate_lock(name: str, timeout: float = 600.0, stale_after: float = 300.0) -> Iterator[None]:
    """Hold the gate of model `name` against every other process on any machine using the same
    tracking server. MLflow has no lock, but creating a registered model is atomic on the server
    (the name is its key), so the registered model `<name>.gate-lock` is the lock. One left by a
    process that died is taken over: at once on this machine, after `stale_after` s from another."""
    client, lock = _client(), name + LOCK_SUFFIX
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.create_registered_model(
                lock,
                tags={_OWNER: liveness.owner_token(), _SINCE: f"{time.time():.3f}"},
                description=f"held while a process registers {name}; delete it if left behind by a crash",
            )
            break
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        _break_if_stale(client, lock, stale_after)
        if time.monotonic() > deadline:
            raise TrackingError(
                f"the registry gate of {name} stayed locked for {timeout:.0f}s (registered model {lock}); "
                "another registration is running, or delete that registered model if its process died"
            )
        time.sleep(0.5)
    try:
        yield
    finally:
        try:
            client.delete_registered_model(lock)
        except MlflowException as exc:
            log.warning("could not release the registry gate lock %s: %s", lock, exc.message.splitlines()[0])


def _break_if_stale(client: MlflowClient, lock: str, stale_after: float) -> None:
    try:
        tags = client.get_registered_model(lock).tags
    except MlflowException:
        return  # released meanwhile
    owner, since = tags.get(_OWNER), float(tags.get(_SINCE, "0") or 0)
    if liveness.is_dead(owner) or time.time() - since > stale_after:
        log.warning("taking over the registry gate lock %s left by %s", lock, owner)
        with contextlib.suppress(MlflowException):
            client.delete_registered_model(lock)


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
    git = lineage.git_state(root)
    return {
        "git_commit": git[lineage.TAG_COMMIT],
        "git_dirty": git[lineage.TAG_DIRTY],
        "pipeline_id": lineage.pipeline_id(),
        "params": json.dumps({"model": to_dict(params.model), "train": to_dict(params.train)}, sort_keys=True),
        **{f"data_sha256_{k}": v for k, v in data.processed_checksums(data_dir).items()},
    }


def _metric(version, name: str = "test_accuracy") -> float | None:
    value = (version.tags or {}).get(name)
    if value is not None:
        return float(value)
    if version.run_id:
        return _client().get_run(version.run_id).data.metrics.get(name)
    return None


GATED = ("test_", "usps_", "nondigits_")  # metric prefixes a version is tagged with (not the per-digit ones)


def decide(
    metrics: Mapping[str, float], champion: Mapping[str, float | None] | None, params: RegisterParams
) -> tuple[bool, str, str]:
    """Whether a new version becomes champion, the rule that decided, and why (one line).
    `champion` holds the current champion's `test_accuracy` and `usps_accuracy` (None if unknown)."""
    accuracy, real = float(metrics["test_accuracy"]), metrics.get("usps_accuracy")
    if accuracy < params.min_test_accuracy:
        return (
            False,
            "min_test_accuracy",
            f"test_accuracy {accuracy:.4f} is below the minimum {params.min_test_accuracy:.4f}",
        )
    if champion is None:
        return True, "first", "no champion yet"
    their, their_real = champion.get("test_accuracy"), champion.get("usps_accuracy")
    if real is not None and their_real is not None and real < their_real - params.real_digits_tolerance:
        return (
            False,
            "real_digits",
            (
                f"usps_accuracy {real:.4f} is more than {params.real_digits_tolerance:.4f} below the "
                f"champion's {their_real:.4f}, whatever its test_accuracy"
            ),
        )
    if their is not None and accuracy < their:
        return False, "test_accuracy", f"test_accuracy {accuracy:.4f} is below the champion's {their:.4f}"
    return (
        True,
        "test_accuracy",
        f"test_accuracy {accuracy:.4f} >= champion's {their:.4f}" if their is not None else "champion unscored",
    )


def register(
    model_uri: str,
    run_id: str,
    metrics: Mapping[str, float],
    tags: Mapping[str, str],
    params: RegisterParams,
    summary: str = "",
    card: Callable[[int, str], str] | None = None,
) -> dict[str, Any]:
    """Register (or find, if this run was registered before) and apply the gate (`decide`). The
    version's description (the registry's one line) gives its MNIST and USPS accuracy and
    calibration error, `summary` and the gate's verdict; `card(version, verdict)`, when given, is
    its model card, logged into the model's run as `model_card.md`.

    Returns a report of what was done. A version created here is deleted again if anything
    after its creation fails, so the registry is never left half-updated. The whole gate runs
    under `gate_lock`, so clones registering at once against one server leave one champion:
    the best, as if they had registered one after the other.
    """
    with gate_lock(params.model_name, stale_after=params.gate_stale_s):
        return _register(model_uri, run_id, metrics, tags, params, summary, card)


@contextlib.contextmanager
def _registration_lines_hidden() -> Iterator[None]:
    """`mlflow.register_model` prints "Successfully registered model" and "Created version" to
    stderr (the stage's own report says it); every other line it writes still gets through."""
    if verbose():
        yield
        return
    held = io.StringIO()
    try:
        with contextlib.redirect_stderr(held):
            yield
    finally:
        kept = [line for line in held.getvalue().splitlines(keepends=True) if not line.startswith(REGISTRATION_CHATTER)]
        sys.stderr.write("".join(kept))


def _register(
    model_uri: str,
    run_id: str,
    metrics: Mapping[str, float],
    tags: Mapping[str, str],
    params: RegisterParams,
    summary: str,
    card: Callable[[int, str], str] | None,
) -> dict[str, Any]:
    client = _client()
    name = params.model_name
    accuracy = float(metrics["test_accuracy"])
    all_tags = {**tags, **{k: f"{v:.6f}" for k, v in metrics.items() if k.startswith(GATED) and "_digit_" not in k}}

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
            with _registration_lines_hidden():
                version = mlflow.register_model(model_uri, name, tags=all_tags)
            created = version
        champion = alias_version(name, params.champion_alias)
        previous = None
        if champion is not None and champion.version != version.version:
            previous = {
                "version": int(champion.version),
                "test_accuracy": _metric(champion),
                "usps_accuracy": _metric(champion, "usps_accuracy"),
            }
        if champion is not None and champion.version == version.version:
            promoted, rule, reason = True, "already", "already the champion"
        else:
            promoted, rule, reason = decide(metrics, previous, params)
            if previous is not None and rule != "min_test_accuracy":
                reason += f" (version {previous['version']})"

        alias = params.champion_alias if promoted else params.challenger_alias
        client.set_registered_model_alias(name, alias, version.version)
        if promoted:
            challenger = alias_version(name, params.challenger_alias)
            if challenger is not None and challenger.version == version.version:
                client.delete_registered_model_alias(name, params.challenger_alias)
        line = ", ".join(p for p in (model_card.summary(metrics), summary, f"@{alias}: {reason}") if p)
        client.update_model_version(name, version.version, description=line)
        if card is not None:
            client.log_text(run_id, card(int(version.version), f"@{alias}: {reason}"), "model_card.md")
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
        "rule": rule,
        "test_accuracy": accuracy,
        "usps_accuracy": metrics.get("usps_accuracy"),
        "previous_champion": previous,
        "model_uri": f"models:/{name}/{version.version}",
        "run_id": run_id,
        "newly_registered": created is not None,
    }

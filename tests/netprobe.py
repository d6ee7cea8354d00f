"""Run on a host of tests/hosts.py: reads {"fn": name, "args": [...]} lines, answers each with
{"ok": result} or {"error": text}: what the test needs to know of the study and the MLflow server
from inside the network."""

from __future__ import annotations

import functools
import json
import sys
import urllib.error
import urllib.request

import optuna


@functools.cache
def _storage(url: str):
    return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})


def trials(url: str, study: str) -> list[dict]:
    """Every trial of `study`: number, state, the user attrs tuning sets ([] before the study exists)."""
    storage = _storage(url)
    try:
        study_id = storage.get_study_id_from_name(study)
    except KeyError:
        return []
    return [
        {
            "number": t.number,
            "state": t.state.name,
            "user_attrs": t.user_attrs,
            "values": t.values,
            "datetime_start": t.datetime_start.isoformat() if t.datetime_start else None,
        }
        for t in storage.get_all_trials(study_id, deepcopy=False)
    ]


def run(uri: str, run_id: str) -> dict:
    from mlflow import MlflowClient

    found = MlflowClient(uri).get_run(run_id)
    return {"status": found.info.status, "tags": found.data.tags, "metrics": found.data.metrics}


def runs(uri: str, experiment: str) -> list[dict]:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return [
        {"run_id": r.info.run_id, "status": r.info.status, "tags": r.data.tags}
        for r in client.search_runs([exp.experiment_id], max_results=5000)
    ]


def versions(uri: str, name: str) -> dict:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(uri)
    found = client.search_model_versions(f"name='{name}'")
    try:
        champion = client.get_model_version_by_alias(name, "champion").version
    except MlflowException:
        champion = None
    locks = [m.name for m in client.search_registered_models(f"name='{name}.gate-lock'")]
    return {
        "versions": [{"version": v.version, "tags": v.tags, "created": v.creation_timestamp} for v in found],
        "champion": champion,
        "locks": locks,
    }


def http(url: str, headers: dict[str, str], body: str | None = None) -> dict:
    request = urllib.request.Request(url, data=body.encode() if body else None, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return {"status": resp.status, "body": resp.read(500).decode(errors="replace")}
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, "body": exc.read(500).decode(errors="replace")}


def main() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for line in sys.stdin:
        request = json.loads(line)
        try:
            answer = {"ok": globals()[request["fn"]](*request["args"])}
        except Exception as exc:  # the test reads it
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(answer, default=str), flush=True)


if __name__ == "__main__":
    main()

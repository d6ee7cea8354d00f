"""Helpers of the fault suite: edit a project's params, commit, read its champion, run its
commands the way a user does. The `project` fixture is in this folder's conftest.py."""

from __future__ import annotations

from pathlib import Path

from helpers import clean_env, run  # noqa: F401 (clean_env re-exported)
from mnist_cnn.schema import dump_yaml, parse_yaml


def edit_params(dest: Path, **sections) -> None:
    params = parse_yaml((dest / "params.yaml").read_text())
    for section, values in sections.items():
        params[section].update(values)
    (dest / "params.yaml").write_text(dump_yaml(params))


def commit(dest: Path, message: str) -> None:
    run(["git", "-c", "user.name=t", "-c", "user.email=t@l", "commit", "-qam", message], dest)


def champion_version(dest: Path) -> str | None:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{dest / 'mlflow.db'}")
    try:
        return client.get_model_version_by_alias("mnist-cnn", "champion").version
    except MlflowException:
        return None

"""Shared by the fault suite: a copy of the project wired to a loopback mirror of the MNIST
subset and a folder of USPS-format files made from it (fast preset, 2 epochs), and helpers to
run its commands the way a user does."""

from __future__ import annotations

from pathlib import Path

import pytest

from mnist_cnn.schema import dump_yaml, parse_yaml

from helpers import SUBSET, MirrorServer, clean_env, copy_project, run, subset_sha256, usps_params  # noqa: F401 (re-exported)


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


@pytest.fixture
def project(tmp_path, usps_subset_dir):
    """(project dir, mirror): the project on the subset, fast preset, 2 epochs, gate at 50%."""
    server = MirrorServer(SUBSET)
    dest = copy_project(tmp_path / "project")
    run(["mnist-cnn", "preset", "fast"], dest)
    edit_params(
        dest,
        data={"mirrors": [server.url], "sha256": subset_sha256(), "retries": 1, "backoff_s": 0.1, "timeout_s": 5,
              "usps": usps_params(usps_subset_dir)},
        train={"epochs": 2},
        register={"min_test_accuracy": 0.5},
    )
    commit(dest, "test params")
    yield dest, server
    server.close()

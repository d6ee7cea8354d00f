"""Where MLflow data goes, and failing fast when the tracking store is unusable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers import free_port
from mnist_cnn import config
from mnist_cnn.errors import TrackingError
from mnist_cnn.tracking import lineage, store


@pytest.fixture
def project(tmp_path) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "dvc.yaml").write_text("stages: {}\n")
    return root.resolve()


# --- project_root ---------------------------------------------------------------------------


def test_project_root_inside_a_dvc_temp_experiment_is_the_real_root(project):
    inner = project / ".dvc" / "tmp" / "exps" / "tmpabc" / "sub"
    inner.mkdir(parents=True)
    # the temp copy holds its own dvc.yaml, which must not win
    (project / ".dvc" / "tmp" / "exps" / "tmpabc" / "dvc.yaml").write_text("stages: {}\n")
    assert config.project_root(inner) == project
    assert config.project_root(project / ".dvc" / "tmp" / "exps" / "tmpabc") == project


def test_project_root_is_the_nearest_ancestor_with_dvc_yaml(project):
    deep = project / "a" / "b" / "c"
    deep.mkdir(parents=True)
    assert config.project_root(deep) == project
    assert config.project_root(project) == project
    nested = project / "a" / "b"
    (nested / "dvc.yaml").write_text("stages: {}\n")
    assert config.project_root(deep) == nested


def test_project_root_defaults_to_the_working_directory(project, monkeypatch):
    (project / "src").mkdir()
    monkeypatch.chdir(project / "src")
    assert config.project_root() == project


def test_project_root_without_dvc_yaml_is_the_start_directory(tmp_path):
    lone = tmp_path / "lone"
    lone.mkdir()
    if any((p / "dvc.yaml").is_file() for p in (lone.resolve(), *lone.resolve().parents)):
        pytest.skip("a dvc.yaml above the temp directory")
    assert config.project_root(lone) == lone.resolve()


def test_project_root_of_the_repository_holds_params_yaml():
    root = config.project_root(Path(__file__).parent)
    assert (root / "dvc.yaml").is_file() and (root / "params.yaml").is_file()


# --- tracking_uri ---------------------------------------------------------------------------


def test_tracking_uri_honours_mlflow_tracking_uri(monkeypatch, project):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert store.tracking_uri(project) == "http://mlflow.example:5000"


def test_tracking_uri_defaults_to_sqlite_in_the_project_root(monkeypatch, project):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert store.tracking_uri(project) == f"sqlite:///{project}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "   ")  # blank counts as unset
    assert store.tracking_uri(project) == f"sqlite:///{project}/mlflow.db"


def test_tracking_uri_without_root_uses_the_project_root(monkeypatch, project):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    sub = project / ".dvc" / "tmp" / "exps" / "tmpxyz"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    assert store.tracking_uri() == f"sqlite:///{project}/mlflow.db"


# --- check_reachable ------------------------------------------------------------------------


def test_check_reachable_closed_port_is_unreachable():
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TrackingError, match="unreachable") as info:
        store.check_reachable(uri, timeout=2)
    assert uri in str(info.value)
    assert "MLFLOW_TRACKING_URI" in str(info.value)


def test_check_reachable_http_error_on_health_is_a_tracking_error(mirror):
    # The loopback mirror answers /mnist/health with 404, like a server that is not MLflow.
    with pytest.raises(TrackingError, match="answered HTTP 404 on /health"):
        store.check_reachable(mirror.url, timeout=2)
    assert mirror.requests == ["/mnist/health"]


def test_check_reachable_accepts_a_server_that_wants_credentials(mirror):
    mirror.faults["health"] = [401]
    store.check_reachable(mirror.url.rstrip("/"), timeout=2)
    assert mirror.requests == ["/mnist/health"]


def test_check_reachable_sqlite_needs_a_writable_folder(tmp_path):
    store.check_reachable(f"sqlite:///{tmp_path}/mlflow.db")
    with pytest.raises(TrackingError, match="is missing or read-only"):
        store.check_reachable(f"sqlite:///{tmp_path}/missing/mlflow.db")


# --- pipeline_id ----------------------------------------------------------------------------


def test_pipeline_id_honours_the_environment(monkeypatch):
    monkeypatch.setenv("MNIST_CNN_PIPELINE_ID", "sweep-7")
    assert lineage.pipeline_id() == "sweep-7"
    monkeypatch.setenv("MNIST_CNN_PIPELINE_ID", "  sweep-8 ")
    assert lineage.pipeline_id() == "sweep-8"


def test_pipeline_id_without_environment_is_a_short_hex_id(monkeypatch):
    monkeypatch.delenv("MNIST_CNN_PIPELINE_ID", raising=False)
    pid = lineage.pipeline_id()
    assert re.fullmatch(r"[0-9a-f]{12}", pid), pid
    if lineage.dvc_ancestor() is None:  # not run under dvc: each call is its own pipeline
        assert lineage.pipeline_id() != pid

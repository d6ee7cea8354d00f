"""Security defaults: nothing listens beyond this machine unless asked, and the packages are
pinned at or above the releases that carry the safe-mode and path-traversal fixes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tomllib
from importlib.metadata import version

import psutil
import pytest
from packaging.version import Version

import tiny_model
from helpers import ROOT, free_port, wait_until_up

# Keras 3.15.0: safe_mode bypass fixes through CVE-2026-12481. MLflow 3.16.1: path-traversal
# fixes (CVE-2023-6909 ... CVE-2026-2614) and no default basic-auth admin password (CVE-2026-2635).
FLOORS = {"keras": Version("3.15.0"), "mlflow": Version("3.16.1")}


def test_pyproject_pins_the_security_floors_and_they_are_installed():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for name, floor in FLOORS.items():
        spec = next(d for d in deps if re.match(rf"{name}\s*[>=<~!]", d))
        pinned = Version(re.search(r">=\s*([\w.]+)", spec).group(1))
        assert pinned >= floor, f"{spec} is below {floor}"
        assert Version(version(name)) >= floor


@pytest.mark.slow
def test_mnist_cnn_serve_listens_on_loopback_only_by_default(tmp_path):
    store = tmp_path / "store"
    tiny_model.log(tiny_model.train(tmp_path / "m.keras"), store, register_as="mnist-cnn")
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": tiny_model.tracking_uri(store), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(
        ["mnist-cnn", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until_up(f"http://127.0.0.1:{port}/ping", proc)
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        listening = [c.laddr for p in tree for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        assert listening and all(addr.ip == "127.0.0.1" for addr in listening), listening
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)

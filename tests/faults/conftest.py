"""The fault suite's fixture: a copy of the project wired to a loopback mirror of the MNIST
subset and a folder of USPS-format files made from it (fast preset, 2 epochs)."""

from __future__ import annotations

import pytest
from faultkit import commit, edit_params

from helpers import SUBSET, MirrorServer, copy_project, run, subset_sha256, usps_params


@pytest.fixture
def project(tmp_path, usps_subset_dir):
    """(project dir, mirror): the project on the subset, fast preset, 2 epochs, gate at 50%."""
    server = MirrorServer(SUBSET)
    dest = copy_project(tmp_path / "project")
    run(["mnist-cnn", "preset", "fast"], dest)
    edit_params(
        dest,
        data={
            "mirrors": [server.url],
            "sha256": subset_sha256(),
            "retries": 1,
            "backoff_s": 0.1,
            "timeout_s": 5,
            "usps": usps_params(usps_subset_dir),
        },
        train={"epochs": 2},
        register={"min_test_accuracy": 0.5},
    )
    commit(dest, "test params")
    yield dest, server
    server.close()

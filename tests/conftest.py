"""Shared fixtures: the MNIST subset, USPS-format files made from it, processed splits and a
loopback HTTP mirror. Helpers that are not fixtures live in helpers.py."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from helpers import ROOT, SUBSET, MirrorServer

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def subset_dir() -> Path:
    return SUBSET


@pytest.fixture(scope="session")
def tiny_splits(subset_dir):
    """Train and validation splits of the subset's first 300 training digits: a fit in seconds."""
    from mnist_cnn import data

    whole = data.load_idx_pair(subset_dir, "train")
    return data.stratified_split(data.Split(whole.x[:300], whole.y[:300]), 0.1, seed=0)


@pytest.fixture(scope="session")
def usps_subset_dir(tmp_path_factory) -> Path:
    """zip.train.gz and zip.test.gz made from the MNIST subset (tests/usps_fixture.py), and their
    SHA256SUMS (of the decompressed content)."""
    from usps_fixture import write_usps_fixture

    directory = tmp_path_factory.mktemp("usps-subset")
    sums = write_usps_fixture(directory)
    (directory / "SHA256SUMS").write_text("".join(f"{digest}  {name}\n" for name, digest in sums.items()))
    return directory


@pytest.fixture(scope="session")
def processed(tmp_path_factory) -> Path:
    """train.npz and val.npz of the subset's training images (a 20% stratified validation split)."""
    from mnist_cnn import data

    out = tmp_path_factory.mktemp("processed")
    train, val = data.stratified_split(data.load_idx_pair(SUBSET, "train"), 0.2, 42)
    data.save_split(out / "train.npz", train)
    data.save_split(out / "val.npz", val)
    return out


@pytest.fixture
def mirror(subset_dir):
    server = MirrorServer(subset_dir)
    yield server
    server.close()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A folder with params.yaml (fast preset) and the presets, as a user's project would have."""
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copytree(ROOT / "presets", tmp_path / "presets")
    from mnist_cnn import presets

    presets.apply("fast", tmp_path / "params.yaml", directory=tmp_path / "presets")
    return tmp_path

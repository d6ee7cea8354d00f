"""Data faults: misbehaving mirrors, and raw or processed files damaged after the fact."""

from __future__ import annotations

import gzip
import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from faultkit import edit_params, run

from helpers import SUBSET, MirrorServer, stage_cmd

FILES = sorted(p.name for p in SUBSET.glob("*.gz"))

pytestmark = pytest.mark.slow  # subprocesses: dvc, stages, servers


def content_sha(path: Path) -> str:
    return hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest()


@pytest.mark.parametrize("fault", ["truncate", "flip", 403, 404, 500, "hang"])
def test_a_bad_mirror_falls_through_to_the_next_and_nothing_unverified_lands(project, fault):
    dest, good = project
    bad = MirrorServer(SUBSET)
    try:
        for name in FILES:
            bad.faults[name] = [fault] * 5
        edit_params(dest, data={"mirrors": [bad.url, good.url], "timeout_s": 1.5})
        proc = run(stage_cmd("download"), dest)
    finally:
        bad.close()
    raw = dest / "data" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == FILES, "only verified files, no temp or partial ones"
    for name in FILES:
        assert content_sha(raw / name) == content_sha(SUBSET / name)
    assert bad.requests, "the bad mirror was tried first"
    assert proc.returncode == 0


def test_all_mirrors_bad_is_one_clear_error_and_leaves_nothing(project):
    dest, good = project
    bad = MirrorServer(SUBSET)
    try:
        for name in FILES:
            bad.faults[name] = ["flip"] * 5
            good.faults[name] = [404] * 5
        edit_params(dest, data={"mirrors": [bad.url, good.url]})
        proc = run(stage_cmd("download"), dest, check=False)
    finally:
        bad.close()
    assert proc.returncode == 1
    error = proc.stderr[proc.stderr.index("error: ") :]
    assert "Traceback" not in proc.stderr
    assert bad.url in error and good.url in error, error
    raw = dest / "data" / "raw"
    assert not raw.exists() or not any(raw.iterdir())
    assert not (dest / "data" / "usps").exists()


def _regzip(path: Path, content: bytes) -> None:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as fh:
        fh.write(content)
    path.write_bytes(buf.getvalue())


def test_raw_file_changed_after_download_is_seen_by_dvc_and_refused_by_preprocess(project):
    dest, _ = project
    run(["dvc", "repro", "download"], dest)
    labels = dest / "data" / "raw" / "train-labels-idx1-ubyte.gz"
    content = bytearray(gzip.decompress(labels.read_bytes()))
    content[8] = (content[8] + 1) % 10  # a valid IDX file with one label changed
    _regzip(labels, bytes(content))

    status = run(["dvc", "status"], dest).stdout
    assert "data/raw" in status and "modified" in status
    proc = run(stage_cmd("preprocess"), dest, check=False)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert (
        "train-labels-idx1-ubyte.gz" in last and "differs from data.sha256" in last and "dvc repro -f download" in last
    )
    assert not (dest / "data" / "processed").exists()

    labels.write_bytes(labels.read_bytes()[:-30])  # cut short: not even valid gzip
    proc = run(stage_cmd("preprocess"), dest, check=False)
    assert proc.returncode == 1 and "is corrupt" in proc.stderr.strip().splitlines()[-1]


def test_processed_file_changed_after_preprocess_is_seen_by_dvc_and_refused_by_train(project):
    dest, _ = project
    run(["dvc", "repro", "preprocess"], dest)
    val = dest / "data" / "processed" / "val.npz"
    with np.load(val) as npz:
        x, y = npz["x"], npz["y"].copy()
    y[0] = (y[0] + 1) % 10
    with open(val, "wb") as fh:
        np.savez(fh, x=x, y=y)

    status = run(["dvc", "status"], dest).stdout
    assert "data/processed" in status and "modified" in status
    proc = run(stage_cmd("train"), dest, check=False)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert "val.npz does not match its checksum" in last and "dvc repro -f preprocess" in last
    assert not (dest / "models" / "model.keras").exists()

    val.write_bytes(val.read_bytes()[:1000])
    proc = run(stage_cmd("train"), dest, check=False)
    assert proc.returncode == 1 and "val.npz" in proc.stderr.strip().splitlines()[-1]

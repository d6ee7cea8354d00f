"""Training and pipeline faults: kill -9 mid-epoch and resume, a stage killed midway, two
`dvc repro` at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from faultkit import champion_version, clean_env, commit, edit_params, run

from helpers import stage_cmd

pytestmark = pytest.mark.slow


def train_runs(dest: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{dest / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("mnist-cnn")
    runs = client.search_runs([experiment.experiment_id], "tags.`mnist_cnn.stage` = 'train'", max_results=100)
    return sorted(runs, key=lambda r: r.info.start_time)


def read_until(proc: subprocess.Popen, needle: str, timeout: float) -> list[str]:
    """Lines of `proc`'s output up to and including the first holding `needle`."""
    lines: list[str] = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"output ended before {needle!r}:\n{''.join(lines[-30:])}")
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"no {needle!r} within {timeout}s")


def kill_tree(pid: int) -> None:
    for child in psutil.Process(pid).children(recursive=True):
        child.kill()
    os.kill(pid, signal.SIGKILL)


TRAIN = [sys.executable, "-u", *stage_cmd("train")[1:], "--set", "train.epochs=4", "--set", "train.batch_size=16"]


def test_kill_9_mid_epoch_then_the_same_command_resumes_from_the_last_epoch(project, tmp_path):
    dest, _ = project
    run(["dvc", "repro", "preprocess"], dest)

    proc = subprocess.Popen(
        TRAIN, cwd=dest, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        read_until(proc, "Epoch 3/4", timeout=300)  # epochs 1 and 2 are complete and backed up
        time.sleep(0.5)  # mid-epoch 3
    finally:
        kill_tree(proc.pid)
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    assert not (dest / "models" / "model.keras").exists(), "a killed run leaves no model in place"
    assert list((dest / "checkpoints" / "train").glob("*/backup")), "the resumable backup is kept"

    resumed = run(TRAIN, dest)
    epochs = [line.split()[1] for line in resumed.stdout.splitlines() if line.startswith("Epoch ")]
    assert epochs == ["3/4", "4/4"], f"resumed from the last completed epoch: {epochs}"
    assert not list((dest / "checkpoints" / "train").glob("*/backup")), "the backup goes once training is done"
    resumed_metrics = json.loads((dest / "reports" / "train_metrics.json").read_text())

    runs = train_runs(dest)
    assert [r.info.status for r in runs] == ["KILLED", "FINISHED"], (
        "the interrupted run is marked killed, not left running"
    )

    # An uninterrupted run of the same command, in a fresh work dir and outputs
    other = tmp_path / "uninterrupted"
    run(
        TRAIN
        + [
            "--work-dir",
            str(other / "ckpt"),
            "--model",
            str(other / "model.keras"),
            "--run-info",
            str(other / "run.json"),
            "--metrics",
            str(other / "metrics.json"),
            "--history",
            str(other / "history.csv"),
        ],
        dest,
    )
    straight = json.loads((other / "metrics.json").read_text())
    assert resumed_metrics["epochs_trained"] == straight["epochs_trained"] == 4
    assert abs(resumed_metrics["best_val_accuracy"] - straight["best_val_accuracy"]) <= 0.03


def test_a_stage_killed_midway_leaves_no_partial_output_lock_or_champion_change(project):
    dest, _ = project
    run(["dvc", "repro"], dest)
    lock_before = (dest / "dvc.lock").read_text()
    register_before = (dest / "reports" / "register.json").read_text()
    champion = champion_version(dest)
    assert champion is not None

    edit_params(dest, train={"epochs": 3, "batch_size": 16})
    proc = subprocess.Popen(
        ["dvc", "repro"],
        cwd=dest,
        env=clean_env(PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        read_until(proc, "Epoch 2/3", timeout=300)
        train = [
            p for p in psutil.Process(proc.pid).children(recursive=True) if "stages/train.py" in " ".join(p.cmdline())
        ]
        assert train, "the train stage is running"
        for p in train:
            p.kill()
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            kill_tree(proc.pid)
    assert proc.returncode != 0

    assert (dest / "dvc.lock").read_text() == lock_before, "dvc.lock is unchanged for the failed stage"
    assert champion_version(dest) == champion, "the registry's champion is untouched"
    assert (dest / "reports" / "register.json").read_text() == register_before
    models = dest / "models"
    leftovers = [p.name for p in models.iterdir()] if models.exists() else []
    assert "model.keras" not in leftovers and not [n for n in leftovers if "tmp" in n], leftovers
    status = run(["dvc", "status"], dest).stdout
    assert "train" in status, "dvc knows the train stage must run again"

    run(["dvc", "repro"], dest)  # the same command finishes the job
    assert [r.info.status for r in train_runs(dest)][-2:] == ["KILLED", "FINISHED"]


def test_two_repro_at_once_one_waits_or_fails_cleanly_and_state_stays_consistent(project):
    dest, _ = project
    run(["dvc", "repro"], dest)
    edit_params(dest, train={"epochs": 1})
    commit(dest, "one epoch")
    procs = [
        subprocess.Popen(
            ["dvc", "repro"], cwd=dest, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    codes = [p.returncode for p in procs]
    assert 0 in codes, outputs
    for code, out in zip(codes, outputs, strict=True):
        if code != 0:
            # DVC's own locks: the repo lock, or the read/write lock on a stage's outputs
            assert (
                "Unable to acquire lock" in out or "is busy, it is being blocked by" in out
            ) and "Traceback" not in out, out
    assert "Data and pipelines are up to date" in run(["dvc", "status"], dest).stdout
    from mlflow.tracking import MlflowClient

    versions = MlflowClient(tracking_uri=f"sqlite:///{dest / 'mlflow.db'}").search_model_versions("name='mnist-cnn'")
    assert len(versions) == 2, "the second pipeline ran exactly once"
    report = json.loads((dest / "reports" / "register.json").read_text())
    assert report["version"] == max(int(v.version) for v in versions)


def test_same_params_and_seed_give_bit_identical_weights_and_metrics(project, tmp_path):
    """Two separate processes of the train stage, augmentation and dropout on, on the CPU."""
    import csv

    import keras
    import numpy as np

    dest, _ = project
    run(["dvc", "repro", "preprocess"], dest)
    outputs = []
    for name in ("a", "b"):
        out = tmp_path / name
        run(
            [
                *stage_cmd("train"),
                "--set",
                "model.augment.rotation_deg=8",
                "--set",
                "model.augment.shift=0.05",
                "--work-dir",
                str(out / "ckpt"),
                "--model",
                str(out / "model.keras"),
                "--run-info",
                str(out / "run.json"),
                "--metrics",
                str(out / "metrics.json"),
                "--history",
                str(out / "history.csv"),
            ],
            dest,
        )
        outputs.append(out)
    a, b = (keras.saving.load_model(o / "model.keras", compile=False) for o in outputs)
    for i, (wa, wb) in enumerate(zip(a.get_weights(), b.get_weights(), strict=True)):
        assert np.array_equal(wa, wb), f"weight {i} differs between two runs with the same params and seed"
    timing = {"train_seconds", "train_images_per_second", "seconds"}
    ma, mb = (json.loads((o / "metrics.json").read_text()) for o in outputs)
    assert {k: v for k, v in ma.items() if k not in timing} == {k: v for k, v in mb.items() if k not in timing}
    ha, hb = (
        [{k: v for k, v in row.items() if k not in timing} for row in csv.DictReader(open(o / "history.csv"))]
        for o in outputs
    )
    assert ha == hb

"""The `mnist-cnn` console script's error paths."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # every test runs the console script in a subprocess


def test_serve_without_a_champion_is_one_clear_error(tmp_path: Path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run(["mnist-cnn", "serve"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "no mnist-cnn@champion" in last and "dvc repro" in last


def test_stage_runs_dvc_yaml_s_command_with_its_paths_and_the_overrides(tmp_path: Path, subset_dir: Path):
    """`mnist-cnn stage` (what MLproject's stage entry points run) takes its paths from dvc.yaml."""
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(ROOT / "stages", tmp_path / "stages")
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  preprocess:\n    cmd: python stages/preprocess.py --raw-dir raw --feedback-dir feedback --out-dir processed\n"
    )
    shutil.copytree(subset_dir, tmp_path / "raw")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    sums = dict(line.split()[::-1] for line in (subset_dir / "SHA256SUMS").read_text().splitlines())
    sets = [f"--set=data.sha256.{name}={digest}" for name, digest in sums.items()]
    proc = subprocess.run(
        ["mnist-cnn", "stage", "preprocess", "--set", "data.val_fraction=0.25", *sets],
        cwd=tmp_path / "stages",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "val: 501 images, test: 500 images" in proc.stdout, "a quarter of the 2,000 training images, stratified"
    assert sorted(p.name for p in (tmp_path / "processed").iterdir()) == [
        "SHA256SUMS",
        "feedback.npz",
        "test.npz",
        "train.npz",
        "val.npz",
    ]
    bad = subprocess.run(
        ["mnist-cnn", "stage", "preprocess", "--set", "data.val_fraction=2"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 1 and "data.val_fraction must be between 0 and 1" in bad.stderr.strip().splitlines()[-1]


QUIET = """
from mnist_cnn.entrypoint import run_main
def main():
    import keras, numpy as np
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("adam", "mse")
    model.fit(np.zeros((32, 4)), np.zeros((32, 2)), epochs=1, verbose=0)
    print("trained")
run_main(main, tensorflow=True)
"""


def native_lines(text: str) -> list[str]:
    return [
        line for line in text.splitlines() if line[:1] in "IWE" and line[1:5].isdigit() or "absl::InitializeLog" in line
    ]


def test_entry_points_hide_tensorflow_s_native_log_lines_unless_verbose():
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "MNIST_CNN_VERBOSE")}
    quiet = subprocess.run([sys.executable, "-c", QUIET], env=env, capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0 and quiet.stdout.strip() == "trained"
    assert native_lines(quiet.stderr) == [], quiet.stderr
    loud = subprocess.run(
        [sys.executable, "-c", QUIET],
        env={**env, "MNIST_CNN_VERBOSE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert loud.returncode == 0 and native_lines(loud.stderr), "MNIST_CNN_VERBOSE=1 shows TensorFlow's own lines again"


def test_version():
    proc = subprocess.run(["mnist-cnn", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("mnist-cnn 0.")

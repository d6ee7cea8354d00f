"""A small real model for the serving, predict and export tests: the `fast` preset trained on the
MNIST subset for a few seconds, saved as `.keras` and logged with `mnist_cnn.packaging.log_model` into a
throwaway sqlite MLflow store."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from helpers import ROOT, SUBSET, free_port

# Says "not sure" on a scribble and reads a clearly drawn digit: half as many generated non-digits
# as digits and four epochs put zigzags near 0.12 confidence and a drawn 7 at 1.0, on either side of
# the threshold abstain_rate 0.05 sets (about 0.73). Some 30 s on two cores.
CALIBRATED = {"epochs": 4, "nondigits": 0.5, "abstain_rate": 0.05}


def train(
    path: Path,
    epochs: int = 1,
    augment: bool = False,
    nondigits: float | None = None,
    abstain_rate: float | None = None,
) -> Path:
    """Train the fast preset on the subset and save it to `path` (a `.keras` file). `nondigits`
    overrides the preset's outlier-exposure share; with `abstain_rate` the network is calibrated
    on the subset's test images (`training.calibrate`) and the record stored in the file."""
    from mnist_cnn import data, presets, training
    from mnist_cnn.config import CalibrationParams
    from mnist_runtime import calibration

    overrides = [f"train.epochs={epochs}"]
    if augment:
        overrides += ["model.augment.rotation_deg=8", "model.augment.shift=0.08", "model.augment.zoom=0.08"]
    if nondigits is not None:
        overrides.append(f"train.nondigits={nondigits}")
    model_params, train_params = presets.load("fast", overrides, directory=ROOT / "presets")
    train_split = data.load_idx_pair(SUBSET, "train")
    val_split = data.load_idx_pair(SUBSET, "t10k")
    result = training.train(
        model_params, train_params, train_split, val_split, path.parent / f"{path.stem}-work", verbose=0
    )
    if abstain_rate is None:
        result.model.save(path)
        return path
    network, record, _ = training.calibrate(
        result.model, val_split, CalibrationParams(abstain_rate=abstain_rate, bins=15)
    )
    network.save(path)
    calibration.write(path, record)
    return path


@contextlib.contextmanager
def using_store(store: Path) -> Iterator[str]:
    """MLflow pointed at the sqlite store under `store` for the block, then back as it was."""
    import mlflow

    store.mkdir(parents=True, exist_ok=True)
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracking_uri(store))
    try:
        yield tracking_uri(store)
    finally:
        mlflow.set_tracking_uri(None)  # also unsets MLFLOW_TRACKING_URI
        if previous is not None:
            os.environ["MLFLOW_TRACKING_URI"] = previous


def log(keras_path: Path, store: Path, register_as: str | None = None) -> str:
    """Log the pyfunc around `keras_path` into a sqlite store under `store`; returns its model URI.
    With `register_as`, also register it under that name with the alias `champion`."""
    import mlflow
    import numpy as np

    from mnist_cnn import packaging

    with using_store(store):
        if mlflow.get_experiment_by_name("serving-tests") is None:  # artifacts in the store, not in ./mlruns
            mlflow.create_experiment("serving-tests", artifact_location=(store / "artifacts").as_uri())
        mlflow.set_experiment("serving-tests")
        with mlflow.start_run():
            info = packaging.log_model(keras_path, np.zeros((1, 28, 28), np.uint8))
        if register_as:
            version = mlflow.register_model(info.model_uri, register_as)
            mlflow.MlflowClient().set_registered_model_alias(register_as, "champion", version.version)
    return info.model_uri


def tracking_uri(store: Path) -> str:
    return f"sqlite:///{store / 'mlflow.db'}"


def serve(model_uri: str, store: Path, log_path: Path, workers: int = 1) -> tuple[subprocess.Popen, str]:
    """Start a real `mlflow models serve` on 127.0.0.1 and wait until it answers /ping."""
    import requests

    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri(store), "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
           "-h", "127.0.0.1", "-p", str(port), "-w", str(workers)]  # fmt: skip
    log_file = open(log_path, "wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT, cwd=store)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"scoring server exited {proc.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                return proc, url
        except requests.RequestException:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"scoring server did not answer within 180 s:\n{log_path.read_text()[-4000:]}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)

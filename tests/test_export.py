"""`mnist-cnn export --format tflite`: the TFLite model scores like the Keras network, also when
the network carries Keras augmentation layers (as networks trained before augmentation moved out
of the model do), and it comes from a `.keras` file or an MLflow model URI."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import tiny_model
from helpers import ROOT, SUBSET

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def augmented(tmp_path_factory):
    """A network trained with augmentation, behind Keras' RandomRotation, RandomZoom and
    RandomTranslation layers as older networks carry them; logged to a store."""
    import keras

    from mnist_runtime.network import load_network

    work = tmp_path_factory.mktemp("export")
    network = load_network(str(tiny_model.train(work / "bare.keras", augment=True)))
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.RandomRotation(8 / 360, fill_mode="constant", seed=1)(inputs)
    x = keras.layers.RandomZoom(0.08, fill_mode="constant", seed=2)(x)
    x = keras.layers.RandomTranslation(0.08, 0.08, fill_mode="constant", seed=3)(x)
    keras_path = work / "aug.keras"
    keras.Model(inputs, network(x)).save(keras_path)
    store = work / "store"
    return keras_path, tiny_model.log(keras_path, store), store


def export_cli(*args: str, store=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    if store is not None:
        env["MLFLOW_TRACKING_URI"] = tiny_model.tracking_uri(store)
    cmd = [sys.executable, "-c", "from mnist_cnn.cli import main; main()", "export", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_tflite_accuracy_matches_keras_on_the_subset(augmented, tmp_path):
    from mnist_cnn import data, export
    from mnist_runtime.network import Classifier

    keras_path, _, _ = augmented
    out = tmp_path / "model.tflite"
    proc = export_cli("--format", "tflite", "--model", str(keras_path), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert str(out) in proc.stdout and out.stat().st_size > 100_000
    assert [p.name for p in tmp_path.iterdir()] == ["model.tflite"], "written atomically"

    test = data.load_idx_pair(SUBSET, "t10k")
    keras_proba = Classifier.load(keras_path)(test.x[..., None].astype(np.float32))
    tflite_proba = export.tflite_predict(out, test.x)
    keras_acc = float((keras_proba.argmax(axis=1) == test.y).mean())
    tflite_acc = float((tflite_proba.argmax(axis=1) == test.y).mean())
    assert abs(tflite_acc - keras_acc) * 100 <= 0.05, (tflite_acc, keras_acc)  # within 0.05 points
    assert np.allclose(tflite_proba, keras_proba, atol=1e-4), "augmentation layers are identity at inference"


def test_export_from_an_mlflow_model_uri(augmented, tmp_path):
    from mnist_cnn import export
    from mnist_runtime.network import load_network

    keras_path, uri, store = augmented
    out = tmp_path / "nested" / "m.tflite"
    proc = export_cli("--model", uri, "--out", str(out), store=store)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == export.to_tflite(load_network(str(keras_path)))


def test_export_errors_are_one_line(tmp_path):
    proc = export_cli("--model", str(tmp_path / "missing.keras"), "--out", str(tmp_path / "x.tflite"))
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == f"error: model file {tmp_path / 'missing.keras'} not found"
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "x.tflite").exists()

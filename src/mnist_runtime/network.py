"""The Keras network behind the served model: loading it from a `.keras` file or an MLflow
model URI (one function for serving, `predict` and `export`), and calling it fast. Importing
this module loads TensorFlow."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import keras
import mlflow.pyfunc
import numpy as np
import tensorflow as tf
from mlflow.exceptions import MlflowException

from mnist_runtime import calibration
from mnist_runtime.calibration import Calibration
from mnist_runtime.errors import MnistCnnError

CHUNK = 512  # images per network call: bounds the activations' memory for big batches


def _is_keras_file(model: str) -> bool:
    return Path(model).suffix == ".keras" and "://" not in model


def _load_pyfunc(model: str) -> mlflow.pyfunc.PyFuncModel:
    try:
        return mlflow.pyfunc.load_model(model)
    except (MlflowException, OSError) as exc:
        raise MnistCnnError(f"cannot load model {model}: {exc}") from None


def load_calibrated(model: str) -> tuple[keras.Model, Calibration]:
    """The Keras network and its calibration record (see `calibration`) of a local `.keras` file
    (safe mode) or of an MLflow model URI of this project's pyfunc; MnistCnnError when it cannot
    be loaded."""
    if _is_keras_file(model):
        if not Path(model).is_file():
            raise MnistCnnError(f"model file {model} not found")
        return keras.saving.load_model(model, compile=False, safe_mode=True), calibration.read(model)
    python_model = _load_pyfunc(model).unwrap_python_model()
    classifier = getattr(python_model, "classifier", None)
    if classifier is None:
        raise MnistCnnError(f"model {model} is not an mnist-cnn pyfunc (no Keras network inside)")
    return classifier.keras_model, classifier.calibration


def load_network(model: str):
    """The Keras network of a local `.keras` file or an MLflow model URI (see `load_calibrated`)."""
    return load_calibrated(model)[0]


class Classifier:
    """The Keras network behind one traced graph: (N, 28, 28, 1) float32 0-255 to (N, 10).

    A traced `tf.function` with a fixed signature costs about a tenth of an eager Keras call for
    one image, and is safe to call from the scoring server's threads."""

    def __init__(self, keras_model, calibration: Calibration = calibration.NONE):
        self.keras_model = keras_model
        self.calibration = calibration
        self._call = tf.function(
            lambda x: keras_model(x, training=False),
            input_signature=[tf.TensorSpec((None, 28, 28, 1), tf.float32, name="pixels")],
        )
        self._call.get_concrete_function()  # trace now, not on the first request

    @classmethod
    def load(cls, model: str | Path) -> Classifier:
        return cls(*load_calibrated(str(model)))

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        pixels = np.ascontiguousarray(pixels, dtype=np.float32).reshape(-1, 28, 28, 1)
        parts = [self._call(pixels[i : i + CHUNK]).numpy() for i in range(0, len(pixels), CHUNK)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def load_predict_fn(model: str) -> Callable[[np.ndarray], np.ndarray]:
    """A function from (N, 28, 28) 0-255 pixels to (N, 10) probabilities, for a local `.keras`
    file or any MLflow model URI of this pyfunc (its own predict, the path the server takes);
    its `calibration` attribute holds the model's "not sure" threshold."""
    if _is_keras_file(model):
        return Classifier.load(model)
    pyfunc = _load_pyfunc(model)

    def predict(pixels: np.ndarray) -> np.ndarray:
        return np.asarray(pyfunc.predict(np.asarray(pixels))["probabilities"].tolist(), dtype=np.float64)

    predict.calibration = pyfunc.unwrap_python_model().classifier.calibration
    return predict

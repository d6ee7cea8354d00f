"""How the trained network is packaged for `mlflow models serve` and `mlflow.pyfunc`.

The registered model is an MLflow *models-from-code* pyfunc: its Python code is
`mnist_cnn/pyfunc_model.py` (this package, shipped with the model), its network the `.keras`
file, loaded in safe mode. Nothing is pickled.

Input: raw 0-255 pixels, `{"inputs": ...}` of shape (N, 28, 28), (N, 28, 28, 1) or (N, 784).
Output, one record per image: `{"digit": int, "confidence": float, "probabilities": [10 floats]}`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

MAX_BATCH = 10_000


def _invalid(message: str) -> Exception:
    """Bad request content: MLflow's scoring server answers this error with HTTP 400."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def to_pixels(model_input: Any) -> np.ndarray:
    """Validate raw pixel input and return it as (N, 28, 28, 1) float32 in [0, 255]."""
    if hasattr(model_input, "to_numpy"):  # pandas DataFrame of 784 pixel columns
        model_input = model_input.to_numpy()
    if isinstance(model_input, dict):
        if len(model_input) != 1:
            raise _invalid(f"expected one input tensor, got {sorted(model_input)}")
        model_input = next(iter(model_input.values()))
    try:
        arr = np.asarray(model_input)
    except (ValueError, TypeError) as exc:
        raise _invalid(f"input is not a rectangular array of numbers ({exc})") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise _invalid(f"pixels must be numbers, got {arr.dtype} (ragged or non-numeric input)")
    if arr.size == 0 or arr.ndim == 0 or arr.shape[0] == 0:
        raise _invalid("empty batch: send at least one image")
    n = arr.shape[0]
    if n > MAX_BATCH:
        raise _invalid(f"batch of {n} images exceeds the limit of {MAX_BATCH}; split the request")
    if arr.shape[1:] in ((28, 28), (28, 28, 1), (784,)):
        arr = arr.reshape(n, 28, 28, 1)
    else:
        raise _invalid(f"input shape {tuple(arr.shape)} is not (N, 28, 28), (N, 28, 28, 1) or (N, 784)")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise _invalid("pixels must be finite numbers (found NaN or Infinity)")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0 or hi > 255:
        raise _invalid(f"pixel values must be in 0-255 (raw MNIST scale), found range {lo:g}..{hi:g}")
    return arr


def format_predictions(proba: np.ndarray):
    import pandas as pd

    digits = proba.argmax(axis=1)
    return pd.DataFrame(
        {
            "digit": digits.astype(int),
            "confidence": proba[np.arange(len(proba)), digits].astype(float),
            "probabilities": [row.astype(float).round(6).tolist() for row in proba],
        }
    )


def _python_model_class():
    import mlflow.pyfunc

    class MnistCnnModel(mlflow.pyfunc.PythonModel):
        """Pyfunc around the `.keras` network; validation errors become HTTP 400."""

        def load_context(self, context):
            import keras

            self.model = keras.saving.load_model(context.artifacts["keras_model"], compile=False, safe_mode=True)

        def predict(self, context, model_input, params=None):
            pixels = to_pixels(model_input)
            proba = np.asarray(self.model(pixels, training=False))
            return format_predictions(proba)

    return MnistCnnModel


def make_python_model():
    return _python_model_class()()


def serving_requirements() -> list[str]:
    """Pinned to what trained the model: the scoring environment must load the same Keras file."""
    from importlib.metadata import version

    return [
        f"mlflow=={version('mlflow')}",
        f"keras=={version('keras')}",
        f"tensorflow=={version('tensorflow')}",
        f"numpy=={version('numpy')}",
        f"pandas=={version('pandas')}",
    ]


def output_signature():
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, Schema

    return ModelSignature(
        outputs=Schema([ColSpec("long", "digit"), ColSpec("double", "confidence"), ColSpec(Array("double"), "probabilities")])
    )


def log_model(keras_path: str | Path, example: np.ndarray):
    """Log the models-from-code pyfunc around `keras_path`; returns MLflow's ModelInfo."""
    import mlflow

    package = Path(__file__).resolve().parent
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=str(package / "pyfunc_model.py"),
        artifacts={"keras_model": str(keras_path)},
        code_paths=[str(package)],
        signature=output_signature(),
        input_example={"inputs": example.astype("uint8").tolist()},
        pip_requirements=serving_requirements(),
    )

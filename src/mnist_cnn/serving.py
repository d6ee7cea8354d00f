"""How the trained network is packaged for `mlflow models serve` and `mlflow.pyfunc`.

The registered model is an MLflow *models-from-code* pyfunc: its Python code is
`mnist_cnn/pyfunc_model.py` (this package, shipped with the model), its network the `.keras`
file, loaded in safe mode. Nothing is pickled. It has no input signature, so MLflow passes the
request through untouched and this module validates it.

Input (JSON body of `POST /invocations`), up to `MAX_BATCH` images:
- raw 0-255 pixels, integers or floats: `{"inputs": [...]}` of shape (N, 28, 28), (N, 28, 28, 1)
  or (N, 784) (also `instances`, or `dataframe_split` with 784 columns);
- image files: `{"dataframe_split": {"columns": ["image"], "data": [["<base64>"], ...]}}` or
  `{"dataframe_records": [{"image": "<base64>"}, ...]}` or `{"inputs": {"image": ["<base64>", ...]}}`:
  PNG, JPEG or BMP of any size and mode, brought to MNIST's form by `mnist_cnn.images`;
- compact bulk pixels: `{"inputs": {"pixels_b64": "<base64>"}}`, the base64 of N*784 raw uint8
  bytes (N images of 28x28, row-major), or a `pixels_b64` column holding one such string per row.

Output, one record per image in request order:
`{"predictions": [{"digit": 7, "confidence": 0.998, "probabilities": [10 floats, digits 0-9]}, ...]}`.

Bad input is an MlflowException(INVALID_PARAMETER_VALUE): the scoring server answers HTTP 400 with
`{"error_code": "INVALID_PARAMETER_VALUE", "message": "..."}`. Inside the scoring server,
`guard_scoring_server` also turns what MLflow would answer with a 500 into a 4xx: a missing
Content-Type (415), a body over `MAX_BODY_BYTES` (413), JSON nested too deeply (400).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

MAX_BATCH = 10_000
MAX_BODY_BYTES = 32 * 1024 * 1024
CHUNK = 512  # images per network call: bounds the activations' memory for big batches
IMAGE_COLUMN = "image"
PIXELS_COLUMN = "pixels_b64"

_logger = logging.getLogger(__name__)


def _invalid(message: str) -> Exception:
    """Bad request content: MLflow's scoring server answers this error with HTTP 400."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def _check_batch(n: int) -> None:
    if n == 0:
        raise _invalid("empty batch: send at least one image")
    if n > MAX_BATCH:
        raise _invalid(f"batch of {n} images exceeds the limit of {MAX_BATCH}; split the request")


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
    _check_batch(n)
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


def _strings(values: Any, what: str) -> list:
    """A column or list of base64 strings as a flat Python list (a lone string is one item)."""
    if hasattr(values, "tolist"):
        values = values.tolist()
    if isinstance(values, (str, bytes)):
        values = [values]
    if not isinstance(values, list):
        raise _invalid(f"{what} must be a list of base64 strings, got {type(values).__name__}")
    return values


def from_pixels_b64(values: Any) -> np.ndarray:
    """Compact bulk input: base64 of raw uint8 bytes, 784 per image, to (N, 28, 28, 1) float32."""
    chunks = []
    for i, text in enumerate(_strings(values, PIXELS_COLUMN)):
        if not isinstance(text, str):
            raise _invalid(f"{PIXELS_COLUMN} item {i} must be a base64 string, got {type(text).__name__}")
        if len(text) > (MAX_BATCH * 784 * 4) // 3 + 4:
            raise _invalid(f"{PIXELS_COLUMN} item {i} holds more images than the limit of {MAX_BATCH}; split the request")
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _invalid(f"{PIXELS_COLUMN} item {i} is not valid base64 ({exc})") from None
        if len(raw) % 784:
            raise _invalid(
                f"{PIXELS_COLUMN} item {i} decodes to {len(raw)} bytes, not a multiple of 784 (28x28 uint8 pixels per image)"
            )
        chunks.append(np.frombuffer(raw, np.uint8))
    flat = np.concatenate(chunks) if chunks else np.zeros(0, np.uint8)
    _check_batch(len(flat) // 784)
    return flat.reshape(-1, 28, 28, 1).astype(np.float32)


def from_images(values: Any) -> np.ndarray:
    """Base64 image files (PNG, JPEG, BMP) to (N, 28, 28, 1) float32 in MNIST's form."""
    from mnist_cnn.images import ImageError, prepare_many

    items = _strings(values, f"column {IMAGE_COLUMN!r}")
    _check_batch(len(items))
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise _invalid(f"image {i}: expected base64 text of a PNG, JPEG or BMP file, got {type(item).__name__}")
    try:
        return prepare_many(items)[..., None].astype(np.float32)
    except ImageError as exc:
        raise _invalid(str(exc)) from None


def to_model_input(model_input: Any) -> np.ndarray:
    """Any accepted request form (see the module docstring) to (N, 28, 28, 1) float32 0-255."""
    columns = None
    if hasattr(model_input, "columns"):
        columns = [str(c) for c in model_input.columns]
    elif isinstance(model_input, dict):
        columns = [str(c) for c in model_input]
    if columns is not None:
        for name, convert in ((IMAGE_COLUMN, from_images), (PIXELS_COLUMN, from_pixels_b64)):
            if name in columns:
                if len(columns) != 1:
                    raise _invalid(f"send the {name!r} column alone, got columns {columns[:10]}")
                return convert(model_input[name])
    return to_pixels(model_input)


def format_predictions(proba: np.ndarray):
    """(N, 10) probabilities to a frame of digit, confidence and the ten probabilities (6 decimals)."""
    import pandas as pd

    proba = np.asarray(proba, dtype=np.float64)
    digits = proba.argmax(axis=1)
    return pd.DataFrame(
        {
            "digit": digits.astype(int),
            "confidence": proba[np.arange(len(proba)), digits].round(6),
            "probabilities": proba.round(6).tolist(),
        }
    )


class Classifier:
    """The Keras network behind one traced graph: (N, 28, 28, 1) float32 0-255 to (N, 10).

    A traced `tf.function` with a fixed signature costs about a tenth of an eager Keras call for
    one image, and is safe to call from the scoring server's threads."""

    def __init__(self, keras_model):
        import tensorflow as tf

        self.keras_model = keras_model
        self._call = tf.function(
            lambda x: keras_model(x, training=False),
            input_signature=[tf.TensorSpec((None, 28, 28, 1), tf.float32, name="pixels")],
        )
        self._call.get_concrete_function()  # trace now, not on the first request

    @classmethod
    def load(cls, keras_path: str | Path) -> "Classifier":
        import keras

        return cls(keras.saving.load_model(str(keras_path), compile=False, safe_mode=True))

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        parts = [self._call(pixels[i : i + CHUNK]).numpy() for i in range(0, len(pixels), CHUNK)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _python_model_class():
    import mlflow.pyfunc

    class MnistCnnModel(mlflow.pyfunc.PythonModel):
        """Pyfunc around the `.keras` network; validation errors become HTTP 400."""

        def load_context(self, context):
            self.classifier = Classifier.load(context.artifacts["keras_model"])
            self.model = self.classifier.keras_model
            guard_scoring_server()

        def predict(self, context, model_input, params=None):
            return format_predictions(self.classifier(to_model_input(model_input)))

    return MnistCnnModel


def make_python_model():
    return _python_model_class()()


def guard_scoring_server() -> bool:
    """Inside `mlflow models serve`, answer with a 4xx what MLflow 3's scoring server would
    answer with a 500 or a huge echo: no Content-Type (415), a body over MAX_BODY_BYTES (413),
    JSON nested too deeply for the parser (400), and error messages that quote a huge input
    (shortened). Does nothing outside the scoring server; returns whether it is installed."""
    server = sys.modules.get("mlflow.pyfunc.scoring_server")
    original = getattr(server, "invocations", None)
    if original is None or getattr(original, "_mnist_cnn_guard", False):
        return original is not None
    response = server.InvocationsResponse
    from mlflow.exceptions import MlflowException

    def error(status: int, code: str, message: str):
        return response(json.dumps({"error_code": code, "message": message}), status, "application/json")

    def invocations(data, content_type, model, input_schema):
        if not content_type:
            return error(415, "UNSUPPORTED_MEDIA_TYPE", "missing Content-Type header; send application/json")
        if len(data) > MAX_BODY_BYTES:
            return error(
                413,
                "REQUEST_TOO_LARGE",
                f"request body of {len(data)} bytes exceeds the limit of {MAX_BODY_BYTES}; split the batch or use "
                f"the compact {PIXELS_COLUMN} input",
            )
        try:
            return original(data, content_type, model, input_schema)
        except RecursionError:
            raise _invalid("JSON is nested too deeply; send at most 4 levels of arrays") from None
        except MlflowException as exc:
            head, sep, tail = exc.message.partition("'. \nError: ")
            if sep and head.startswith("Failed to predict data '"):  # drop MLflow's echo of the input
                exc.message = tail
            if len(exc.message) > 2000:
                exc.message = exc.message[:1000] + f" ... [{len(exc.message) - 1000} characters cut]"
            raise

    invocations._mnist_cnn_guard = True
    server.invocations = invocations
    _logger.info("mnist_cnn: scoring server guarded (body limit %d bytes)", MAX_BODY_BYTES)
    return True


def serving_requirements() -> list[str]:
    """Pinned to what trained the model: the scoring environment must load the same Keras file."""
    from importlib.metadata import version

    return [
        f"mlflow=={version('mlflow')}",
        f"keras=={version('keras')}",
        f"tensorflow=={version('tensorflow')}",
        f"numpy=={version('numpy')}",
        f"pandas=={version('pandas')}",
        f"pillow=={version('pillow')}",
        f"scipy=={version('scipy')}",
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


def load_predict_fn(model: str) -> Callable[[np.ndarray], np.ndarray]:
    """A function from (N, 28, 28) 0-255 pixels to (N, 10) probabilities, for a local `.keras`
    file or any MLflow model URI of this pyfunc (its own predict, the path the server takes)."""
    from mnist_cnn.errors import MnistCnnError

    path = Path(model)
    if path.suffix == ".keras" and "://" not in model:
        if not path.is_file():
            raise MnistCnnError(f"model file {path} not found")
        classifier = Classifier.load(path)
        return lambda pixels: classifier(np.asarray(pixels, np.float32).reshape(-1, 28, 28, 1))
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    try:
        pyfunc = mlflow.pyfunc.load_model(model)
    except (MlflowException, OSError) as exc:
        raise MnistCnnError(f"cannot load model {model}: {exc}") from None
    return lambda pixels: np.asarray(pyfunc.predict(np.asarray(pixels))["probabilities"].tolist(), dtype=np.float64)

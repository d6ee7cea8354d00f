"""TFLite export of the Keras network inside a registered model (for mobile and edge devices).

The TFLite model takes what the Keras network takes: float32 pixels 0-255 of shape
(N, 28, 28, 1) (rescaling is a layer of the model; the Keras augmentation layers that older
networks carry are identity at inference and convert as such), and returns (N, 10)
probabilities. Real images go through `mnist_runtime.images.prepare` first, as for the served
model.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import tensorflow as tf

from mnist_cnn.atomic import atomic_path
from mnist_cnn.errors import MnistCnnError
from mnist_runtime.network import load_network


def to_tflite(keras_model) -> bytes:
    """Convert a Keras 3 model with TensorFlow's TFLite converter (float32, builtin ops)."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # Keras prints the temporary SavedModel's endpoints
            return tf.lite.TFLiteConverter.from_keras_model(keras_model).convert()
    except Exception as exc:  # the converter raises many types (ConverterError, ValueError, ...)
        raise MnistCnnError(f"TFLite conversion failed: {exc}") from None


def export_tflite(model: str, out: str | Path) -> Path:
    """Write the TFLite form of `model` to `out` atomically; returns the path."""
    content = to_tflite(load_network(model))
    with atomic_path(out) as tmp:
        tmp.write_bytes(content)
    return Path(out)


def tflite_predict(model: bytes | str | Path, pixels: np.ndarray, batch: int = 256) -> np.ndarray:
    """(N, 28, 28[, 1]) pixels 0-255 to (N, 10) probabilities with the TFLite interpreter."""
    content = Path(model).read_bytes() if isinstance(model, (str, Path)) else model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice (LiteRT)
        interpreter = tf.lite.Interpreter(model_content=content)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    x = np.asarray(pixels, np.float32).reshape(-1, 28, 28, 1)
    parts = []
    for i in range(0, len(x), batch):
        chunk = x[i : i + batch]
        interpreter.resize_tensor_input(inp["index"], list(chunk.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(inp["index"], chunk)
        interpreter.invoke()
        parts.append(interpreter.get_tensor(out["index"]).copy())
    return np.concatenate(parts)

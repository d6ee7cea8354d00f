"""Request decoding for the served model, pure (no MLflow): any accepted request form (see the
package docstring) to (N, 28, 28, 1) float32 pixels 0-255, or a RequestError naming the problem."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np

from mnist_runtime.errors import MnistCnnError
from mnist_runtime.images import ImageError, prepare_many

MAX_BATCH = 10_000
IMAGE_COLUMN = "image"
PIXELS_COLUMN = "pixels_b64"


class RequestError(MnistCnnError):
    """Bad request content; the scoring server answers it with HTTP 400."""


def _check_batch(n: int) -> None:
    if n == 0:
        raise RequestError("empty batch: send at least one image")
    if n > MAX_BATCH:
        raise RequestError(f"batch of {n} images exceeds the limit of {MAX_BATCH}; split the request")


def to_pixels(model_input: Any) -> np.ndarray:
    """Validate raw pixel input and return it as (N, 28, 28, 1) float32 in [0, 255]."""
    if hasattr(model_input, "to_numpy"):  # pandas DataFrame of 784 pixel columns
        model_input = model_input.to_numpy()
    if isinstance(model_input, dict):
        if len(model_input) != 1:
            raise RequestError(f"expected one input tensor, got {sorted(model_input)}")
        model_input = next(iter(model_input.values()))
    try:
        arr = np.asarray(model_input)
    except (ValueError, TypeError) as exc:
        raise RequestError(f"input is not a rectangular array of numbers ({exc})") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise RequestError(f"pixels must be numbers, got {arr.dtype} (ragged or non-numeric input)")
    if arr.size == 0 or arr.ndim == 0 or arr.shape[0] == 0:
        raise RequestError("empty batch: send at least one image")
    n = arr.shape[0]
    _check_batch(n)
    if arr.shape[1:] in ((28, 28), (28, 28, 1), (784,)):
        arr = arr.reshape(n, 28, 28, 1)
    else:
        raise RequestError(f"input shape {tuple(arr.shape)} is not (N, 28, 28), (N, 28, 28, 1) or (N, 784)")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise RequestError("pixels must be finite numbers (found NaN or Infinity)")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0 or hi > 255:
        raise RequestError(f"pixel values must be in 0-255 (raw MNIST scale), found range {lo:g}..{hi:g}")
    return arr


def _strings(values: Any, what: str) -> list:
    """A column or list of base64 strings as a flat Python list (a lone string is one item)."""
    if hasattr(values, "tolist"):
        values = values.tolist()
    if isinstance(values, str | bytes):
        values = [values]
    if not isinstance(values, list):
        raise RequestError(f"{what} must be a list of base64 strings, got {type(values).__name__}")
    return values


def from_pixels_b64(values: Any) -> np.ndarray:
    """Compact bulk input: base64 of raw uint8 bytes, 784 per image, to (N, 28, 28, 1) float32."""
    chunks = []
    for i, text in enumerate(_strings(values, PIXELS_COLUMN)):
        if not isinstance(text, str):
            raise RequestError(f"{PIXELS_COLUMN} item {i} must be a base64 string, got {type(text).__name__}")
        if len(text) > (MAX_BATCH * 784 * 4) // 3 + 4:
            raise RequestError(
                f"{PIXELS_COLUMN} item {i} holds more images than the limit of {MAX_BATCH}; split the request"
            )
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RequestError(f"{PIXELS_COLUMN} item {i} is not valid base64 ({exc})") from None
        if len(raw) % 784:
            raise RequestError(
                f"{PIXELS_COLUMN} item {i} decodes to {len(raw)} bytes, not a multiple of 784 (28x28 uint8 pixels per image)"
            )
        chunks.append(np.frombuffer(raw, np.uint8))
    flat = np.concatenate(chunks) if chunks else np.zeros(0, np.uint8)
    _check_batch(len(flat) // 784)
    return flat.reshape(-1, 28, 28, 1).astype(np.float32)


def from_images(values: Any) -> np.ndarray:
    """Base64 image files (PNG, JPEG, BMP) to (N, 28, 28, 1) float32 in MNIST's form."""
    items = _strings(values, f"column {IMAGE_COLUMN!r}")
    _check_batch(len(items))
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise RequestError(f"image {i}: expected base64 text of a PNG, JPEG or BMP file, got {type(item).__name__}")
    try:
        return prepare_many(items)[..., None].astype(np.float32)
    except ImageError as exc:
        raise RequestError(str(exc)) from None


def to_model_input(model_input: Any) -> np.ndarray:
    """Any accepted request form (see the package docstring) to (N, 28, 28, 1) float32 0-255."""
    columns = None
    if hasattr(model_input, "columns"):
        columns = [str(c) for c in model_input.columns]
    elif isinstance(model_input, dict):
        columns = [str(c) for c in model_input]
    if columns is not None:
        for name, convert in ((IMAGE_COLUMN, from_images), (PIXELS_COLUMN, from_pixels_b64)):
            if name in columns:
                if len(columns) != 1:
                    raise RequestError(f"send the {name!r} column alone, got columns {columns[:10]}")
                return convert(model_input[name])
    return to_pixels(model_input)

"""USPS postal digits, real handwriting from outside MNIST, read the way a user's files arrive.

The files (`zip.train.gz`, `zip.test.gz`, Hastie et al.'s distribution) hold one digit a line:
its label, then 256 values in [-1, 1] (-1 paper, 1 ink) of a 16x16 scan. Evaluation data only:
the network never fits on it; preprocessing choices are made on `zip.train`, figures reported
on `zip.test`.

Each digit is encoded as image files in several `RENDERINGS` (paper around it or cropped tight
to the ink, both polarities, a small JPEG, the 16 px scan itself) and brought to MNIST's form by
`images.prepare`, the code path of `predict`, the scoring server and the web page.
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from mnist_cnn.data import Split
from mnist_cnn.errors import DataError
from mnist_runtime import images

SIDE = 16
TEST, TRAIN = "zip.test", "zip.train"


def parse(text: str, source: str = "usps") -> tuple[np.ndarray, np.ndarray]:
    """USPS text to ink (N, 16, 16) float32 0-255 (0 paper) and labels (N,) uint8."""
    rows = [line.split() for line in text.splitlines() if line.strip()]
    if not rows:
        raise DataError(f"{source}: no digits in the file")
    bad = next((i for i, r in enumerate(rows) if len(r) != 1 + SIDE * SIDE), None)
    if bad is not None:
        raise DataError(
            f"{source}: line {bad + 1} has {len(rows[bad])} values, expected a label and {SIDE * SIDE} pixels"
        )
    try:
        values = np.array(rows, dtype=np.float32)
    except ValueError as exc:
        raise DataError(f"{source}: not numbers ({exc})") from None
    labels = values[:, 0]
    if not (np.all(labels == np.rint(labels)) and labels.min() >= 0 and labels.max() <= 9):
        raise DataError(f"{source}: labels must be digits 0-9")
    pixels = values[:, 1:]
    if pixels.min() < -1.0001 or pixels.max() > 1.0001:
        raise DataError(f"{source}: pixel values must lie in [-1, 1]")
    ink = np.clip((pixels + 1.0) * 127.5, 0.0, 255.0).reshape(-1, SIDE, SIDE)
    return ink.astype(np.float32), labels.astype(np.uint8)


def load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A `zip.*.gz` file as (ink, labels); a clear DataError when it is missing or corrupt."""
    try:
        with gzip.open(path, "rt", encoding="ascii") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise DataError(f"{path} is missing; run the download stage (dvc repro download)") from None
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is corrupt ({exc}); delete it and re-run the download stage") from None
    return parse(text, str(path))


# --- renderings: a digit as the file a user would send ---------------------------------------------


def _scaled(ink: np.ndarray, side: int) -> np.ndarray:
    """`ink` scaled (bicubic) so its longer side is `side` px."""
    h, w = ink.shape
    f = side / max(h, w)
    im = Image.fromarray(np.ascontiguousarray(ink, np.float32), mode="F")
    out = im.resize((max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(out, np.float32), 0.0, 255.0)


def _framed(ink: np.ndarray, digit: int, canvas: int) -> np.ndarray:
    out = np.zeros((canvas, canvas), np.float32)
    scaled = _scaled(ink, digit)
    y, x = (canvas - scaled.shape[0]) // 2, (canvas - scaled.shape[1]) // 2
    out[y : y + scaled.shape[0], x : x + scaled.shape[1]] = scaled
    return out


def _encode(ink: np.ndarray, dark_ink: bool, fmt: str = "PNG") -> bytes:
    gray = 255.0 - ink if dark_ink else ink
    im = Image.fromarray(np.rint(np.clip(gray, 0, 255)).astype(np.uint8), mode="L")
    buffer = io.BytesIO()
    im.save(buffer, format=fmt, **({"quality": 75} if fmt == "JPEG" else {}))
    return buffer.getvalue()


RENDERINGS: dict[str, Callable[[np.ndarray], bytes]] = {
    "framed": lambda ink: _encode(_framed(ink, 128, 192), dark_ink=True),  # paper around the digit
    "framed_light": lambda ink: _encode(_framed(ink, 128, 192), dark_ink=False),  # light ink on dark
    "tight": lambda ink: _encode(_scaled(ink, 128), dark_ink=True),  # filling the image, as a photo cropped to it
    "tight_light": lambda ink: _encode(_scaled(ink, 128), dark_ink=False),
    "jpeg": lambda ink: _encode(_framed(ink, 64, 96), dark_ink=True, fmt="JPEG"),  # small and lossy
    "scan16": lambda ink: _encode(ink, dark_ink=True),  # the 16x16 scan as it is
}


def render(ink: np.ndarray, name: str) -> bytes:
    """One digit's ink (16, 16) as the encoded file of rendering `name`."""
    return RENDERINGS[name](ink)


def prepared(ink: np.ndarray, labels: np.ndarray, names=tuple(RENDERINGS)) -> dict[str, Split]:
    """Every digit in every rendering, encoded and brought to MNIST's form by `images.prepare`.
    A digit the recipe finds no digit in is kept as a blank input (the model must still answer)."""
    out = {}
    for name in names:
        x = np.zeros((len(ink), images.SIZE, images.SIZE), np.uint8)
        for i, digit in enumerate(ink):
            try:
                x[i] = images.prepare(render(digit, name))
            except images.NoDigit:
                pass
        out[name] = Split(x, labels)
    return out

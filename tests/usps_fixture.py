"""USPS-format files that are not USPS: digits of the MNIST subset cropped to their ink and
resized to 16x16, written as `zip.train.gz` and `zip.test.gz` in the real files' text formats
(the real data may not be copied into the repository).

Each line is the digit, then 256 values in [-1, 1] row by row (-1 paper, 1 ink). The two real
files differ in layout and so do these: `zip.train` writes `6.0000 -1.0000 ... -1.0000 ` (four
decimals, a space before the newline), `zip.test` writes `9 -1 ... -0.948 0.29 1` (an integer
digit, at most three decimals, trailing zeros dropped).
"""

from __future__ import annotations

import gzip
import hashlib
import io
from pathlib import Path

import numpy as np

from mnist_cnn.atomic import atomic_path
from mnist_cnn.data import load_idx_pair

SUBSET = Path(__file__).resolve().parent / "fixtures" / "mnist-subset"
SIZE = 16


def to_usps(image: np.ndarray) -> np.ndarray:
    """A 28x28 uint8 MNIST digit as a 16x16 float image in [-1, 1]: its ink's bounding box,
    stretched bilinearly (sampled at pixel centres) to fill the square."""
    rows, cols = np.nonzero(image)
    box = image[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].astype(np.float64) / 255.0
    y = (np.arange(SIZE) + 0.5) * box.shape[0] / SIZE - 0.5
    x = (np.arange(SIZE) + 0.5) * box.shape[1] / SIZE - 0.5
    y0 = np.clip(np.floor(y).astype(int), 0, box.shape[0] - 1)
    x0 = np.clip(np.floor(x).astype(int), 0, box.shape[1] - 1)
    y1 = np.minimum(y0 + 1, box.shape[0] - 1)
    x1 = np.minimum(x0 + 1, box.shape[1] - 1)
    wy = np.clip(y - y0, 0, 1)[:, None]
    wx = np.clip(x - x0, 0, 1)[None, :]
    top = box[y0][:, x0] * (1 - wx) + box[y0][:, x1] * wx
    bottom = box[y1][:, x0] * (1 - wx) + box[y1][:, x1] * wx
    return np.clip((top * (1 - wy) + bottom * wy) * 2 - 1, -1, 1)


def _short(value: float) -> str:
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def zip_train_line(digit: int, image: np.ndarray) -> str:
    return " ".join([f"{digit:.4f}", *(f"{v:.4f}" for v in image.ravel())]) + " \n"


def zip_test_line(digit: int, image: np.ndarray) -> str:
    return " ".join([str(digit), *(_short(v) for v in image.ravel())]) + "\n"


def _write_gz(path: Path, content: bytes) -> None:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", fileobj=buf, mode="wb", mtime=0) as fh:
        fh.write(content)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def write_usps_fixture(directory: Path, n_train: int = 60, n_test: int = 60) -> dict[str, str]:
    """Write zip.train.gz (from the subset's first `n_train` training digits) and zip.test.gz
    (its first `n_test` t10k digits) into `directory`; the SHA-256 of each file's decompressed
    content by name (`zip.train`, `zip.test`), as params' data.usps.sha256 takes them."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sums = {}
    files = (("zip.train", "train", n_train, zip_train_line), ("zip.test", "t10k", n_test, zip_test_line))
    for name, prefix, count, line in files:
        split = load_idx_pair(SUBSET, prefix)
        if count > len(split.y):
            raise ValueError(f"{name}: the MNIST subset has only {len(split.y)} {prefix} digits, asked for {count}")
        content = "".join(
            line(int(d), to_usps(x)) for x, d in zip(split.x[:count], split.y[:count], strict=True)
        ).encode()
        _write_gz(directory / f"{name}.gz", content)
        sums[name] = hashlib.sha256(content).hexdigest()
    return sums

"""Digits people corrected on the web page ("that's wrong, it was 7"), kept to measure and
improve the model on real handwriting.

Stored as `<folder>/<label>/<sha256[:16]>.png`: grayscale PNGs re-encoded from the decoded
image (no metadata of the original kept), at most `MAX_SIDE` px, named by their content so a
repeat is stored once; the label is the folder name, the layout `keras.utils.
image_dataset_from_directory` reads. Nothing the client sends is used as a path."""

from __future__ import annotations

import hashlib
import io
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from mnist_cnn import images
from mnist_cnn.atomic import atomic_path
from mnist_cnn.data import Split
from mnist_cnn.errors import MnistCnnError

MAX_SIDE = 560  # px: ample for a 28x28 digit, small on disk
LABELS = tuple(str(d) for d in range(10))


class FeedbackFull(MnistCnnError):
    """The feedback folder holds its limit of images."""


class FeedbackStore:
    """Saves corrected digits under `folder`, at most `limit` images in all."""

    def __init__(self, folder: Path, limit: int = 5000):
        self.folder = Path(folder)
        self.limit = limit
        self._lock = threading.Lock()

    def files(self) -> list[Path]:
        return sorted(p for label in LABELS for p in (self.folder / label).glob("*.png") if not p.name.startswith("."))

    def save(self, image: bytes, label: int) -> Path:
        """Store `image` (PNG/JPEG/BMP bytes) as a `label`; ImageError if it holds no digit,
        FeedbackFull at the limit, ValueError for a label that is not a digit."""
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label <= 9:
            raise ValueError(f"label must be a digit 0-9, got {label!r}")
        gray = images.load_gray(image)
        images.mnist_style(gray)  # a digit is there (NoDigit otherwise)
        im = Image.fromarray(np.clip(np.rint(gray), 0, 255).astype(np.uint8), mode="L")
        im.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        im.save(buffer, format="PNG", optimize=True)
        png = buffer.getvalue()
        path = self.folder / str(label) / f"{hashlib.sha256(png).hexdigest()[:16]}.png"
        with self._lock:
            if path.exists():
                return path
            if len(self.files()) >= self.limit:
                raise FeedbackFull(
                    f"the feedback folder {self.folder} holds its limit of {self.limit} images; "
                    "fold them into training (README: Feedback) or raise --feedback-limit"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                tmp.write_bytes(png)
        return path


def load(folder: Path) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """The stored digits as MNIST-style (N, 28, 28) uint8 pixels, their labels and files."""
    paths = FeedbackStore(folder).files()
    x = np.empty((len(paths), images.SIZE, images.SIZE), np.uint8)
    for i, path in enumerate(paths):
        x[i] = images.prepare(path)
    y = np.array([int(p.parent.name) for p in paths], dtype=np.int64)
    return x, y, paths


def split(folder: Path, train: Split, use: str) -> tuple[Split, Split]:
    """The training split and the feedback split the preprocess stage writes: with `use` ==
    "evaluate" the feedback digits are a split of their own (the evaluate stage's
    `feedback_accuracy`); with "train" they join the training split and the feedback split is
    empty (a model is not measured on what it trained on). A missing folder is no feedback."""
    x, y, _ = load(folder) if Path(folder).is_dir() else (np.zeros((0, 28, 28), np.uint8), np.zeros(0), [])
    digits = Split(x, y.astype(np.uint8))
    if use != "train" or not len(digits):
        return train, digits
    empty = Split(x[:0], digits.y[:0])
    return Split(np.concatenate([train.x, digits.x]), np.concatenate([train.y, digits.y])), empty

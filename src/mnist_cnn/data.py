"""MNIST IDX parsing, the stratified train/validation split, and the processed arrays on disk.

Processed data is three uncompressed `.npz` files (`train`, `val`, `test`), each holding
`x` (N, 28, 28) uint8 pixels and `y` (N,) uint8 labels, so loading is a memory copy.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import zipfile
import zlib
from pathlib import Path

import numpy as np

from mnist_cnn.atomic import atomic_path, write_text
from mnist_cnn.errors import DataError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
SPLITS = ("train", "val", "test")
FEEDBACK = "feedback"  # digits people corrected on the web page, beside the splits (may be empty)
NUM_CLASSES = 10


@dataclasses.dataclass(frozen=True)
class Split:
    x: np.ndarray  # (N, 28, 28) uint8
    y: np.ndarray  # (N,) uint8

    def __len__(self) -> int:
        return len(self.y)

    def class_counts(self) -> list[int]:
        return np.bincount(self.y, minlength=NUM_CLASSES).tolist()


def _read_gz(path: Path) -> bytes:
    try:
        with gzip.open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise DataError(f"{path} is missing; run the download stage (dvc repro download)") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(
            f"{path} is corrupt: not a readable gzip file ({exc}); delete it and re-run the download stage"
        ) from None


def parse_idx_images(raw: bytes, source: str = "images") -> np.ndarray:
    if len(raw) < 16:
        raise DataError(f"{source}: too short for an IDX image header ({len(raw)} bytes)")
    magic, count, rows, cols = np.frombuffer(raw[:16], dtype=">u4")
    if magic != IMAGES_MAGIC:
        raise DataError(f"{source}: bad magic number {magic}, expected {IMAGES_MAGIC} (IDX3 uint8 images)")
    if (rows, cols) != (28, 28):
        raise DataError(f"{source}: images are {rows}x{cols}, expected 28x28")
    expected = 16 + int(count) * 28 * 28
    if len(raw) != expected:
        raise DataError(f"{source}: header says {count} images ({expected} bytes) but the file has {len(raw)} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(int(count), 28, 28).copy()


def parse_idx_labels(raw: bytes, source: str = "labels") -> np.ndarray:
    if len(raw) < 8:
        raise DataError(f"{source}: too short for an IDX label header ({len(raw)} bytes)")
    magic, count = np.frombuffer(raw[:8], dtype=">u4")
    if magic != LABELS_MAGIC:
        raise DataError(f"{source}: bad magic number {magic}, expected {LABELS_MAGIC} (IDX1 uint8 labels)")
    if len(raw) != 8 + int(count):
        raise DataError(f"{source}: header says {count} labels but the file has {len(raw) - 8}")
    labels = np.frombuffer(raw, dtype=np.uint8, offset=8).copy()
    if labels.size and labels.max() >= NUM_CLASSES:
        raise DataError(f"{source}: label {labels.max()} out of range 0-9")
    return labels


def _verify(raw: bytes, path: Path, expected: str | None) -> None:
    if expected is None:
        return
    actual = hashlib.sha256(raw).hexdigest()
    if actual != expected:
        raise DataError(
            f"{path}: content SHA-256 {actual[:12]}... differs from data.sha256 in params.yaml ({expected[:12]}...); "
            "the file changed after download: re-run `dvc repro -f download`"
        )


def load_idx_pair(raw_dir: Path, prefix: str, sha256: dict[str, str] | None = None) -> Split:
    """Read `<prefix>-images-idx3-ubyte.gz` and its labels from `raw_dir` and check they agree;
    with `sha256` (params' data.sha256), also check each file's decompressed content."""
    img_path = raw_dir / f"{prefix}-images-idx3-ubyte.gz"
    lbl_path = raw_dir / f"{prefix}-labels-idx1-ubyte.gz"
    raw_images, raw_labels = _read_gz(img_path), _read_gz(lbl_path)
    if sha256 is not None:
        _verify(raw_images, img_path, sha256.get(f"{prefix}-images-idx3-ubyte"))
        _verify(raw_labels, lbl_path, sha256.get(f"{prefix}-labels-idx1-ubyte"))
    x = parse_idx_images(raw_images, str(img_path))
    y = parse_idx_labels(raw_labels, str(lbl_path))
    if len(x) != len(y):
        raise DataError(f"{img_path.name} has {len(x)} images but {lbl_path.name} has {len(y)} labels")
    return Split(x, y)


def stratified_split(split: Split, val_fraction: float, seed: int) -> tuple[Split, Split]:
    """Seeded split keeping each digit's share equal in train and validation."""
    rng = np.random.default_rng(seed)
    val_idx: list[np.ndarray] = []
    for digit in range(NUM_CLASSES):
        idx = np.flatnonzero(split.y == digit)
        rng.shuffle(idx)
        val_idx.append(idx[: int(round(len(idx) * val_fraction))])
    val = np.sort(np.concatenate(val_idx))
    mask = np.ones(len(split), dtype=bool)
    mask[val] = False
    train = np.flatnonzero(mask)
    if len(val) == 0 or len(train) == 0:
        raise DataError(f"val_fraction {val_fraction} leaves an empty split of {len(split)} images")
    return Split(split.x[train], split.y[train]), Split(split.x[val], split.y[val])


def save_split(path: Path, split: Split) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, x=split.x, y=split.y)


MANIFEST = "SHA256SUMS"


def write_manifest(data_dir: Path) -> None:
    """`SHA256SUMS` of the split files, checked by `load_split` whenever it is present."""
    sums = processed_checksums(data_dir)
    write_text(data_dir / MANIFEST, "".join(f"{digest}  {name}.npz\n" for name, digest in sums.items()))


def _check_manifest(path: Path) -> None:
    manifest = path.parent / MANIFEST
    if not manifest.is_file():
        return
    expected = {}
    for line in manifest.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            expected[parts[1]] = parts[0]
    if path.name in expected and file_sha256(path) != expected[path.name]:
        raise DataError(
            f"{path} does not match its checksum in {manifest}: it changed after preprocessing; "
            "re-run the preprocess stage (dvc repro -f preprocess)"
        )


def load_split(data_dir: str | Path, name: str) -> Split:
    path = Path(data_dir) / f"{name}.npz"
    if path.is_file():
        _check_manifest(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            x, y = npz["x"], npz["y"]
    except FileNotFoundError:
        raise DataError(f"{path} is missing; run the preprocess stage (dvc repro preprocess)") from None
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path} is corrupt ({exc}); re-run the preprocess stage (dvc repro -f preprocess)") from None
    if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 28) or y.shape != (len(x),):
        raise DataError(f"{path} holds x{x.shape}/{x.dtype}, y{y.shape}; expected (N, 28, 28) uint8 and (N,)")
    if y.size and int(y.max()) >= NUM_CLASSES:
        raise DataError(f"{path}: label {int(y.max())} out of range 0-9")
    return Split(x, y)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def processed_checksums(data_dir: str | Path) -> dict[str, str]:
    names = [*SPLITS, *([FEEDBACK] if (Path(data_dir) / f"{FEEDBACK}.npz").is_file() else [])]
    return {name: file_sha256(Path(data_dir) / f"{name}.npz") for name in names}

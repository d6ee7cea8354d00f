"""IDX parsing, the stratified split and the processed .npz files."""

from __future__ import annotations

import gzip
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from mnist_cnn import data
from mnist_cnn.data import (
    Split,
    load_idx_pair,
    load_split,
    parse_idx_images,
    parse_idx_labels,
    save_split,
    stratified_split,
)
from mnist_cnn.errors import DataError


def idx_images(count: int, rows: int = 28, cols: int = 28, magic: int = 2051, body: bytes | None = None) -> bytes:
    if body is None:
        body = bytes((i * 7) % 256 for i in range(count * rows * cols))
    return struct.pack(">IIII", magic, count, rows, cols) + body


def idx_labels(labels: list[int], magic: int = 2049, count: int | None = None) -> bytes:
    return struct.pack(">II", magic, len(labels) if count is None else count) + bytes(labels)


# --- parse_idx_images -----------------------------------------------------------------------


def test_parse_idx_images_reads_pixels_in_row_major_order():
    raw = idx_images(3)
    x = parse_idx_images(raw)
    assert x.shape == (3, 28, 28) and x.dtype == np.uint8
    assert x[0, 0, 1] == 7 and x[1, 0, 0] == (784 * 7) % 256
    assert np.array_equal(x.reshape(-1), np.frombuffer(raw[16:], dtype=np.uint8))
    assert x.flags.writeable, "the array must own its memory, not view the bytes"


def test_parse_idx_images_accepts_zero_images():
    assert parse_idx_images(idx_images(0)).shape == (0, 28, 28)


def test_parse_idx_images_rejects_bad_magic():
    with pytest.raises(DataError, match=r"imgs: bad magic number 2049, expected 2051"):
        parse_idx_images(idx_images(1, magic=2049), "imgs")


def test_parse_idx_images_rejects_a_truncated_body():
    raw = idx_images(3)[:-100]
    with pytest.raises(DataError, match=r"header says 3 images \(2368 bytes\) but the file has 2268 bytes"):
        parse_idx_images(raw)


def test_parse_idx_images_rejects_trailing_bytes():
    with pytest.raises(DataError, match="header says 2 images"):
        parse_idx_images(idx_images(2) + b"\0")


def test_parse_idx_images_rejects_wrong_dimensions():
    with pytest.raises(DataError, match=r"images are 32x32, expected 28x28"):
        parse_idx_images(idx_images(1, rows=32, cols=32))
    with pytest.raises(DataError, match=r"images are 28x27, expected 28x28"):
        parse_idx_images(idx_images(1, cols=27))


def test_parse_idx_images_rejects_a_short_header():
    with pytest.raises(DataError, match=r"too short for an IDX image header \(10 bytes\)"):
        parse_idx_images(b"\0" * 10)


# --- parse_idx_labels -----------------------------------------------------------------------


def test_parse_idx_labels_reads_labels():
    y = parse_idx_labels(idx_labels([5, 0, 4, 1, 9]))
    assert y.dtype == np.uint8
    assert y.tolist() == [5, 0, 4, 1, 9]


def test_parse_idx_labels_rejects_bad_magic():
    with pytest.raises(DataError, match=r"lbls: bad magic number 2051, expected 2049"):
        parse_idx_labels(idx_labels([1, 2], magic=2051), "lbls")


def test_parse_idx_labels_rejects_a_truncated_body():
    with pytest.raises(DataError, match=r"header says 5 labels but the file has 3"):
        parse_idx_labels(idx_labels([1, 2, 3], count=5))


def test_parse_idx_labels_rejects_labels_above_9():
    with pytest.raises(DataError, match=r"label 10 out of range 0-9"):
        parse_idx_labels(idx_labels([1, 10, 3]))
    with pytest.raises(DataError, match=r"label 255 out of range 0-9"):
        parse_idx_labels(idx_labels([255]))


def test_parse_idx_labels_rejects_a_short_header():
    with pytest.raises(DataError, match=r"too short for an IDX label header \(4 bytes\)"):
        parse_idx_labels(b"\0\0\x08\x01")


# --- load_idx_pair --------------------------------------------------------------------------


def test_load_idx_pair_reads_the_subset(subset_dir):
    train = load_idx_pair(subset_dir, "train")
    test = load_idx_pair(subset_dir, "t10k")
    assert train.x.shape == (2000, 28, 28) and train.x.dtype == np.uint8
    assert train.y.shape == (2000,) and train.y.dtype == np.uint8
    assert test.x.shape == (500, 28, 28) and test.y.shape == (500,)
    # The first MNIST training and test digits are a 5 and a 7.
    assert train.y[0] == 5 and test.y[0] == 7
    assert sorted(set(train.y.tolist())) == list(range(10))
    assert train.x.max() == 255 and train.x.min() == 0
    assert len(train) == 2000 and sum(train.class_counts()) == 2000


@pytest.fixture
def raw_copy(subset_dir, tmp_path) -> Path:
    out = tmp_path / "raw"
    shutil.copytree(subset_dir, out)
    return out


def test_load_idx_pair_missing_file_is_a_data_error(raw_copy):
    (raw_copy / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz is missing"):
        load_idx_pair(raw_copy, "train")


def test_load_idx_pair_non_gzip_file_is_a_data_error(raw_copy):
    (raw_copy / "train-images-idx3-ubyte.gz").write_bytes(b"<html>not found</html>")
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz is corrupt: not a readable gzip file"):
        load_idx_pair(raw_copy, "train")


def test_load_idx_pair_truncated_gzip_is_a_data_error(raw_copy):
    path = raw_copy / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError, match="is corrupt"):
        load_idx_pair(raw_copy, "t10k")


def test_load_idx_pair_corrupt_deflate_stream_is_a_data_error(raw_copy):
    path = raw_copy / "train-labels-idx1-ubyte.gz"
    body = path.read_bytes()
    for i in range(10, len(body) - 8):
        flipped = body[:i] + bytes([body[i] ^ 0xFF]) + body[i + 1 :]
        try:
            gzip.decompress(flipped)
        except zlib.error:
            break
        except (OSError, EOFError):
            continue
    else:
        raise AssertionError("no offset gives a zlib.error")
    path.write_bytes(flipped)
    with pytest.raises(DataError, match="is corrupt"):
        load_idx_pair(raw_copy, "train")


def test_load_idx_pair_rejects_images_and_labels_that_disagree(raw_copy):
    shutil.copy(raw_copy / "t10k-labels-idx1-ubyte.gz", raw_copy / "train-labels-idx1-ubyte.gz")
    with pytest.raises(DataError, match=r"has 2000 images but train-labels-idx1-ubyte\.gz has 500 labels"):
        load_idx_pair(raw_copy, "train")


def test_load_idx_pair_names_the_file_with_bad_content(raw_copy):
    (raw_copy / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_labels([1, 2], magic=1234)))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz: bad magic number 1234"):
        load_idx_pair(raw_copy, "train")


# --- stratified_split -----------------------------------------------------------------------


def indexed_split(labels: np.ndarray) -> Split:
    """A split whose images encode their own index, so the split's choice can be read back."""
    n = len(labels)
    x = np.zeros((n, 28, 28), dtype=np.uint8)
    idx = np.arange(n)
    x[:, 0, 0] = idx % 256
    x[:, 0, 1] = idx // 256
    return Split(x, labels.astype(np.uint8))


def indices(split: Split) -> np.ndarray:
    return split.x[:, 0, 0].astype(int) + 256 * split.x[:, 0, 1].astype(int)


@pytest.fixture(scope="module")
def subset_train(subset_dir) -> Split:
    return load_idx_pair(subset_dir, "train")


@pytest.mark.parametrize("fraction", [0.1, 0.25])
def test_stratified_split_keeps_class_proportions(subset_train, fraction):
    train, val = stratified_split(subset_train, fraction, seed=42)
    totals = np.bincount(subset_train.y, minlength=10)
    val_counts = np.bincount(val.y, minlength=10)
    train_counts = np.bincount(train.y, minlength=10)
    for digit in range(10):
        assert abs(val_counts[digit] - round(fraction * totals[digit])) <= 1, digit
    assert np.array_equal(train_counts + val_counts, totals)
    assert len(train) + len(val) == len(subset_train)


def test_stratified_split_is_disjoint_complete_and_keeps_pairs_together():
    rng = np.random.default_rng(0)
    labels = rng.choice(10, size=1000, p=[0.3] + [0.7 / 9] * 9)  # unbalanced classes
    whole = indexed_split(labels)
    train, val = stratified_split(whole, 0.2, seed=1)
    ti, vi = indices(train), indices(val)
    assert set(ti).isdisjoint(vi)
    assert sorted(np.concatenate([ti, vi]).tolist()) == list(range(1000))
    assert np.array_equal(train.y, labels[ti]) and np.array_equal(val.y, labels[vi]), (
        "images and labels must stay paired"
    )
    for digit in range(10):
        n = int(np.sum(labels == digit))
        assert abs(int(np.sum(val.y == digit)) - round(0.2 * n)) <= 1


def test_stratified_split_is_deterministic_for_a_seed_and_varies_with_it():
    labels = np.repeat(np.arange(10), 50)
    whole = indexed_split(labels)
    a_train, a_val = stratified_split(whole, 0.1, seed=42)
    b_train, b_val = stratified_split(whole, 0.1, seed=42)
    c_train, c_val = stratified_split(whole, 0.1, seed=43)
    assert np.array_equal(indices(a_val), indices(b_val))
    assert np.array_equal(indices(a_train), indices(b_train))
    assert not np.array_equal(indices(a_val), indices(c_val))
    assert len(c_val) == len(a_val) == 50


def test_stratified_split_that_would_be_empty_is_a_data_error():
    whole = indexed_split(np.arange(10))  # one image per class
    with pytest.raises(DataError, match="leaves an empty split"):
        stratified_split(whole, 0.1, seed=0)


# --- save_split / load_split ----------------------------------------------------------------


def test_save_split_and_load_split_round_trip(subset_train, tmp_path):
    part = Split(subset_train.x[:100], subset_train.y[:100])
    save_split(tmp_path / "train.npz", part)
    back = load_split(tmp_path, "train")
    assert back.x.dtype == np.uint8 and back.y.dtype == np.uint8
    assert np.array_equal(back.x, part.x) and np.array_equal(back.y, part.y)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.npz"], "no temp files left behind"


def test_processed_checksums_cover_every_split(subset_train, tmp_path):
    part = Split(subset_train.x[:10], subset_train.y[:10])
    for name in data.SPLITS:
        save_split(tmp_path / f"{name}.npz", part)
    sums = data.processed_checksums(tmp_path)
    assert set(sums) == {"train", "val", "test"}
    assert len(set(sums.values())) == 1 and len(sums["train"]) == 64


def test_load_split_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=r"val\.npz is missing"):
        load_split(tmp_path, "val")


def test_load_split_garbage_file_is_a_data_error(tmp_path):
    (tmp_path / "train.npz").write_bytes(b"this is not an npz file" * 10)
    with pytest.raises(DataError, match=r"train\.npz is corrupt"):
        load_split(tmp_path, "train")


def _saved_npz(tmp_path: Path) -> bytes:
    save_split(tmp_path / "train.npz", Split(np.zeros((20, 28, 28), np.uint8), np.arange(20, dtype=np.uint8) % 10))
    return (tmp_path / "train.npz").read_bytes()


def _corrupt(raw: bytes, how: str) -> bytes:
    if how == "truncated":
        return raw[: len(raw) // 2]
    if how == "empty":
        return b""
    flipped = bytearray(raw)  # one byte of the pixel data: the zip member's CRC no longer matches
    flipped[300] ^= 0xFF
    return bytes(flipped)


@pytest.mark.parametrize("how", ["truncated", "empty", "bad-crc"])
def test_load_split_damaged_npz_is_a_data_error(tmp_path, how):
    raw = _saved_npz(tmp_path)
    (tmp_path / "train.npz").write_bytes(_corrupt(raw, how))
    with pytest.raises(DataError, match=r"train\.npz is corrupt"):
        load_split(tmp_path, "train")


def test_load_split_npz_without_labels_is_a_data_error(tmp_path):
    with open(tmp_path / "train.npz", "wb") as fh:
        np.savez(fh, x=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DataError, match=r"train\.npz is corrupt"):
        load_split(tmp_path, "train")


def test_load_split_rejects_wrong_shapes_and_labels(tmp_path):
    with open(tmp_path / "a.npz", "wb") as fh:
        np.savez(fh, x=np.zeros((2, 28, 28), np.float32), y=np.zeros(2, np.uint8))
    with pytest.raises(DataError, match=r"expected \(N, 28, 28\) uint8"):
        load_split(tmp_path, "a")
    with open(tmp_path / "b.npz", "wb") as fh:
        np.savez(fh, x=np.zeros((2, 28, 28), np.uint8), y=np.zeros(3, np.uint8))
    with pytest.raises(DataError, match=r"expected \(N, 28, 28\) uint8 and \(N,\)"):
        load_split(tmp_path, "b")
    with open(tmp_path / "c.npz", "wb") as fh:
        np.savez(fh, x=np.zeros((2, 28, 28), np.uint8), y=np.array([1, 12], np.uint8))
    with pytest.raises(DataError, match=r"label 12 out of range 0-9"):
        load_split(tmp_path, "c")

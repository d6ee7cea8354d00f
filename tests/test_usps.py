"""USPS parsing and renderings, and tight crops: a digit filling its image keeps its strokes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from mnist_cnn import usps
from mnist_cnn.errors import DataError
from mnist_runtime import images


@pytest.fixture(scope="module")
def digits(usps_subset_dir):
    return usps.load(usps_subset_dir / "zip.test.gz")


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.astype(float).ravel(), b.astype(float).ravel())[0, 1])


def test_both_file_layouts_parse_to_ink_and_labels(usps_subset_dir):
    for name in (usps.TRAIN, usps.TEST):
        ink, labels = usps.load(usps_subset_dir / f"{name}.gz")
        assert ink.shape == (len(labels), 16, 16) and ink.dtype == np.float32
        assert 0 <= ink.min() and ink.max() <= 255 and ink.max() > 200
        assert set(labels.tolist()) <= set(range(10)) and len(set(labels.tolist())) > 5


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "no digits"),
        ("3 " + "-1 " * 255, "has 256 values"),
        ("12 " + "-1 " * 256, "labels must be digits"),
        ("3 " + "-1 " * 255 + "4", "must lie in"),
        ("3 " + "x " * 256, "not numbers"),
    ],
)
def test_a_malformed_file_is_a_clear_error(text, problem):
    with pytest.raises(DataError, match=problem):
        usps.parse(text, "zip.test")


def test_a_missing_file_says_to_run_the_download_stage(tmp_path):
    with pytest.raises(DataError, match="run the download stage"):
        usps.load(tmp_path / "zip.test.gz")


def test_every_rendering_is_an_image_file_as_a_user_would_send_it(digits):
    ink = digits[0][0]
    expected = {
        "framed": ("PNG", (192, 192)),
        "framed_light": ("PNG", (192, 192)),
        "tight": ("PNG", (128, 128)),
        "tight_light": ("PNG", (128, 128)),
        "jpeg": ("JPEG", (96, 96)),
        "scan16": ("PNG", (16, 16)),
    }
    assert set(usps.RENDERINGS) == set(expected)
    for name, (fmt, size) in expected.items():
        im = Image.open(io.BytesIO(usps.render(ink, name)))
        assert (im.format, im.size) == (fmt, size), name
        gray = np.asarray(im.convert("L"), float)
        light_paper = gray[0, 0] > 127 if name not in ("tight", "tight_light", "scan16") else np.median(gray) > 127
        assert light_paper == (not name.endswith("_light")), name


@pytest.mark.parametrize("name", ["tight", "tight_light", "scan16"])
def test_a_digit_filling_its_image_keeps_its_strokes(digits, name):
    """Cropped tight to the digit (its strokes touch the image's edges), at 128 px or as the 16 px
    scan, either polarity: the 28x28 input matches the one made with paper around the digit. The
    old clean-up removed strokes touching the edge as page edges or ruled lines."""
    ink, labels = digits
    scores = [_corr(images.prepare(usps.render(d, "framed")), images.prepare(usps.render(d, name))) for d in ink[:40]]
    assert np.median(scores) >= 0.9 and np.mean(np.array(scores) >= 0.75) >= 0.95, np.round(scores, 2)


def test_a_tightly_cropped_zero_keeps_both_sides():
    """The issue's example: a 0 cropped to its ink lost its sides and was read as a 1."""
    size = 128
    yy, xx = np.mgrid[0:size, 0:size]
    ring = np.abs(np.hypot((yy - 63.5) / 62, (xx - 63.5) / 44) - 0.9) < 0.1  # an oval touching all four sides
    buffer = io.BytesIO()
    Image.fromarray(np.where(ring, 30, 235).astype(np.uint8)).save(buffer, format="PNG")
    seen = images.prepare(buffer.getvalue()) > 64
    cols = np.flatnonzero(seen.any(axis=0))
    assert cols[-1] - cols[0] >= 10  # both sides are there, not a 1-wide stroke
    assert seen[:, 14].sum() <= 8  # the middle column crosses the ring twice, it is not filled


def test_prepared_renderings_hold_every_digit_once_per_rendering(digits):
    ink, labels = digits
    out = usps.prepared(ink[:5], labels[:5], ("framed", "scan16"))
    assert list(out) == ["framed", "scan16"]
    for split in out.values():
        assert split.x.shape == (5, 28, 28) and split.x.dtype == np.uint8
        assert np.array_equal(split.y, labels[:5]) and (split.x.reshape(5, -1).max(axis=1) == 255).all()

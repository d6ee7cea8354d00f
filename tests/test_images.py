"""Real images to MNIST's form (`mnist_runtime.images`): decoding, the MNIST recipe, and rejections."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from digit_images import make_set
from mnist_runtime import images
from mnist_runtime.images import ImageError
from mnist_runtime.paper import border


def seven(side: int = 200, box=(0.3, 0.2, 0.6, 0.8), width: int = 12, ink: int = 0, paper: int = 255) -> Image.Image:
    """A '7' of `width` px pen, ink on paper, in the given fractional box of a square 'L' image."""
    im = Image.new("L", (side, side), paper)
    x0, y0, x1, y1 = (v * side for v in box)
    ImageDraw.Draw(im).line([(x0, y0), (x1, y0), (x0 + (x1 - x0) * 0.35, y1)], fill=ink, width=width)
    return im


def encode(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def com(x: np.ndarray) -> tuple[float, float]:
    x = x.astype(float)
    idx = np.arange(28)
    return float((x.sum(1) * idx).sum() / x.sum()), float((x.sum(0) * idx).sum() / x.sum())


def bbox(x: np.ndarray, level: int = 64) -> tuple[int, int]:
    rows, cols = np.flatnonzero((x > level).any(1)), np.flatnonzero((x > level).any(0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


# --- the recipe -----------------------------------------------------------------------------


def test_output_is_mnist_shaped_light_ink_on_black_centred_by_mass():
    x = images.prepare(encode(seven()))
    assert x.shape == (28, 28) and x.dtype == np.uint8
    assert x.max() == 255 and x[[0, -1]].max() < 16 and x[:, [0, -1]].max() < 16, "ink light, paper black"
    assert (x == 0).mean() > 0.6, "paper exactly black, as in MNIST"
    assert max(bbox(x)) in (19, 20, 21), "longer side scaled to 20 px"
    cy, cx = com(x)
    assert abs(cy - 14) <= 0.75 and abs(cx - 14) <= 0.75, (cy, cx)


def test_aspect_ratio_is_kept():
    tall = images.prepare(encode(seven(box=(0.4, 0.05, 0.55, 0.95), width=6)))
    h, w = bbox(tall)
    assert h >= 19 and w <= 8, (h, w)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: seven(), id="dark-on-light"),
        pytest.param(lambda: seven(ink=255, paper=0), id="light-on-dark"),
        pytest.param(lambda: seven(ink=60, paper=190), id="grey-pencil-on-grey-paper"),
        pytest.param(lambda: seven(side=1000, width=60), id="large"),
        pytest.param(lambda: seven(side=24, width=2), id="smaller-than-mnist"),
        pytest.param(lambda: seven(box=(0.02, 0.0, 0.35, 0.4)), id="off-centre-touching-border"),
        pytest.param(lambda: seven(side=800, width=2), id="hairline-on-large-image"),
    ],
)
def test_polarity_size_and_position_do_not_change_the_result_much(make):
    reference = images.prepare(encode(seven())).astype(float)
    x = images.prepare(encode(make())).astype(float)
    assert max(bbox(x.astype(np.uint8))) in (19, 20, 21)
    cy, cx = com(x)
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1
    corr = np.corrcoef(reference.ravel(), x.ravel())[0, 1]
    assert corr > 0.6, f"correlation with the reference rendering {corr:.2f}"


@pytest.mark.parametrize(
    "mode",
    ["L", "RGB", "RGBA", "P", "LA", "1", "I;16", "CMYK"],
)
def test_image_modes(mode):
    im = seven()
    if mode == "I;16":
        im = Image.fromarray(np.asarray(im).astype(np.uint16) * 257)
    elif mode == "CMYK":
        im = im.convert("CMYK")
    else:
        im = im.convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    x = images.prepare(encode(im, fmt))
    assert x.max() == 255 and x[0].max() == 0
    assert np.corrcoef(x.ravel(), images.prepare(encode(seven())).ravel())[0, 1] > 0.8


@pytest.mark.parametrize("ink", [0, 255], ids=["dark-ink", "light-ink"])
def test_transparent_background_is_laid_on_paper_that_contrasts_with_the_ink(ink):
    alpha = np.asarray(seven(ink=255, paper=0))
    rgba = np.dstack([np.full(alpha.shape + (3,), ink, np.uint8), alpha])
    x = images.prepare(encode(Image.fromarray(rgba, "RGBA")))
    assert np.corrcoef(x.ravel(), images.prepare(encode(seven())).ravel())[0, 1] > 0.9


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP"])
def test_formats_and_base64_variants(fmt):
    data = encode(seven().convert("RGB"), fmt)
    expected = images.prepare(data)
    text = b64(data)
    for variant in (
        text,
        f"data:image/{fmt.lower()};base64,{text}",
        text.rstrip("="),
        "\n".join([text[:40], text[40:]]),
    ):
        assert np.array_equal(images.prepare(variant), expected)
    urlsafe = base64.urlsafe_b64encode(data).decode()
    assert np.array_equal(images.prepare(urlsafe), expected)


def test_plain_resize_is_the_naive_squeeze():
    x = images.plain_resize(images.load_gray(encode(seven())))
    assert x.shape == (28, 28) and x.dtype == np.uint8
    assert x[0, 0] > 200, "no inversion: the paper stays white"


def test_prepare_many_names_the_bad_image():
    good = b64(encode(seven()))
    assert images.prepare_many([good, good]).shape == (2, 28, 28)
    with pytest.raises(ImageError, match="^image 1: "):
        images.prepare_many([good, "aGVsbG8="])


def test_generated_custom_digits_all_prepare():
    samples = make_set(per_digit=3, seed=5)
    assert {s.digit for s in samples} == set(range(10))
    assert {s.name.rsplit(".", 1)[1] for s in samples} == {"png", "jpg", "bmp"}
    assert {s.polarity for s in samples} == {"dark-on-light", "light-on-dark"}
    for s in samples:
        x = images.prepare(s.data)
        assert x.max() == 255 and max(bbox(x)) in (19, 20, 21), s.name


# --- rejected input -------------------------------------------------------------------------


def png_with_size(width: int, height: int) -> bytes:
    """A valid PNG header claiming a large size, with a tiny (truncated) body: decoding must not start."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("source", "message"),
    [
        pytest.param("not base64!", "not valid base64", id="bad-base64"),
        pytest.param("", "empty string", id="empty-string"),
        pytest.param(b64(b"hello, world"), "not a PNG/JPEG/BMP image", id="not-an-image"),
        pytest.param(encode(seven())[:200], "cannot decode image", id="truncated-png"),
        pytest.param(encode(seven(), "GIF"), "not a PNG/JPEG/BMP image", id="gif"),
        pytest.param(png_with_size(8000, 8000), "over the limit", id="64-megapixels"),
        pytest.param(png_with_size(10000, 10000), "over the limit", id="pillow-bomb-warning-range"),
        pytest.param(png_with_size(20000, 20000), "over the limit", id="decompression-bomb"),
        pytest.param(png_with_size(100_000, 1), "over the limit|cannot decode", id="very-wide"),
        pytest.param(encode(Image.new("L", (50, 50), 255)), "blank", id="blank-white"),
        pytest.param(encode(Image.new("L", (50, 50), 0)), "blank", id="blank-black"),
        pytest.param(b"", "empty image file", id="empty-bytes"),
        pytest.param(12, "expected image bytes", id="a-number"),
        pytest.param("A" * (images.MAX_BYTES * 2), "over the limit", id="huge-base64"),
    ],
)
def test_bad_images_raise_image_error_naming_the_problem(source, message):
    with pytest.raises(ImageError, match=message):
        images.prepare(source)


def test_missing_file_is_an_image_error(tmp_path):
    with pytest.raises(ImageError, match="cannot read the file"):
        images.prepare(tmp_path / "missing.png")


@pytest.mark.parametrize("condition", ["photo", "ruled", "pencil", "scan"])
def test_photos_and_scans_of_paper_come_out_like_the_same_digit_drawn_cleanly(condition):
    """Uneven light and shadows, ruled lines, faint pencil, scanner specks and edges: the 28x28
    digit matches the one made from the clean drawing (median correlation over ten digits)."""
    from digit_images import _draw_mask, _photo

    rng = np.random.default_rng(11)
    scores = []
    for digit in range(10):
        mask = _draw_mask(digit, rng, 400)
        buffer = io.BytesIO()
        mask.save(buffer, format="PNG")
        clean = images.prepare(buffer.getvalue()).astype(float)
        seen = images.prepare(_photo(mask, rng, condition)).astype(float)
        scores.append(np.corrcoef(clean.ravel(), seen.ravel())[0, 1])
    assert np.median(scores) >= 0.9, np.round(scores, 3)


@pytest.mark.parametrize("shadowed", [0.6, 0.9])
def test_a_shadow_over_most_of_the_border_does_not_flip_the_ink(shadowed):
    """Dark ink on a sheet mostly in shadow: the border's median is dark, yet the ink is still
    read as dark (the old rule, border median against mid-grey, inverted the image)."""
    from digit_images import _draw_mask

    mask = _draw_mask(4, np.random.default_rng(3), 400)
    a = np.asarray(mask, dtype=np.float64) / 255.0
    paper = np.full(a.shape, 200.0)
    xx = np.mgrid[0 : a.shape[0], 0 : a.shape[1]][1] / a.shape[1]
    paper[xx < shadowed] = 95.0  # the phone's shadow over the left of the sheet, a sharp edge
    photo = paper + (0.3 * paper - paper) * a  # the ink darkens whatever light falls on it
    assert np.median(border(photo)) < 127.5
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    clean = images.prepare(buffer.getvalue()).astype(float)
    seen = images.prepare(encode(Image.fromarray(photo.astype(np.uint8), "L"))).astype(float)
    assert np.corrcoef(clean.ravel(), seen.ravel())[0, 1] >= 0.9

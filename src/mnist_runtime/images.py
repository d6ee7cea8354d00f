"""People's own digit images brought to MNIST's form, the way MNIST itself was made.

One code path for the served model, the `predict` CLI and the tests:

1. decode PNG, JPEG or BMP (base64 text or bytes), any size and mode, guarded against
   decompression bombs (`MAX_PIXELS`, `MAX_BYTES`);
2. grayscale; transparent images are laid on the paper colour that contrasts with their ink;
3. ink light on dark (which way round from the border: its lighter part, or its median when
   strokes touch it as in a tight crop), and photos and scans of paper cleaned (`paper`): uneven
   light and shadows divided out; ruled lines and page or scanner edges removed unless they are
   the strokes of a tightly cropped digit; specks, shadow wedges and other marks apart from the
   digit removed;
4. stretch contrast so the paper is 0 and the darkest ink 255; crop to the ink's bounding box;
5. thicken strokes too thin to survive the downscale (a hairline at 1000 px would vanish at 20);
6. scale the longer side to 20 px keeping the aspect ratio (antialiased);
7. paste into 28x28 with the centre of mass at the centre (clipped to stay inside).

`plain_resize` is the naive baseline (grayscale, squeeze to 28x28) kept for comparison.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from mnist_runtime import paper
from mnist_runtime.errors import MnistCnnError
from mnist_runtime.paper import INK_LEVEL, MIN_CONTRAST

MAX_BYTES = 20 * 1024 * 1024  # one encoded image
MAX_PIXELS = 6000 * 6000  # decoded size; Pillow's own bomb limit is larger
FORMATS = ("PNG", "JPEG", "BMP")
BOX = 20  # MNIST's digits fit a 20x20 box ...
SIZE = 28  # ... inside a 28x28 field
CENTRE = 14.0  # MNIST's mean centre of mass (0-based pixel index), rows and columns
WORK_SIDE = 1024  # larger images are box-reduced first: faster, and the box is only 20 px
MIN_STROKE = 1.6  # px: thinner strokes, once at 20 px scale, are thickened before scaling

_DATA_URL = re.compile(r"^data:image/[a-zA-Z0-9.+-]+;base64,")


class ImageError(MnistCnnError):
    """An image that cannot be decoded or holds no digit."""


class ImageTooLarge(ImageError):
    """Over MAX_BYTES encoded or MAX_PIXELS decoded."""


class NoDigit(ImageError):
    """A decodable image that is blank or has almost no contrast."""


def decode_base64(text: str) -> bytes:
    """Base64 (standard or URL-safe, a `data:image/...;base64,` prefix allowed) to bytes."""
    if not isinstance(text, str):
        raise ImageError(f"expected base64 text, got {type(text).__name__}")
    if len(text) > MAX_BYTES * 4 // 3 + 1024:
        raise ImageTooLarge(f"encoded image is {len(text)} characters, over the limit of {MAX_BYTES} bytes")
    text = _DATA_URL.sub("", text.strip(), count=1)
    text = "".join(text.split())
    if not text:
        raise ImageError("empty string where a base64 image was expected")
    try:
        alt = b"-_" if ("-" in text or "_" in text) else None
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=alt, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError(f"not valid base64 ({exc})") from None


def open_image(data: bytes):
    """Decode PNG/JPEG/BMP bytes to a loaded PIL image; too large or broken input is an ImageError."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ImageError(f"expected image bytes, got {type(data).__name__}")
    if len(data) > MAX_BYTES:
        raise ImageTooLarge(f"image file is {len(data)} bytes, over the limit of {MAX_BYTES}")
    if not data:
        raise ImageError("empty image file")
    # Pillow warns above Image.MAX_IMAGE_PIXELS and raises above twice that, at open; the
    # size check below rejects everything over MAX_PIXELS (smaller) before any pixel is decoded.
    try:
        im = Image.open(io.BytesIO(data), formats=FORMATS)
        w, h = im.size
        if w < 1 or h < 1 or w * h > MAX_PIXELS:
            raise ImageTooLarge(f"image of {w}x{h} pixels is over the limit of {MAX_PIXELS} pixels")
        if im.format == "JPEG":  # decode at a reduced scale when the image is large
            im.draft(im.mode, (min(w, WORK_SIDE), min(h, WORK_SIDE)))
        im.load()
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"image is over the limit of {MAX_PIXELS} pixels ({exc})") from None
    except Image.UnidentifiedImageError:
        raise ImageError(f"not a {'/'.join(FORMATS)} image") from None
    except Exception as exc:  # truncated or corrupt files raise OSError, SyntaxError, ValueError, ...
        raise ImageError(f"cannot decode image ({type(exc).__name__}: {exc})") from None
    return im


def to_gray(im) -> np.ndarray:
    """A PIL image as (H, W) float32 grey levels 0-255; transparency laid on contrasting paper."""
    if getattr(im, "n_frames", 1) > 1:
        im.seek(0)
    alpha_mode = _has_alpha(im)
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        im = im.convert("F")
    elif alpha_mode:
        im = (im.convert("RGBA") if im.mode == "P" else im).convert("LA")
    elif im.mode != "L":
        im = im.convert("L")
    if max(im.size) > WORK_SIDE:
        im = im.reduce(-(-max(im.size) // WORK_SIDE))
    arr = np.asarray(im, dtype=np.float32)
    if im.mode == "F":
        top = float(arr.max())
        return arr * (255.0 / top) if top > 255 else arr
    if not alpha_mode:
        return arr
    lum, alpha = arr[..., 0], arr[..., 1] / 255.0
    if float(alpha.min()) >= 0.5:  # essentially opaque: the alpha channel carries nothing
        return lum
    weight = float(alpha.sum())
    ink_is_light = weight > 0 and float((lum * alpha).sum()) / weight > 127.5
    paper = 0.0 if ink_is_light else 255.0
    return lum * alpha + paper * (1.0 - alpha)


def _has_alpha(im) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (im.mode == "P" and "transparency" in im.info)


def load_gray(source: bytes | str | Path) -> np.ndarray:
    """Bytes, base64 text or a file path to (H, W) float32 grey levels."""
    if isinstance(source, Path):
        try:
            data = source.read_bytes()
        except OSError as exc:
            raise ImageError(f"cannot read the file ({exc.strerror or exc})") from None
    elif isinstance(source, str):
        data = decode_base64(source)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        raise ImageError(f"expected image bytes, base64 text or a path, got {type(source).__name__}")
    return to_gray(open_image(data))


def _clean_paper(gray: np.ndarray, flip: bool = False) -> np.ndarray:
    """Step 3 of the recipe (`paper`): ink light on dark, the paper's light, lines and marks removed."""
    ink = paper.light_ink(gray, flip)
    if float(ink.max()) < MIN_CONTRAST:
        raise NoDigit("no digit found: the image is blank or has almost no contrast")
    return paper.only_the_digit(paper.without_lines(ink))


# --- the MNIST recipe ------------------------------------------------------------------------------


def _ink_up(gray: np.ndarray) -> np.ndarray:
    """Light ink on dark paper (from `_clean_paper`) stretched: paper at 0, strongest ink at 255."""
    border = paper.border(gray)
    median = float(np.median(border))
    floor = median + 3.0 * 1.4826 * float(np.median(np.abs(border - median)))  # above the paper's grain
    ink = float(gray.max())
    if ink - floor < MIN_CONTRAST:
        raise NoDigit("no digit found: the image is blank or has almost no contrast")
    return np.clip((gray - floor) * (255.0 / (ink - floor)), 0.0, 255.0)


def _thicken(gray: np.ndarray, mask: np.ndarray, scale: float) -> np.ndarray:
    """Dilate strokes that would be thinner than MIN_STROKE px after scaling by `scale`."""
    width = paper.stroke_width(mask)
    if width * scale >= MIN_STROKE:
        return gray
    grow = int(np.ceil(MIN_STROKE / scale - width))
    return ndimage.maximum_filter(gray, size=grow + 1)  # separable: cheap even for wide footprints


def _crop(gray: np.ndarray, margin: int) -> tuple[np.ndarray, np.ndarray, float]:
    """The ink's bounding box plus `margin` pixels, its ink mask, and the scale to BOX px."""
    mask = gray > INK_LEVEL * 255.0
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    scale = BOX / max(bottom - top, right - left)
    m = margin if margin >= 0 else int(np.ceil(1.0 / scale))  # about one output pixel
    box = (slice(max(0, top - m), bottom + m), slice(max(0, left - m), right + m))
    return gray[box], mask[box], scale


def _resize(gray: np.ndarray, width: int, height: int) -> np.ndarray:
    im = Image.fromarray(np.ascontiguousarray(gray, dtype=np.float32), mode="F")
    return np.asarray(im.resize((width, height), Image.Resampling.LANCZOS, reducing_gap=2.0), dtype=np.float32)


def mnist_style(gray: np.ndarray) -> np.ndarray:
    """(H, W) grey levels to a (28, 28) uint8 digit, MNIST's recipe (see the module docstring)."""
    gray = np.asarray(gray, dtype=np.float32)
    try:
        gray = _ink_up(_clean_paper(gray))
    except NoDigit:  # a bold digit filling its image can be read the wrong way round: try the other
        gray = _ink_up(_clean_paper(gray, flip=True))
    _, mask, scale = _crop(gray, 0)
    thick = _thicken(gray, mask, scale)
    if thick is not gray:  # thicker strokes reach further: box again
        _, mask, scale = _crop(thick, 0)
    gray, _, scale = _crop(thick, -1)  # keep the antialiased edge of the strokes
    h, w = gray.shape
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    small = np.clip(_resize(gray, new_w, new_h), 0.0, 255.0)
    peak = float(small.max())
    if peak <= 0:
        raise NoDigit("no digit found: the image is blank or has almost no contrast")
    small *= 255.0 / peak
    small[small < 2.0] = 0.0  # the resampling filter's faint ringing
    # the crop margin may make the patch a little larger than the field: trim it symmetrically
    if new_h > SIZE or new_w > SIZE:
        y0, x0 = max(0, (new_h - SIZE) // 2), max(0, (new_w - SIZE) // 2)
        small = small[y0 : y0 + SIZE, x0 : x0 + SIZE]
        new_h, new_w = small.shape
    total = float(small.sum())
    cy = float((small.sum(axis=1) * np.arange(new_h)).sum()) / total
    cx = float((small.sum(axis=0) * np.arange(new_w)).sum()) / total
    y = int(np.clip(round(CENTRE - cy), 0, SIZE - new_h))
    x = int(np.clip(round(CENTRE - cx), 0, SIZE - new_w))
    out = np.zeros((SIZE, SIZE), np.float32)
    out[y : y + new_h, x : x + new_w] = small
    return np.rint(out).astype(np.uint8)


def plain_resize(gray: np.ndarray) -> np.ndarray:
    """The naive baseline: the grey image squeezed to 28x28 (antialiased), nothing else."""
    return np.rint(np.clip(_resize(np.asarray(gray, dtype=np.float32), SIZE, SIZE), 0, 255)).astype(np.uint8)


def prepare(source: bytes | str | Path) -> np.ndarray:
    """Bytes, base64 text or a path to the (28, 28) uint8 digit the model sees."""
    return mnist_style(load_gray(source))


def prepare_many(sources) -> np.ndarray:
    """Many images to (N, 28, 28) uint8; an error names the image's position."""
    out = np.empty((len(sources), SIZE, SIZE), np.uint8)
    for i, source in enumerate(sources):
        try:
            out[i] = prepare(source)
        except ImageError as exc:
            raise ImageError(f"image {i}: {exc}") from None
    return out

"""Digit images from outside MNIST, made on the spot: hand-drawn-like strokes and font digits in
varied stroke widths, sizes, positions, polarities, formats (PNG, JPEG, BMP) and modes (L, RGB,
RGBA). Used by the tests and by `benchmarks/custom_digits.py`."""

from __future__ import annotations

import dataclasses
import io
import math
from pathlib import Path

import numpy as np

# Pen strokes per digit in a unit box (x right, y down), as polylines; arcs are sampled.


def _arc(cx, cy, rx, ry, start, end, n=24):
    t = np.radians(np.linspace(start, end, n))
    return list(zip(cx + rx * np.cos(t), cy + ry * np.sin(t), strict=True))


STROKES = {
    0: [_arc(0.5, 0.5, 0.32, 0.46, -90, 270, 40)],
    1: [[(0.38, 0.2), (0.55, 0.02), (0.55, 0.98)]],
    2: [_arc(0.5, 0.3, 0.32, 0.27, 200, 370) + [(0.72, 0.52), (0.18, 0.98), (0.85, 0.98)]],
    3: [_arc(0.48, 0.27, 0.3, 0.24, 210, 450)[:-3] + _arc(0.48, 0.73, 0.34, 0.25, -90, 150)],
    4: [[(0.62, 0.02), (0.12, 0.68), (0.9, 0.68)], [(0.66, 0.3), (0.66, 0.98)]],
    5: [[(0.82, 0.02), (0.28, 0.02), (0.22, 0.45)] + _arc(0.5, 0.68, 0.32, 0.3, -130, 150)],
    6: [_arc(0.52, 0.45, 0.32, 0.44, -60, -180, 14) + _arc(0.5, 0.72, 0.3, 0.26, 180, 540, 36)],
    7: [[(0.12, 0.04), (0.88, 0.04), (0.4, 0.98)]],
    8: [_arc(0.5, 0.26, 0.26, 0.23, 90, 450, 36), _arc(0.5, 0.73, 0.31, 0.25, -90, 270, 36)],
    9: [_arc(0.5, 0.3, 0.3, 0.27, 0, 360, 36), [(0.8, 0.3), (0.76, 0.98)]],
}

FONT_NAMES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSansMono.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralItalic.ttf",
    "cmss10.ttf",
    "cmr10.ttf",
)


def font_paths() -> list[Path]:
    """TrueType fonts shipped with matplotlib (present wherever the project is installed)."""
    import matplotlib

    ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return [ttf / name for name in FONT_NAMES if (ttf / name).is_file()]


@dataclasses.dataclass(frozen=True)
class Sample:
    name: str  # e.g. "drawn-3-017.png"
    digit: int
    data: bytes  # the encoded file
    kind: str  # "drawn" or "font"
    polarity: str  # "dark-on-light" or "light-on-dark"


def _draw_mask(digit: int, rng: np.random.Generator, side: int):
    """The digit as a white-on-black 'L' mask of side x side pixels, in a random box and pen."""
    from PIL import Image, ImageDraw

    im = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(im)
    height = side * rng.uniform(0.3, 0.85)
    width = height * rng.uniform(0.55, 0.8)
    x0 = rng.uniform(0.05 * side, side - width - 0.05 * side)
    y0 = rng.uniform(0.05 * side, side - height - 0.05 * side)
    angle = math.radians(rng.uniform(-12, 12))
    shear = rng.uniform(-0.25, 0.1)
    pen = max(1, int(round(height * rng.uniform(0.03, 0.16))))
    for stroke in STROKES[digit]:
        pts = []
        for u, v in stroke:
            u, v = u + rng.normal(0, 0.012), v + rng.normal(0, 0.012)
            u = u + shear * (v - 0.5)
            du, dv = (u - 0.5) * width, (v - 0.5) * height
            x = x0 + width / 2 + du * math.cos(angle) - dv * math.sin(angle)
            y = y0 + height / 2 + du * math.sin(angle) + dv * math.cos(angle)
            pts.append((x, y))
        draw.line(pts, fill=255, width=pen, joint="curve")
        r = pen / 2
        for x, y in (pts[0], pts[-1]):
            draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    return im


def _font_mask(digit: int, rng: np.random.Generator, side: int, fonts: list[Path]):
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(fonts[rng.integers(len(fonts))]), size=max(8, int(side * rng.uniform(0.3, 0.8))))
    im = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(im)
    left, top, right, bottom = draw.textbbox((0, 0), str(digit), font=font)
    x = rng.uniform(-left + 0.03 * side, max(-left + 0.03 * side + 1, side - right - 0.03 * side))
    y = rng.uniform(-top + 0.03 * side, max(-top + 0.03 * side + 1, side - bottom - 0.03 * side))
    stroke = int(rng.integers(0, max(1, side // 60) + 1))
    draw.text((x, y), str(digit), fill=255, font=font, stroke_width=stroke, stroke_fill=255)
    return im.rotate(rng.uniform(-8, 8), resample=Image.Resampling.BILINEAR)


def _encode(mask, rng: np.random.Generator, polarity: str, fmt: str, mode: str) -> bytes:
    """Colour the mask as ink on paper and encode it."""
    from PIL import Image

    a = np.asarray(mask, dtype=np.float32) / 255.0
    paper, ink = rng.uniform(200, 255), rng.uniform(0, 70)
    if polarity == "light-on-dark":
        paper, ink = 255 - paper, 255 - ink
    gray = paper + (ink - paper) * a
    gray += rng.normal(0, rng.uniform(0, 6), gray.shape)
    gray = np.clip(gray, 0, 255).astype(np.uint8)
    if mode == "RGBA":  # ink on a transparent sheet
        rgb = np.zeros(gray.shape + (3,), np.uint8) + np.uint8(ink)
        im = Image.fromarray(np.dstack([rgb, (a * 255).astype(np.uint8)]), "RGBA")
    elif mode == "RGB":
        tint = rng.uniform(0.85, 1.0, 3)
        im = Image.fromarray((gray[..., None] * tint).clip(0, 255).astype(np.uint8), "RGB")
    else:
        im = Image.fromarray(gray, "L")
    buf = io.BytesIO()
    im.save(buf, format=fmt, **({"quality": int(rng.integers(60, 95))} if fmt == "JPEG" else {}))
    return buf.getvalue()


def make_set(per_digit: int = 20, seed: int = 0, sides: tuple[int, int] = (28, 600)) -> list[Sample]:
    """`per_digit` images of each digit, half drawn and half from fonts, all variations mixed."""
    rng = np.random.default_rng(seed)
    fonts = font_paths()
    samples = []
    for digit in range(10):
        for i in range(per_digit):
            kind = "drawn" if i % 2 == 0 or not fonts else "font"
            side = int(rng.integers(sides[0], sides[1] + 1))
            mask = _draw_mask(digit, rng, side) if kind == "drawn" else _font_mask(digit, rng, side, fonts)
            polarity = ("dark-on-light", "light-on-dark")[(i // 2) % 2]
            fmt = ("PNG", "JPEG", "BMP")[i % 3]
            mode = ("L", "RGB", "RGBA")[(i // 3) % 3]
            if fmt != "PNG" and mode == "RGBA":
                mode = "RGB"
            ext = {"PNG": "png", "JPEG": "jpg", "BMP": "bmp"}[fmt]
            samples.append(
                Sample(f"{kind}-{digit}-{i:03d}.{ext}", digit, _encode(mask, rng, polarity, fmt, mode), kind, polarity)
            )
    return samples


# --- photos and scans of paper ----------------------------------------------------------------

CONDITIONS = ("photo", "ruled", "pencil", "scan")


def _photo(mask, rng: np.random.Generator, condition: str) -> bytes:
    """The mask as ink on paper, photographed or scanned: `photo` (uneven light, a shadow, paper
    grain, blur, colour ink, JPEG), `ruled` (the same on ruled paper), `pencil` (faint grey
    strokes, low contrast) or `scan` (white paper, crisp ink, specks and the scanner's dark edge)."""
    from PIL import Image
    from scipy import ndimage

    a = np.asarray(mask, dtype=np.float32) / 255.0
    h, w = a.shape
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    if condition == "scan":
        paper = np.full((h, w), rng.uniform(232, 252), np.float32)
        a = (ndimage.gaussian_filter(a, 0.6) > 0.5).astype(np.float32)
        ink = rng.uniform(10, 50)
    else:
        theta = rng.uniform(0, 2 * np.pi)
        light = (np.cos(theta) * (xx - 0.5) + np.sin(theta) * (yy - 0.5)) * rng.uniform(30, 90)
        vignette = -rng.uniform(10, 45) * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2) * 2
        paper = rng.uniform(165, 225) + light + vignette
        if rng.random() < 0.6:  # the shadow of the phone or a hand across part of the sheet
            phi, cut = rng.uniform(0, 2 * np.pi), rng.uniform(-0.3, 0.3)
            side = np.cos(phi) * (xx - 0.5) + np.sin(phi) * (yy - 0.5) > cut
            paper = paper - rng.uniform(25, 70) * ndimage.gaussian_filter(side.astype(np.float32), max(1.0, 0.02 * h))
        paper = paper + ndimage.gaussian_filter(rng.normal(0, rng.uniform(3, 9), (h, w)), 1.0)
        ink = rng.uniform(95, 145) if condition == "pencil" else rng.uniform(15, 80)
        if condition == "pencil":
            a = a * rng.uniform(0.55, 0.9, a.shape).astype(np.float32)  # graphite is patchy
    gray = paper + (ink - paper) * np.clip(a, 0, 1)
    if condition == "ruled":
        gap = rng.uniform(0.1, 0.2) * h
        start = rng.uniform(0, gap)
        for y in np.arange(start, h, gap):
            row = int(y)
            gray[row : row + max(1, h // 300)] -= rng.uniform(30, 60)
        if rng.random() < 0.5:  # the margin line
            col = int(rng.uniform(0.05, 0.15) * w)
            gray[:, col : col + max(1, w // 250)] -= rng.uniform(30, 60)
    if condition == "scan":
        specks = rng.random((h, w)) < rng.uniform(0.0005, 0.003)
        gray[specks] = ink
        edge = max(2, int(rng.uniform(0.02, 0.06) * w))
        strip = [np.s_[:, :edge], np.s_[:, -edge:], np.s_[:edge, :], np.s_[-edge:, :]][int(rng.integers(4))]
        gray[strip] = rng.uniform(20, 70)  # the lid's dark edge along one side
    else:
        gray = ndimage.gaussian_filter(gray, rng.uniform(0.3, 1.2) * max(1.0, h / 300))
    gray = np.clip(gray, 0, 255)
    if condition == "scan":
        im = Image.fromarray(gray.astype(np.uint8), "L")
        fmt = ("PNG", "BMP")[int(rng.integers(2))]
    else:
        tint = np.array([1.0, 1.0, 1.0]) if rng.random() < 0.5 else np.array([0.8, 0.85, 1.15])  # blue ballpoint
        paper_tint = rng.uniform(0.92, 1.0, 3)
        rgb = gray[..., None] * np.where(a[..., None] > 0.3, tint, paper_tint)
        im = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
        fmt = "JPEG"
    buf = io.BytesIO()
    im.save(buf, format=fmt, **({"quality": int(rng.integers(55, 92))} if fmt == "JPEG" else {}))
    return buf.getvalue()


def make_photos(per_digit: int = 20, seed: int = 0, sides: tuple[int, int] = (160, 900)) -> list[Sample]:
    """`per_digit` hand-drawn digits of each digit photographed or scanned on paper, the
    conditions of `_photo` in turn; `kind` names the condition."""
    rng = np.random.default_rng(seed)
    samples = []
    for digit in range(10):
        for i in range(per_digit):
            condition = CONDITIONS[i % len(CONDITIONS)]
            side = int(rng.integers(sides[0], sides[1] + 1))
            mask = _draw_mask(digit, rng, side)
            data = _photo(mask, rng, condition)
            ext = "jpg" if data[:2] == b"\xff\xd8" else ("bmp" if data[:2] == b"BM" else "png")
            samples.append(Sample(f"{condition}-{digit}-{i:03d}.{ext}", digit, data, condition, "dark-on-light"))
    return samples


def write_set(samples: list[Sample], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in samples:
        (directory / s.name).write_bytes(s.data)
        paths.append(directory / s.name)
    return paths

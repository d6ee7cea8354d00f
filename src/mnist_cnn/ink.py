"""The ink of the generated non-digits (`nondigits`) other than letters and symbols: shapes and
scribbles drawn with a pen, noise and textures, each on a canvas sized like a photo or crop someone
might send; and ink put on paper. Ink is (h, w) float32, 0 paper to 1 ink."""

from __future__ import annotations

import numpy as np

from mnist_runtime import paper

# Free-form strokes, drawn wide: digits are taller than wide.
WIDE = ("zigzag", "tangle", "scrawl", "coil")
SIDES = (48, 200)
SMALL, SMALL_SHARE = paper.MIN_PHOTO_SIDE, 0.95  # smaller images skip the recipe's photo cleaning (4x slower)


def canvas(rng: np.random.Generator) -> tuple[int, int]:
    """(width, height): mostly small like a crop or a thumbnail, sometimes a larger photo."""
    short = rng.uniform(SIDES[0], SMALL) if rng.random() < SMALL_SHARE else rng.uniform(SMALL, SIDES[1])
    long = min(SIDES[1], short * rng.uniform(1.0, 1.4))
    return (int(short), int(long)) if rng.random() < 0.5 else (int(long), int(short))


def _box(rng: np.random.Generator, w: int, h: int, lo: float = 0.4, hi: float = 0.8):
    """A random region (x0, y0, width, height) of the canvas, narrower than a ruled line
    (paper.LINE_SHARE of a side), which the recipe would erase."""
    bw, bh = w * rng.uniform(lo, hi), h * rng.uniform(lo, hi)
    return rng.uniform(0.04 * w, 0.96 * w - bw), rng.uniform(0.04 * h, 0.96 * h - bh), bw, bh


def _smooth(p: np.ndarray) -> np.ndarray:
    """A smooth curve near the polyline `p` (Chaikin's corner cutting)."""
    for _ in range(3):
        p = np.stack([0.75 * p[:-1] + 0.25 * p[1:], 0.25 * p[:-1] + 0.75 * p[1:]], axis=1).reshape(-1, 2)
    return p


def _strokes(style: str, rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Polylines and filled polygons of a shape or scribble in the unit box, y down."""
    lines: list[np.ndarray] = []
    fills: list[np.ndarray] = []

    def jitter(pts, sd: float = 0.02) -> np.ndarray:
        return np.asarray(pts, float) + rng.normal(0, sd, np.shape(pts))

    if style == "zigzag":
        for row in range(int(rng.integers(1, 4))):
            k = int(rng.integers(6, 15))
            y = (np.arange(k) % 2) * rng.uniform(0.12, 0.5) + row * 0.3 + rng.uniform(0, 0.2)
            lines.append(jitter(np.c_[np.linspace(0, 1, k), y], 0.04))
    elif style == "tangle":
        lines.extend(_smooth(rng.uniform(0, 1, (int(rng.integers(6, 10)), 2))) for _ in range(int(rng.integers(2, 4))))
    elif style == "scrawl":
        lines.append(rng.uniform(0, 1, (int(rng.integers(9, 15)), 2)))
    elif style in ("hatching", "ladder"):
        angle = rng.uniform(0, np.pi)
        d, n = np.array([np.cos(angle), np.sin(angle)]), np.array([-np.sin(angle), np.cos(angle)])
        for _ in range(1 if style == "ladder" else int(rng.integers(1, 3))):
            for off in np.linspace(-0.4, 0.4, int(rng.integers(4, 9))):
                half = 0.45 if style == "ladder" else rng.uniform(0.2, 0.45)
                lines.append(jitter([0.5 + off * n - half * d, 0.5 + off * n + half * d], 0.01))
            d, n = n, -d
        if style == "ladder":
            lines.extend(np.array([0.5 + s * 0.45 * n - 0.45 * d, 0.5 + s * 0.45 * n + 0.45 * d]) for s in (-1, 1))
    elif style == "coil":
        t = np.linspace(0, 1, 150)
        loops, a = rng.uniform(3, 6), rng.uniform(0.08, 0.15)
        angle = 2 * np.pi * loops * t
        lines.append(np.c_[0.1 + 0.8 * t + a * np.cos(angle), 0.5 + rng.uniform(0.2, 0.4) * np.sin(angle)])
    elif style == "star":
        k = int(rng.integers(5, 10))
        t = np.linspace(0, 2 * np.pi, 2 * k + 1) + rng.uniform(0, np.pi)
        r = np.where(np.arange(2 * k + 1) % 2 == 0, 0.5, rng.uniform(0.15, 0.3))
        (fills if rng.random() < 0.4 else lines).append(np.c_[0.5 + r * np.cos(t), 0.5 + r * np.sin(t)])
    elif style == "burst":
        for t in np.linspace(0, 2 * np.pi, int(rng.integers(6, 13)), endpoint=False) + rng.uniform(0, np.pi):
            r = rng.uniform(0.25, 0.5)
            lines.append(np.array([[0.5, 0.5], [0.5 + r * np.cos(t), 0.5 + r * np.sin(t)]]))
    elif style == "scatter":
        size = rng.uniform(0.08, 0.14)
        for cell in rng.permutation(9)[: int(rng.integers(5, 9))]:
            cx, cy = (cell % 3 + 0.5) / 3 + rng.normal(0, 0.03), (cell // 3 + 0.5) / 3 + rng.normal(0, 0.03)
            k = int(rng.choice([3, 4, 5, 12]))
            t = np.linspace(0, 2 * np.pi, k + 1) + rng.uniform(0, np.pi)
            poly = np.c_[cx + size * np.cos(t), cy + size * np.sin(t)]
            (fills if k == 12 or rng.random() < 0.5 else lines).append(poly)  # rings read as 0 or 8
    elif style == "crossed":
        lines.extend(jitter(p) for p in ([[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]], [[0, 0], [1, 1]], [[1, 0], [0, 1]]))
        if rng.random() < 0.5:
            lines.extend(jitter(p) for p in ([[0.5, 0], [0.5, 1]], [[0, 0.5], [1, 0.5]]))
    else:
        raise ValueError(f"unknown style {style!r}")
    return lines, fills


def drawn(style: str, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image, ImageDraw

    w, h = canvas(rng)
    x0, y0, bw, bh = _box(rng, w, h)
    if style in ("star", "burst", "scatter"):
        bw = bh = min(bw, bh)
    elif style in WIDE:
        bh = min(bh, bw / rng.uniform(1.4, 2.5))
    lines, fills = _strokes(style, rng)
    angle = rng.uniform(-0.3, 0.3) if style in WIDE + ("crossed",) else rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    thin = style in ("tangle", "scrawl", "coil", "hatching", "ladder")
    pen = max(1, int(round(min(bw, bh) * rng.uniform(0.012, 0.035 if thin else 0.06))))
    im = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(im)
    for pts, fill in [(p, True) for p in fills] + [(p, False) for p in lines]:
        xy = [tuple(q) for q in ((pts - 0.5) @ rot + 0.5) * [bw, bh] + [x0, y0]]
        if fill:
            draw.polygon(xy, fill=255)
        else:
            draw.line(xy, fill=255, width=pen, joint="curve")
    return np.asarray(im, dtype=np.float32) / 255.0


def _region(rng: np.random.Generator, w: int, h: int, ellipse: bool) -> np.ndarray:
    """Where a noise or texture lies: all the canvas, a rectangle or an ellipse."""
    shape = rng.choice(["full", "rect", "ellipse"], p=[0.25, 0.45, 0.3] if ellipse else [0.3, 0.7, 0.0])
    if shape == "full":
        return np.ones((h, w), np.float32)
    x0, y0, bw, bh = _box(rng, w, h, 0.45, 0.85)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if shape == "rect":
        return ((xx >= x0) & (xx < x0 + bw) & (yy >= y0) & (yy < y0 + bh)).astype(np.float32)
    return ((((xx - x0 - bw / 2) / (bw / 2)) ** 2 + ((yy - y0 - bh / 2) / (bh / 2)) ** 2) <= 1).astype(np.float32)


def noise(style: str, rng: np.random.Generator) -> np.ndarray:
    """Noise in grains coarse enough to survive the recipe's 20 px box (finer noise averages out
    to a grey patch); blobs and dashes kept apart so they do not merge into a shape."""
    from PIL import Image, ImageDraw

    w, h = canvas(rng)
    cells = rng.uniform(8, 16) * (2 if style == "salt" else 1)
    grid = (max(2, round(cells * h / min(w, h))), max(2, round(cells * w / min(w, h))))
    if style in ("uniform", "gaussian", "salt"):
        if style == "uniform":
            values = rng.uniform(0, 1, grid)
        elif style == "gaussian":
            values = rng.normal(0.5, rng.uniform(0.15, 0.35), grid)
        else:
            values = (rng.random(grid) < rng.uniform(0.08, 0.3)) * rng.uniform(0.6, 1.0, grid)
        im = Image.fromarray(np.clip(values, 0, 1).astype(np.float32), mode="F")
        grains = np.asarray(im.resize((w, h), Image.Resampling.NEAREST), dtype=np.float32)
        return grains * _region(rng, w, h, ellipse=False)  # a ring of noise reads as a 0
    if style not in ("blobs", "dashes"):
        raise ValueError(f"unknown style {style!r}")
    im = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(im)
    size = min(w, h) * rng.uniform(0.04, 0.08)
    for cell in rng.permutation(16)[: int(rng.integers(8, 17))]:
        cx, cy = w * (cell % 4 + rng.uniform(0.2, 0.8)) / 4, h * (cell // 4 + rng.uniform(0.2, 0.8)) / 4
        (rx, ry), fill = size * rng.uniform(0.6, 1.4, 2), int(rng.integers(200, 256))
        if style == "blobs":
            draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=fill)
        else:
            dx, dy = 1.5 * rx * np.array([np.cos(t := rng.uniform(0, np.pi)), np.sin(t)])
            draw.line((cx - dx, cy - dy, cx + dx, cy + dy), fill=fill, width=max(1, int(ry / 2)))
    return np.asarray(im, dtype=np.float32) / 255.0


def texture(style: str, rng: np.random.Generator) -> np.ndarray:
    w, h = canvas(rng)
    angle = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u, v = xx * np.cos(angle) + yy * np.sin(angle), -xx * np.sin(angle) + yy * np.cos(angle)
    period = min(h, w) / rng.uniform(4.5, 9)  # fewer periods make shapes: a few checks look like an 8
    width = period * rng.uniform(0.2, 0.5)
    if style == "stripes":
        field = np.mod(u, period) < width if rng.random() < 0.6 else 0.5 + 0.5 * np.sin(2 * np.pi * u / period)
    elif style == "checks":
        field = (np.floor(u / period) + np.floor(v / period)) % 2
    elif style == "grid":
        field = (np.mod(u, period) < width / 2) | (np.mod(v, period * rng.uniform(0.7, 1.4)) < width / 2)
    elif style == "dots":
        radius = width * rng.uniform(0.6, 1.1)
        field = (np.mod(u, period) - period / 2) ** 2 + (np.mod(v, period) - period / 2) ** 2 < radius**2
    elif style == "hatch":
        other = xx * np.cos(angle + (turn := rng.uniform(0.6, 1.2))) + yy * np.sin(angle + turn)
        field = (np.mod(u, period) < width / 2) | (np.mod(other, period) < width / 2)
    elif style == "wood":
        bend = rng.uniform(0.3, 1.0) * period * np.sin(2 * np.pi * v / (period * rng.uniform(3, 6)))
        field = 0.5 + 0.5 * np.sin(2 * np.pi * (u + bend) / period)
    else:
        raise ValueError(f"unknown style {style!r}")
    return np.asarray(field, np.float32) * _region(rng, w, h, ellipse=True)


def on_paper(ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Ink as grey levels: on paper in either polarity, sometimes blurred or noisy."""
    from scipy import ndimage

    paper, pen = rng.uniform(175, 255), rng.uniform(0, 90)
    if rng.random() < 0.3:
        paper, pen = 255.0 - paper, 255.0 - pen
    if rng.random() < 0.35:
        ink = ndimage.gaussian_filter(ink, rng.uniform(0.4, 1.0) * max(1.0, min(ink.shape) / 150))
    gray = np.float32(paper) + np.float32(pen - paper) * ink
    if rng.random() < 0.4:
        gray += rng.standard_normal(gray.shape, np.float32) * np.float32(rng.uniform(2, 10))
    return np.clip(gray, 0, 255, out=gray)

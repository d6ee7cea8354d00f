"""Photos and scans of paper brought to light ink on a dark, even background: which way round the
ink is (tight crops included), the paper's uneven light and shadows divided out, ruled lines and
page or scanner edges dropped, and marks apart from the digit removed. Step 3 of the MNIST recipe
in `images`."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

MIN_CONTRAST = 24.0  # grey levels between paper and ink; less is a blank image
INK_LEVEL = 0.25  # fraction of the ink's range above which a pixel counts as ink
PAPER_PERCENTILE = 90  # of the border's grey levels: the paper, even when a shadow covers most of the border
PAPER_SCALE = 160  # px: the paper's light is estimated on the image reduced to about this
PAPER_ELEMENT = 0.12  # closing size, share of the short side: wider than strokes, narrower than shadows
UNEVEN_PAPER = 20.0  # grey levels of spread in the paper's light above which it is divided out
MIN_PHOTO_SIDE = 96  # px: smaller images are digital; their strokes are too wide for the closing
CLEAN_SHARE = 0.45  # an image with less than this share of grey pixels (15-85% of its range) has no shadow
EDGE_MARGIN = 0.1  # share of the side: ink this near three sides (past its lines) is a tightly cropped digit
FAINT_LINE = 0.4  # share of the ink's strength: lines fainter than this are ruled, never the digit's strokes
LINE_SHARE = 0.9  # a row or column with ink over this share of its length is a ruled line or an edge
MARK_SHARE = 0.08  # a component with less of the ink than this share of the largest one's is a speck


def stroke_width(mask: np.ndarray) -> float:
    """Typical stroke width in pixels of a binary ink mask (from its distance transform)."""
    dist = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    ridge = dist[mask & (dist >= ndimage.maximum_filter(dist, size=3))]
    return 2.0 * float(np.median(ridge)) if ridge.size else 1.0


def border(gray: np.ndarray) -> np.ndarray:
    return np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])


def ring(gray: np.ndarray) -> np.ndarray:
    """The border's pixels in order around the image (top, right, bottom, left)."""
    return np.concatenate([gray[0], gray[1:, -1], gray[-1, -2::-1], gray[-2:0:-1, 0]])


def alternations(ring: np.ndarray, dark: float, light: float) -> int:
    """How often the circular sequence `ring` goes from near `light` to near `dark` (each within a
    quarter of the range; grey in between, a soft shadow or the grain, is passed over)."""
    quarter = (light - dark) / 4
    levels = np.where(ring >= light - quarter, 1, np.where(ring <= dark + quarter, -1, 0))
    levels = levels[levels != 0]
    if not levels.size:
        return 0
    return int(np.sum(levels != np.roll(levels, 1))) // 2


def dark_ink(gray: np.ndarray) -> bool:
    """Whether the ink is darker than the paper. The paper is what most of the border is, its
    median, when ink touches the border: light and dark alternate around it twice or more
    (strokes crossing it, a tightly cropped digit), or once in a clean image (little grey
    between ink and paper, so no shadow). Otherwise it is the border's lighter part, not its
    median: a shadow may darken most of the border, and its edge splits the border once."""
    dark, light = (float(v) for v in np.percentile(gray, [0.2, 99.8]))  # the extremes, past a few noisy pixels
    around = ring(gray)
    turns = alternations(around, dark, light)
    grey = np.mean(np.abs(gray - (dark + light) / 2) < 0.35 * (light - dark))
    touched = turns >= 2 or (turns == 1 and grey < CLEAN_SHARE)
    paper = float(np.percentile(around, 50 if touched else PAPER_PERCENTILE))
    return paper - dark > light - paper


def _reduce(gray: np.ndarray) -> tuple[np.ndarray, int]:
    k = max(1, min(gray.shape) // PAPER_SCALE)
    if k == 1:
        return gray, 1
    h, w = gray.shape[0] // k * k, gray.shape[1] // k * k
    return gray[:h, :w].reshape(h // k, k, w // k, k).mean(axis=(1, 3)), k


def even_light(gray: np.ndarray, dark: bool) -> np.ndarray:
    """Ink light on dark with uneven light and shadows divided out, or `gray` as it was when its
    paper is even (a drawing, a scan, a digital image). `dark`: whether the ink is the darker."""
    if min(gray.shape) < MIN_PHOTO_SIDE:
        return gray
    light = gray if dark else 255.0 - gray  # light paper, dark ink
    small, k = _reduce(light)
    low, high = np.percentile(small, [5, 95])
    strokes = stroke_width(small < (low + high) / 2) if high - low >= MIN_CONTRAST else 0.0
    side = min(small.shape)
    size = max(3, int(round(min(max(side * PAPER_ELEMENT, 2.5 * strokes), side * 0.25))) | 1)
    paper = ndimage.grey_closing(small, size=(size, size))  # strokes thinner than `size` vanish
    low, high = np.percentile(paper, [5, 95])
    if high - low < UNEVEN_PAPER:
        return gray
    if k > 1:
        paper = ndimage.zoom(paper, (light.shape[0] / paper.shape[0], light.shape[1] / paper.shape[1]), order=1)
        paper = np.pad(paper, [(0, max(0, a - b)) for a, b in zip(light.shape, paper.shape, strict=True)], mode="edge")
        paper = paper[: light.shape[0], : light.shape[1]]
    return np.clip(1.0 - light / np.maximum(paper, 1.0), 0.0, 1.0) * 255.0


def without_lines(ink: np.ndarray) -> np.ndarray:
    """Blank the rows and columns inked across LINE_SHARE of their length (ruled lines, page and
    scanner edges). Lines of one direction as strong as the pen's stay when they are the digit's
    own strokes, in a tightly cropped digit: when the rest of the ink spans the image along them
    too (the sides of a 0, the bar of a 5), reaches an end of them (the stem of a 4, the foot of
    a 2) or three of its sides; and all stay when blanking them would take most of the ink.
    Small images are digital: no lines are looked for."""
    if min(ink.shape) < MIN_PHOTO_SIDE:
        return ink
    mask = ink > 0.15 * float(ink.max())
    found = [ndimage.binary_dilation(mask.mean(axis=1 - axis) >= LINE_SHARE) for axis in (0, 1)]  # rows, columns
    if not found[0].any() and not found[1].any():
        return ink
    rest = mask & ~(found[0][:, None] | found[1][None, :])
    if not rest.any():
        return ink
    spans = [np.percentile(np.nonzero(rest)[axis], [1, 99]) / mask.shape[axis] for axis in (0, 1)]
    sides = sum(int(low < EDGE_MARGIN) + int(high > 1 - EDGE_MARGIN) for low, high in spans)
    strong = float(np.percentile(ink[mask], 99))
    out = ink.copy()
    for axis, lines in enumerate(found):
        if not lines.any():
            continue
        across = np.broadcast_to(lines[:, None] if axis == 0 else lines[None, :], out.shape)
        faint = float(np.median(ink[across & mask])) < FAINT_LINE * strong  # printed rules, lighter than the pen
        low, high = spans[1 - axis]  # the rest's extent along these lines
        reaches_an_end = low < EDGE_MARGIN or high > 1 - EDGE_MARGIN
        if faint or (sides < 3 and high - low < LINE_SHARE - EDGE_MARGIN and not reaches_an_end):
            out[across] = 0.0
    return out if out.sum() >= 0.3 * ink.sum() else ink


def only_the_digit(ink: np.ndarray) -> np.ndarray:
    """Keep the digit's connected components: marks touching the border (shadow wedges, page
    edges) go when the digit lies inside, and so do specks."""
    mask = ink > INK_LEVEL * float(ink.max())
    joined = ndimage.binary_dilation(
        mask, iterations=max(1, round(0.01 * max(ink.shape)))
    )  # a broken stroke is one mark
    labels, n = ndimage.label(joined, structure=np.ones((3, 3)))
    if n <= 1:
        return ink
    index = np.arange(1, n + 1)
    amount = ndimage.sum(ink, labels, index=index)
    rim = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    inside = ~np.isin(index, rim)
    if inside.any() and amount[inside].max() >= 0.2 * amount.max():
        amount = np.where(inside, amount, 0.0)
    keep = index[amount >= MARK_SHARE * amount.max()]
    return np.where(np.isin(labels, keep), ink, 0.0)


def light_ink(gray: np.ndarray, flip: bool = False) -> np.ndarray:
    """Ink light on a dark background at 0: polarity decided (`flip`: the other way round), uneven
    light divided out."""
    dark = dark_ink(gray) != flip
    ink = even_light(gray, dark)
    if ink is gray:
        ink = 255.0 - gray if dark else gray
    return np.clip(ink - float(np.median(border(ink))), 0.0, None)

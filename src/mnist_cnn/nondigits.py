"""Images that are not digits, in MNIST's form: outlier exposure for training (they join the
training set with uniform targets) and a held-out set to measure how many the model flags "not sure".

Each image is drawn full size as a person might send it (48-200 px a side, dark ink on light paper
or light on dark, varied pens, sometimes blurred or noisy) and passed through `images.mnist_style`.
Kinds: letters and symbols from the TrueType fonts matplotlib ships, shapes of several strokes,
scribbles, noise and textures, none of them reading as a digit. The "test" split has other font
files (STIX), a few letters, symbols and styles the "train" split never has, and its own random
streams.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mnist_cnn import ink
from mnist_runtime import images

KINDS = ("letters", "symbols", "shapes", "scribbles", "noise", "textures")
SPLITS = ("train", "test")
HELD_OUT_SEED = 2024  # of the evaluation set (its own fonts and shapes too); training draws with train.seed

_DEJAVU = (
    "Sans",
    "Sans-Bold",
    "Sans-Oblique",
    "Sans-BoldOblique",
    "SansMono",
    "SansMono-Bold",
    "SansMono-Oblique",
    "SansMono-BoldOblique",
    "Serif",
    "Serif-Bold",
    "Serif-Italic",
    "Serif-BoldItalic",
)
FONTS = {
    "train": tuple(f"DejaVu{f}.ttf" for f in _DEJAVU)
    + tuple(f"cm{f}10.ttf" for f in ("r", "b", "ss", "ti", "tt", "mi")),
    "test": ("STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf"),
}
# Read as 0 (OoQDUuCc), 1 (IlijJfrt), 2 (Zz), 4 (Yy), 5 (Ss), 6 (bG), 7 (T), 8 (B), 9 (gqad).
EXCLUDED_LETTERS = "OoQDUuCcIlijJfrtZzYySsbGTBgqad"
# Left out: + (4), & ≈ ∞ § (8, once bold and blurred), $ (5), Λ Γ (7), ¶ (9), ? (2), ! | / and brackets
# (1), rings (0), Δ ∇ (4), ∂ (6), ∫ √ ✓ (1, 7), ζ ξ З Э (2, 3), Б Ч Ь (6, 4, 6), solid suits, faces, notes.
EXCLUDED_SYMBOLS = "0123456789+&≈∞§$ΛΓ¶?¿!¡|/\\()[]{}<>©®øØΘΦφΩΔ∆∇∂∫√✓ζξЗЭБЧЬ☺♠♣♥♦♪♫♀♂↑↓"
# kind: (what both splits have, what only the test split has). No spirals or rings: at 20 px they
# close into a 0 or a 6. Free-form strokes (ink.WIDE) are drawn wide, as digits are taller than wide.
VARIETY = {
    "letters": ("AEFHLMNPRVXkmnpvwx", "KWeh"),
    "symbols": ("@#%*=÷±×★‰¥λπωμΨΣΞΠ", "ЖШЮЯИ⌘♯≠¤"),
    "shapes": (("star", "burst", "scatter", "crossed"), ("ladder",)),
    "scribbles": (("zigzag", "tangle", "scrawl", "hatching"), ("coil",)),
    "noise": (("uniform", "gaussian", "salt", "blobs"), ("dashes",)),
    "textures": (("stripes", "checks", "grid", "dots", "hatch"), ("wood",)),
}
FONT_SIZES = (20, 24, 32, 40, 48, 64, 80, 96, 128)  # smaller ones lose their thin strokes to blur and noise
MAX_TRIES = 50
MIN_ASPECT, MIN_ASPECT_GLYPH = 0.6, 0.5  # width / height of the ink's box; MNIST's 1s are 0.1-0.5
WIDE_ASPECT = 1.3  # wider than this, nothing reads as a digit
MAX_SOLID = 0.5  # share of the ink 1 px inside its edge; MNIST's thickest digits reach 0.45
MIN_INK = 30  # pixels over 128; MNIST's digits have 22 to 300, 99% more than 33


def _check(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def variety(kind: str, split: str) -> str | tuple[str, ...]:
    """The characters (letters, symbols) or styles of `kind` that `split` draws from."""
    _check(split)
    both, test_only = VARIETY[kind]
    return both + test_only if split == "test" else both


def font_files(split: str) -> list[Path]:
    """The font files of `split` that this matplotlib installation has, sorted."""
    import matplotlib

    _check(split)
    ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return sorted(ttf / name for name in FONTS[split] if (ttf / name).is_file())


class Fonts:
    """A split's font files with the letters and symbols each draws, and ImageFont objects loaded
    once per (file, size); made once per `generate` call."""

    def __init__(self, split: str):
        from matplotlib.ft2font import FT2Font

        self.split = split
        self.pools: dict[str, list[tuple[Path, str]]] = {"letters": [], "symbols": []}
        for path in font_files(split):
            chars = set(map(chr, FT2Font(str(path)).get_charmap()))
            for kind in self.pools:
                if kind == "symbols" and path.name.startswith("cm"):
                    continue  # TeX's fonts put their own glyphs at the ASCII symbols' places
                if drawn := "".join(c for c in variety(kind, split) if c in chars):
                    self.pools[kind].append((path, drawn))
        if not self.pools["letters"]:
            raise FileNotFoundError(f"none of matplotlib's fonts for the {split!r} split is installed")
        self._fonts: dict = {}

    def font(self, path: Path, size: int):
        from PIL import ImageFont

        if (path, size) not in self._fonts:
            self._fonts[path, size] = ImageFont.truetype(str(path), size=size)
        return self._fonts[path, size]


def _glyphs(kind: str, rng: np.random.Generator, fonts: Fonts) -> np.ndarray:
    """One to three letters, or one or two symbols, in a random font, size, pen and angle."""
    from PIL import Image, ImageDraw

    w, h = ink.canvas(rng)
    path, chars = fonts.pools[kind][rng.integers(len(fonts.pools[kind]))]
    count = int(rng.choice((1, 1, 1, 2, 3) if kind == "letters" else (1, 1, 1, 2)))
    text = "".join(rng.choice(list(chars), count))
    target = min(h, w / (0.7 * count)) * rng.uniform(0.4, 0.85)
    im = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(im)
    for size in sorted((s for s in FONT_SIZES if s <= max(target, FONT_SIZES[0])), reverse=True):
        font, stroke = fonts.font(path, size), int(rng.integers(0, size // 24 + 1))
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font, stroke_width=stroke)
        if right - left <= 0.9 * w and bottom - top <= 0.9 * h:
            break
    xy = rng.uniform(-left, max(-left + 1, w - right)), rng.uniform(-top, max(-top + 1, h - bottom))
    draw.text(xy, text, fill=255, font=font, stroke_width=stroke, stroke_fill=255)
    return np.asarray(im.rotate(rng.uniform(-8, 8), resample=Image.Resampling.BILINEAR), np.float32) / 255.0


def render(kind: str, rng: np.random.Generator, split: str, fonts: Fonts | None = None) -> np.ndarray:
    """One non-digit of `kind` as someone might send it: (H, W) float32 grey levels 0-255. `fonts`
    (letters and symbols) is loaded for `split` when not given."""
    _check(split)
    if kind in ("letters", "symbols"):
        drawing = _glyphs(kind, rng, fonts if fonts is not None and fonts.split == split else Fonts(split))
    elif kind in VARIETY:
        style = str(rng.choice(variety(kind, split)))
        drawing = {"noise": ink.noise, "textures": ink.texture}.get(kind, ink.drawn)(style, rng)
    else:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return ink.on_paper(drawing, rng)


def plausible(x: np.ndarray, kind: str) -> bool:
    """Whether a (28, 28) non-digit of `kind` is kept. Redrawn: one with hardly any ink (a stroke
    or two left), a tall narrow one (reads as a 1), a solid blob (a filled 0), and a scribble not
    clearly wider than tall with one or two closed loops (a 0, 6, 8 or 9)."""
    from scipy import ndimage

    mask = x > 128
    if mask.sum() < MIN_INK:
        return False
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    aspect = (cols[-1] - cols[0] + 1) / (rows[-1] - rows[0] + 1)
    if aspect < (MIN_ASPECT_GLYPH if kind in ("letters", "symbols") else MIN_ASPECT):
        return False
    if ndimage.binary_erosion(mask, np.ones((3, 3), bool)).sum() > MAX_SOLID * mask.sum():
        return False
    return kind != "scribbles" or aspect >= WIDE_ASPECT or loops(x > 64) not in (1, 2)


def loops(mask: np.ndarray) -> int:
    """Closed loops of ink: the holes (3 px or more) it encloses."""
    from scipy import ndimage

    labels, n = ndimage.label(~mask)
    outside = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    return sum(1 for i in range(1, n + 1) if i not in outside and sizes[i] >= 3)


def kinds_of(n: int, seed: int, split: str = "train") -> np.ndarray:
    """The kind (index into KINDS) of each image of `generate(n, seed, split)`."""
    _check(split)
    order = np.random.default_rng(np.random.SeedSequence((seed, SPLITS.index(split), n)))
    return order.permutation(np.resize(np.arange(len(KINDS)), n))


def generate(n: int, seed: int, split: str = "train") -> np.ndarray:
    """`n` non-digits as MNIST images, (n, 28, 28) uint8: kinds in equal shares, shuffled, image i
    from its own random stream. One the recipe finds blank, or not `plausible`, is drawn again."""
    if n < 0:
        raise ValueError(f"n must be at least 0, got {n}")
    kinds = kinds_of(n, seed, split)
    fonts = Fonts(split) if n else None
    out = np.empty((n, images.SIZE, images.SIZE), np.uint8)
    for i, kind in enumerate(KINDS[k] for k in kinds):
        rng = np.random.default_rng(np.random.SeedSequence((seed, SPLITS.index(split)), spawn_key=(i,)))
        for _ in range(MAX_TRIES):
            try:
                x = images.mnist_style(render(kind, rng, split, fonts))
            except images.NoDigit:
                continue
            if plausible(x, kind):
                out[i] = x
                break
        else:
            raise RuntimeError(f"no {kind} image survived the MNIST recipe in {MAX_TRIES} draws")
    return out

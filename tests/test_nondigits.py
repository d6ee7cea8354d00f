"""Generated non-digits (`mnist_cnn.nondigits`): shape, determinism, the font and letter split
between train and test, every kind present, nothing blank, and far from MNIST's digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from digit_images import make_set
from mnist_cnn import data, ink, nondigits
from mnist_runtime import images, paper

SUBSET = Path(__file__).parent / "fixtures" / "mnist-subset"
N = 180  # per split, 30 of each kind


@pytest.fixture(scope="module")
def made() -> dict[str, np.ndarray]:
    return {split: nondigits.generate(N, 0, split) for split in nondigits.SPLITS}


def nearest_mnist(x: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each image's L2 distance (pixels 0-1) to its nearest neighbour in `reference`."""
    a = x.reshape(len(x), -1).astype(np.float32) / 255
    b = reference.reshape(len(reference), -1).astype(np.float32) / 255
    d2 = (a**2).sum(1)[:, None] + (b**2).sum(1)[None] - 2 * a @ b.T
    return np.sqrt(np.maximum(d2.min(axis=1), 0))


def test_mnist_shaped_and_never_blank(made):
    for split, x in made.items():
        assert x.shape == (N, 28, 28) and x.dtype == np.uint8, split
        assert (x.reshape(N, -1).max(axis=1) == 255).all(), "the recipe stretches every image's ink to 255"
        assert ((x > 128).reshape(N, -1).sum(axis=1) >= nondigits.MIN_INK).all(), "as much ink as a thin digit"
        border = np.maximum(x[:, [0, -1]].max(axis=(1, 2)), x[:, :, [0, -1]].max(axis=(1, 2)))
        assert (border >= 64).mean() < 0.02, "MNIST's black margin, but for a rare off-centre one"
        assert len({im.tobytes() for im in x}) == N, "no repeats"


def test_same_seed_same_bytes_other_seed_or_split_other_images():
    a = nondigits.generate(12, 7)
    assert a.tobytes() == nondigits.generate(12, 7).tobytes()
    assert a.tobytes() == nondigits.generate(12, 7, "train").tobytes()
    for other in (nondigits.generate(12, 8), nondigits.generate(12, 7, "test")):
        assert not np.array_equal(a, other)
        assert not {im.tobytes() for im in a} & {im.tobytes() for im in other}


def test_kinds_come_in_equal_shares_shuffled():
    kinds = nondigits.kinds_of(100, 0)
    counts = np.bincount(kinds, minlength=len(nondigits.KINDS))
    assert counts.max() - counts.min() <= 1 and counts.sum() == 100
    assert not (np.diff(kinds) >= 0).all(), "shuffled"
    assert not np.array_equal(kinds, nondigits.kinds_of(100, 1))
    assert nondigits.generate(0, 0).shape == (0, 28, 28)


@pytest.mark.parametrize("split", nondigits.SPLITS)
def test_every_kind_renders_a_full_size_grey_image(split):
    rng = np.random.default_rng(0)
    fonts = nondigits.Fonts(split)
    low, high = ink.SIDES
    for kind in nondigits.KINDS:
        for _ in range(4):
            gray = nondigits.render(kind, rng, split, fonts)
            assert gray.ndim == 2 and gray.dtype == np.float32, kind
            assert low <= min(gray.shape) and max(gray.shape) <= high, (kind, gray.shape)
            assert 0 <= gray.min() and gray.max() <= 255 and np.ptp(gray) > paper.MIN_CONTRAST, kind
            assert images.mnist_style(gray).shape == (28, 28)


def test_train_and_test_use_disjoint_font_files():
    train, test = nondigits.font_files("train"), nondigits.font_files("test")
    assert len(train) >= 10 and len(test) >= 3, "matplotlib ships these fonts"
    assert not {p.name for p in train} & {p.name for p in test}
    assert all(p.name.startswith(("DejaVu", "cm")) for p in train) and all(p.name.startswith("STIX") for p in test)
    for split, files in (("train", train), ("test", test)):
        fonts = nondigits.Fonts(split)
        used = {path for pool in fonts.pools.values() for path, _ in pool}
        assert used <= set(files) and fonts.pools["letters"] and fonts.pools["symbols"], split


def test_no_letter_or_symbol_that_reads_as_a_digit():
    for split in nondigits.SPLITS:
        letters, symbols = nondigits.variety("letters", split), nondigits.variety("symbols", split)
        assert letters and not set(letters) & set(nondigits.EXCLUDED_LETTERS + "0123456789"), split
        assert symbols and not set(symbols) & set(nondigits.EXCLUDED_SYMBOLS + nondigits.EXCLUDED_LETTERS), split
        for kind in ("letters", "symbols"):
            for _, drawn in nondigits.Fonts(split).pools[kind]:
                assert set(drawn) <= set(nondigits.variety(kind, split)), (split, kind)
    for digit_like in "OoQDIlijJZzSsbGTBgqa":
        assert digit_like in nondigits.EXCLUDED_LETTERS


def test_the_test_split_has_letters_symbols_and_styles_training_never_sees():
    for kind in nondigits.VARIETY:
        train, test = set(nondigits.variety(kind, "train")), set(nondigits.variety(kind, "test"))
        assert train < test, kind


def test_digit_like_results_are_redrawn():
    def drawn(shape) -> np.ndarray:
        im = Image.new("L", (100, 100), 255)
        shape(ImageDraw.Draw(im))
        return images.mnist_style(np.asarray(im, np.float32))

    bar = drawn(lambda d: d.line([(50, 10), (52, 90)], fill=0, width=8))
    disk = drawn(lambda d: d.ellipse((20, 15, 80, 85), fill=0))
    ring = drawn(lambda d: d.ellipse((25, 15, 75, 85), outline=0, width=7))
    eight = drawn(lambda d: [d.ellipse(box, outline=0, width=6) for box in ((30, 10, 70, 48), (28, 46, 72, 90))])
    grid = drawn(
        lambda d: [
            d.line(xy, fill=0, width=4)
            for i in range(6)
            for xy in ([(10 + 16 * i, 10), (10 + 16 * i, 90)], [(10, 10 + 16 * i), (90, 10 + 16 * i)])
        ]
    )
    assert not nondigits.plausible(bar, "textures") and not nondigits.plausible(bar, "letters"), "a 1"
    assert not nondigits.plausible(disk, "noise"), "a filled 0"
    assert nondigits.loops(ring > 64) == 1 and nondigits.loops(eight > 64) == 2
    assert not nondigits.plausible(ring, "scribbles") and not nondigits.plausible(eight, "scribbles")
    assert nondigits.plausible(grid, "textures") and nondigits.plausible(grid, "scribbles")


def test_non_digits_lie_farther_from_mnist_digits_than_digits_do(made):
    """Nearest-neighbour distance to MNIST training digits: held-out MNIST digits, and digits from
    outside MNIST through the same recipe, lie near; the non-digits of every kind lie farther."""
    reference = data.load_idx_pair(SUBSET, "train").x
    held_out = nearest_mnist(data.load_idx_pair(SUBSET, "t10k").x, reference)
    outside_digits = images.prepare_many([s.data for s in make_set(per_digit=4, seed=1, sides=(48, 200))])
    outside = nearest_mnist(outside_digits, reference)
    digits = max(held_out.mean(), outside.mean())
    for split, x in made.items():
        far = nearest_mnist(x, reference)
        kinds = nondigits.kinds_of(N, 0, split)
        assert far.mean() > digits + 1.5, (split, far.mean(), held_out.mean(), outside.mean())
        for i, kind in enumerate(nondigits.KINDS):
            assert far[kinds == i].mean() > digits + 0.8, (split, kind, far[kinds == i].mean(), digits)
        assert (far < np.median(held_out)).mean() < 0.08, "few as near as a typical MNIST digit"


def test_bad_arguments_are_refused():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="split"):
        nondigits.generate(3, 0, "val")
    with pytest.raises(ValueError, match="kind"):
        nondigits.render("digits", rng, "train")
    with pytest.raises(ValueError, match="at least 0"):
        nondigits.generate(-1, 0)

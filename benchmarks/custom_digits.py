"""Accuracy on digits from outside MNIST: MNIST-style preprocessing versus plain resizing.

The images are made on the spot by `tests/digit_images.py`, two sets: `clean` (hand-drawn-like
pen strokes and font digits; varied stroke widths, sizes, positions, polarities, formats and
modes) and `paper` (hand-drawn digits photographed or scanned: uneven light and shadows, ruled
paper, faint pencil, scanner specks and dark edges). The model
is a `.keras` file (`--model`) or the `fast` preset trained here on full MNIST (`--mnist DIR`
with the four IDX `.gz` files, default `$MNIST_MIRROR`; about a minute on 2 cores). Printed:
accuracy of `images.prepare` (the path the server and CLI use), of plain resizing to 28x28, and
of plain resizing with the polarity fixed, overall and by kind and polarity.

    MNIST_MIRROR=/path/to/mnist python benchmarks/custom_digits.py [--model m.keras] [--per-digit 40]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def train_full(mnist_dir: Path, out: Path) -> Path:
    from mnist_cnn import data, presets, training

    full = data.load_idx_pair(mnist_dir, "train")
    train_split, val_split = data.stratified_split(full, 0.05, 0)
    model_params, train_params = presets.load("fast", directory=ROOT / "presets")
    result = training.train(model_params, train_params, train_split, val_split, out.parent / "work", verbose=2)
    result.model.save(out)
    return out


def inverted_resize(gray: np.ndarray) -> np.ndarray:
    """Plain resize with the polarity fixed (dark ink on light paper inverted), nothing else."""
    from mnist_runtime import images

    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    return images.plain_resize(255.0 - gray if np.median(border) > 127.5 else gray)


def or_blank(prepare, gray: np.ndarray) -> np.ndarray:
    """The prepared digit, or a blank one (scored as a miss) when no digit is found."""
    from mnist_runtime import images

    try:
        return prepare(gray)
    except images.ImageError:
        return np.zeros((28, 28), np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a .keras file trained on MNIST (default: train the fast preset)")
    parser.add_argument("--mnist", type=Path, default=os.environ.get("MNIST_MIRROR"), help="MNIST IDX directory")
    parser.add_argument("--per-digit", type=int, default=40, help="images per digit (default 40: 400 in all)")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--save-grid", type=Path, help="PNG of the MNIST-style inputs with predictions")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    from digit_images import CONDITIONS, make_photos, make_set

    if args.per_digit < len(CONDITIONS):  # photos take the conditions in turn: fewer leave some empty
        parser.error(f"--per-digit {args.per_digit}: at least {len(CONDITIONS)}, one photo per condition")
    from mnist_cnn import entrypoint  # after the check: mnist_runtime.network loads TensorFlow
    from mnist_runtime import images
    from mnist_runtime.network import Classifier

    entrypoint.quiet_libraries()
    entrypoint.load_tensorflow()
    with tempfile.TemporaryDirectory() as tmp:
        if args.model is None:
            if not args.mnist:
                sys.exit("give --model or --mnist (or set MNIST_MIRROR) to train one")
            args.model = train_full(args.mnist, Path(tmp) / "fast.keras")
        classifier = Classifier.load(args.model)

    results = {}
    sets = {
        "clean": (
            make_set(per_digit=args.per_digit, seed=args.seed),
            ("drawn", "font"),
            ("dark-on-light", "light-on-dark"),
        ),
        "paper": (make_photos(per_digit=args.per_digit, seed=args.seed), CONDITIONS, ()),
    }
    for set_name, (samples, kinds, polarities) in sets.items():
        labels = np.array([s.digit for s in samples])
        grays = [images.load_gray(s.data) for s in samples]
        paths = {
            "MNIST-style (images.prepare)": np.stack([or_blank(images.mnist_style, g) for g in grays]),
            "plain resize to 28x28": np.stack([images.plain_resize(g) for g in grays]),
            "plain resize, polarity fixed": np.stack([inverted_resize(g) for g in grays]),
        }
        groups = {
            "all": np.ones(len(samples), bool),
            **{kind: np.array([s.kind == kind for s in samples]) for kind in kinds},
            **{pol: np.array([s.polarity == pol for s in samples]) for pol in polarities},
        }
        results[set_name] = {}
        print(f"\n{set_name}: {len(samples)} images ({args.per_digit} per digit), model {args.model}")
        print(f"{'preprocessing':<32}" + "".join(f"{g:>15}" for g in groups))
        for name, x in paths.items():
            predicted = classifier(x[..., None].astype(np.float32)).argmax(axis=1)
            correct = predicted == labels
            results[set_name][name] = {g: float(correct[m].mean()) for g, m in groups.items()}
            print(f"{name:<32}" + "".join(f"{results[set_name][name][g]:>15.3f}" for g in groups))
            if args.save_grid and name.startswith("MNIST"):
                from mnist_cnn import figures

                keep = (
                    np.flatnonzero(~correct)[:50].tolist()
                    + np.flatnonzero(correct)[: max(0, 100 - (~correct).sum())].tolist()
                )
                fig = figures.image_grid(
                    x[keep], [f"{labels[i]}->{predicted[i]}" for i in keep], f"{set_name}, MNIST-style inputs: label->predicted",
                    ["red" if not correct[i] else "black" for i in keep],
                )  # fmt: skip
                fig.savefig(args.save_grid.with_name(f"{args.save_grid.stem}-{set_name}{args.save_grid.suffix}"))
    if args.json:
        args.json.write_text(json.dumps({"per_digit": args.per_digit, "accuracy": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()

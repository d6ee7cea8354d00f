"""Matplotlib figures logged by the stages. Uses the object-oriented API (no pyplot), so no
GUI backend is touched and nothing global changes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def image_grid(images: np.ndarray, titles: Sequence[str], suptitle: str, colors: Sequence[str] | None = None):
    """A square-ish grid of 28x28 images, each with a short title."""
    n = len(images)
    cols = max(1, min(10, int(np.ceil(np.sqrt(n)))))
    rows = max(1, int(np.ceil(n / cols)))
    fig = _figure(1.3 * cols, 1.45 * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i < n:
            ax.imshow(images[i], cmap="gray_r", vmin=0, vmax=255)
            ax.set_title(titles[i], fontsize=8, color=(colors[i] if colors else "black"))
    fig.suptitle(suptitle)
    return fig


def class_counts(counts: dict[str, Sequence[int]]):
    """Grouped bar chart of images per digit for each split."""
    fig = _figure(8, 3.5)
    ax = fig.subplots()
    width = 0.8 / max(1, len(counts))
    digits = np.arange(10)
    for i, (split, values) in enumerate(counts.items()):
        ax.bar(digits + i * width, values, width, label=f"{split} ({sum(values)})")
    ax.set_xticks(digits + width * (len(counts) - 1) / 2, [str(d) for d in digits])
    ax.set_xlabel("digit")
    ax.set_ylabel("images")
    ax.set_title("Images per digit and split")
    ax.legend()
    return fig


def learning_curves(history: Sequence[dict[str, float]], best_epoch: int | None = None):
    fig = _figure(10, 3.8)
    ax_acc, ax_loss = fig.subplots(1, 2)
    epochs = [r["epoch"] for r in history]
    for ax, metric in ((ax_acc, "accuracy"), (ax_loss, "loss")):
        for split, style in (("train", "-o"), ("val", "-s")):
            key = f"{split}_{metric}"
            if all(key in r for r in history):
                ax.plot(epochs, [r[key] for r in history], style, label=split, markersize=3)
        if best_epoch:
            ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch {best_epoch}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric}: train vs validation")
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def confusion_matrix(matrix: np.ndarray, title: str = "Confusion matrix (test set)"):
    fig = _figure(6.5, 5.5)
    ax = fig.subplots()
    # Log colour scale so the few off-diagonal errors stay visible next to ~1000 correct.
    shown = np.log1p(matrix)
    im = ax.imshow(shown, cmap="Blues")
    threshold = shown.max() / 2 if shown.size else 0
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            if matrix[i, j]:
                ax.text(
                    j,
                    i,
                    str(matrix[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if shown[i, j] > threshold else "black",
                )
    ax.set_xticks(range(10))
    ax.set_yticks(range(10))
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("true digit")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="log(1 + count)")
    return fig


def training_samples(x: np.ndarray, y: np.ndarray, n: int = 40) -> Figure:
    n = min(n, len(y))
    return image_grid(x[:n], [f"label {label}" for label in y[:n]], "Training samples")


def sample_predictions(x: np.ndarray, y: np.ndarray, predicted: np.ndarray, confidence: np.ndarray, n: int) -> Figure:
    """The first `n` test images with prediction, confidence and truth; mistakes in red."""
    n = min(n, len(y))
    titles = [f"pred {p} ({c:.0%})\ntrue {t}" for p, c, t in zip(predicted[:n], confidence[:n], y[:n], strict=True)]
    colors = ["green" if p == t else "red" for p, t in zip(predicted[:n], y[:n], strict=True)]
    return image_grid(x[:n], titles, "Sample test predictions", colors=colors)


def worst_predictions(
    x: np.ndarray,
    y: np.ndarray,
    predicted: np.ndarray,
    confidence: np.ndarray,
    worst: np.ndarray,
    what: str = "",
    labels: Sequence[str] | None = None,
) -> Figure:
    """The most confident mistakes (indices `worst`), worst first; `labels` names each image's source."""
    errors = int(np.sum(predicted != y))
    titles = [
        f"pred {predicted[i]} ({confidence[i]:.0%})\ntrue {y[i]}" + (f" {labels[i]}" if labels else "") for i in worst
    ]
    suptitle = f"Most confident mistakes{' ' + what if what else ''} ({errors} errors in {len(y)})"
    return image_grid(x[worst], titles, suptitle, colors=["red"] * len(worst))


def reliability_diagram(
    tables: dict[str, Sequence[dict[str, float]]], title: str = "Reliability (calibrated)"
) -> Figure:
    """Accuracy against confidence per bin for each set, with the diagonal a calibrated model
    follows; below, the images per bin (log scale), since a bin of three images says little."""
    fig = _figure(5, 6)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="calibrated")
    width = 1.0 / max(len(rows) for rows in tables.values()) / (len(tables) + 1)
    for i, (name, rows) in enumerate(tables.items()):
        shown = [r for r in rows if r["images"]]
        line = top.plot([r["confidence"] for r in shown], [r["accuracy"] for r in shown], marker="o", label=name)[0]
        bottom.bar([r["low"] + (i + 0.5) * width for r in shown], [r["images"] for r in shown], width=width,
                   color=line.get_color(), align="edge")  # fmt: skip
    top.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1.01), title=title)
    top.legend(loc="upper left")
    bottom.set(xlabel="confidence", ylabel="images", yscale="log")
    return fig

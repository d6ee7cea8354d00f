"""A short model card for each registered version: what it reads well and badly, on MNIST and on
real digits from outside it, how far its confidence can be trusted, what it was trained on and
what training cost. Markdown (an artifact of the version's run); `summary` is its one line, the
version's description."""

from __future__ import annotations

from collections.abc import Mapping


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def summary(metrics: Mapping[str, float]) -> str:
    return (
        f"test_accuracy {metrics['test_accuracy']:.4f}, usps_accuracy {metrics.get('usps_accuracy', float('nan')):.4f}, "
        f"ece test {metrics.get('test_ece', float('nan')):.4f} / usps {metrics.get('usps_ece', float('nan')):.4f}"
    )


def render(
    name: str,
    version: int,
    metrics: Mapping[str, float],
    train: Mapping[str, float],
    checksums: Mapping[str, str],
    describe: str,
    decision: str,
) -> str:
    """The card of `name` version `version`: `metrics` from the evaluate stage, `train` from the
    train stage, `checksums` of the data it was trained and measured on."""
    m = metrics.get
    renderings = sorted((k[len("usps_accuracy_") :], v) for k, v in metrics.items() if k.startswith("usps_accuracy_"))
    weakest_digits = sorted(
        (v, k.rsplit("_", 1)[-1]) for k, v in metrics.items() if k.startswith("test_recall_digit_")
    )[:3]
    lines = [
        f"# {name} version {version}",
        "",
        f"{describe}. Registry gate: {decision}.",
        "",
        "## Accuracy",
        '| set | accuracy | answered "not sure" |',
        "|---|---|---|",
        f"| MNIST test (10,000) | {_pct(m('test_accuracy'))} | {_pct(m('test_not_sure'))} |",
        f"| USPS test, all renderings ({int(m('usps_images', 0)):,}) | {_pct(m('usps_accuracy'))} | {_pct(m('usps_not_sure'))} |",
        *(f"| USPS: {r} | {_pct(v)} | |" for r, v in renderings),
        f"| generated non-digits ({int(m('nondigits_images', 0)):,}) | (none is a digit) | {_pct(m('nondigits_not_sure'))} |",
        "",
        "## Calibration (expected calibration error, "
        f"temperature {train.get('temperature', float('nan')):.3f} fitted on validation)",
        "| set | before | after |",
        "|---|---|---|",
        f"| validation | {_pct(train.get('val_ece_uncalibrated'))} | {_pct(train.get('val_ece'))} |",
        f"| MNIST test | {_pct(m('test_ece_uncalibrated'))} | {_pct(m('test_ece'))} |",
        f"| USPS | {_pct(m('usps_ece_uncalibrated'))} | {_pct(m('usps_ece'))} |",
        "",
        f'"Not sure" below confidence {train.get("abstain_threshold", 0.0):.3f} (chosen on validation).',
        "",
        "## Known misreads",
        "- weakest digits on MNIST test (recall): " + ", ".join(f"{d} ({_pct(v)})" for v, d in weakest_digits),
        *(
            [
                f"- weakest USPS rendering: {min(renderings, key=lambda r: r[1])[0]} ({_pct(min(v for _, v in renderings))})"
            ]
            if renderings
            else []
        ),
        "- the most confident mistakes: `evaluation/worst_predictions.png` and `evaluation/usps_worst.png` in this run",
        "",
        "## Training",
        f"- {train.get('epochs_trained', 0):.0f} epochs (best {train.get('best_epoch', 0):.0f}), "
        f"{train.get('train_seconds', 0):.0f} s, {train.get('train_images_per_second', 0):,.0f} images/s",
        "",
        "## Data (SHA-256)",
        *(f"- {k}: `{v}`" for k, v in sorted(checksums.items())),
        "",
    ]
    return "\n".join(lines)

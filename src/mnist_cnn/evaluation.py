"""Test-set metrics: accuracy, loss, per-class and macro precision/recall/F1, confusion matrix,
and the indices of sample and worst predictions for the figures; calibration error and "not
sure" shares; real digits from outside MNIST (USPS) and generated non-digits."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
from sklearn.metrics import classification_report, confusion_matrix

from mnist_cnn import calibrate
from mnist_cnn.data import NUM_CLASSES, Split
from mnist_runtime.calibration import Calibration


@dataclasses.dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, float]  # the headline figures, named `test_*`: the project's one naming scheme
    per_digit: dict[str, float]  # `test_{precision,recall,f1}_digit_N`: in reports and tables, not MLflow charts
    report: list[dict[str, object]]  # one row per class plus macro and weighted averages
    confusion: np.ndarray  # (10, 10) counts, rows = true digit, columns = predicted
    predicted: np.ndarray  # (N,) predicted digit
    confidence: np.ndarray  # (N,) probability of the predicted digit
    worst: np.ndarray  # indices of the most confident mistakes, worst first


def predict_proba(model, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Probabilities for uint8 images (N, 28, 28); calls the model directly, batch by batch."""
    out = []
    for i in range(0, len(x), batch_size):
        batch = x[i : i + batch_size, ..., None].astype("float32")
        out.append(keras.ops.convert_to_numpy(model(batch, training=False)))
    return np.concatenate(out) if out else np.zeros((0, NUM_CLASSES), dtype="float32")


def evaluate_probabilities(y_true: np.ndarray, proba: np.ndarray, worst: int = 25) -> Evaluation:
    y_true = np.asarray(y_true).astype(int)
    predicted = proba.argmax(axis=1)
    confidence = proba[np.arange(len(proba)), predicted]
    eps = 1e-7
    loss = float(-np.mean(np.log(np.clip(proba[np.arange(len(proba)), y_true], eps, 1.0))))
    labels = list(range(NUM_CLASSES))
    rep = classification_report(y_true, predicted, labels=labels, output_dict=True, zero_division=0)
    metrics: dict[str, float] = {
        "test_accuracy": float(np.mean(predicted == y_true)),
        "test_loss": loss,
        "test_macro_precision": float(rep["macro avg"]["precision"]),
        "test_macro_recall": float(rep["macro avg"]["recall"]),
        "test_macro_f1": float(rep["macro avg"]["f1-score"]),
        "test_errors": float(np.sum(predicted != y_true)),
    }
    rows: list[dict[str, object]] = []
    per_digit: dict[str, float] = {}
    for digit in labels:
        r = rep[str(digit)]
        for stat, key in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
            per_digit[f"test_{stat}_digit_{digit}"] = float(r[key])
        rows.append(
            {
                "class": str(digit),
                "precision": r["precision"],
                "recall": r["recall"],
                "f1": r["f1-score"],
                "support": int(r["support"]),
            }
        )
    for avg in ("macro avg", "weighted avg"):
        r = rep[avg]
        rows.append(
            {
                "class": avg,
                "precision": r["precision"],
                "recall": r["recall"],
                "f1": r["f1-score"],
                "support": int(r["support"]),
            }
        )
    wrong = np.flatnonzero(predicted != y_true)
    worst_idx = wrong[np.argsort(-confidence[wrong], kind="stable")][:worst]
    return Evaluation(
        metrics=metrics,
        per_digit=per_digit,
        report=rows,
        confusion=confusion_matrix(y_true, predicted, labels=labels),
        predicted=predicted,
        confidence=confidence,
        worst=worst_idx,
    )


def feedback_metrics(model, split, batch_size: int = 1024) -> dict[str, float]:
    """Accuracy on the digits people corrected on the web page (real handwriting, its own metric)."""
    predicted = predict_proba(model, split.x, batch_size).argmax(axis=1)
    return {"feedback_accuracy": float(np.mean(predicted == split.y)), "feedback_images": float(len(split))}


def calibration_metrics(
    prefix: str, proba: np.ndarray, y: np.ndarray, record: Calibration, bins: int
) -> dict[str, float]:
    """`<prefix>_ece` of the calibrated network and `_uncalibrated` (its temperature undone), and
    `<prefix>_not_sure`, the share of these digits it answers "not sure"."""
    raw = calibrate.rescale(proba, 1.0 / record.temperature)
    return {
        f"{prefix}_ece": calibrate.ece(proba, y, bins),
        f"{prefix}_ece_uncalibrated": calibrate.ece(raw, y, bins),
        f"{prefix}_not_sure": float(np.mean(~record.sure(proba))),
    }


@dataclasses.dataclass(frozen=True)
class RealDigits:
    """USPS in every rendering, read by the model: `usps_*` metrics and what the figures show."""

    metrics: dict[str, float]
    x: np.ndarray  # every rendering's prepared inputs, one after another
    y: np.ndarray
    rendering: list[str]  # of each input
    predicted: np.ndarray
    confidence: np.ndarray
    worst: np.ndarray  # most confident mistakes, worst first
    reliability: list[dict[str, float]]


def real_digits(
    model, renderings: dict[str, Split], record: Calibration, bins: int, batch_size: int = 1024, worst: int = 25
) -> RealDigits:
    """`usps_accuracy` over all renderings and `usps_accuracy_<rendering>` each, calibration error
    and the "not sure" share."""
    metrics: dict[str, float] = {}
    parts = []
    for name, split in renderings.items():
        proba = predict_proba(model, split.x, batch_size)
        metrics[f"usps_accuracy_{name}"] = float(np.mean(proba.argmax(axis=1) == split.y))
        parts.append(proba)
    proba = np.concatenate(parts)
    x = np.concatenate([s.x for s in renderings.values()])
    y = np.concatenate([s.y for s in renderings.values()]).astype(int)
    predicted, confidence = proba.argmax(axis=1), proba.max(axis=1)
    metrics = {"usps_accuracy": float(np.mean(predicted == y)), **metrics, "usps_images": float(len(y)),
               **calibration_metrics("usps", proba, y, record, bins)}  # fmt: skip
    wrong = np.flatnonzero(predicted != y)
    return RealDigits(
        metrics=metrics,
        x=x,
        y=y,
        rendering=[n for n, s in renderings.items() for _ in range(len(s))],
        predicted=predicted,
        confidence=confidence,
        worst=wrong[np.argsort(-confidence[wrong], kind="stable")][:worst],
        reliability=calibrate.reliability(proba, y, bins),
    )


def nondigit_metrics(model, x: np.ndarray, record: Calibration, batch_size: int = 1024) -> dict[str, float]:
    """The share of generated non-digits (a set training never saw) answered "not sure"."""
    proba = predict_proba(model, x, batch_size)
    return {"nondigits_not_sure": float(np.mean(~record.sure(proba))), "nondigits_images": float(len(x))}

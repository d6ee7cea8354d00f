"""Confidence that means what it says: fitting the calibration a model ships, and measuring it.

After training, a temperature is fitted on the validation split (temperature scaling, Guo et
al. 2017: one scalar dividing the logits, chosen for the lowest negative log-likelihood) and baked
into the network (`model.with_temperature`), so every consumer gets calibrated probabilities.
The abstain threshold is the confidence below which `abstain_rate` of the validation digits lie.
The record itself (`mnist_runtime.calibration`) travels inside the `.keras` file. Pure numpy and scipy.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

EPS = 1e-12


def rescale(proba: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / temperature) from probabilities (the logits up to a constant are log p)."""
    logits = np.log(np.clip(np.asarray(proba, np.float64), EPS, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def nll(proba: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(proba[np.arange(len(y)), y], EPS, 1.0))))


def fit_temperature(proba: np.ndarray, y: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood of `y` (searched in log space)."""
    y = np.asarray(y).astype(int)
    found = minimize_scalar(
        lambda t: nll(rescale(proba, float(np.exp(t))), y),
        bounds=(np.log(0.05), np.log(20.0)),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(found.x))


def reliability(proba: np.ndarray, y: np.ndarray, bins: int) -> list[dict[str, float]]:
    """Per equal-width confidence bin: its range, images, mean confidence and accuracy."""
    proba, y = np.asarray(proba), np.asarray(y).astype(int)
    confidence, correct = proba.max(axis=1), proba.argmax(axis=1) == y
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        inside = which == b
        n = int(inside.sum())
        rows.append({"low": b / bins, "high": (b + 1) / bins, "images": n,
                     "confidence": float(confidence[inside].mean()) if n else float("nan"),
                     "accuracy": float(correct[inside].mean()) if n else float("nan")})  # fmt: skip
    return rows


def ece(proba: np.ndarray, y: np.ndarray, bins: int) -> float:
    """Expected calibration error: the images' share-weighted gap between confidence and accuracy."""
    rows = reliability(proba, y, bins)
    total = sum(r["images"] for r in rows)
    return float(sum(r["images"] * abs(r["confidence"] - r["accuracy"]) for r in rows if r["images"]) / max(total, 1))


def abstain_threshold(proba: np.ndarray, rate: float) -> float:
    """The confidence below which `rate` of these (validation) images lie; 0 for rate 0."""
    if rate <= 0:
        return 0.0
    return float(np.quantile(np.asarray(proba).max(axis=1), rate))

"""Temperature scaling, calibration error, the abstain threshold and the record inside a `.keras` file."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_cnn import calibrate
from mnist_runtime import calibration


def _overconfident(n: int, temperature: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of a model whose logits are `temperature` times too large, with labels drawn
    from the true (calibrated) distribution."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.0, size=(n, 10))
    true = calibrate.rescale(np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True), 1.0)
    y = np.array([rng.choice(10, p=p) for p in true])
    return calibrate.rescale(true, 1.0 / temperature), y


def test_fitted_temperature_undoes_overconfidence_and_lowers_the_calibration_error():
    proba, y = _overconfident(4000, temperature=2.5)
    t = calibrate.fit_temperature(proba, y)
    assert t == pytest.approx(2.5, rel=0.1)
    fixed = calibrate.rescale(proba, t)
    assert calibrate.ece(fixed, y, 15) < 0.03 < calibrate.ece(proba, y, 15)
    assert calibrate.nll(fixed, y) < calibrate.nll(proba, y)
    assert np.array_equal(fixed.argmax(axis=1), proba.argmax(axis=1))  # accuracy unchanged


def test_reliability_bins_count_every_image_and_ece_is_zero_when_confidence_is_accuracy():
    proba = np.full((10, 10), 0.05)
    proba[:, 0] = 0.55  # 55% confident of digit 0 ...
    y = np.array([0] * 5 + [1] * 5)  # ... and right half the time: 5 points off
    rows = calibrate.reliability(proba, y, 10)
    assert sum(r["images"] for r in rows) == 10 and rows[5]["images"] == 10
    assert calibrate.ece(proba, y, 10) == pytest.approx(0.05)
    assert calibrate.ece(proba[:5], y[:5], 10) == pytest.approx(0.45)


def test_abstain_threshold_flags_the_asked_share_of_validation_digits():
    proba, _ = _overconfident(2000, 1.0, seed=3)
    record = calibration.Calibration(1.0, calibrate.abstain_threshold(proba, 0.02))
    assert np.mean(~record.sure(proba)) == pytest.approx(0.02, abs=0.002)
    assert calibrate.abstain_threshold(proba, 0.0) == 0.0
    assert calibration.NONE.sure(proba).all()


def test_record_travels_inside_the_keras_file_and_keras_still_loads_it(tmp_path):
    import keras

    from mnist_cnn.model import with_temperature

    inputs = keras.Input((4,))
    logits = keras.layers.Dense(10, name="logits")(inputs)
    model = keras.Model(inputs, keras.layers.Activation("softmax", name="probabilities")(logits))
    path = tmp_path / "m.keras"
    with_temperature(model, 2.0).save(path)
    assert calibration.read(path) == calibration.NONE  # none written yet
    calibration.write(path, calibration.Calibration(2.0, 0.61))
    assert calibration.read(path) == calibration.Calibration(2.0, 0.61)
    loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    raw = keras.ops.convert_to_numpy(model(x))
    assert np.allclose(keras.ops.convert_to_numpy(loaded(x)), calibrate.rescale(raw, 2.0), atol=1e-5)
    assert calibration.read(tmp_path / "missing.keras") == calibration.NONE

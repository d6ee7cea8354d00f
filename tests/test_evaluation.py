"""Test-set metrics from hand-made probabilities, where every number can be worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_cnn.evaluation import evaluate_probabilities


def row(probs: dict[int, float]) -> list[float]:
    """A probability row: the given digits, the rest of the mass spread over the others."""
    rest = (1.0 - sum(probs.values())) / (10 - len(probs))
    return [probs.get(d, rest) for d in range(10)]


# true labels and what the "model" says
Y = np.array([0, 1, 2, 3, 4, 5])
PROBA = np.array(
    [
        row({0: 0.9}),  # right, 0.9
        row({2: 0.6, 1: 0.3}),  # wrong: 1 -> 2 at 0.6
        row({2: 0.7}),  # right, 0.7
        row({5: 0.95, 3: 0.01}),  # wrong: 3 -> 5 at 0.95 (the most confident mistake)
        row({4: 0.5}),  # right, 0.5
        row({8: 0.8, 5: 0.1}),  # wrong: 5 -> 8 at 0.8
    ]
)


@pytest.fixture(scope="module")
def ev():
    assert np.allclose(PROBA.sum(axis=1), 1.0)
    return evaluate_probabilities(Y, PROBA, worst=25)


def test_accuracy_and_error_count(ev):
    assert ev.metrics["test_accuracy"] == pytest.approx(3 / 6)
    assert ev.metrics["test_errors"] == 3


def test_loss_is_the_mean_negative_log_probability_of_the_true_digit(ev):
    manual = -np.mean(np.log([0.9, 0.3, 0.7, 0.01, 0.5, 0.1]))
    assert ev.metrics["test_loss"] == pytest.approx(manual, rel=1e-9)


def test_loss_stays_finite_when_the_true_digit_has_zero_probability():
    proba = np.zeros((2, 10))
    proba[0, 1] = 1.0  # true 0, p(0) = 0
    proba[1, 1] = 1.0  # true 1, p(1) = 1
    ev = evaluate_probabilities(np.array([0, 1]), proba)
    assert np.isfinite(ev.metrics["test_loss"])
    assert ev.metrics["test_loss"] == pytest.approx(-np.log(1e-7) / 2)


def test_predictions_and_confidence(ev):
    assert ev.predicted.tolist() == [0, 2, 2, 5, 4, 8]
    assert ev.confidence == pytest.approx([0.9, 0.6, 0.7, 0.95, 0.5, 0.8])


def test_confusion_matrix_counts(ev):
    expected = np.zeros((10, 10), dtype=int)
    for t, p in [(0, 0), (1, 2), (2, 2), (3, 5), (4, 4), (5, 8)]:
        expected[t, p] += 1
    assert ev.confusion.shape == (10, 10)
    assert np.array_equal(ev.confusion, expected), "rows are true digits, columns predicted"


def test_worst_lists_the_most_confident_mistakes_first(ev):
    assert ev.worst.tolist() == [3, 5, 1]
    assert evaluate_probabilities(Y, PROBA, worst=2).worst.tolist() == [3, 5]
    assert evaluate_probabilities(Y, PROBA, worst=0).worst.tolist() == []


def test_no_mistakes_gives_empty_worst_and_perfect_scores():
    y = np.arange(10)
    proba = np.eye(10) * 0.91 + 0.01
    ev = evaluate_probabilities(y, proba)
    assert ev.worst.size == 0
    assert ev.metrics["test_accuracy"] == 1.0 and ev.metrics["test_errors"] == 0
    assert ev.metrics["test_macro_f1"] == pytest.approx(1.0)


def test_per_class_metrics(ev):
    m = ev.per_digit
    assert m["test_recall_digit_1"] == 0.0  # the only 1 was called a 2
    assert m["test_precision_digit_2"] == pytest.approx(0.5)  # two 2-predictions, one right
    assert m["test_recall_digit_2"] == 1.0
    assert m["test_precision_digit_8"] == 0.0
    assert m["test_f1_digit_0"] == 1.0
    assert m["test_recall_digit_9"] == 0.0  # absent class: zero_division=0, no warning value


def test_metric_names_all_start_with_test(ev):
    assert ev.metrics, "no metrics"
    assert all(name.startswith("test_") for name in ev.metrics), [n for n in ev.metrics if not n.startswith("test_")]
    assert all(isinstance(v, float) for v in ev.metrics.values())
    assert {"test_accuracy", "test_loss", "test_macro_precision", "test_macro_recall", "test_macro_f1"} <= set(
        ev.metrics
    )
    assert not [n for n in ev.metrics if "_digit_" in n], "per-digit figures stay out of the headline metrics"
    assert len(ev.per_digit) == 30 and all(n.startswith("test_") and "_digit_" in n for n in ev.per_digit)


def test_report_has_a_row_per_class_and_two_averages(ev):
    classes = [r["class"] for r in ev.report]
    assert classes == [str(d) for d in range(10)] + ["macro avg", "weighted avg"]
    assert [r["support"] for r in ev.report[:10]] == [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]
    assert ev.report[-1]["support"] == 6

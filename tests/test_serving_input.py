"""Validation of raw pixel input to the served model (pure request decoding), the pyfunc's
answer to bad input (MLflow's INVALID_PARAMETER_VALUE, HTTP 400), and the output records."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from mnist_runtime.decode import MAX_BATCH, RequestError, to_pixels
from mnist_runtime.pyfunc import MnistCnnModel, format_predictions


def images(n: int = 2) -> np.ndarray:
    return (np.arange(n * 784) % 256).reshape(n, 28, 28).astype(np.uint8)


# --- accepted input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda x: x, id="N,28,28"),
        pytest.param(lambda x: x[..., None], id="N,28,28,1"),
        pytest.param(lambda x: x.reshape(len(x), 784), id="N,784"),
        pytest.param(lambda x: x.tolist(), id="nested-int-lists"),
        pytest.param(lambda x: x.reshape(len(x), 784).tolist(), id="flat-int-lists"),
        pytest.param(lambda x: pd.DataFrame(x.reshape(len(x), 784)), id="dataframe-784-columns"),
        pytest.param(lambda x: {"inputs": x.tolist()}, id="inputs-dict"),
        pytest.param(lambda x: x.astype(np.float64), id="float64"),
    ],
)
def test_accepted_layouts_give_n_28_28_1_float32(make):
    x = images(3)
    out = to_pixels(make(x))
    assert out.shape == (3, 28, 28, 1)
    assert out.dtype == np.float32
    assert np.array_equal(out[..., 0], x.astype(np.float32)), "pixels must keep their values and order"


def test_boundary_values_0_and_255_are_accepted():
    x = np.zeros((1, 784))
    x[0, 0], x[0, -1] = 0, 255
    assert to_pixels(x).max() == 255.0


def test_max_batch_is_accepted_and_one_more_is_not():
    assert to_pixels(np.zeros((MAX_BATCH, 784), np.uint8)).shape[0] == MAX_BATCH
    with pytest.raises(RequestError, match="exceeds the limit"):
        to_pixels(np.zeros((MAX_BATCH + 1, 784), np.uint8))


# --- rejected input -------------------------------------------------------------------------


def nan_image():
    x = np.zeros((2, 28, 28), np.float32)
    x[1, 3, 4] = np.nan
    return x


def inf_image():
    x = np.zeros((1, 784))
    x[0, 10] = np.inf
    return x


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param([], "empty batch", id="empty-list"),
        pytest.param(np.zeros((0, 28, 28)), "empty batch", id="empty-array"),
        pytest.param(pd.DataFrame(), "empty batch", id="empty-dataframe"),
        pytest.param(np.zeros((2, 28, 27)), r"input shape \(2, 28, 27\) is not", id="28x27"),
        pytest.param(np.zeros((2, 783)), r"input shape \(2, 783\) is not", id="783-pixels"),
        pytest.param(np.zeros((2, 28, 28, 3)), r"input shape \(2, 28, 28, 3\) is not", id="rgb"),
        pytest.param(np.zeros(784), r"input shape \(784,\) is not", id="unbatched-image"),
        pytest.param(nan_image(), "found NaN or Infinity", id="nan"),
        pytest.param(inf_image(), "found NaN or Infinity", id="inf"),
        pytest.param(np.full((1, 784), -1.0), r"must be in 0-255.*-1\.\.-1", id="negative"),
        pytest.param(np.full((1, 784), 256), r"must be in 0-255.*256\.\.256", id="above-255"),
        pytest.param(np.r_[np.zeros(783), 300.0][None], r"must be in 0-255.*0\.\.300", id="one-pixel-above"),
        pytest.param([[0] * 784, [0] * 783], r"ragged|not a rectangular array", id="ragged-lists"),
        pytest.param([["a"] * 784], "pixels must be numbers", id="strings"),
        pytest.param(pd.DataFrame([["x"] * 784]), "pixels must be numbers", id="string-dataframe"),
        pytest.param({"a": [[0] * 784], "b": [[0] * 784]}, "expected one input tensor", id="two-tensors"),
    ],
)
def test_bad_input_raises_a_request_error_naming_the_problem(value, message):
    with pytest.raises(RequestError, match=message):
        to_pixels(value)


def test_the_pyfunc_answers_bad_input_with_invalid_parameter_value():
    with pytest.raises(MlflowException, match=r"input shape \(2, 783\) is not") as info:
        MnistCnnModel().predict(None, np.zeros((2, 783)))  # rejected before the network is needed
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"
    assert info.value.get_http_status_code() == 400


# --- output ---------------------------------------------------------------------------------


def test_format_predictions_gives_digit_confidence_and_probabilities():
    proba = np.full((2, 10), 0.01, dtype=np.float32)
    proba[0, 7] = 0.91
    proba[1, 2] = 0.91
    frame = format_predictions(proba)
    assert list(frame.columns) == ["digit", "confidence", "probabilities", "sure", "answer"]
    assert frame["sure"].tolist() == [True, True] and frame["answer"].tolist() == ["7", "2"]
    assert frame["digit"].tolist() == [7, 2]
    assert frame["confidence"].tolist() == pytest.approx([0.91, 0.91])
    assert all(isinstance(d, int) for d in frame["digit"].tolist())
    probs = frame["probabilities"].tolist()
    assert all(len(p) == 10 and all(type(v) is float for v in p) for p in probs)
    assert probs[0][7] == pytest.approx(0.91) and probs[0][0] == pytest.approx(0.01)


def test_below_the_abstain_threshold_the_answer_is_not_sure_and_the_digit_stays():
    from mnist_runtime.calibration import Calibration

    proba = np.full((2, 10), 0.01)
    proba[0, 7], proba[1, 2] = 0.91, 0.41
    frame = format_predictions(proba, Calibration(temperature=1.3, abstain_below=0.5))
    assert frame["sure"].tolist() == [True, False]
    assert frame["answer"].tolist() == ["7", "not sure"] and frame["digit"].tolist() == [7, 2]

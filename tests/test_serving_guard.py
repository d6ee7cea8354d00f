"""The scoring-server guard depends on MLflow internals (a private function and its error
wording). These tests run against the installed MLflow, so an MLflow whose scoring server
changed fails here, not silently in production."""

from __future__ import annotations

import json
import logging
import sys

import numpy as np
import pytest
from mlflow.exceptions import MlflowException

from mnist_runtime import guard
from mnist_runtime.pyfunc import MnistCnnModel

server = pytest.importorskip("mlflow.pyfunc.scoring_server")
JSON = "application/json"


class Served:
    """What the scoring server calls: a loaded model's metadata and predict (bad input is
    rejected before the network is needed, so none is loaded)."""

    metadata = None

    def predict(self, data, params=None):
        return MnistCnnModel().predict(None, data, params)


@pytest.fixture
def guarded(monkeypatch):
    monkeypatch.setattr(server, "invocations", server.invocations)  # restored after the test
    assert guard.install() is True
    return server.invocations


def test_the_installed_mlflow_scoring_server_is_what_the_guard_wraps():
    assert guard.problems(server) == []


def test_mlflow_still_echoes_the_input_in_prediction_errors_with_the_wording_the_guard_drops():
    body = json.dumps({"inputs": np.zeros((2, 783)).tolist()})
    mlflow_s_own = getattr(
        server.invocations, "__wrapped__", server.invocations
    )  # a model loaded earlier may have guarded it
    with pytest.raises(MlflowException) as info:
        mlflow_s_own(body, JSON, Served(), None)
    message = info.value.message
    assert message.startswith(guard.ECHO_PREFIX) and guard.ECHO_SEPARATOR in message, message[:200]
    assert guard.shorten_message(message) == "input shape (2, 783) is not (N, 28, 28), (N, 28, 28, 1) or (N, 784)"


def test_guarded_server_answers_4xx_where_mlflow_would_answer_500(guarded):
    assert guarded._mnist_cnn_guard
    missing = guarded(b"{}", "", Served(), None)
    assert missing.status == 415 and json.loads(missing.response)["error_code"] == "UNSUPPORTED_MEDIA_TYPE"
    huge = guarded(b" " * (guard.MAX_BODY_BYTES + 1), JSON, Served(), None)
    assert huge.status == 413 and "exceeds the limit" in json.loads(huge.response)["message"]
    with pytest.raises(MlflowException, match="nested too deeply") as info:
        guarded('{"inputs": ' + "[" * 100_000 + "]" * 100_000 + "}", JSON, Served(), None)
    assert info.value.get_http_status_code() == 400
    with pytest.raises(MlflowException) as info:
        guarded(json.dumps({"inputs": np.zeros((2, 783)).tolist()}), JSON, Served(), None)
    assert info.value.message.startswith("input shape (2, 783)"), "MLflow's echo of the input is dropped"
    assert guard.install() is True, "installing twice keeps one guard"
    assert server.invocations is guarded


def test_a_changed_scoring_server_is_reported_loudly_and_left_alone(monkeypatch, caplog):
    def invocations(request, model):  # a future MLflow's signature
        raise AssertionError("not called")

    monkeypatch.setattr(server, "invocations", invocations)
    with caplog.at_level(logging.ERROR, logger=guard.__name__):
        assert guard.install() is False
    assert server.invocations is invocations
    assert "request guard is OFF" in caplog.text and "invocations takes ('request', 'model')" in caplog.text
    assert guard.problems(server) != []


def test_outside_the_scoring_server_install_does_nothing(monkeypatch):
    monkeypatch.delitem(sys.modules, guard.SERVER_MODULE)
    assert guard.install() is False


def test_long_messages_are_shortened():
    text = guard.shorten_message("x" * 10_000)
    assert len(text) < guard.MAX_MESSAGE and text.endswith("characters cut]")

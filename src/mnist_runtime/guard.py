"""A guard around MLflow's scoring server, the one place that depends on MLflow internals.

Inside `mlflow models serve` it answers with a 4xx what MLflow 3's scoring server would answer
with a 500 or a huge echo: no Content-Type (415), a body over MAX_BODY_BYTES (413), JSON nested
too deeply for the parser (400), and error messages that quote the whole input (the quote is
dropped, long messages shortened). It wraps the private `invocations` function of
`mlflow.pyfunc.scoring_server` and recognises MLflow's echo by its wording; `problems` says what
no longer matches, a mismatch is logged as an error at start-up (the server then runs unguarded),
and tests/test_serving_guard.py fails on an MLflow whose scoring server changed.
"""

from __future__ import annotations

import inspect
import json
import logging
import sys
from importlib.metadata import version
from types import ModuleType

from mlflow.exceptions import MlflowException

from mnist_runtime.decode import PIXELS_COLUMN

MAX_BODY_BYTES = 32 * 1024 * 1024
SERVER_MODULE = "mlflow.pyfunc.scoring_server"
INVOCATIONS_PARAMS = ("data", "content_type", "model", "input_schema")
# MLflow's wording when predict raises: f"Failed to predict data '{data}'. \nError: {message}"
ECHO_PREFIX = "Failed to predict data '"
ECHO_SEPARATOR = "'. \nError: "
MAX_MESSAGE = 2000

_logger = logging.getLogger(__name__)


def problems(server: ModuleType) -> list[str]:
    """What of MLflow's scoring server no longer matches this guard; empty when it fits."""
    found = []
    invocations = getattr(server, "invocations", None)
    if not callable(invocations):
        found.append(f"{SERVER_MODULE}.invocations is missing")
    elif not getattr(invocations, "_mnist_cnn_guard", False):
        params = tuple(inspect.signature(invocations).parameters)
        if params != INVOCATIONS_PARAMS:
            found.append(f"{SERVER_MODULE}.invocations takes {params}, not {INVOCATIONS_PARAMS}")
    response = getattr(server, "InvocationsResponse", None)
    if response is None or getattr(response, "_fields", None) != ("response", "status", "mimetype"):
        found.append(f"{SERVER_MODULE}.InvocationsResponse is missing or no longer (response, status, mimetype)")
    return found


def shorten_message(message: str) -> str:
    """An MLflow prediction error without MLflow's echo of the input, at most about MAX_MESSAGE characters."""
    head, sep, tail = message.partition(ECHO_SEPARATOR)
    if sep and head.startswith(ECHO_PREFIX):
        message = tail
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE // 2] + f" ... [{len(message) - MAX_MESSAGE // 2} characters cut]"
    return message


def install() -> bool:
    """Wrap the scoring server's `invocations` when running inside it; returns whether the guard
    is on. Outside the scoring server it does nothing."""
    server = sys.modules.get(SERVER_MODULE)
    if server is None:
        return False
    if getattr(server.invocations, "_mnist_cnn_guard", False):
        return True
    found = problems(server)
    if found:
        _logger.error(
            "mnist_cnn: the scoring server of MLflow %s changed (%s); its request guard is OFF: bodies over %d bytes, "
            "a missing Content-Type and deeply nested JSON are answered as MLflow does",
            version("mlflow"),
            "; ".join(found),
            MAX_BODY_BYTES,
        )
        return False
    original, response = server.invocations, server.InvocationsResponse

    def error(status: int, code: str, message: str):
        return response(json.dumps({"error_code": code, "message": message}), status, "application/json")

    def invocations(data, content_type, model, input_schema):
        if not content_type:
            return error(415, "UNSUPPORTED_MEDIA_TYPE", "missing Content-Type header; send application/json")
        if len(data) > MAX_BODY_BYTES:
            return error(
                413,
                "REQUEST_TOO_LARGE",
                f"request body of {len(data)} bytes exceeds the limit of {MAX_BODY_BYTES}; split the batch or use "
                f"the compact {PIXELS_COLUMN} input",
            )
        try:
            return original(data, content_type, model, input_schema)
        except RecursionError:
            raise MlflowException.invalid_parameter_value(
                "JSON is nested too deeply; send at most 4 levels of arrays"
            ) from None
        except MlflowException as exc:
            exc.message = shorten_message(exc.message)
            raise

    invocations._mnist_cnn_guard = True
    invocations.__wrapped__ = original
    server.invocations = invocations
    _logger.debug("mnist_cnn: scoring server guarded (body limit %d bytes)", MAX_BODY_BYTES)
    return True

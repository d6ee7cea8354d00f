"""The pyfunc model class that MLflow loads and serves: the Keras network behind a traced
graph, request decoding, and the response records. Bad request content becomes MLflow's
INVALID_PARAMETER_VALUE, which the scoring server answers with HTTP 400."""

from __future__ import annotations

import warnings

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from mnist_runtime import calibration, guard
from mnist_runtime.calibration import Calibration
from mnist_runtime.decode import RequestError, to_model_input
from mnist_runtime.network import Classifier


def format_predictions(proba: np.ndarray, record: Calibration = calibration.NONE) -> pd.DataFrame:
    """(N, 10) probabilities to a frame of digit, confidence, the ten probabilities (6 decimals),
    `sure` (confidence at or above the model's abstain threshold) and `answer`: the digit, or
    "not sure" (the top digit stays in `digit`)."""
    proba = np.asarray(proba, dtype=np.float64)
    digits = proba.argmax(axis=1)
    return pd.DataFrame(
        {
            "digit": digits.astype(int),
            "confidence": proba[np.arange(len(proba)), digits].round(6),
            "probabilities": proba.round(6).tolist(),
            "sure": record.sure(proba),
            "answer": record.answers(proba),
        }
    )


# MLflow warns, as the class is defined, that `predict` has no type hints; it takes several
# request forms on purpose (see the package docstring) and validates them itself.
with warnings.catch_warnings(record=True):

    class MnistCnnModel(mlflow.pyfunc.PythonModel):
        """Pyfunc around the `.keras` network (artifact `keras_model`, loaded in safe mode)."""

        def load_context(self, context):
            self.classifier = Classifier.load(context.artifacts["keras_model"])
            self.model = self.classifier.keras_model
            guard.install()

        def predict(self, context, model_input, params=None):
            try:
                pixels = to_model_input(model_input)
            except RequestError as exc:
                raise MlflowException.invalid_parameter_value(str(exc)) from None
            return format_predictions(self.classifier(pixels), self.classifier.calibration)

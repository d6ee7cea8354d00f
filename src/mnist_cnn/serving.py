"""How the trained network is packaged for `mlflow models serve` and `mlflow.pyfunc`."""

from __future__ import annotations

import numpy as np


def serving_requirements() -> list[str]:
    """Pinned to what trained the model: the scoring environment must load the same Keras file."""
    from importlib.metadata import version

    return [
        f"mlflow=={version('mlflow')}",
        f"keras=={version('keras')}",
        f"tensorflow=={version('tensorflow')}",
        f"numpy=={version('numpy')}",
    ]


def log_model(model, example: np.ndarray):
    """Log the Keras network with a signature and an input example; returns MLflow's ModelInfo."""
    import mlflow
    from mlflow.models import infer_signature

    example = example.astype("float32")
    proba = np.asarray(model(example, training=False))
    signature = infer_signature(example, proba)
    return mlflow.keras.log_model(
        model,
        name="model",
        signature=signature,
        input_example=example,
        pip_requirements=serving_requirements(),
    )

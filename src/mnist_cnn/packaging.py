"""Packaging the network as the registered model: an MLflow models-from-code pyfunc whose code
is the model's runtime, the `mnist_runtime` package alone (`pyfunc_model.py` the entry), and whose
network is the `.keras` file. Nothing is pickled."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import mlflow
import numpy as np
from mlflow.models import ModelSignature
from mlflow.types.schema import Array, ColSpec, Schema

import mnist_runtime

RUNTIME = Path(mnist_runtime.__file__).resolve().parent


def serving_requirements() -> list[str]:
    """Pinned to what trained the model: the scoring environment must load the same Keras file."""
    names = ("mlflow", "keras", "tensorflow", "numpy", "pandas", "pillow", "scipy")
    return [f"{name}=={version(name)}" for name in names]


def output_signature() -> ModelSignature:
    return ModelSignature(
        outputs=Schema(
            [
                ColSpec("long", "digit"),
                ColSpec("double", "confidence"),
                ColSpec(Array("double"), "probabilities"),
                ColSpec("boolean", "sure"),
                ColSpec("string", "answer"),
            ]
        )
    )


def log_model(keras_path: str | Path, example: np.ndarray):
    """Log the models-from-code pyfunc around `keras_path`; returns MLflow's ModelInfo."""
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=str(RUNTIME / "pyfunc_model.py"),
        artifacts={"keras_model": str(keras_path)},
        code_paths=[str(RUNTIME)],
        signature=output_signature(),
        input_example={"inputs": example.astype("uint8").tolist()},
        pip_requirements=serving_requirements(),
    )

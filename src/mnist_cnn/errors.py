"""The pipeline's kinds of user-fixable problem (MnistCnnError comes from the model's runtime)."""

from mnist_runtime.errors import MnistCnnError


class ConfigError(MnistCnnError):
    """params.yaml (or an override) is invalid."""


class DataError(MnistCnnError):
    """Raw or processed data is missing, corrupt or fails verification."""


class TrackingError(MnistCnnError):
    """The MLflow tracking store or model registry cannot be used."""


class TuneError(MnistCnnError):
    """A tuning study cannot start or finish (search space, storage, workers)."""

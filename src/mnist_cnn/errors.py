"""The one exception type the command-line entry points turn into a clean error line."""


class MnistCnnError(Exception):
    """A problem the user can fix; the message names it and says how."""


class ConfigError(MnistCnnError):
    """params.yaml (or an override) is invalid."""


class DataError(MnistCnnError):
    """Raw or processed data is missing, corrupt or fails verification."""


class TrackingError(MnistCnnError):
    """The MLflow tracking store or model registry cannot be used."""


class TuneError(MnistCnnError):
    """A tuning study cannot start or finish (search space, storage, workers)."""

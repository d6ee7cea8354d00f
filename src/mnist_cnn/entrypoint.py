"""What every entry point (the stage scripts, `mnist-cnn` and tuning workers) shares: logging
set up in `run_main`, the libraries' noise kept off the terminal, a MnistCnnError turned into one
clean error line and exit 1, and the `--params`/`--set` options.

Quiet by default: TensorFlow's native log lines (`I0000 ...`, `E0000 ... cuInit`, the per-epoch
`NodeDef mentions attribute ...`), Optuna's experimental-feature notices and MLflow's INFO
chatter are hidden, so a user sees the project's own lines and Keras progress.
`MNIST_CNN_VERBOSE=1` brings them all back."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from mnist_cnn.errors import MnistCnnError

VERBOSE_ENV = "MNIST_CNN_VERBOSE"


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def quiet_libraries() -> None:
    """Hide the libraries' noise (see the module docstring) unless MNIST_CNN_VERBOSE is set.
    Environment variables set here reach child processes too (tuning workers)."""
    if verbose():
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # read by TensorFlow's native logging once loaded
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # bars for small local copies
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # `import mlflow` resets its loggers' level from it
    warnings.filterwarnings(
        "ignore", message=r".* is experimental \(supported from v"
    )  # optuna.exceptions.ExperimentalWarning
    for name in ("mlflow", "alembic", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)


def quiet_server(cmd: list[str], env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """An `mlflow ui` command and environment without MLflow's INFO lines, uvicorn's per-request
    lines and Starlette's deprecation warning (one per worker), unless MNIST_CNN_VERBOSE is set."""
    if verbose():
        return cmd, env
    ignored = ",".join(filter(None, [env.get("PYTHONWARNINGS"), "ignore:starlette.middleware.wsgi is deprecated"]))
    return [*cmd, "--uvicorn-opts", "--log-level warning"], {
        **env,
        "MLFLOW_LOGGING_LEVEL": "WARNING",
        "PYTHONWARNINGS": ignored,
    }


@contextlib.contextmanager
def _native_stderr_held() -> Iterator[None]:
    """Hold what native code writes to file descriptor 2 (Python's sys.stderr is untouched);
    written out after all if the block fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def load_tensorflow() -> None:
    """Import TensorFlow now, quietly: while loading, its libraries log before they read
    TF_CPP_MIN_LOG_LEVEL (`WARNING: All log messages before absl::InitializeLog()`,
    `I0000 ... cudart_stub`), so those lines are held back unless MNIST_CNN_VERBOSE is set."""
    if verbose() or "tensorflow" in sys.modules:
        import tensorflow  # noqa: F401

        return
    with _native_stderr_held():
        import tensorflow  # noqa: F401


def run_main(main: Callable[[], int | None], tensorflow: bool = False) -> None:
    """Run an entry point: configure logging, quiet the libraries (and load TensorFlow quietly
    first when the entry point trains or predicts), turn a MnistCnnError into one clear line
    and exit 1."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    quiet_libraries()
    if tensorflow:
        load_tensorflow()
    try:
        code = main()
    except MnistCnnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)


def add_params_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a param for this run only, e.g. --set train.epochs=1 (logged to MLflow); an empty value is ignored",
    )


def stage_parser(description: str, paths: dict[str, str]) -> argparse.ArgumentParser:
    """A stage script's parser: each path a required option (dvc.yaml names them all), then
    `--params`/`--set`."""
    parser = argparse.ArgumentParser(description=description)
    for option, help_text in paths.items():
        parser.add_argument(option, type=Path, required=True, help=help_text)
    add_params_args(parser)
    return parser

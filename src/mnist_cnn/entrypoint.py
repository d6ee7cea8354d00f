"""What every entry point (the stage scripts and the `mnist-cnn` command) shares: logging set
up in `run_main`, a MnistCnnError turned into one clean error line and exit 1, and the
`--params`/`--set` options."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable

from mnist_cnn.errors import MnistCnnError


def run_main(main: Callable[[], int | None]) -> None:
    """Run an entry point: configure logging, turn a MnistCnnError into one clear line and exit 1."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("alembic", "mlflow.store.db.utils", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
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

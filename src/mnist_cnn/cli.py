"""`mnist-cnn` console script and the shared entry-point wrapper of the stage scripts."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Sequence

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mnist-cnn", description="MNIST CNN pipeline tools")
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("params", help="validate params.yaml and print the resolved settings")
    add_params_args(show)
    return parser


def _show_params(args: argparse.Namespace) -> int:
    import yaml

    from mnist_cnn.config import load_params, to_dict

    print(yaml.safe_dump(to_dict(load_params(args.params, args.overrides)), sort_keys=False), end="")
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    commands = {"params": _show_params}
    run_main(lambda: commands[args.command](args))

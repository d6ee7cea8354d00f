"""The `mnist-cnn` subcommands that start servers: the MLflow UI (`ui`), the champion's scoring
server (`serve`), the team stack of PostgreSQL and MLflow (`stack`) and the web page (`app`).
Each imports what it needs when it runs."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from mnist_cnn import config
from mnist_cnn.entrypoint import quiet_server
from mnist_cnn.errors import TrackingError


def ui(args: argparse.Namespace) -> int:
    import mlflow

    from mnist_cnn.tracking import store

    params = config.load_params(args.params, args.overrides)
    root = config.project_root()
    uri = store.tracking_uri(root)
    server = uri.startswith(("http://", "https://"))
    store.check_reachable(uri)
    experiment = None
    if (path := store.sqlite_path(uri)) is None or path.is_file():
        try:
            experiment = mlflow.MlflowClient(uri).get_experiment_by_name(params.tracking.experiment)
        except mlflow.exceptions.MlflowException as exc:
            raise TrackingError(f"tracking store {uri} cannot be read: {exc.message.splitlines()[0]}") from None
    links = store.ui_links(
        uri if server else f"http://{args.host}:{args.port}",
        experiment and experiment.experiment_id,
        params.register.model_name,
    )
    if experiment is None:
        print(
            f"experiment {params.tracking.experiment!r} has no runs yet in {uri}; `dvc repro` makes them",
            file=sys.stderr,
        )
    print(f"runs:  {links['runs']}\nmodel: {links['models']}", flush=True)
    if server:
        print(f"(the tracking server {uri} is the UI)", file=sys.stderr)
        return 0
    cmd = [
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--registry-store-uri",
        uri,
        "--host",
        args.host,
        "--port",
        str(args.port),
    ]
    cmd, env = quiet_server(cmd, dict(os.environ))
    print(shlex.join(cmd) + "   (Ctrl+C stops)", file=sys.stderr, flush=True)
    os.chdir(root)  # mlflow ui's own default folders (mlartifacts/) are the project's
    os.execvpe(cmd[0], cmd, env)
    return 0


def serve(args: argparse.Namespace) -> int:
    from mnist_cnn import registry
    from mnist_cnn.tracking import store

    params = config.load_params(args.params, args.overrides)
    root = config.project_root()
    store.configure(params.tracking, root)
    model = args.model or registry.champion_uri(params.register.model_name, params.register.champion_alias)
    cmd = [
        "mlflow",
        "models",
        "serve",
        "-m",
        model,
        "--env-manager",
        "local",
        "-h",
        args.host,
        "-p",
        str(args.port),
        "-w",
        str(args.workers),
    ]
    print(" ".join(cmd), file=sys.stderr, flush=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": store.tracking_uri(root)}
    os.execvpe(cmd[0], cmd, env)
    return 0


def stack(args: argparse.Namespace) -> int:
    from mnist_stack import control
    from mnist_stack.settings import exports

    folder = args.dir or config.project_root() / ".stack"
    if args.action == "down":
        stopped = control.down(folder)
        print(f"stopped: {', '.join(stopped)}" if stopped else f"nothing was running in {folder}")
        return 0
    if args.action == "up":
        settings = control.up(folder, args.host, args.pg_port, args.mlflow_port, args.advertise)
        print(
            f"PostgreSQL on port {settings.pg_port} and the MLflow server on {settings.tracking_uri()} run from {folder}"
        )
        print("for every shell that trains, tunes or serves (`mnist-cnn stack status` prints them again):")
        print(exports(settings), end="")
        return 0
    state = control.status(folder)
    settings = state["settings"]
    if settings is None:
        print(f"no stack in {folder}; `mnist-cnn stack up` creates one")
        return 3
    print(f"folder      {folder}")
    print(f"postgresql  {'running' if state['postgresql'] else 'stopped'} (port {settings.pg_port})")
    print(f"mlflow      {'running' if state['mlflow'] else 'stopped'} ({settings.tracking_uri()})")
    print(exports(settings), end="")
    return 0 if state["postgresql"] and state["mlflow"] else 3


def app(args: argparse.Namespace, model: str) -> int:
    """`model`: a `.keras` file or an MLflow model URI (the CLI resolves `--model` or the champion)."""
    import uvicorn

    from mnist_cnn.feedback import FeedbackStore
    from mnist_cnn.webapp.server import create_app
    from mnist_runtime.network import Classifier

    store = None if args.no_feedback else FeedbackStore(args.feedback_dir, args.feedback_limit)
    label = Path(model).name if Path(model).is_file() else model  # a file's name; a URI as it is
    page = create_app(Classifier.load(model), label, store)
    where = f"into {args.feedback_dir}/<label>/" if store else "off"
    print(
        f"mnist-cnn app on http://{args.host}:{args.port}/ (model {model}; feedback {where}); Ctrl+C stops",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(page, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0

"""The `mnist-cnn` console script: its parser, and the subcommands that do their work and exit
(params, preset, predict, export, tune, stage, feedback). Those that start servers (ui, serve,
stack, app) are in `servers`.

Each subcommand imports what it needs when it runs, so `params`, `preset` and `feedback` answer
without loading MLflow or TensorFlow."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path

import numpy as np

from mnist_cnn import atomic, config, figures, presets, servers
from mnist_cnn.entrypoint import add_params_args, run_main
from mnist_cnn.errors import ConfigError
from mnist_cnn.schema import dump_yaml, read_yaml, to_dict
from mnist_runtime import images


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mnist-cnn", description="MNIST CNN pipeline tools")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('mnist-cnn')}")
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("params", help="validate params.yaml and print the resolved settings")
    add_params_args(show)
    preset = sub.add_parser(
        "preset",
        help="copy a preset (presets/NAME.yaml: seed, fast, accurate) into params.yaml's model and train sections",
    )
    preset.add_argument("name", nargs="?", help="preset to apply; omit to list them")
    preset.add_argument(
        "--params", type=Path, default=Path("params.yaml"), help="params file to update (default: params.yaml)"
    )
    ui = sub.add_parser(
        "ui",
        help="`mlflow ui` over the project's tracking store, with links that open on the model-training view",
        description="Prints links to the experiment's runs and the registered model, on MLflow's model-training view "
        "(MLflow 3.17's UI opens on its GenAI view otherwise), then runs `mlflow ui`. With MLFLOW_TRACKING_URI set to a "
        "server, that server is the UI: only the links are printed.",
    )
    ui.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    ui.add_argument("--port", type=int, default=5000)
    add_params_args(ui)
    serve = sub.add_parser("serve", help="serve the registry's champion with `mlflow models serve` (local environment)")
    serve.add_argument("--model", help="model URI (default: models:/<register.model_name>@<register.champion_alias>)")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=5001)
    serve.add_argument("--workers", type=int, default=1)
    add_params_args(serve)
    predict = sub.add_parser(
        "predict", help="predict the digit in image files (PNG, JPEG, BMP), brought to MNIST's form as the server does"
    )
    predict.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    predict.add_argument("--model", help="model URI or a local .keras file (default: the registry's champion)")
    predict.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per line: file, digit, confidence, probabilities, sure, answer",
    )
    predict.add_argument(
        "--save-grid",
        type=Path,
        metavar="PNG",
        help="also save the 28x28 inputs as the model saw them, with predictions",
    )
    add_params_args(predict)
    export = sub.add_parser("export", help="export the champion's network (or --model) for devices")
    export.add_argument("--format", choices=["tflite"], default="tflite", help="output format (default: tflite)")
    export.add_argument("--model", help="model URI or a local .keras file (default: the registry's champion)")
    export.add_argument(
        "--out", type=Path, default=Path("models/model.tflite"), help="output file (default: models/model.tflite)"
    )
    add_params_args(export)
    stage = sub.add_parser(
        "stage",
        help="run one dvc.yaml stage's command outside DVC (its paths from dvc.yaml), with --set overrides",
    )
    stage.add_argument("name", choices=["download", "preprocess", "train", "evaluate", "register"])
    stage.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a param for this run only; an empty value is ignored",
    )
    tune = sub.add_parser(
        "tune",
        help="run or resume the Optuna study of params.yaml's tune section; --apply copies its best params into params.yaml",
        description="Search space, sampler, pruner, epochs per trial and data share come from params.yaml's tune "
        "section; the options below override it for this run. Trials are scored on the validation split.",
    )
    tune.add_argument("--trials", type=int, help="finished trials the study should hold (tune.n_trials)")
    tune.add_argument("--timeout", type=float, help="seconds after which no new trial starts (tune.timeout_s)")
    tune.add_argument("--workers", type=int, help="parallel worker processes on this machine (tune.workers)")
    tune.add_argument(
        "--storage", help="Optuna storage URL or journal file (tune.storage; default optuna/<study>.journal)"
    )
    tune.add_argument("--study-name", help="study to create or resume (tune.study_name)")
    tune.add_argument(
        "--data-dir", type=Path, default=Path("data/processed"), help="train.npz and val.npz (default: data/processed)"
    )
    tune.add_argument(
        "--best",
        type=Path,
        default=Path("tuning/best_params.yaml"),
        help="best params file, kept under version control (default: tuning/best_params.yaml)",
    )
    tune.add_argument("--apply", action="store_true", help="write the best params file's values into --params and stop")
    tune.add_argument(
        "--pick",
        type=int,
        metavar="TRIAL",
        help="with --apply on a multi-objective study's file: that trial of the front instead of the documented choice",
    )
    tune.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_params_args(tune)
    app = sub.add_parser("app", help="a web page on 127.0.0.1 to draw or upload a digit and see what the model reads")
    app.add_argument("--model", help="model URI or a local .keras file (default: the registry's champion)")
    app.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    app.add_argument("--port", type=int, default=8000)
    app.add_argument(
        "--feedback-dir",
        type=Path,
        default=Path("data/feedback"),
        help="where corrected digits are stored, data/feedback/<label>/ (default: data/feedback)",
    )
    app.add_argument(
        "--feedback-limit", type=int, default=5000, help="most images the feedback folder may hold (default 5000)"
    )
    app.add_argument("--no-feedback", action="store_true", help="take no feedback")
    add_params_args(app)
    review = sub.add_parser(
        "feedback",
        help="review the web page's corrected digits: counts, conflicting labels, accept or relabel one",
        description="An image sent with two different labels is kept once in <dir>/conflicts/, out of training and "
        "evaluation, until `accept` files it under a label. ID: an image's 16 hex characters (its file name) or a "
        "unique prefix of at least 4.",
    )
    actions = review.add_subparsers(dest="action", required=True)
    for name, help_text in (
        ("list", "images per label, then each conflict: its id, the labels given and its file"),
        ("accept", "resolve a conflict: file the image under LABEL and drop its record"),
        ("relabel", "move a labelled image to another label (a wrong correction)"),
    ):
        action = actions.add_parser(name, help=help_text, description=help_text)
        if name != "list":
            action.add_argument("id", metavar="ID", help="the image's id or a unique prefix of at least 4 characters")
            action.add_argument("label", metavar="LABEL", help="the digit 0-9 the image shows")
        action.add_argument(
            "--dir", type=Path, default=Path("data/feedback"), help="the feedback folder (default: data/feedback)"
        )
    stack = sub.add_parser(
        "stack",
        help="start, stop or show the team servers: PostgreSQL and an MLflow server over it (see README, Team set-up)",
        description="PostgreSQL holds the MLflow store, the registry and the Optuna studies; the MLflow server proxies "
        "artifacts. Everything lives in --dir; `up` prints the variables clients export.",
    )
    stack.add_argument("action", choices=["up", "down", "status"])
    stack.add_argument("--dir", type=Path, help="the servers' data folder (default: .stack at the project root)")
    stack.add_argument("--host", help="address both servers listen on (default 127.0.0.1; 0.0.0.0 for a team network)")
    stack.add_argument(
        "--advertise",
        metavar="ADDR",
        help="the address or name other machines reach the servers at, in the printed URLs "
        "(default: the --host address, or with 0.0.0.0 this machine's only network address)",
    )
    stack.add_argument("--pg-port", type=int, help="PostgreSQL port (default 5433)")
    stack.add_argument("--mlflow-port", type=int, help="MLflow server port (default 5000)")
    return parser


def _tune(args: argparse.Namespace) -> int:
    if args.apply:
        from mnist_cnn.tuning.best import apply_best

        changes = apply_best(args.best, args.params, args.pick)
        chosen = f"trial {args.pick} of {args.best}" if args.pick is not None else f"the best params of {args.best}"
        if not changes:
            print(f"{args.params} already holds {chosen}")
            return 0
        for key, old, new in changes:
            print(f"{key}: {old!r} -> {new!r}")
        print(
            f"{args.params} updated; next: dvc repro trains, evaluates and registers the tuned model (dvc params diff shows the change)"
        )
        return 0
    flags = {
        "n_trials": args.trials,
        "timeout_s": args.timeout,
        "workers": args.workers,
        "storage": args.storage,
        "study_name": args.study_name,
    }
    overrides = [*args.overrides, *(f"tune.{k}={v}" for k, v in flags.items() if v is not None)]
    from mnist_cnn.tuning.best import write_best
    from mnist_cnn.tuning.study import run_study
    from mnist_cnn.tuning.trial import OBJECTIVE

    if args.pick is not None:
        raise ConfigError("--pick chooses a trial to apply: use it with --apply")
    params = config.load_params(args.params, overrides)
    result = run_study(params, args.data_dir, config.project_root(), progress=not args.no_progress)
    counts = result.counts
    print(
        f"study {result.study_name}: {counts['COMPLETE']} complete, {counts['PRUNED']} pruned, {counts['FAIL']} failed "
        f"({result.epochs_trained} epochs, {result.seconds:.0f}s); MLflow parent run {result.parent_run_id}"
    )
    if result.best_value is None:
        print("no trial completed; nothing to apply")
        return 0
    print(
        f"\nthe Pareto front of {', '.join(result.objectives)}:"
        if result.multi
        else "\nbest trials (validation accuracy):"
    )
    print(result.table)
    write_best(result, args.best)
    if result.multi:
        print(f"\nchosen: trial {result.best_number} ({result.rule}); the front and its choice written to {args.best}")
        print("next: mnist-cnn tune --apply (or --apply --pick TRIAL for another trial of the front), then dvc repro")
    else:
        print(f"\nbest: trial {result.best_number}, {OBJECTIVE} {result.best_value:.4f}; written to {args.best}")
        print("next: mnist-cnn tune --apply, then dvc repro")
    return 0


def _stage(args: argparse.Namespace) -> int:
    """Exec dvc.yaml's command of the stage, so its paths have one home (used by MLproject)."""
    dvc_yaml = config.project_root() / "dvc.yaml"
    cmd = shlex.split(read_yaml(dvc_yaml, what="pipeline file")["stages"][args.name]["cmd"])
    cmd += [f"--set={item}" for item in args.overrides]
    if cmd[0] == "python":
        cmd[0] = sys.executable
    os.chdir(dvc_yaml.parent)
    os.execv(cmd[0], cmd)
    return 0


def _feedback(args: argparse.Namespace) -> int:
    from mnist_cnn import feedback

    if args.action != "list":
        move = feedback.resolve if args.action == "accept" else feedback.relabel
        path = move(args.dir, args.id, args.label)
        print(f"{path.stem} is labelled {path.parent.name}: {path} (in the next `dvc repro`'s feedback)")
        return 0
    counts, conflicts = feedback.counts(args.dir), feedback.conflicts(args.dir)
    print(f"{args.dir}: {sum(counts.values())} labelled images, {len(conflicts)} conflicting")
    print("label  images")
    for label, n in counts.items():
        print(f"{label:>5}  {n}")
    if conflicts:
        print("conflicts, out of training and evaluation until `mnist-cnn feedback accept ID LABEL`:")
    for conflict in conflicts:
        given = ", ".join(f"{label} (x{entry.get('count', '?')})" for label, entry in sorted(conflict.labels.items()))
        print(f"{conflict.id}  labels {given or 'unknown'}  {conflict.path}")
    return 0


def _model_or_champion(args: argparse.Namespace) -> str:
    """`--model` as given, else the registry's champion (a clear error when there is none)."""
    if args.model:
        return args.model
    from mnist_cnn import registry
    from mnist_cnn.tracking import store

    params = config.load_params(args.params, args.overrides)
    store.configure(params.tracking, config.project_root())
    return registry.champion_uri(params.register.model_name, params.register.champion_alias)


def _predict(args: argparse.Namespace) -> int:
    from mnist_runtime.network import load_predict_fn

    predict = load_predict_fn(_model_or_champion(args))
    names, pixels, failed = [], [], 0
    for path in args.images:
        try:
            pixels.append(images.prepare(path))
            names.append(str(path))
        except images.ImageError as exc:
            print(f"error: {path}: {exc}", file=sys.stderr)
            failed += 1
    from mnist_runtime.pyfunc import format_predictions

    proba = predict(np.stack(pixels)) if pixels else np.zeros((0, 10))
    rows = format_predictions(proba, predict.calibration).to_dict("records")
    for name, row in zip(names, rows, strict=True):
        if args.json:
            print(json.dumps({"file": name, **{k: v.item() if hasattr(v, "item") else v for k, v in row.items()}}))
        else:
            answer = row["answer"] if row["sure"] else f"{row['answer']} ({row['digit']}?)"
            print(f"{name}\t{answer}\t{row['confidence']:.4f}")
    if args.save_grid and pixels:
        titles = [
            f"{Path(n).name[:16]}\n{r['digit'] if r['sure'] else '?' + str(r['digit'])} ({r['confidence']:.2f})"
            for n, r in zip(names, rows, strict=True)
        ]
        colors = ["black" if r["sure"] else "red" for r in rows]
        fig = figures.image_grid(np.stack(pixels), titles, "as the model sees them: digit (confidence)", colors)
        with atomic.atomic_path(args.save_grid) as tmp:
            fig.savefig(tmp, format="png")
        print(f"grid of {len(pixels)} inputs written to {args.save_grid}", file=sys.stderr)
    if failed:
        print(f"error: {failed} of {len(args.images)} images could not be read", file=sys.stderr)
    return 1 if failed else 0


def _export(args: argparse.Namespace) -> int:
    from mnist_cnn import export

    model = _model_or_champion(args)
    out = export.export_tflite(model, args.out)
    print(f"{out}: TFLite model of {model} ({out.stat().st_size:,} bytes); input float32 pixels 0-255 (N, 28, 28, 1)")
    return 0


def _show_params(args: argparse.Namespace) -> int:
    print(dump_yaml(to_dict(config.load_params(args.params, args.overrides))), end="")
    return 0


def _apply_preset(args: argparse.Namespace) -> int:
    if not args.name:
        print("\n".join(presets.available()))
        return 0
    changed = presets.apply(args.name, args.params)
    if changed:
        print(f"{args.params}: preset {args.name} applied; changed {', '.join(changed)}")
        print("next: dvc repro (or dvc exp run) trains with it; dvc params diff shows the change")
    else:
        print(f"{args.params} already matches preset {args.name}")
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    commands = {
        "params": _show_params,
        "preset": _apply_preset,
        "ui": servers.ui,
        "serve": servers.serve,
        "predict": _predict,
        "export": _export,
        "tune": _tune,
        "stage": _stage,
        "stack": servers.stack,
        "app": lambda args: servers.app(args, _model_or_champion(args)),
        "feedback": _feedback,
    }
    trains_or_predicts = args.command in ("predict", "export", "app") or (args.command == "tune" and not args.apply)
    run_main(lambda: commands[args.command](args), tensorflow=trains_or_predicts)

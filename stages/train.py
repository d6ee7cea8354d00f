"""Stage train: fit the CNN on the training split, pick the best epoch on validation, log it all to MLflow."""

import shutil

import mlflow

from mnist_cnn import atomic, config, data, figures, tracking, training
from mnist_cnn.entrypoint import run_main, stage_parser
from mnist_cnn.schema import flatten
from mnist_cnn.serving import package

PATHS = {
    "--data-dir": "train.npz and val.npz",
    "--model": "where the .keras file goes",
    "--run-info": "MLflow run id and model URI (JSON)",
    "--metrics": "the run's summary metrics (JSON)",
    "--history": "per-epoch curves (CSV, a DVC plot)",
    "--work-dir": "resumable backups, kept only while a run is unfinished",
}


def main() -> None:
    args = stage_parser(__doc__, PATHS).parse_args()
    params = config.load_params(args.params, args.overrides)
    train_split, val_split = data.load_split(args.data_dir, "train"), data.load_split(args.data_dir, "val")
    checksums = data.processed_checksums(args.data_dir)
    work_dir = training.resume_dir(args.work_dir, params.model, params.train, checksums)

    root = config.project_root()
    experiment = tracking.configure(params.tracking, root)
    with tracking.stage_run("train", experiment, root) as run:
        tracking.log_params({
            **flatten(params.model, "model."), **flatten(params.train, "train."),
            "data.val_fraction": params.data.val_fraction, "data.split_seed": params.data.split_seed,
            "data.train_images": len(train_split), "data.val_images": len(val_split),
        })  # fmt: skip
        mlflow.set_tags({f"data.sha256.{k}": v for k, v in checksums.items()})
        result = training.train(params.model, params.train, train_split, val_split, work_dir, on_epoch=[tracking.epoch_logger()])
        summary = result.summary()
        mlflow.log_metrics({k: float(v) for k, v in summary.items()})
        tracking.log_figure(figures.learning_curves(result.history, result.best_epoch), "training/learning_curves.png")
        tracking.log_table(result.history, "training/history.json")
        with atomic.atomic_path(args.model) as tmp:
            result.model.save(tmp)
            model_info = package.log_model(tmp, val_split.x[:2])
        atomic.write_rows(args.history, result.history)
        atomic.write_json(args.metrics, summary)
        atomic.write_json(args.run_info, tracking.run_info(run, model_info.model_uri))
    shutil.rmtree(work_dir, ignore_errors=True)
    best = result.best
    print(
        f"best epoch {result.best_epoch}/{len(result.history)}: val_accuracy {best['val_accuracy']:.4f}, "
        f"{result.seconds:.1f}s; MLflow run {run.info.run_id}"
    )


if __name__ == "__main__":
    run_main(main)

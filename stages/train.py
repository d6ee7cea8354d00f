"""Stage train: fit the CNN on the training split, pick the best epoch on validation, calibrate it on
validation (temperature and the "not sure" threshold), log it all to MLflow."""

import shutil

from mnist_cnn import atomic, config, data, figures, packaging, presets
from mnist_cnn.entrypoint import run_main, stage_parser
from mnist_cnn.tracking import run_info
from mnist_cnn.tracking.runs import stage_run
from mnist_runtime import calibration

PATHS = {
    "--data-dir": "train.npz and val.npz",
    "--model": "where the .keras file goes",
    "--run-info": "MLflow run id and model URI (JSON)",
    "--metrics": "the run's summary metrics (JSON)",
    "--history": "per-epoch curves (CSV, a DVC plot)",
    "--figures": "folder for the learning-curves PNG (a DVC plot)",
    "--work-dir": "resumable backups, kept only while a run is unfinished",
}


def main() -> None:
    args = stage_parser(__doc__, PATHS).parse_args()
    from mnist_cnn import training  # TensorFlow, loaded quietly by run_main first

    params = config.load_params(args.params, args.overrides)
    train_split, val_split = data.load_split(args.data_dir, "train"), data.load_split(args.data_dir, "val")
    checksums = data.processed_checksums(args.data_dir)
    work_dir = training.resume_dir(args.work_dir, params.model, params.train, checksums)

    root = config.project_root()
    with stage_run("train", params.tracking, root, system_metrics=True) as run:
        run.log_training_inputs(params, args.data_dir, {"train": train_split, "val": val_split}, checksums)
        result = training.train(params.model, params.train, train_split, val_split, work_dir, on_epoch=[run.log_epoch])
        network, record, fit = training.calibrate(result.model, val_split, params.calibration)
        summary = {**result.summary(), **fit}
        run.log_metrics(summary)
        curves = figures.learning_curves(result.history, result.best_epoch)
        run.log_figure(curves, "training/learning_curves.png", args.figures)
        run.log_table(result.history, "training/history.json")
        with atomic.atomic_path(args.model) as tmp:
            network.save(tmp)
            calibration.write(tmp, record)
            model_info = packaging.log_model(tmp, val_split.x[:2])
        atomic.write_rows(args.history, result.history)
        atomic.write_json(args.metrics, summary)
        run_info.write(args.run_info, run.run_id, run.experiment_id, model_info)
        run.note(f"train: {presets.describe(params)}, best val_accuracy {result.best['val_accuracy']:.4f}")
    shutil.rmtree(work_dir, ignore_errors=True)
    print(
        f"best epoch {result.best_epoch}/{len(result.history)}: val_accuracy {result.best['val_accuracy']:.4f}, "
        f"{result.seconds:.1f}s; MLflow run {run.run_id}"
    )
    print(
        f"calibrated: temperature {fit['temperature']:.3f}, val_ece {fit['val_ece_uncalibrated']:.4f} -> {fit['val_ece']:.4f}; "
        f'"not sure" below confidence {fit["abstain_threshold"]:.3f}'
    )


if __name__ == "__main__":
    run_main(main, tensorflow=True)

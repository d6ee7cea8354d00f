"""Stage train: fit the CNN on the training split, pick the best epoch on validation, log it all to MLflow."""

import argparse
import hashlib
import json
import shutil
from pathlib import Path

from mnist_cnn.cli import add_params_args, run_main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=Path("data/processed"))
    parser.add_argument("--model", type=Path, default=Path("models/model.keras"), help="where the .keras file goes")
    parser.add_argument("--run-info", type=Path, default=Path("models/run.json"), help="MLflow run id and model URI")
    parser.add_argument("--metrics", type=Path, default=Path("reports/train_metrics.json"))
    parser.add_argument("--history", type=Path, default=Path("reports/train_history.csv"), help="per-epoch DVC plot")
    parser.add_argument(
        "--work-dir", type=Path, default=Path("checkpoints/train"), help="resumable backups, kept only while a run is unfinished"
    )
    add_params_args(parser)
    args = parser.parse_args()

    from mnist_cnn import atomic, config, data, figures, serving, tracking, training

    params = config.load_params(args.params, args.overrides)
    train_split = data.load_split(args.data_dir, "train")
    val_split = data.load_split(args.data_dir, "val")
    checksums = data.processed_checksums(args.data_dir)
    # A backup is only resumed by a run with the same params and data.
    key = hashlib.sha256(
        json.dumps([config.to_dict(params.model), config.to_dict(params.train), checksums], sort_keys=True).encode()
    ).hexdigest()[:16]
    work_dir = args.work_dir / key

    root = tracking.project_root()
    experiment = tracking.configure(params.tracking, root)
    with tracking.stage_run("train", experiment, root) as run:
        import mlflow

        tracking.log_params(
            {
                **config.flatten(params.model, "model."),
                **config.flatten(params.train, "train."),
                "data.val_fraction": params.data.val_fraction,
                "data.split_seed": params.data.split_seed,
                "data.train_images": len(train_split),
                "data.val_images": len(val_split),
            }
        )
        mlflow.set_tags({f"data.sha256.{k}": v for k, v in checksums.items()})
        result = training.train(
            params.model, params.train, train_split, val_split, work_dir, on_epoch=[tracking.epoch_logger()]
        )
        best = result.best
        summary = {
            "best_epoch": result.best_epoch,
            "epochs_trained": len(result.history),
            "best_val_accuracy": best["val_accuracy"],
            "best_val_loss": best["val_loss"],
            "train_seconds": result.seconds,
            "train_images_per_second": result.images_per_second,
        }
        mlflow.log_metrics({k: float(v) for k, v in summary.items()})
        tracking.log_figure(figures.learning_curves(result.history, result.best_epoch), "training/learning_curves.png")
        tracking.log_table(result.history, "training/history.json")
        with atomic.atomic_path(args.model) as tmp:
            result.model.save(tmp)
            model_info = serving.log_model(tmp, val_split.x[:2])
        columns = list(result.history[0])
        atomic.write_csv(args.history, columns, [[row[c] for c in columns] for row in result.history])
        atomic.write_json(args.metrics, summary)
        atomic.write_json(
            args.run_info,
            {
                "run_id": run.info.run_id,
                "experiment_id": run.info.experiment_id,
                "model_uri": model_info.model_uri,
                "tracking_uri": mlflow.get_tracking_uri(),
            },
        )
    shutil.rmtree(work_dir, ignore_errors=True)
    print(
        f"best epoch {result.best_epoch}/{len(result.history)}: val_accuracy {best['val_accuracy']:.4f}, "
        f"{result.seconds:.1f}s; MLflow run {run.info.run_id}"
    )


if __name__ == "__main__":
    run_main(main)

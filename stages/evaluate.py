"""Stage evaluate: score the trained model on the 10,000 test images, into the same MLflow run as the model."""

import argparse
from pathlib import Path

from mnist_cnn.cli import add_params_args, run_main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=Path("data/processed"))
    parser.add_argument("--model", type=Path, default=Path("models/model.keras"))
    parser.add_argument("--run-info", type=Path, default=Path("models/run.json"))
    parser.add_argument("--metrics", type=Path, default=Path("reports/test_metrics.json"))
    parser.add_argument("--confusion", type=Path, default=Path("reports/confusion.csv"), help="per-image DVC plot")
    parser.add_argument("--report", type=Path, default=Path("reports/classification_report.csv"))
    add_params_args(parser)
    args = parser.parse_args()

    from mnist_cnn import atomic, config, data, evaluation, figures, tracking
    from mnist_cnn.errors import DataError

    params = config.load_params(args.params, args.overrides)
    test = data.load_split(args.data_dir, "test")
    info = tracking.read_run_info(args.run_info)
    if not args.model.is_file():
        raise DataError(f"{args.model} is missing; run the train stage first (dvc repro train)")

    import keras

    model = keras.saving.load_model(args.model, compile=False, safe_mode=True)
    proba = evaluation.predict_proba(model, test.x, params.evaluate.batch_size)
    result = evaluation.evaluate_probabilities(test.y, proba, worst=params.evaluate.worst)

    root = tracking.project_root()
    experiment = tracking.configure(params.tracking, root)
    with tracking.stage_run("evaluate", experiment, root, run_id=info["run_id"]):
        import mlflow

        tracking.log_params(config.flatten(params.evaluate, "evaluate."))
        mlflow.log_metrics(result.metrics)
        tracking.log_table(result.report, "evaluation/classification_report.json")
        tracking.log_figure(figures.confusion_matrix(result.confusion), "evaluation/confusion_matrix.png")
        n = min(params.evaluate.grid_size, len(test))
        ok = result.predicted[:n] == test.y[:n]
        tracking.log_figure(
            figures.image_grid(
                test.x[:n],
                [f"pred {p} ({c:.0%})\ntrue {t}" for p, c, t in zip(result.predicted[:n], result.confidence[:n], test.y[:n])],
                "Sample test predictions",
                colors=["green" if o else "red" for o in ok],
            ),
            "evaluation/sample_predictions.png",
        )
        worst = result.worst
        tracking.log_figure(
            figures.image_grid(
                test.x[worst],
                [f"pred {result.predicted[i]} ({result.confidence[i]:.0%})\ntrue {test.y[i]}" for i in worst],
                f"Most confident mistakes ({int(result.metrics['test_errors'])} errors in {len(test)})",
                colors=["red"] * len(worst),
            ),
            "evaluation/worst_predictions.png",
        )
        atomic.write_csv(args.confusion, ["actual", "predicted"], [[int(t), int(p)] for t, p in zip(test.y, result.predicted)])
        atomic.write_csv(
            args.report, ["class", "precision", "recall", "f1", "support"], [list(r.values()) for r in result.report]
        )
        atomic.write_json(args.metrics, result.metrics)
    m = result.metrics
    print(f"test_accuracy {m['test_accuracy']:.4f}, test_loss {m['test_loss']:.4f}, macro F1 {m['test_macro_f1']:.4f}")


if __name__ == "__main__":
    run_main(main)

"""Stage evaluate: score the trained model on the 10,000 test images, into the same MLflow run as the model."""

import keras
import mlflow

from mnist_cnn import atomic, config, data, evaluation, figures, tracking
from mnist_cnn.entrypoint import run_main, stage_parser
from mnist_cnn.errors import DataError
from mnist_cnn.schema import flatten

PATHS = {
    "--data-dir": "test.npz",
    "--model": "the trained .keras file",
    "--run-info": "the train stage's MLflow run (JSON)",
    "--metrics": "test metrics (JSON)",
    "--confusion": "actual and predicted digit per test image (CSV, a DVC plot)",
    "--report": "per-class precision, recall, F1 (CSV)",
}


def main() -> None:
    args = stage_parser(__doc__, PATHS).parse_args()
    params = config.load_params(args.params, args.overrides)
    test = data.load_split(args.data_dir, "test")
    info = tracking.read_run_info(args.run_info)
    if not args.model.is_file():
        raise DataError(f"{args.model} is missing; run the train stage first (dvc repro train)")
    model = keras.saving.load_model(args.model, compile=False, safe_mode=True)
    proba = evaluation.predict_proba(model, test.x, params.evaluate.batch_size)
    result = evaluation.evaluate_probabilities(test.y, proba, worst=params.evaluate.worst)

    root = config.project_root()
    experiment = tracking.configure(params.tracking, root)
    with tracking.stage_run("evaluate", experiment, root, run_id=info["run_id"]):
        tracking.log_params(flatten(params.evaluate, "evaluate."))
        mlflow.log_metrics(result.metrics)
        tracking.log_table(result.report, "evaluation/classification_report.json")
        tracking.log_figure(figures.confusion_matrix(result.confusion), "evaluation/confusion_matrix.png")
        shown = (test.x, test.y, result.predicted, result.confidence)
        tracking.log_figure(figures.sample_predictions(*shown, params.evaluate.grid_size), "evaluation/sample_predictions.png")
        tracking.log_figure(figures.worst_predictions(*shown, result.worst), "evaluation/worst_predictions.png")
        atomic.write_csv(args.confusion, ["actual", "predicted"], [[int(t), int(p)] for t, p in zip(test.y, result.predicted)])
        atomic.write_rows(args.report, result.report)
        atomic.write_json(args.metrics, result.metrics)
    m = result.metrics
    print(f"test_accuracy {m['test_accuracy']:.4f}, test_loss {m['test_loss']:.4f}, macro F1 {m['test_macro_f1']:.4f}")


if __name__ == "__main__":
    run_main(main)

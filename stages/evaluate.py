"""Stage evaluate: score the trained model on the 10,000 test images, into the same MLflow run as the model."""

import mlflow

from mnist_cnn import atomic, config, data, figures, presets, tracking
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
    "--figures": "folder for the confusion-matrix and prediction PNGs (DVC plots)",
}


def main() -> None:
    args = stage_parser(__doc__, PATHS).parse_args()
    import keras  # TensorFlow, loaded quietly by run_main first

    from mnist_cnn import evaluation

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
        digest = data.file_sha256(args.data_dir / "test.npz")
        test_set = tracking.log_dataset(test, "test", args.data_dir / "test.npz", digest, "testing")
        mlflow.log_metrics(result.metrics, dataset=test_set, model_id=info.get("model_id"))
        tracking.log_table(result.report, "evaluation/classification_report.json")
        shown = (test.x, test.y, result.predicted, result.confidence)
        for name, fig in (("confusion_matrix", figures.confusion_matrix(result.confusion)),
                          ("sample_predictions", figures.sample_predictions(*shown, params.evaluate.grid_size)),
                          ("worst_predictions", figures.worst_predictions(*shown, result.worst))):  # fmt: skip
            tracking.log_figure(fig, f"evaluation/{name}.png", args.figures)
        metrics = dict(result.metrics)
        corrected = data.load_split(args.data_dir, data.FEEDBACK) if (args.data_dir / f"{data.FEEDBACK}.npz").is_file() else None
        if corrected is not None and len(corrected):
            metrics.update(evaluation.feedback_metrics(model, corrected, params.evaluate.batch_size))
            digest = data.file_sha256(args.data_dir / f"{data.FEEDBACK}.npz")
            feedback_set = tracking.log_dataset(corrected, data.FEEDBACK, args.data_dir / f"{data.FEEDBACK}.npz", digest, "feedback")
            mlflow.log_metrics({k: v for k, v in metrics.items() if k.startswith("feedback_")}, dataset=feedback_set,
                               model_id=info.get("model_id"))
        atomic.write_csv(args.confusion, ["actual", "predicted"], [[int(t), int(p)] for t, p in zip(test.y, result.predicted)])
        atomic.write_rows(args.report, result.report)
        atomic.write_json(args.metrics, {**metrics, **result.per_digit})
        accuracy = result.metrics["test_accuracy"]
        mlflow.set_tag(tracking.TAG_NOTE, f"train + evaluate: {presets.describe(params)}, test_accuracy {accuracy:.4f}")
    m = metrics
    extra = f"; feedback_accuracy {m['feedback_accuracy']:.4f} on {m['feedback_images']:.0f} images" if "feedback_accuracy" in m else ""
    print(f"test_accuracy {m['test_accuracy']:.4f}, test_loss {m['test_loss']:.4f}, macro F1 {m['test_macro_f1']:.4f}{extra}")


if __name__ == "__main__":
    run_main(main, tensorflow=True)

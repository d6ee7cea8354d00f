"""Stage evaluate: score the trained model on the 10,000 test images, on real digits from outside MNIST
(USPS, encoded as a user's files and read through `images.prepare`) and on generated non-digits it
never saw, into the same MLflow run as the model."""

from mnist_cnn import atomic, calibrate, config, data, figures, nondigits, presets, usps
from mnist_cnn.entrypoint import run_main, stage_parser
from mnist_cnn.errors import DataError
from mnist_cnn.schema import flatten
from mnist_cnn.tracking import run_info
from mnist_cnn.tracking.runs import stage_run
from mnist_runtime import calibration

PATHS = {
    "--data-dir": "test.npz",
    "--usps-dir": "USPS's zip.test.gz",
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
    info = run_info.read(args.run_info)
    if not args.model.is_file():
        raise DataError(f"{args.model} is missing; run the train stage first (dvc repro train)")
    model = keras.saving.load_model(args.model, compile=False, safe_mode=True)
    record = calibration.read(args.model)
    batch, bins = params.evaluate.batch_size, params.calibration.bins
    proba = evaluation.predict_proba(model, test.x, batch)
    result = evaluation.evaluate_probabilities(test.y, proba, worst=params.evaluate.worst)
    result.metrics.update(evaluation.calibration_metrics("test", proba, test.y, record, bins))
    ink, labels = usps.load(args.usps_dir / f"{usps.TEST}.gz")
    real = evaluation.real_digits(model, usps.prepared(ink, labels), record, bins, batch, params.evaluate.worst)
    result.metrics.update(real.metrics)
    if params.evaluate.nondigits:
        held_out = nondigits.generate(params.evaluate.nondigits, nondigits.HELD_OUT_SEED, "test")
        result.metrics.update(evaluation.nondigit_metrics(model, held_out, record, batch))

    root = config.project_root()
    with stage_run("evaluate", params.tracking, root, run_id=info["run_id"]) as run:
        run.log_params(flatten(params.evaluate, "evaluate."))
        digest = data.file_sha256(args.data_dir / "test.npz")
        test_set = run.log_dataset(test, "test", args.data_dir / "test.npz", digest, "testing")
        run.log_metrics(
            {k: v for k, v in result.metrics.items() if k not in real.metrics},
            dataset=test_set,
            model_id=info.get("model_id"),
        )
        usps_file = args.usps_dir / f"{usps.TEST}.gz"
        usps_set = run.log_dataset(
            data.Split(real.x, real.y), "usps-test", usps_file, data.file_sha256(usps_file), "real-digits"
        )
        run.log_metrics(real.metrics, dataset=usps_set, model_id=info.get("model_id"))
        run.log_table(result.report, "evaluation/classification_report.json")
        shown = (test.x, test.y, result.predicted, result.confidence)
        for name, fig in (("confusion_matrix", figures.confusion_matrix(result.confusion)),
                          ("sample_predictions", figures.sample_predictions(*shown, params.evaluate.grid_size)),
                          ("worst_predictions", figures.worst_predictions(*shown, result.worst)),
                          ("usps_worst", figures.worst_predictions(real.x, real.y, real.predicted, real.confidence, real.worst,
                                                                    "on USPS", real.rendering)),
                          ("reliability", figures.reliability_diagram(
                              {"MNIST test": calibrate.reliability(proba, test.y, bins), "USPS": real.reliability}))):  # fmt: skip
            run.log_figure(fig, f"evaluation/{name}.png", args.figures)
        metrics = dict(result.metrics)
        corrected = (
            data.load_split(args.data_dir, data.FEEDBACK)
            if (args.data_dir / f"{data.FEEDBACK}.npz").is_file()
            else None
        )
        if corrected is not None and len(corrected):
            metrics.update(evaluation.feedback_metrics(model, corrected, params.evaluate.batch_size))
            digest = data.file_sha256(args.data_dir / f"{data.FEEDBACK}.npz")
            feedback_set = run.log_dataset(
                corrected, data.FEEDBACK, args.data_dir / f"{data.FEEDBACK}.npz", digest, "feedback"
            )
            run.log_metrics(
                {k: v for k, v in metrics.items() if k.startswith("feedback_")},
                dataset=feedback_set,
                model_id=info.get("model_id"),
            )
        atomic.write_csv(
            args.confusion,
            ["actual", "predicted"],
            [[int(t), int(p)] for t, p in zip(test.y, result.predicted, strict=True)],
        )
        atomic.write_rows(args.report, result.report)
        atomic.write_json(args.metrics, {**metrics, **result.per_digit})
        accuracy = result.metrics["test_accuracy"]
        run.note(f"train + evaluate: {presets.describe(params)}, test_accuracy {accuracy:.4f}")
    m = metrics
    extra = (
        f"; feedback_accuracy {m['feedback_accuracy']:.4f} on {m['feedback_images']:.0f} images"
        if "feedback_accuracy" in m
        else ""
    )
    print(
        f"test_accuracy {m['test_accuracy']:.4f}, test_loss {m['test_loss']:.4f}, macro F1 {m['test_macro_f1']:.4f}{extra}"
    )
    renderings = ", ".join(
        f"{k[len('usps_accuracy_') :]} {v:.4f}" for k, v in m.items() if k.startswith("usps_accuracy_")
    )
    print(
        f"usps_accuracy {m['usps_accuracy']:.4f} ({renderings}); ece test {m['test_ece']:.4f}, usps {m['usps_ece']:.4f}; "
        f"not sure: test {m['test_not_sure']:.2%}, usps {m['usps_not_sure']:.2%}"
        + (f", non-digits {m['nondigits_not_sure']:.2%}" if "nondigits_not_sure" in m else "")
    )


if __name__ == "__main__":
    run_main(main, tensorflow=True)

"""Stage register: put the evaluated model in the MLflow registry and apply the champion gate."""

import mlflow

from mnist_cnn import atomic, config, presets, registry, tracking
from mnist_cnn.entrypoint import run_main, stage_parser
from mnist_cnn.schema import flatten

PATHS = {
    "--run-info": "the train stage's MLflow run (JSON)",
    "--metrics": "the evaluate stage's test metrics (JSON)",
    "--data-dir": "the processed data, whose checksums tag the version",
    "--report": "what the gate decided (JSON)",
}


def main() -> None:
    args = stage_parser(__doc__, PATHS).parse_args()
    params = config.load_params(args.params, args.overrides)
    info = tracking.read_run_info(args.run_info)
    metrics = registry.read_test_metrics(args.metrics)

    root = config.project_root()
    experiment = tracking.configure(params.tracking, root)
    with tracking.stage_run("register", experiment, root):
        tracking.log_params(flatten(params.register, "register."))
        tags = registry.version_tags(params, args.data_dir, root)
        report = registry.register(info["model_uri"], info["run_id"], metrics, tags, params.register, presets.describe(params))
        mlflow.log_metrics({"registered_version": float(report["version"]), "promoted": float(report["promoted"])})
        mlflow.set_tags({"mnist_cnn.registered": f"{report['model_name']}/{report['version']}", "mnist_cnn.alias": report["alias"]})
        tracking.log_dict(report, "register/report.json")
        atomic.write_json(args.report, report)
        mlflow.set_tag(tracking.TAG_NOTE, f"register: version {report['version']} -> @{report['alias']}")
    print(f"{report['model_name']} version {report['version']} -> @{report['alias']}: {report['reason']}")


if __name__ == "__main__":
    run_main(main)

"""Stage register: put the evaluated model in the MLflow registry and apply the champion gate."""

import argparse
import json
from pathlib import Path

from mnist_cnn.cli import add_params_args, run_main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-info", type=Path, default=Path("models/run.json"))
    parser.add_argument("--metrics", type=Path, default=Path("reports/test_metrics.json"))
    parser.add_argument("--data-dir", type=Path, default=Path("data/processed"))
    parser.add_argument("--report", type=Path, default=Path("reports/register.json"))
    add_params_args(parser)
    args = parser.parse_args()

    from mnist_cnn import atomic, config, data, registry, tracking
    from mnist_cnn.errors import TrackingError

    params = config.load_params(args.params, args.overrides)
    info = tracking.read_run_info(args.run_info)
    try:
        metrics = json.loads(args.metrics.read_text())
    except (FileNotFoundError, json.JSONDecodeError) as exc:
        raise TrackingError(f"cannot read test metrics {args.metrics} ({exc}); run the evaluate stage first") from None
    if "test_accuracy" not in metrics:
        raise TrackingError(f"{args.metrics} has no test_accuracy; re-run the evaluate stage")

    root = tracking.project_root()
    experiment = tracking.configure(params.tracking, root)
    with tracking.stage_run("register", experiment, root):
        import mlflow

        tracking.log_params(config.flatten(params.register, "register."))
        git = tracking.git_state(root)
        tags = {
            "git_commit": git[tracking.TAG_COMMIT],
            "git_dirty": git[tracking.TAG_DIRTY],
            "pipeline_id": tracking.pipeline_id(),
            "params": json.dumps({"model": config.to_dict(params.model), "train": config.to_dict(params.train)}, sort_keys=True),
            **{f"data_sha256_{k}": v for k, v in data.processed_checksums(args.data_dir).items()},
        }
        report = registry.register(info["model_uri"], info["run_id"], metrics, tags, params.register)
        mlflow.log_metrics({"registered_version": float(report["version"]), "promoted": float(report["promoted"])})
        mlflow.set_tags({"mnist_cnn.registered": f"{report['model_name']}/{report['version']}", "mnist_cnn.alias": report["alias"]})
        tracking.log_dict(report, "register/report.json")
        atomic.write_json(args.report, report)
    print(f"{report['model_name']} version {report['version']} -> @{report['alias']}: {report['reason']}")


if __name__ == "__main__":
    run_main(main)

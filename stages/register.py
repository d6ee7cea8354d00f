"""Stage register: put the evaluated model in the MLflow registry and apply the champion gate."""

import json

from mnist_cnn import atomic, config, data, model_card, presets, registry
from mnist_cnn.entrypoint import run_main, stage_parser
from mnist_cnn.schema import flatten
from mnist_cnn.tracking import run_info
from mnist_cnn.tracking.runs import stage_run

PATHS = {
    "--run-info": "the train stage's MLflow run (JSON)",
    "--metrics": "the evaluate stage's test metrics (JSON)",
    "--train-metrics": "the train stage's metrics, for the model card (JSON)",
    "--data-dir": "the processed data, whose checksums tag the version",
    "--report": "what the gate decided (JSON)",
}


def main() -> None:
    args = stage_parser(__doc__, PATHS).parse_args()
    params = config.load_params(args.params, args.overrides)
    info = run_info.read(args.run_info)
    metrics = registry.read_test_metrics(args.metrics)

    root = config.project_root()
    with stage_run("register", params.tracking, root) as run:
        run.log_params(flatten(params.register, "register."))
        tags = registry.version_tags(params, args.data_dir, root)
        described = presets.describe(params)
        checksums = {
            **data.processed_checksums(args.data_dir),
            **{f"usps {k}": v for k, v in params.data.usps.sha256.items()},
        }
        train = json.loads(args.train_metrics.read_text()) if args.train_metrics.is_file() else {}

        def card(version: int, verdict: str) -> str:
            return model_card.render(params.register.model_name, version, metrics, train, checksums, described, verdict)

        report = registry.register(info["model_uri"], info["run_id"], metrics, tags, params.register, described, card)
        run.log_metrics({"registered_version": report["version"], "promoted": report["promoted"]})
        run.set_tags({
            "mnist_cnn.gate_rule": report["rule"],
            "mnist_cnn.registered": f"{report['model_name']}/{report['version']}",
            "mnist_cnn.alias": report["alias"],
        })  # fmt: skip
        run.log_document(report, "register/report.json")
        atomic.write_json(args.report, report)
        run.note(f"register: version {report['version']} -> @{report['alias']}")
    print(f"{report['model_name']} version {report['version']} -> @{report['alias']}: {report['reason']}")


if __name__ == "__main__":
    run_main(main)

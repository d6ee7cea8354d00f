"""Team set-up benchmark on full MNIST: `mnist-cnn stack` (PostgreSQL + MLflow server) against
the single-machine defaults (journal file + SQLite), in temp copies of the project.

1. Tuning throughput (trials/hour) with 1 and 2 workers: PostgreSQL study + MLflow server
   against the journal file + mlflow.db. Short trials (tune.epochs=1 on 10% of the training
   split by default) so the storage's share shows.
2. Tracking latency per logged epoch (one log_metrics of the 4 epoch metrics) and registry
   latency per gate (`registry.register`: register a version, lock, aliases), server vs SQLite.
3. `dvc repro` from scratch (download, preprocess, train, evaluate, register) in clone A, then
   `dvc push`; in a fresh `git clone` B: `dvc pull` + the no-op `dvc repro`.
4. With --hosts (root): across hosts in network namespaces, trials/hour with one and two
   workstation hosts, a partition's time to the study moving again, a PostgreSQL restart's
   time to recovery (benchmarks/team_hosts.py).

    MNIST_MIRROR=/path/to/mnist USPS_MIRROR=/path/to/usps python benchmarks/team.py [--trials 6] [--preset fast] [--hosts] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import add_mirror_option, copy_project, mirror_env  # noqa: E402
from tuning import sh  # noqa: E402

GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tuning_throughput(
    work: Path, env: dict[str, str], location: str | None, workers: int, trials: int, sets: list[str], log
) -> float:
    name = f"bench-{uuid.uuid4().hex[:6]}"
    cmd = [
        "mnist-cnn",
        "tune",
        "--no-progress",
        "--trials",
        str(trials),
        "--workers",
        str(workers),
        "--study-name",
        name,
        "--best",
        str(work / f"{name}.yaml"),
        *sets,
    ]
    if location:
        cmd += ["--storage", location]
    seconds = sh(cmd, work, env, log)
    return trials / seconds * 3600


def tracking_latency(uri: str, epochs: int, gates: int) -> tuple[float, float]:
    """Median ms per logged epoch and per registry gate against `uri`."""
    import mlflow

    from mnist_cnn import registry
    from mnist_cnn.config import RegisterParams
    from mnist_cnn.tracking import runs

    class Constant(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input):
            return model_input

    mlflow.set_tracking_uri(uri)
    name = f"bench-{uuid.uuid4().hex[:6]}"
    mlflow.set_experiment(name)
    per_epoch = []
    with mlflow.start_run():
        for epoch in range(1, epochs + 1):
            start = time.perf_counter()
            runs.log_epoch(epoch, {"train_loss": 0.1, "train_accuracy": 0.9, "val_loss": 0.1, "val_accuracy": 0.9})
            per_epoch.append(time.perf_counter() - start)
    params = RegisterParams(
        model_name=name,
        min_test_accuracy=0.5,
        real_digits_tolerance=0.005,
        champion_alias="champion",
        challenger_alias="challenger",
        gate_stale_s=300,
    )
    per_gate = []
    for i in range(gates):
        with mlflow.start_run() as run:
            info = mlflow.pyfunc.log_model(name="model", python_model=Constant(), pip_requirements=[])
        start = time.perf_counter()
        registry.register(info.model_uri, run.info.run_id, {"test_accuracy": 0.9 + i / 1000}, {}, params)
        per_gate.append(time.perf_counter() - start)
    mlflow.set_tracking_uri(None)
    return 1000 * statistics.median(per_epoch), 1000 * statistics.median(per_gate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_mirror_option(parser)
    parser.add_argument("--trials", type=int, default=6, help="trials per tuning measurement")
    parser.add_argument("--preset", default="fast", help="preset of the dvc repro measurement (default: fast)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=["tune.epochs=1", "tune.train_fraction=0.1"],
        metavar="KEY=VALUE",
        help="tune overrides (default: tune.epochs=1, tune.train_fraction=0.1)",
    )
    parser.add_argument("--hosts", action="store_true", help="also measure across hosts (network namespaces; root)")
    parser.add_argument("--heartbeat", type=float, default=30, help="tune.heartbeat_s of --hosts (default 30)")
    parser.add_argument("--keep", type=Path, help="run in this directory and keep it")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="mnist-team-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)  # as root, PostgreSQL runs as `postgres` and must enter the stack folder
    a, b, folder = work / "a", work / "b", work / "stack"
    a.mkdir(exist_ok=True)
    copy_project(a)
    env = mirror_env(args)
    log_path = work / "benchmark.log"
    print(f"working in {work} (log: {log_path})", flush=True)
    from mnist_cnn.entrypoint import quiet_libraries
    from mnist_stack.settings import load_settings

    quiet_libraries()
    warnings.filterwarnings("ignore", message="Add type hints to the `predict` method")

    results: dict = {}
    with open(log_path, "w") as log:
        sh(
            [
                "mnist-cnn",
                "stack",
                "up",
                "--dir",
                str(folder),
                "--pg-port",
                str(free_port()),
                "--mlflow-port",
                str(free_port()),
            ],
            a,
            env,
            log,
        )
        try:
            settings = load_settings(folder)
            team = {**env, "MLFLOW_TRACKING_URI": settings.tracking_uri()}
            sh(["mnist-cnn", "preset", args.preset], a, env, log)
            sh([*GIT, "commit", "-qam", f"{args.preset} preset"], a, env, log)

            # 3 first: its preprocess gives the tuning data
            seconds = sh(["dvc", "repro"], a, team, log)
            results["full_repro_s"] = seconds
            print(f"dvc repro from scratch ({args.preset} preset, full MNIST): {seconds:.0f}s", flush=True)
            remote = work / "remote"
            for clone_cmd in (
                ["dvc", "remote", "modify", "--local", "team", "url", str(remote)],
                ["git", "add", "dvc.lock", "reports", "models/run.json"],
                [*GIT, "commit", "-qm", "trained model"],
            ):
                sh(clone_cmd, a, env, log)
            results["push_s"] = sh(["dvc", "push"], a, team, log)
            sh(["git", "clone", "-q", str(a), str(b)], work, env, log)
            sh(["dvc", "remote", "modify", "--local", "team", "url", str(remote)], b, env, log)
            results["pull_s"] = sh(["dvc", "pull"], b, team, log)
            results["noop_repro_s"] = sh(["dvc", "repro"], b, team, log)
            print(
                f"fresh clone: dvc pull {results['pull_s']:.1f}s + no-op dvc repro {results['noop_repro_s']:.1f}s "
                f"(dvc push {results['push_s']:.1f}s)",
                flush=True,
            )

            sets = [f"--set={o}" for o in args.overrides]
            rates = {}
            for label, location, uri in (
                ("postgresql + server", settings.database_url("optuna"), settings.tracking_uri()),
                ("journal + sqlite", None, None),
            ):
                tune_env = {**env, "MLFLOW_TRACKING_URI": uri} if uri else env
                for workers in (1, 2):
                    rates[f"{label}, {workers} worker(s)"] = tuning_throughput(
                        a, tune_env, location, workers, args.trials, sets, log
                    )
                    print(
                        f"tuning, {label}, {workers} worker(s): {rates[f'{label}, {workers} worker(s)']:.0f} trials/h",
                        flush=True,
                    )
            results["trials_per_hour"] = rates

            latency = {}
            for label, uri in (("server", settings.tracking_uri()), ("sqlite", f"sqlite:///{work / 'latency.db'}")):
                latency[label] = tracking_latency(uri, epochs=200, gates=10)
                print(
                    f"latency, {label}: {latency[label][0]:.1f} ms per logged epoch, {latency[label][1]:.0f} ms per registry gate",
                    flush=True,
                )
            results["latency_ms"] = {k: {"epoch": v[0], "gate": v[1]} for k, v in latency.items()}
            if args.hosts:
                import team_hosts

                results["hosts"] = team_hosts.measure(a, a / "data" / "processed", args.trials, args.heartbeat, env)
        finally:
            sh(["mnist-cnn", "stack", "down", "--dir", str(folder)], a, env, log)

    print("\ntuning throughput (trials/hour)")
    for label, rate in results["trials_per_hour"].items():
        print(f"  {label:<36}{rate:>8.0f}")
    print("latency (median ms)          per logged epoch   per registry gate")
    for label, v in results["latency_ms"].items():
        print(f"  {label:<28}{v['epoch']:>14.1f}{v['gate']:>20.0f}")
    shared = results["pull_s"] + results["noop_repro_s"]
    print(
        f"teammate: dvc pull + no-op repro {shared:.0f}s vs retrain {results['full_repro_s']:.0f}s "
        f"({results['full_repro_s'] / shared:.0f}x faster)"
    )
    if "hosts" in results:
        team_hosts.report(results["hosts"], args.heartbeat)
    (work / "team-benchmark.json").write_text(json.dumps(results, indent=2))
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Tuning benchmark on full MNIST, in a temp copy of the project.

1. `dvc repro` with the seed preset: the baseline champion and its test accuracy.
2. `mnist-cnn tune` with params.yaml's pruner, then the same study without pruning: epochs
   trained, best validation accuracy, minutes and trials per hour of each.
3. `mnist-cnn tune --apply` (the pruned study's best) and `dvc repro`: the tuned model's test
   accuracy, and whether it became champion.

    MNIST_MIRROR=/path/to/mnist USPS_MIRROR=/path/to/usps python benchmarks/tuning.py [--trials 20] [--set tune.epochs=3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import add_mirror_option, copy_project, mirror_env  # noqa: E402


def sh(cmd: list[str], cwd: Path, env: dict[str, str], log) -> float:
    print(f"$ {' '.join(cmd)}", file=log, flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed with exit {proc.returncode}; see {log.name}")
    return time.perf_counter() - start


def study_figures(work: Path, name: str, seconds: float) -> dict:
    import optuna

    from mnist_cnn.tuning import storage

    study = optuna.load_study(
        study_name=name, storage=storage.open_storage(str(work / "optuna" / f"{name}.journal"), 1)
    )
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    return {
        "study": name,
        "trials": len(finished),
        "pruned": sum(t.state.name == "PRUNED" for t in finished),
        "epochs": sum(int(t.user_attrs.get("epochs_trained", 0)) for t in finished),
        "best_val_accuracy": study.best_value,
        "minutes": seconds / 60,
        "trials_per_hour": len(finished) / seconds * 3600,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_mirror_option(parser)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="tune override for both studies",
    )
    parser.add_argument("--keep", type=Path, help="run in this directory and keep it")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="mnist-tune-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    copy_project(work)
    env = mirror_env(args)
    sets = [f"--set={o}" for o in args.overrides]
    log_path = work / "benchmark.log"
    print(f"working in {work} (log: {log_path})", flush=True)
    with open(log_path, "w") as log:
        sh(["mnist-cnn", "preset", "seed"], work, env, log)
        sh(["git", "-c", "user.name=b", "-c", "user.email=b@l", "commit", "-qam", "seed preset"], work, env, log)
        seconds = sh(["dvc", "repro"], work, env, log)
        seed = json.loads((work / "reports" / "test_metrics.json").read_text())
        print(f"seed pipeline: test_accuracy {seed['test_accuracy']:.4f} ({seconds:.0f}s)", flush=True)

        studies = []
        for name, extra in (("pruned", []), ("unpruned", ["--set=tune.pruner.name=none"])):
            cmd = [
                "mnist-cnn",
                "tune",
                "--no-progress",
                "--trials",
                str(args.trials),
                "--study-name",
                name,
                "--best",
                f"tuning/{name}.yaml",
                *sets,
                *extra,
            ]
            seconds = sh(cmd, work, env, log)
            studies.append(study_figures(work, name, seconds))
            s = studies[-1]
            print(
                f"{name}: {s['trials']} trials ({s['pruned']} pruned), {s['epochs']} epochs, "
                f"best val_accuracy {s['best_val_accuracy']:.4f}, {s['minutes']:.1f} min",
                flush=True,
            )

        sh(["mnist-cnn", "tune", "--apply", "--best", "tuning/pruned.yaml"], work, env, log)
        seconds = sh(["dvc", "repro"], work, env, log)
        tuned = json.loads((work / "reports" / "test_metrics.json").read_text())
        register = json.loads((work / "reports" / "register.json").read_text())

    print(f"\n{'study':<10}{'trials':>7}{'pruned':>7}{'epochs':>7}{'best val acc':>13}{'minutes':>9}{'trials/h':>9}")
    for s in studies:
        print(
            f"{s['study']:<10}{s['trials']:>7}{s['pruned']:>7}{s['epochs']:>7}{100 * s['best_val_accuracy']:>12.2f}%"
            f"{s['minutes']:>9.1f}{s['trials_per_hour']:>9.0f}"
        )
    pruned, unpruned = studies
    saved = 1 - pruned["epochs"] / unpruned["epochs"]
    delta = 100 * (pruned["best_val_accuracy"] - unpruned["best_val_accuracy"])
    print(f"\npruning saved {100 * saved:.0f}% of the epochs; best value {delta:+.2f} points versus no pruning")
    print(
        f"test accuracy: seed defaults {100 * seed['test_accuracy']:.2f}%, tuned {100 * tuned['test_accuracy']:.2f}% "
        f"(final training {seconds:.0f}s); tuned model is version {register.get('version')} with alias {register.get('alias')}"
    )
    (work / "tuning-benchmark.json").write_text(
        json.dumps({"studies": studies, "seed": seed, "tuned": tuned, "register": register}, indent=2)
    )


if __name__ == "__main__":
    main()

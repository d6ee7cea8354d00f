"""Full-pipeline benchmark: the real `dvc repro` on full MNIST from a local mirror, in a temp copy.

Prints per-stage wall time and peak memory, test accuracy and loss, and the time of a second
`dvc repro` with nothing changed. Usage (from the project root):

    MNIST_MIRROR=/path/to/mnist USPS_MIRROR=/path/to/usps python benchmarks/pipeline.py [--set train.epochs=2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGES = ("download", "preprocess", "train", "evaluate", "register")
ROOT = Path(__file__).resolve().parents[1]


def add_mirror_option(parser: argparse.ArgumentParser, usps: bool = True, required: bool = True) -> None:
    """`--mirror`: the MNIST IDX directory, from $MNIST_MIRROR when set, else required (unless not
    `required`: the caller checks); with `usps`, `--usps` too (the download stage fetches USPS as
    well), from $USPS_MIRROR."""
    mirror = os.environ.get("MNIST_MIRROR")
    parser.add_argument(
        "--mirror",
        default=mirror,
        required=required and not mirror,
        help="directory holding the four MNIST IDX .gz files (default: $MNIST_MIRROR)",
    )
    if usps:
        usps_mirror = os.environ.get("USPS_MIRROR")
        parser.add_argument(
            "--usps",
            default=usps_mirror,
            required=not usps_mirror,
            help="directory holding USPS's zip.train.gz and zip.test.gz (default: $USPS_MIRROR)",
        )


def mirror_env(args: argparse.Namespace) -> dict[str, str]:
    """The environment a benchmark's `dvc repro` runs in: both mirrors, no tracking URI of the caller's."""
    env = {
        **os.environ,
        "MNIST_MIRROR": str(Path(args.mirror).resolve()),
        "USPS_MIRROR": str(Path(args.usps).resolve()),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def timed(cmd: list[str], cwd: Path, env: dict[str, str], log) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of the largest process in the command's tree."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed with exit {proc.returncode}; see {log.name}")
    return seconds, usage.ru_maxrss / 1024


def copy_project(dest: Path) -> Path:
    """The checkout's tracked and untracked-not-ignored files, committed in `dest` (the tests' own copy)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import copy_project as copy

    return copy(dest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_mirror_option(parser)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--keep", type=Path, help="run in this directory and keep it")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="mnist-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    copy_project(work)
    if args.overrides:
        sys.path.insert(0, str(ROOT / "src"))
        from mnist_cnn.config import apply_overrides
        from mnist_cnn.schema import dump_yaml, read_yaml

        params = apply_overrides(read_yaml(work / "params.yaml"), args.overrides)
        (work / "params.yaml").write_text(dump_yaml(params))
    env = mirror_env(args)
    log_path = work / "benchmark.log"
    rows = []
    with open(log_path, "w") as log:
        total_start = time.perf_counter()
        for stage in STAGES:
            seconds, rss = timed(["dvc", "repro", "--single-item", stage], work, env, log)
            rows.append((stage, seconds, rss))
            print(f"  {stage:<11} {seconds:7.1f} s   peak RSS {rss:7.0f} MiB", flush=True)
        total = time.perf_counter() - total_start
        noop, _ = timed(["dvc", "repro"], work, env, log)
    metrics = json.loads((work / "reports" / "test_metrics.json").read_text())
    register = json.loads((work / "reports" / "register.json").read_text())
    print(f"\nwhole pipeline (download .. register): {total:.1f} s")
    print(f"second dvc repro, nothing changed:    {noop:.2f} s")
    print(f"test_accuracy {metrics['test_accuracy']:.4f}   test_loss {metrics['test_loss']:.4f}")
    print(f"registered {register['model_name']} v{register['version']} -> @{register['alias']} ({register['reason']})")
    print(f"peak RSS of any stage: {max(r for _, _, r in rows):.0f} MiB; log: {log_path}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

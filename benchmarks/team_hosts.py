"""The team set-up across hosts (network namespaces, tests/hosts.py; needs root): a server host
running `mnist-cnn stack up --host 0.0.0.0` and two workstation hosts using what it printed.

1. Tuning throughput (trials/hour) with one workstation host and with two, one worker each.
2. A partition: ws2 holds the study's last slot with a long trial and its link is cut; the time
   until ws1 starts a trial in that slot (the heartbeat's grace period, 4x tune.heartbeat_s, and
   ws1's next look).
3. A PostgreSQL restart mid-trial: how long `pg_ctl restart` takes, and the time from its start to
   the running trial's next epoch being recorded in the study.

Run by benchmarks/team.py --hosts, or alone on a processed data folder:

    python benchmarks/team_hosts.py --data-dir data/processed [--trials 6] [--heartbeat 30]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from hosts import Network, Probe  # noqa: E402

QUICK = ["--set=tune.epochs=1", "--set=tune.train_fraction=0.1", "--set=tune.pruner.name=none"]


def _tune(net: Network, host: str, cwd: Path, env: dict, data: Path, study: str, *extra: str) -> subprocess.Popen:
    cmd = ["mnist-cnn", "tune", "--no-progress", "--data-dir", data, "--storage", env["OPTUNA_STORAGE"]]
    cmd += ["--study-name", study, "--best", cwd / f"{study}-{host}.yaml", *QUICK, *extra]
    return net[host].popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _trials(probe: Probe, env: dict, study: str) -> list[dict]:
    return probe("trials", env["OPTUNA_STORAGE"], study)


def _wait(condition, timeout: float = 1800, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := condition():
            return found
        time.sleep(every)
    raise TimeoutError("the benchmark waited too long")


def _running(probe: Probe, env: dict, study: str, host: str, epochs: int = 1) -> dict | None:
    for t in _trials(probe, env, study):
        if (
            t["state"] == "RUNNING"
            and t["user_attrs"].get("worker", "").startswith(host + ":")
            and t["user_attrs"].get("epochs_trained", 0) >= epochs
        ):
            return t
    return None


def measure(project: Path, data: Path, trials: int, heartbeat_s: float, env: dict) -> dict:
    from mnist_stack import postgres

    base = Path(tempfile.mkdtemp(prefix="mnist-team-hosts-"))
    base.chmod(0o755)
    results: dict = {}
    with Network("srv", "ws1", "ws2") as net:
        up = net["srv"].run(["mnist-cnn", "stack", "up", "--host", "0.0.0.0", "--dir", base / "stack"], base, env)
        team = {**env, **dict(re.findall(r"^export (\w+)=(\S+)$", up.stdout, flags=re.MULTILINE))}
        probe = Probe(net["srv"], env)
        try:
            beat = f"--set=tune.heartbeat_s={heartbeat_s:g}"
            for hosts in (["ws1"], ["ws1", "ws2"]):
                study = f"rate-{uuid.uuid4().hex[:6]}"
                start = time.perf_counter()
                procs = [_tune(net, h, project, team, data, study, "--trials", str(trials), beat) for h in hosts]
                if any(p.wait() for p in procs):
                    raise RuntimeError(f"a tune on {hosts} failed")
                results[f"trials_per_hour_{len(hosts)}_hosts"] = trials / (time.perf_counter() - start) * 3600

            study = f"cut-{uuid.uuid4().hex[:6]}"
            victim = _tune(net, "ws2", project, team, data, study, "--trials", "1", "--set=tune.epochs=50", beat)
            _wait(lambda: _running(probe, team, study, "ws2"))
            net.cut("ws2")
            cut = time.time()
            survivor = _tune(net, "ws1", project, team, data, study, "--trials", "1", beat)
            taken = _wait(lambda: _running(probe, team, study, "ws1", epochs=0))
            results["partition_to_moving_s"] = _started(taken) - cut
            survivor.wait()
            net.heal("ws2")
            victim.wait(600)

            study = f"restart-{uuid.uuid4().hex[:6]}"
            tune = _tune(net, "ws1", project, team, data, study, "--trials", "1", "--set=tune.epochs=50", beat)
            before = _wait(lambda: _running(probe, team, study, "ws1"))["user_attrs"]["epochs_trained"]
            pgdata, log = base / "stack" / "pgdata", base / "stack" / "logs" / "postgresql.log"
            start = time.perf_counter()
            net["srv"].run(
                ["runuser", "-u", "postgres", "--", postgres.bindir() / "pg_ctl", "-D", pgdata, "-l", log, "-m",
                 "fast", "-w", "restart"], base, env,
            )  # fmt: skip
            results["pg_restart_s"] = time.perf_counter() - start
            _wait(lambda: _running(probe, team, study, "ws1", epochs=before + 1), every=0.2)
            results["restart_to_next_epoch_s"] = time.perf_counter() - start
            tune.terminate()
            tune.wait(120)
        finally:
            probe.close()
    return results


def _started(trial: dict) -> float:
    """A trial's start (its `datetime_start`, local time) as a Unix time."""
    import datetime

    return datetime.datetime.fromisoformat(trial["datetime_start"]).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True, help="train.npz and val.npz (dvc repro preprocess)")
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--heartbeat", type=float, default=30, help="tune.heartbeat_s (default: params.yaml's 30)")
    args = parser.parse_args()
    from helpers import clean_env, copy_project

    project = Path(tempfile.mkdtemp(prefix="mnist-team-hosts-project-"))
    copy_project(project)  # the tuning runs write their reports into the clone, not into this checkout
    report(measure(project, args.data_dir.resolve(), args.trials, args.heartbeat, clean_env()), args.heartbeat)


def report(results: dict, heartbeat_s: float) -> None:
    print("across hosts (network namespaces, one worker per workstation)")
    for n in (1, 2):
        print(f"  tuning, {n} workstation host(s): {results[f'trials_per_hour_{n}_hosts']:.0f} trials/h")
    print(
        f"  partition -> study moving again: {results['partition_to_moving_s']:.1f}s "
        f"(heartbeat {heartbeat_s:g}s, grace {4 * heartbeat_s:g}s)"
    )
    print(
        f"  PostgreSQL restart: {results['pg_restart_s']:.1f}s; restart -> the running trial's next epoch "
        f"recorded: {results['restart_to_next_epoch_s']:.1f}s"
    )


if __name__ == "__main__":
    main()

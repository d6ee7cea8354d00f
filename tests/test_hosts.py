"""Team scale across real hosts: a server host and two workstation hosts, each a network namespace
with its own address (10.231.0.1-3), host name, processes and clone (tests/hosts.py). The server
runs `mnist-cnn stack up --host 0.0.0.0` and sshd; the workstations export what it printed and
tune one study, run `dvc repro` and share through an SSH DVC remote; then one workstation's link
is cut mid-trial, one host is killed, PostgreSQL restarts mid-study, and both register at once.
Needs root (CI has it); nothing is skipped."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import SUBSET, clean_env, run
from hosts import Network, Probe
from mnist_stack import postgres
from team_kit import GIT, HOLD_GATE_SCRIPT, REGISTER_SCRIPT, make_clones, tune_cmd, wait_for

pytestmark = pytest.mark.slow

BEAT = ["--set=tune.heartbeat_s=1"]  # trials of a cut-off or dead host are failed 4 s after their last beat


@dataclass
class Job:
    what: str
    proc: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def finish(self, timeout: float = 900) -> str:
        """Wait for it to end well; its output."""
        self.proc.wait(timeout)
        assert self.proc.returncode == 0, f"{self.what} exited {self.proc.returncode}:\n{self.output()[-5000:]}"
        return self.output()


@dataclass
class Lan:
    net: Network
    base: Path
    exports: dict[str, str]  # what `stack up` printed
    probe: Probe  # on the server host
    clones: dict[str, Path]  # the workstations' clones: ws1 made the repository, ws2 cloned it
    processed: dict[str, Path]  # each workstation's copy of the processed subset

    @property
    def storage(self) -> str:
        return self.exports["OPTUNA_STORAGE"]

    @property
    def tracking_uri(self) -> str:
        return self.exports["MLFLOW_TRACKING_URI"]

    def env(self, **extra: str) -> dict[str, str]:
        """A workstation's shell: exactly the exports `stack up` printed."""
        return clean_env(**self.exports, **extra)

    def start(self, host: str, cmd: list, env: dict[str, str] | None = None) -> Job:
        """`cmd` on `host` in its clone, its output into a log file (a pipe nobody reads could stall it)."""
        log = self.base / "logs" / f"{host}-{uuid.uuid4().hex[:8]}.log"
        log.parent.mkdir(exist_ok=True)
        with open(log, "w") as out:
            proc = self.net[host].popen(cmd, cwd=self.clones[host], env=env or self.env(), stdout=out, stderr=out)
        return Job(f"{' '.join(map(str, cmd[:2]))} on {host}", proc, log)

    def tune(self, host: str, study: str, *extra: str) -> Job:
        return self.start(host, tune_cmd(self.processed[host], self.storage, study, *extra))

    def trials(self, study: str) -> list[dict]:
        return self.probe("trials", self.storage, study)

    def states(self, study: str) -> dict[str, int]:
        found: dict[str, int] = {}
        for t in self.trials(study):
            found[t["state"]] = found.get(t["state"], 0) + 1
        return found

    def running_trial(self, study: str, host: str) -> dict | None:
        """A trial of `host` running past its first epoch, with its MLflow run."""
        for t in self.trials(study):
            attrs = t["user_attrs"]
            if (
                t["state"] == "RUNNING"
                and attrs.get("worker", "").startswith(f"{host}:")
                and attrs.get("epochs_trained", 0) >= 1
            ):
                return t
        return None


@pytest.fixture(scope="module")
def lan(processed, usps_subset_dir):
    base = Path(tempfile.mkdtemp(prefix="mnist-cnn-hosts-"))
    base.chmod(0o755)  # PostgreSQL runs as the `postgres` user under root
    try:
        with Network("srv", "ws1", "ws2") as net:
            up = net["srv"].run(
                ["mnist-cnn", "stack", "up", "--host", "0.0.0.0", "--dir", base / "stack"],
                base,
                clean_env(),
                timeout=300,
            )
            exports = dict(re.findall(r"^export (\w+)=(\S+)$", up.stdout, flags=re.MULTILINE))
            a, b = make_clones(base / "clones", str(SUBSET), usps_subset_dir)
            clones = {"ws1": a, "ws2": b}
            copies = {h: Path(shutil.copytree(processed, base / f"processed-{h}")) for h in clones}
            probe = Probe(net["srv"], clean_env())
            try:
                yield Lan(net, base, exports, probe, clones, copies)
            finally:
                probe.close()
                net["srv"].run(["mnist-cnn", "stack", "down", "--dir", base / "stack"], base, check=False)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_stack_on_the_network_prints_urls_the_workstations_use_and_admits_only_known_host_headers(lan):
    assert lan.tracking_uri == "http://10.231.0.1:5000"  # the server host's only address, detected
    assert re.fullmatch(r"postgresql://mnist:[^@]+@10\.231\.0\.1:5433/optuna", lan.storage)
    listening = lan.net["srv"].run(["ss", "-ltnH"], lan.base).stdout
    assert re.search(r"0\.0\.0\.0:5000\b", listening) and re.search(r"0\.0\.0\.0:5433\b", listening), listening

    ws1 = lan.net["ws1"]
    check = """
import json, sys, urllib.error, urllib.request
def status(url, body=None, **headers):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers), timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
api = sys.argv[1] + "/api/2.0/mlflow/experiments/search"
print(json.dumps({
    "health": status(sys.argv[1] + "/health"),
    "search": status(api + "?max_results=1"),
    "foreign_host": status(api + "?max_results=1", Host="mlflow.attacker.example"),
    "own_origin": status(api, b'{"max_results": 1}', Origin=sys.argv[1], **{"Content-Type": "application/json"}),
    "foreign_origin": status(api, b'{"max_results": 1}', Origin="http://attacker.example",
                             **{"Content-Type": "application/json"}),
}))
"""
    seen = ws1.run([sys.executable, "-c", check, lan.tracking_uri], lan.base, lan.env()).stdout
    assert seen.strip() == (
        '{"health": 200, "search": 200, "foreign_host": 403, "own_origin": 200, "foreign_origin": 403}'
    ), seen
    logged = ws1.run(
        [sys.executable, "-c", "import mlflow; r = mlflow.start_run(); mlflow.log_metric('m', 1); mlflow.end_run(); "
         "print(r.info.run_id)"],
        lan.base,
        lan.env(),
    ).stdout.split()[-1]  # fmt: skip
    assert lan.probe("run", lan.tracking_uri, logged)["metrics"] == {"m": 1.0}


def _sshd(lan: Lan) -> tuple[subprocess.Popen, Path]:
    """sshd on the server host (root by a key made here); returns it and the workstations' key."""
    folder = lan.base / "ssh"
    folder.mkdir(exist_ok=True)
    for key in ("host_key", "client_key"):
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / key)], folder)
    shutil.copy(folder / "client_key.pub", folder / "authorized_keys")
    (folder / "sshd_config").write_text(
        f"ListenAddress {lan.net['srv'].address}\nHostKey {folder / 'host_key'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPidFile {folder / 'sshd.pid'}\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "UsePAM no\nStrictModes no\nSubsystem sftp internal-sftp\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # Debian's sshd insists on its privilege-separation folder
    sshd = lan.net["srv"].popen(["/usr/sbin/sshd", "-D", "-e", "-f", folder / "sshd_config"], cwd=folder)
    return sshd, folder / "client_key"


def test_two_workstations_tune_one_study_one_runs_dvc_repro_and_both_share_through_an_ssh_remote(lan):
    study, n_trials = f"team-{uuid.uuid4().hex[:8]}", 5
    jobs = [
        lan.tune("ws1", study, "--trials", str(n_trials), "--workers", "2"),
        lan.tune("ws2", study, "--trials", str(n_trials), "--workers", "2"),
        lan.start("ws1", ["dvc", "repro"]),
    ]
    for job in jobs:
        job.finish(timeout=1200)

    trials = lan.trials(study)
    assert sorted(t["state"] for t in trials) == ["COMPLETE"] * n_trials  # exactly, across both hosts
    hosts = {t["user_attrs"]["worker"].split(":")[0] for t in trials}
    assert hosts == {"ws1", "ws2"}, "both workstations ran trials"
    parents = {lan.probe("run", lan.tracking_uri, t["user_attrs"]["mlflow_run_id"])["tags"]["mlflow.parentRunId"]
               for t in trials}  # fmt: skip
    assert len(parents) == 2, "each workstation's tune is one parent run on the server"

    # ws1's pipeline registered into the server's registry
    report = (lan.clones["ws1"] / "reports" / "register.json").read_text()
    version = re.search(r'"version": (\d+)', report).group(1)
    assert version in {v["version"] for v in lan.probe("versions", lan.tracking_uri, "mnist-cnn")["versions"]}

    # ws1 shares over SSH: dvc.lock and the uncached outputs in git, the cached ones on the server host
    sshd, key = _sshd(lan)
    try:
        remote = f"ssh://root@{lan.net['srv'].address}{lan.base / 'dvc-remote'}"
        for clone in lan.clones.values():
            for setting in (["url", remote], ["keyfile", str(key)]):
                run(["dvc", "remote", "modify", "--local", "team", *setting], clone)
        ws1, ws2 = lan.net["ws1"], lan.net["ws2"]
        run(["git", "add", "dvc.lock", "reports", "models/run.json", ".gitignore", "data", "models"], lan.clones["ws1"])
        run([*GIT, "commit", "-qm", "trained model"], lan.clones["ws1"])
        ws1.run(["dvc", "push"], lan.clones["ws1"], lan.env())
        assert list((lan.base / "dvc-remote").rglob("*")), "the server host holds the pushed files"
        runs_before = {r["run_id"] for r in lan.probe("runs", lan.tracking_uri, "mnist-cnn")}

        run(["git", "pull", "-q"], lan.clones["ws2"])
        ws2.run(["dvc", "pull"], lan.clones["ws2"], lan.env())
        repro = ws2.run(["dvc", "repro"], lan.clones["ws2"], lan.env())
        assert "Running stage" not in repro.stdout and "didn't change, skipping" in repro.stdout, repro.stdout
        model = Path("models") / "model.keras"
        assert (lan.clones["ws2"] / model).read_bytes() == (lan.clones["ws1"] / model).read_bytes()
        assert {r["run_id"] for r in lan.probe("runs", lan.tracking_uri, "mnist-cnn")} == runs_before, (
            "a no-op repro logs no run"
        )
    finally:
        sshd.terminate()
        sshd.wait(10)


def _victim_and_survivor(lan: Lan, study: str, n_trials: int, fault) -> tuple[Job, dict]:
    """ws2 starts a long trial; once it is past its first epoch, `fault()` strikes ws2, and ws1
    tunes the same study to the end. Returns ws2's tune and its trial."""
    victim = lan.tune("ws2", study, "--trials", str(n_trials), "--set=tune.epochs=40", *BEAT)
    found: list[dict] = []
    wait_for(lambda: found.append(lan.running_trial(study, "ws2")) or found[-1], 300, "a trial on ws2", every=1)
    fault()
    lan.tune("ws1", study, "--trials", str(n_trials), *BEAT).finish()
    return victim, found[-1]


def _assert_failed_by_heartbeat_and_filled(lan: Lan, study: str, n_trials: int, victim_trial: dict) -> None:
    trials = {t["number"]: t for t in lan.trials(study)}
    assert trials[victim_trial["number"]]["state"] == "FAIL" and trials[victim_trial["number"]]["values"] is None
    assert sum(t["state"] == "COMPLETE" for t in trials.values()) == n_trials
    assert not any(t["state"] == "RUNNING" for t in trials.values())
    killed = lan.probe("run", lan.tracking_uri, victim_trial["user_attrs"]["mlflow_run_id"])
    assert killed["status"] == "KILLED"


def test_a_cut_link_fails_the_cut_off_host_s_trial_by_heartbeat_and_it_rejoins_without_counting_twice(lan):
    study, n_trials = f"cut-{uuid.uuid4().hex[:8]}", 3
    victim, trial = _victim_and_survivor(lan, study, n_trials, lambda: lan.net.cut("ws2"))
    try:
        _assert_failed_by_heartbeat_and_filled(lan, study, n_trials, trial)
        parent = lan.probe("run", lan.tracking_uri, trial["user_attrs"]["mlflow_parent_run_id"])
        assert parent["status"] == "KILLED", "a cut-off host's tune run is presumed dead meanwhile"
    finally:
        lan.net.heal("ws2")
    # Back on the network, ws2 finds its trial failed: it drops the result, sees the study is
    # full and ends; nothing it says after the heal changes the study.
    said = victim.finish(timeout=600)
    assert f"trial {trial['number']} was failed while this worker could not reach the study" in said
    _assert_failed_by_heartbeat_and_filled(lan, study, n_trials, trial)
    assert len(lan.trials(study)) == n_trials + 1
    parent = lan.probe("run", lan.tracking_uri, trial["user_attrs"]["mlflow_parent_run_id"])
    assert parent["status"] == "FINISHED", "ws2's tune ended its own run as it really ended"


def test_a_host_killed_mid_trial_has_its_trial_failed_by_heartbeat_and_the_other_fills_the_study(lan):
    study, n_trials = f"dead-{uuid.uuid4().hex[:8]}", 3
    victim, trial = _victim_and_survivor(lan, study, n_trials, lambda: lan.net["ws2"].kill_all())
    assert victim.proc.wait(30) == -signal.SIGKILL
    _assert_failed_by_heartbeat_and_filled(lan, study, n_trials, trial)
    parent = lan.probe("run", lan.tracking_uri, trial["user_attrs"]["mlflow_parent_run_id"])
    assert parent["status"] == "KILLED"


def _restart_postgresql(lan: Lan) -> None:
    pgdata = lan.base / "stack" / "pgdata"
    pg_ctl = str(postgres.bindir() / "pg_ctl")
    log = lan.base / "stack" / "logs" / "postgresql.log"  # else the server keeps this command's output open
    lan.net["srv"].run(
        ["runuser", "-u", "postgres", "--", pg_ctl, "-D", pgdata, "-l", log, "-m", "fast", "-w", "restart"], lan.base
    )


def test_a_database_restart_mid_study_is_waited_out_and_the_study_finishes_without_a_rerun(lan):
    study, n_trials = f"restart-{uuid.uuid4().hex[:8]}", 3
    tune = lan.tune(
        "ws1", study, "--trials", str(n_trials), "--workers", "2", "--set=tune.epochs=4", "--set=tune.heartbeat_s=2"
    )
    wait_for(lambda: lan.running_trial(study, "ws1"), 300, "a trial past its first epoch", every=1)
    _restart_postgresql(lan)
    tune.finish()
    trials = lan.trials(study)
    assert sorted(t["state"] for t in trials) == ["COMPLETE"] * n_trials, "no trial failed, none was added"
    for t in trials:
        assert lan.probe("run", lan.tracking_uri, t["user_attrs"]["mlflow_run_id"])["status"] == "FINISHED"


def test_workstations_registering_at_once_leave_one_champion_and_every_version(lan):
    name = f"gate-{uuid.uuid4().hex[:8]}"
    script = lan.base / "register.py"
    script.write_text(REGISTER_SCRIPT)
    accuracies = {"ws1": ["0.91", "0.97", "0.93"], "ws2": ["0.95", "0.99", "0.92"]}
    procs = {
        host: lan.net[host].popen(
            [sys.executable, script, name, *acc],
            cwd=lan.base,
            env=lan.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for host, acc in accuracies.items()
    }
    for host, proc in procs.items():
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{host}: {err[-3000:]}"
    registry = lan.probe("versions", lan.tracking_uri, name)
    assert len(registry["versions"]) == 6, "no version lost"
    best = next(v["version"] for v in registry["versions"] if float(v["tags"]["test_accuracy"]) == 0.99)
    assert registry["champion"] == best and registry["locks"] == []


def test_a_gate_lock_left_by_a_dead_host_is_taken_over_after_its_timeout(lan):
    name = f"stale-{uuid.uuid4().hex[:8]}"
    holder = lan.net["ws2"].popen(
        [sys.executable, "-c", HOLD_GATE_SCRIPT, name], cwd=lan.base, env=lan.env(), stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "holding"
    held_since = time.time()
    lan.net["ws2"].kill_all()  # the host dies holding the gate
    script = lan.base / "register-stale.py"
    script.write_text(REGISTER_SCRIPT)
    done = lan.net["ws1"].run([sys.executable, script, name, "0.97"], lan.base, lan.env(GATE_STALE_S="8"), timeout=300)
    assert "taking over the registry gate lock" in done.stderr and "left by ws2:" in done.stderr
    registry = lan.probe("versions", lan.tracking_uri, name)
    assert registry["champion"] == "1" and registry["locks"] == []
    (version,) = registry["versions"]
    # this host cannot judge another host's process: only the lock's age frees it
    assert version["created"] / 1000 >= held_since + 8 - 1

"""Hosts on this machine: one network namespace each, with its own address on a private network
and its own host name, joined by a bridge in a namespace of its own (a switch), so their traffic
never leaves the namespaces made here. Commands run "on" a host through `ip netns exec` and
`unshare --uts`. A link can be cut and healed at the switch, and every process of a host killed
at once (`ip netns pids`). Needs root, `ip` (iproute2) and `unshare` (util-linux).

    with Network("srv", "ws1", "ws2") as net:
        net["srv"].run(["mnist-cnn", "stack", "up", "--host", "0.0.0.0"], cwd)
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

SUBNET = "10.231.0"  # /24, private to the namespaces made here: the server .1, then .2, .3, ...
PREFIX = "mnt"  # namespace names: mnt<pid>-<host>
HERE = Path(__file__).resolve().parent


def _ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = ["ip", "netns", "exec", ns, "ip", *args] if ns else ["ip", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr.strip()}")
    return proc


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale() -> None:
    """Namespaces left by a test process that died before it could tear its network down."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for name in re.findall(rf"^({PREFIX}(\d+)-\S+)", listing, flags=re.MULTILINE):
        if not _pid_alive(int(name[1])):
            kill_namespace(name[0])
            subprocess.run(["ip", "netns", "del", name[0]], capture_output=True)


def kill_namespace(ns: str) -> int:
    """SIGKILL every process in namespace `ns` until none is left; how many were killed."""
    killed = 0
    for _ in range(50):
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
        if not pids:
            return killed
        for pid in map(int, pids):
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    raise RuntimeError(f"processes of namespace {ns} keep appearing")


class Host:
    def __init__(self, name: str, ns: str, address: str, port: str) -> None:
        self.name, self.ns, self.address, self._port = name, ns, address, port

    def command(self, cmd: list) -> list[str]:
        """`cmd` as run on this host: in its network namespace, under its own host name."""
        return [
            "ip", "netns", "exec", self.ns,
            "unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', self.name,
            *map(str, cmd),
        ]  # fmt: skip

    def popen(self, cmd: list, cwd: Path, env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.command(cmd), cwd=cwd, env=env, **kwargs)

    def run(
        self, cmd: list, cwd: Path, env: dict[str, str] | None = None, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess:
        proc = subprocess.run(self.command(cmd), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"on {self.name}: {' '.join(map(str, cmd))} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
            )
        return proc

    def pids(self) -> list[int]:
        return [
            int(p)
            for p in subprocess.run(["ip", "netns", "pids", self.ns], capture_output=True, text=True).stdout.split()
        ]

    def kill_all(self) -> int:
        """The host dies: SIGKILL every one of its processes."""
        return kill_namespace(self.ns)


class Network:
    """Hosts on one private /24 (the first one named gets .1); `cut` and `heal` a host's link."""

    def __init__(self, *names: str) -> None:
        if os.geteuid() != 0:
            raise RuntimeError("hosts in network namespaces need root (CI runs as root)")
        remove_stale()
        self.tag = f"{PREFIX}{os.getpid()}"
        self.switch = f"{self.tag}-switch"
        self.hosts: dict[str, Host] = {}
        self._made: list[str] = []
        try:
            self._add_namespace(self.switch)
            _ip("link", "add", "br0", "type", "bridge", ns=self.switch)
            _ip("link", "set", "br0", "up", ns=self.switch)
            for i, name in enumerate(names, start=1):
                self._add_host(name, f"{SUBNET}.{i}", f"port{i}")
        except BaseException:
            self.close()
            raise

    def _add_namespace(self, ns: str) -> None:
        _ip("netns", "add", ns)
        self._made.append(ns)
        _ip("link", "set", "lo", "up", ns=ns)

    def _add_host(self, name: str, address: str, port: str) -> None:
        ns = f"{self.tag}-{name}"
        self._add_namespace(ns)
        # the pair is made inside the two namespaces: nothing appears in this machine's own
        _ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port, "netns", self.switch)
        _ip("link", "set", port, "master", "br0", ns=self.switch)
        _ip("link", "set", port, "up", ns=self.switch)
        _ip("addr", "add", f"{address}/24", "dev", "eth0", ns=ns)
        _ip("link", "set", "eth0", "up", ns=ns)
        self.hosts[name] = Host(name, ns, address, port)

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def cut(self, name: str) -> None:
        """Unplug the host's cable at the switch: its packets are lost, nothing is refused."""
        _ip("link", "set", self.hosts[name]._port, "down", ns=self.switch)

    def heal(self, name: str) -> None:
        _ip("link", "set", self.hosts[name]._port, "up", ns=self.switch)

    def close(self) -> None:
        """Kill every process of every host, then remove the namespaces (their links go with them)."""
        for ns in reversed(self._made):
            kill_namespace(ns)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self._made.clear()

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Probe:
    """A Python process on a host that answers the test's questions about the servers (the test
    itself runs outside the network): `probe("trials", storage_url, study)` calls that function
    of tests/netprobe.py there and returns its JSON answer."""

    def __init__(self, host: Host, env: dict[str, str]) -> None:
        self.proc = host.popen(
            [sys.executable, str(HERE / "netprobe.py")],
            cwd=HERE,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

    def __call__(self, fn: str, *args):
        self.proc.stdin.write(json.dumps({"fn": fn, "args": list(args)}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the probe died (exit {self.proc.wait()})")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"probe {fn}{tuple(args)}: {answer['error']}")
        return answer["ok"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

"""Which owner tokens name dead processes: the check that fails trials and MLflow runs of
workers killed with SIGKILL."""

import os
import signal
import socket
import subprocess
import time

import psutil

from mnist_cnn import liveness


def token(pid: int, started: float, host: str | None = None) -> str:
    return f"{host or socket.gethostname()}:{pid}:{started:.3f}"


def test_this_process_is_alive_and_tokens_that_are_not_tokens_are_not_dead():
    assert not liveness.is_dead(liveness.owner_token())
    assert not liveness.is_dead(None) and not liveness.is_dead("no-colons") and not liveness.is_dead(42)


def test_a_killed_child_its_parent_has_not_reaped_yet_is_dead():
    """A zombie still has its pid and start time; judging it alive let a tuning worker wait
    forever on the trial of a sibling that was killed while the parent joined another child."""
    child = subprocess.Popen(["sleep", "60"])
    try:
        started = psutil.Process(child.pid).create_time()
        assert not liveness.is_dead(token(child.pid, started))
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.time() + 10
        while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE and time.time() < deadline:
            time.sleep(0.05)
        assert psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE
        assert liveness.is_dead(token(child.pid, started))
    finally:
        child.kill()
        child.wait()
    assert liveness.is_dead(token(child.pid, started)), "reaped: the pid is gone (or reused by a later process)"


def test_a_reused_pid_is_dead_and_another_machine_s_process_never_is():
    me = psutil.Process()
    assert liveness.is_dead(token(me.pid, me.create_time() - 3600)), "same pid, other start time: a reused pid"
    assert not liveness.is_dead(token(me.pid, me.create_time() - 3600, host=socket.gethostname() + "-elsewhere"))

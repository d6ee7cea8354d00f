"""The scripts outside the package (benchmarks, the README's screenshots) have no test of their
own that runs them whole; each must at least load against today's code (its module-level imports:
those inside `main` run only after the options are parsed) and print its options."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import ROOT, clean_env

SCRIPTS = sorted([*ROOT.glob("benchmarks/*.py"), *ROOT.glob("docs/*.py")])


def test_every_benchmark_is_found():
    assert {"presets.py", "tuning.py", "team.py", "screenshots.py"} <= {p.name for p in SCRIPTS}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_script_imports_and_prints_its_usage(script):
    proc = subprocess.run(
        [sys.executable, str(script), "--help"],
        cwd=script.parent,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("usage:"), proc.stdout[:500]

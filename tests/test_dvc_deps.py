"""dvc.yaml declares what each stage really runs: every project module a stage script imports
is among its deps (a change to it re-runs the stage), and every path a script takes is on its
command line."""

from __future__ import annotations

import ast
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_cnn.schema import read_yaml

ROOT = Path(__file__).resolve().parents[1]
STAGES = read_yaml(ROOT / "dvc.yaml")["stages"]

IMPORTED = """
import importlib, sys
from pathlib import Path
for name in sys.argv[1:]:
    importlib.import_module(name)
for name, module in sorted(sys.modules.items()):
    if name.split(".")[0] == "mnist_cnn" and getattr(module, "__file__", None):
        print(Path(module.__file__).resolve())
"""


def named_imports(script: Path) -> list[str]:
    """The project modules a script imports anywhere (top level or inside main)."""
    names = []
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    return sorted({n for n in names if n.split(".")[0] == "mnist_cnn" and is_module(n)})


def is_module(name: str) -> bool:
    path = ROOT / "src" / Path(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imported_modules(script: Path) -> list[Path]:
    """Every project module loaded by importing what the script imports (and what those import)."""
    cmd = [sys.executable, "-c", IMPORTED, *named_imports(script)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=True)
    return [Path(line) for line in proc.stdout.splitlines()]


def covered(path: Path, deps: list[str]) -> bool:
    return any(path == (ROOT / dep).resolve() or (ROOT / dep).resolve() in path.parents for dep in deps)


@pytest.mark.slow
@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_project_module_a_stage_imports_is_a_dependency(stage):
    spec = STAGES[stage]
    script = ROOT / shlex.split(spec["cmd"])[1]
    assert str(script.relative_to(ROOT)) in spec["deps"], f"{stage}: its script is not a dependency"
    modules = imported_modules(script)
    assert any(m.name == "config.py" for m in modules), "the import probe saw no project module"
    missing = [str(m.relative_to(ROOT)) for m in modules if not covered(m, spec["deps"])]
    assert not missing, f"dvc.yaml stage {stage} imports {missing} but does not depend on them"


def test_the_train_stage_depends_on_the_whole_package_the_model_ships():
    from mnist_cnn.serving import package

    assert package.PACKAGE == (ROOT / "src" / "mnist_cnn").resolve()
    assert "src/mnist_cnn" in STAGES["train"]["deps"]


def test_imports_inside_main_are_seen():
    names = named_imports(ROOT / "stages" / "evaluate.py")
    assert "mnist_cnn.evaluation" in names and "mnist_cnn.entrypoint" in names


def test_covered_sees_a_missing_module():
    assert not covered(ROOT / "src" / "mnist_cnn" / "images.py", ["src/mnist_cnn/config.py"])
    assert covered(ROOT / "src" / "mnist_cnn" / "serving" / "decode.py", ["src/mnist_cnn"])


@pytest.mark.slow
@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_scripts_require_every_path_on_the_command_line(stage):
    script = ROOT / shlex.split(STAGES[stage]["cmd"])[1]
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "the following arguments are required" in proc.stderr

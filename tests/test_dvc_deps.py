"""dvc.yaml declares what each stage really runs and ships: every project module a stage script
can import (at the top or inside a function, and what those import) is among its deps, no module
it never imports is, and every path a script takes is on its command line. The train stage ships
the model's runtime package whole, and nothing else of the project."""

from __future__ import annotations

import ast
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_cnn import packaging
from mnist_cnn.schema import read_yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGES = ("mnist_cnn", "mnist_runtime", "mnist_stack")
STAGES = read_yaml(ROOT / "dvc.yaml")["stages"]
RUNTIME = "src/mnist_runtime"


def module_file(name: str) -> Path | None:
    path = SRC / Path(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def direct_imports(path: Path) -> set[Path]:
    """The project modules `path` names in any import statement, with the packages above them."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    parents = {".".join(n.split(".")[:i]) for n in names for i in range(1, n.count(".") + 2)}
    return {f for n in parents if n.split(".")[0] in PACKAGES and (f := module_file(n))}


def imported_modules(script: Path) -> set[Path]:
    """Every project module the script can reach through imports."""
    seen, todo = set(), [script]
    while todo:
        for module in direct_imports(todo.pop()) - seen:
            seen.add(module)
            todo.append(module)
    return seen


def source_deps(stage: str) -> list[str]:
    return [dep for dep in STAGES[stage]["deps"] if dep.startswith("src/")]


def covered(path: Path, deps: list[str]) -> bool:
    return any(path == ROOT / dep or ROOT / dep in path.parents for dep in deps)


def script_of(stage: str) -> Path:
    return ROOT / shlex.split(STAGES[stage]["cmd"])[1]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_project_module_a_stage_imports_is_a_dependency_and_no_other(stage):
    script = script_of(stage)
    assert str(script.relative_to(ROOT)) in STAGES[stage]["deps"], f"{stage}: its script is not a dependency"
    modules = imported_modules(script)
    assert SRC / "mnist_cnn" / "config.py" in modules, "the import walk saw no project module"
    missing = sorted(str(m.relative_to(ROOT)) for m in modules if not covered(m, source_deps(stage)))
    assert not missing, f"dvc.yaml stage {stage} imports {missing} but does not depend on them"
    shipped = [RUNTIME] if stage == "train" else []
    unused = [d for d in source_deps(stage) if d not in shipped and ROOT / d not in modules]
    assert not unused, f"dvc.yaml stage {stage} depends on {unused}, which it never imports"


def test_the_train_stage_depends_on_the_runtime_the_model_ships_and_nothing_of_tuning_stack_webapp_or_cli():
    assert packaging.RUNTIME == SRC / "mnist_runtime"
    assert RUNTIME in STAGES["train"]["deps"]
    assert not [d for d in source_deps("train") if any(k in d for k in ("tuning", "stack", "webapp", "cli", "servers"))]


def test_the_runtime_imports_nothing_of_the_pipeline():
    runtime = sorted((SRC / "mnist_runtime").glob("*.py"))
    assert {p.name for p in runtime} >= {"pyfunc_model.py", "images.py", "network.py"}
    for path in runtime:
        outside = [str(m.relative_to(SRC)) for m in direct_imports(path) if "mnist_runtime" not in m.parts]
        assert not outside, f"{path.name} imports {outside}: the registered model ships only mnist_runtime"


def test_the_pipeline_package_leaves_the_team_stack_to_the_cli():
    users = sorted(
        p.name for p in (SRC / "mnist_cnn").rglob("*.py") if any("mnist_stack" in m.parts for m in direct_imports(p))
    )
    assert users == ["servers.py"], users  # the `mnist-cnn stack` command


def test_imports_inside_functions_are_seen():
    modules = imported_modules(script_of("evaluate"))
    assert SRC / "mnist_cnn" / "evaluation.py" in modules  # imported inside main
    assert SRC / "mnist_cnn" / "model.py" not in modules
    assert SRC / "mnist_cnn" / "model.py" in imported_modules(script_of("train"))  # inside training.calibrate


def test_covered_sees_a_missing_module():
    assert not covered(SRC / "mnist_runtime" / "images.py", ["src/mnist_cnn/config.py"])
    assert covered(SRC / "mnist_runtime" / "decode.py", [RUNTIME])


@pytest.mark.slow
@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_scripts_require_every_path_on_the_command_line(stage):
    proc = subprocess.run([sys.executable, str(script_of(stage))], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "the following arguments are required" in proc.stderr

"""Presets: every preset file is a valid model+train config, and `mnist-cnn preset` rewrites
params.yaml in place keeping its comments and other sections."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from mnist_cnn import config, presets
from mnist_cnn.errors import ConfigError
from mnist_cnn.schema import read_yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(ROOT / "presets", tmp_path / "presets")
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    return tmp_path


def test_the_three_presets_exist_and_validate():
    assert {"seed", "fast", "accurate"} <= set(presets.available(ROOT / "presets"))
    for name in presets.available(ROOT / "presets"):
        model, train = presets.load(name, directory=ROOT / "presets")
        assert isinstance(model, config.ModelParams) and isinstance(train, config.TrainParams)


def test_seed_preset_is_the_seeds_cnn_and_training():
    model, train = presets.load("seed", directory=ROOT / "presets")
    assert (model.filters, model.convs_per_block, model.kernel_size, model.padding) == ((32, 64), 1, 3, "valid")
    assert (model.dense_units, model.dropout, model.batch_norm, model.augment.active) == ((128,), 0.5, False, False)
    assert (train.optimizer, train.learning_rate, train.batch_size, train.epochs) == ("adam", 0.001, 128, 10)
    assert train.schedule.name == "constant"


def test_params_yaml_holds_the_default_preset_and_fast_stays_the_seeds_network():
    assert presets.describe(config.load_params(ROOT / "params.yaml"), ROOT / "presets") == "preset accurate"
    seed_model, seed_train = presets.load("seed", directory=ROOT / "presets")
    fast_model, fast_train = presets.load("fast", directory=ROOT / "presets")
    assert (fast_model.filters, fast_model.convs_per_block) == (seed_model.filters, seed_model.convs_per_block)
    assert fast_train.epochs * 2 < seed_train.epochs


def contains(full: dict, partial: dict) -> bool:
    return all(contains(full[k], v) if isinstance(v, dict) else full[k] == v for k, v in partial.items())


def test_presets_other_than_seed_list_only_what_they_change_from_seed(project: Path):
    seed_text = (project / "presets" / "seed.yaml").read_text()
    for name in presets.available(project / "presets"):
        if name == presets.BASE:
            continue
        partial = read_yaml(project / "presets" / f"{name}.yaml")
        full = presets.read(name, project / "presets")
        assert partial != full, f"{name}.yaml should be partial"
        assert contains(full, partial)
    # a preset means the same whatever params.yaml held: fast after accurate equals fast after seed
    presets.apply("accurate", project / "params.yaml", directory=project / "presets")
    presets.apply("fast", project / "params.yaml", directory=project / "presets")
    after_accurate = config.load_params(project / "params.yaml")
    presets.apply("seed", project / "params.yaml", directory=project / "presets")
    presets.apply("fast", project / "params.yaml", directory=project / "presets")
    assert config.load_params(project / "params.yaml") == after_accurate
    # a change to seed.yaml reaches every preset that does not override the key
    (project / "presets" / "seed.yaml").write_text(seed_text.replace("kernel_size: 3", "kernel_size: 5"))
    assert presets.load("fast", directory=project / "presets")[0].kernel_size == 5


def test_a_preset_with_another_section_is_refused(project: Path):
    (project / "presets" / "odd.yaml").write_text("tune:\n  n_trials: 3\n")
    with pytest.raises(ConfigError, match=r"may only have the sections \['model', 'train'\], found \['tune'\]"):
        presets.load("odd", directory=project / "presets")


def test_params_yaml_defaults_are_one_of_the_presets():
    params = config.load_params(ROOT / "params.yaml")
    matches = [
        name
        for name in presets.available(ROOT / "presets")
        if presets.load(name, directory=ROOT / "presets") == (params.model, params.train)
    ]
    assert matches, "params.yaml's model/train sections should equal a preset"


def test_apply_rewrites_only_model_and_train_and_keeps_comments(project: Path):
    before = (project / "params.yaml").read_text()
    changed = presets.apply("fast", project / "params.yaml", directory=project / "presets")
    after = (project / "params.yaml").read_text()
    assert changed and all(key.split(".")[0] in ("model", "train") for key in changed)
    params = config.load_params(project / "params.yaml")
    assert (params.model, params.train) == presets.load("fast", directory=project / "presets")
    assert config.load_params(project / "params.yaml").data == config.load_params(ROOT / "params.yaml").data
    comments = [line for line in before.splitlines() if line.lstrip().startswith("#")]
    assert comments and all(c in after for c in comments)
    assert presets.apply("fast", project / "params.yaml", directory=project / "presets") == []


def test_switching_back_restores_the_file_exactly(project: Path):
    original = (project / "params.yaml").read_text()
    current = [
        n
        for n in presets.available(project / "presets")
        if presets.load(n, directory=project / "presets")
        == (config.load_params(project / "params.yaml").model, config.load_params(project / "params.yaml").train)
    ]
    other = next(n for n in ("fast", "seed") if n not in current)
    presets.apply(other, project / "params.yaml", directory=project / "presets")
    presets.apply(current[0], project / "params.yaml", directory=project / "presets")
    assert (project / "params.yaml").read_text() == original


def test_unknown_or_invalid_preset_is_a_clear_error_and_leaves_params_untouched(project: Path):
    original = (project / "params.yaml").read_text()
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        presets.apply("nope", project / "params.yaml", directory=project / "presets")
    (project / "presets" / "broken.yaml").write_text("model:\n  filterz: [1]\ntrain: {}\n")
    with pytest.raises(ConfigError, match="model.filterz"):
        presets.apply("broken", project / "params.yaml", directory=project / "presets")
    assert (project / "params.yaml").read_text() == original


@pytest.mark.slow
def test_cli_preset_command(project: Path):
    proc = subprocess.run(["mnist-cnn", "preset", "seed"], cwd=project, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert config.load_params(project / "params.yaml").train.epochs == 10
    listed = subprocess.run(["mnist-cnn", "preset"], cwd=project, capture_output=True, text=True).stdout.split()
    assert {"seed", "fast", "accurate"} <= set(listed)

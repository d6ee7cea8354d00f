"""Presets: complete `model:` and `train:` sections kept as plain YAML files in `presets/`.

`seed` is the seeds' CNN and training, kept as the baseline; `accurate` is the default in
params.yaml; `fast` trades a little accuracy for a fraction of the time. `mnist-cnn preset NAME`
copies a preset into params.yaml (its comments and other sections kept), so `dvc repro`,
`dvc exp run` and `dvc params diff` see exactly what changed.
"""

from __future__ import annotations

from pathlib import Path

from mnist_cnn.config import ConfigError, ModelParams, TrainParams, apply_overrides, from_mapping, read_yaml

SECTIONS = ("model", "train")


def presets_dir() -> Path:
    from mnist_cnn.tracking import project_root

    return project_root() / "presets"


def available(directory: Path | None = None) -> list[str]:
    return sorted(p.stem for p in (directory or presets_dir()).glob("*.yaml"))


def read(name: str, directory: Path | None = None) -> dict:
    directory = directory or presets_dir()
    path = directory / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(available(directory)) or 'none'} (in {directory})")
    raw = read_yaml(path)
    if set(raw) != set(SECTIONS):
        raise ConfigError(f"preset {path} must have exactly the sections {list(SECTIONS)}, found {sorted(raw)}")
    return raw


def load(name: str, overrides: list[str] | None = None, directory: Path | None = None) -> tuple[ModelParams, TrainParams]:
    """The preset's validated (model, train) params, with optional `section.key=value` overrides."""
    raw = read(name, directory)
    if overrides:
        raw = apply_overrides(raw, overrides)
    try:
        return from_mapping(ModelParams, raw["model"], "model"), from_mapping(TrainParams, raw["train"], "train")
    except ConfigError as exc:
        raise ConfigError(f"preset {name}: {exc}") from None


def apply(name: str, params_path: Path, directory: Path | None = None) -> list[str]:
    """Write the preset's sections into `params_path` in place; return the keys that changed."""
    from mnist_cnn.config import edit_params_file

    raw = read(name, directory)
    load(name, directory=directory)  # validate before touching the user's file
    changed: list[str] = []

    def merge(target, source, prefix: str) -> None:
        for key in list(target):
            if key not in source:
                changed.append(f"{prefix}{key}")
                del target[key]
        for key, value in source.items():
            if isinstance(value, dict) and isinstance(target.get(key), dict):
                merge(target[key], value, f"{prefix}{key}.")
            elif target.get(key) != value:
                changed.append(f"{prefix}{key}")
                target[key] = value

    def edit(doc) -> None:
        for section in SECTIONS:
            if section not in doc:
                doc[section] = {}
            merge(doc[section], raw[section], f"{section}.")

    edit_params_file(params_path, edit)
    return changed

"""Presets: named `model:` and `train:` settings kept as YAML files in `presets/`.

`seed.yaml` is complete: the seeds' CNN and training, kept as the baseline. Every other preset
is a partial override listing only what it changes from seed (`accurate`, the default in
params.yaml; `fast`, a little accuracy for a fraction of the time), so a preset always means the
same whatever params.yaml held before. `mnist-cnn preset NAME` writes the resolved sections into
params.yaml (its comments and other sections kept), so `dvc repro`, `dvc exp run` and
`dvc params diff` see exactly what changed.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from mnist_cnn.config import ModelParams, Params, TrainParams, apply_overrides, edit_params_file, project_root
from mnist_cnn.errors import ConfigError
from mnist_cnn.schema import from_mapping, read_yaml

SECTIONS = ("model", "train")
BASE = "seed"


def presets_dir() -> Path:
    return project_root() / "presets"


def available(directory: Path | None = None) -> list[str]:
    return sorted(p.stem for p in (directory or presets_dir()).glob("*.yaml"))


def _read_file(name: str, directory: Path) -> dict[str, Any]:
    path = directory / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"unknown preset {name!r}; available: {', '.join(available(directory)) or 'none'} (in {directory})"
        )
    raw = read_yaml(path, what="preset")
    if not set(raw) <= set(SECTIONS):
        raise ConfigError(f"preset {path} may only have the sections {list(SECTIONS)}, found {sorted(raw)}")
    return raw


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override`'s keys over a copy of `base`, mappings merged key by key (lists replaced)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read(name: str, directory: Path | None = None) -> dict[str, Any]:
    """The preset's complete model and train sections: seed's, with the preset's keys over them."""
    directory = directory or presets_dir()
    raw = _read_file(name, directory)
    if name != BASE:
        raw = _merge(_read_file(BASE, directory), raw)
    return raw


def load(
    name: str, overrides: list[str] | None = None, directory: Path | None = None
) -> tuple[ModelParams, TrainParams]:
    """The preset's validated (model, train) params, with optional `section.key=value` overrides."""
    raw = read(name, directory)
    if overrides:
        raw = apply_overrides(raw, overrides)
    try:
        return from_mapping(ModelParams, raw.get("model", {}), "model"), from_mapping(
            TrainParams, raw.get("train", {}), "train"
        )
    except ConfigError as exc:
        raise ConfigError(f"preset {name}: {exc}") from None


def describe(params: Params, directory: Path | None = None) -> str:
    """`preset accurate` when params' model and train sections equal a preset, else `custom settings`."""
    try:
        for name in available(directory):
            if load(name, directory=directory) == (params.model, params.train):
                return f"preset {name}"
    except ConfigError:  # a broken preset file is not this run's problem
        pass
    return "custom settings"


def apply(name: str, params_path: Path, directory: Path | None = None) -> list[str]:
    """Write the preset's sections into `params_path` in place; return the keys that changed."""
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

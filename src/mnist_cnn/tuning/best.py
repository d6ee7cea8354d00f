"""The best params file (`tuning/best_params.yaml`, meant to be committed): written after a
study, and applied to params.yaml by `mnist-cnn tune --apply` with its comments kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mnist_cnn import atomic
from mnist_cnn.config import edit_params_file, load_params, with_values
from mnist_cnn.errors import TuneError
from mnist_cnn.schema import dump_yaml, lookup, read_yaml, set_dotted, to_dict
from mnist_cnn.tuning.report import StudyResult


def write_best(result: StudyResult, path: str | Path) -> None:
    if result.multi:
        header = (
            f"# The Pareto front of Optuna study {result.study_name!r} ({', '.join(result.objectives)}), written by\n"
            f"# `mnist-cnn tune`; `params` is the chosen trial's: {result.rule}. Scored on the validation split.\n"
            "# Copy into params.yaml with: mnist-cnn tune --apply (another trial of the front: --apply --pick TRIAL)\n"
        )
    else:
        header = (
            f"# Best trial of Optuna study {result.study_name!r}, written by `mnist-cnn tune`.\n"
            "# Scored on the validation split. Copy into params.yaml with: mnist-cnn tune --apply\n"
        )
    atomic.write_text(Path(path), header + dump_yaml(result.best_document()))


def apply_best(best_path: str | Path, params_path: str | Path, pick: int | None = None) -> list[tuple[str, Any, Any]]:
    """Write the best params file's values (or, with `pick`, those of that trial of its Pareto
    front) into params.yaml, comments kept; return (key, old, new) for each value that changed."""
    best_path = Path(best_path)
    if not best_path.is_file():
        raise TuneError(f"{best_path} not found; run `mnist-cnn tune` first (or pass --best)")
    document = read_yaml(best_path, what="best params file")
    values = document.get("params") if pick is None else _front_trial(document, pick, best_path)
    if not isinstance(values, dict) or not values:
        raise TuneError(f"{best_path} holds no best params (did any trial complete?)")
    params = load_params(params_path)
    with_values(params, values)  # every key must exist and every value be valid
    current = to_dict(params)
    changes = [(k, lookup(current, k), v) for k, v in values.items() if lookup(current, k) != v]

    def edit(tree: Any) -> None:
        for dotted, value in values.items():
            set_dotted(tree, dotted, value)

    if changes:
        edit_params_file(params_path, edit)
    return changes


def _front_trial(document: dict[str, Any], pick: int, path: Path) -> dict[str, Any]:
    front = document.get("front")
    if not isinstance(front, list):
        raise TuneError(f"{path} is a single-objective study's: it has no front to --pick from; drop --pick")
    for entry in front:
        if isinstance(entry, dict) and entry.get("trial") == pick:
            return entry.get("params")
    numbers = ", ".join(str(e.get("trial")) for e in front if isinstance(e, dict))
    raise TuneError(f"trial {pick} is not on the front in {path}; its trials: {numbers}")

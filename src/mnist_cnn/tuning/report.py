"""What a study reports: the summary and table of the best trials (the Pareto front of a
multi-objective study, with the trial `--apply` takes), Optuna's figures, and the parent MLflow
run's params, metrics and artifacts. The progress bar while it runs: `progress`."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Any

import matplotlib.pyplot as plt
import optuna
import optuna.visualization.matplotlib as ovm
import pandas as pd

from mnist_cnn.tracking.runs import StageRun
from mnist_cnn.tuning import objectives
from mnist_cnn.tuning.storage import count_trials
from mnist_cnn.tuning.trial import MLFLOW_RUN_ATTR, OBJECTIVE, VALUES_ATTR

log = logging.getLogger(__name__)

ON_FRONT_TAG = "optuna.pareto_front"  # each trial run of a multi-objective study: true | false


@dataclass(frozen=True)
class StudyResult:
    study_name: str
    storage: str
    counts: dict[str, int]
    best_number: int | None  # the chosen trial: the best one, or the documented choice on a front
    best_value: float | None  # its val_accuracy
    best_params: dict[str, Any]  # by params key, e.g. {"model.filters.0": 48}
    epochs_trained: int
    seconds: float
    parent_run_id: str
    table: str  # the best complete trials (the front), printable
    objectives: tuple[str, ...] = (OBJECTIVE,)
    front: list[dict[str, Any]] = field(default_factory=list)  # number, values by objective, params
    rule: str = ""  # how the chosen trial was chosen

    @property
    def multi(self) -> bool:
        return len(self.objectives) > 1

    def best_document(self) -> dict[str, Any]:
        """The best params file's content (see tuning.best); a front lists every trial on it."""
        document = {
            "study_name": self.study_name,
            "storage": self.storage,
            "best_trial": self.best_number,
            f"best_{OBJECTIVE}": round(self.best_value, 6) if self.best_value is not None else None,
            "trials": {k.lower(): v for k, v in self.counts.items()},
            "params": _rounded(self.best_params),
        }
        if self.multi:
            document["objectives"] = list(self.objectives)
            document["chosen_by"] = self.rule
            document["front"] = [
                {
                    "trial": t["number"],
                    **{k: round(v, 6) for k, v in t["values"].items()},
                    "params": _rounded(t["params"]),
                }
                for t in self.front
            ]
        return document


def _rounded(values: dict[str, Any]) -> dict[str, Any]:
    # 4 significant digits: the trial's 0.5180283722804798 reads as 0.518 in params.yaml
    return {k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in values.items()}


def summarise(
    study: optuna.Study,
    storage: str,
    parent_run_id: str,
    seconds: float,
    names: tuple[str, ...] = (OBJECTIVE,),
    within: float = 0.0,
) -> StudyResult:
    """The study's counts, chosen trial, front and table; `storage` as shown to people (no password)."""
    counts = count_trials(study)
    epochs = sum(int(t.user_attrs.get("epochs_trained", 0)) for t in study.get_trials(deepcopy=False))
    front = objectives.front(study) if counts["COMPLETE"] else []
    chosen = objectives.choose(front, names, within) if front else None
    q = names.index(OBJECTIVE)
    return StudyResult(
        study_name=study.study_name,
        storage=storage,
        counts=counts,
        best_number=chosen.number if chosen else None,
        best_value=chosen.values[q] if chosen else None,
        best_params=dict(chosen.user_attrs.get(VALUES_ATTR, {})) if chosen else {},
        epochs_trained=epochs,
        seconds=seconds,
        parent_run_id=parent_run_id,
        table=best_table(study, names),
        objectives=names,
        front=[
            {
                "number": t.number,
                "values": dict(zip(names, t.values, strict=True)),
                "params": dict(t.user_attrs.get(VALUES_ATTR, {})),
            }
            for t in front
        ],
        rule=objectives.rule(names, within),
    )


def trials_frame(study: optuna.Study, names: tuple[str, ...] = (OBJECTIVE,)) -> pd.DataFrame:
    """One row per trial: number, state, each objective, epochs, seconds, whether it is on the
    front (several objectives) and each searched value."""
    on_front = {t.number for t in objectives.front(study)} if len(names) > 1 else set()
    rows = []
    for t in study.get_trials(deepcopy=False):
        values = t.values if t.values and len(t.values) == len(names) else [None] * len(names)
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                **dict(zip(names, values, strict=True)),
                **({"on_front": t.number in on_front} if len(names) > 1 else {}),
                "epochs_trained": t.user_attrs.get("epochs_trained", 0),
                "seconds": t.user_attrs.get("seconds"),
                **t.params,
            }
        )
    return pd.DataFrame(rows)


def best_table(study: optuna.Study, names: tuple[str, ...] = (OBJECTIVE,), top: int = 5) -> str:
    """The best complete trials; with several objectives, the whole front, most accurate first."""
    frame = trials_frame(study, names)
    if frame.empty:
        return "no trials"
    done = frame[frame["state"] == "COMPLETE"]
    if len(names) > 1:
        done = done[done["on_front"]].drop(columns="on_front")
    done = done.sort_values(OBJECTIVE, ascending=False).head(len(done) if len(names) > 1 else top)
    if done.empty:
        return "no complete trial yet"
    return done.to_string(index=False, float_format=lambda v: f"{v:.4g}")


def _figures(study: optuna.Study, names: tuple[str, ...]) -> dict[str, Any]:
    """Optuna's matplotlib figures; one that cannot be drawn yet (too few trials) is skipped.
    Several objectives: the Pareto front, and the others drawn for val_accuracy."""
    q = names.index(OBJECTIVE)
    quality = {} if len(names) == 1 else {"target": lambda t: t.values[q], "target_name": OBJECTIVE}
    plots = {
        "optimization_history": lambda s: ovm.plot_optimization_history(s, **quality),
        "param_importances": lambda s: ovm.plot_param_importances(s, **quality),
        "parallel_coordinate": lambda s: ovm.plot_parallel_coordinate(s, **quality),
    }
    if len(names) == 1:
        plots["intermediate_values"] = ovm.plot_intermediate_values
    elif len(names) <= 3:
        plots["pareto_front"] = lambda s: ovm.plot_pareto_front(s, target_names=list(names))
    figures = {}
    for name, plot in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                axes = plot(study)
        except Exception as exc:  # e.g. importances need two complete trials
            log.info("figure %s skipped: %s", name, exc)
            continue
        first = axes.flat[0] if hasattr(axes, "flat") else axes
        figures[name] = first.get_figure()
    return figures


def log_study(run: StageRun, study: optuna.Study, result: StudyResult) -> None:
    """The parent run: the chosen trial's params and value, counts, the trials table (and the
    front), Optuna's figures; with several objectives each trial run is tagged on or off the front."""
    metrics = {
        "trials_complete": result.counts["COMPLETE"],
        "trials_pruned": result.counts["PRUNED"],
        "trials_failed": result.counts["FAIL"],
        "epochs_trained": result.epochs_trained,
        "study_seconds": result.seconds,
    }
    if result.best_value is not None:
        metrics[f"best_{OBJECTIVE}"] = result.best_value
        metrics["best_trial"] = result.best_number
        run.log_params({f"best.{k}": v for k, v in result.best_params.items()})
    if result.multi:
        metrics["front_trials"] = len(result.front)
        run.set_tags({"optuna.objectives": ",".join(result.objectives), "optuna.chosen_by": result.rule})
    run.log_metrics(metrics)
    best = (
        f"{'chosen' if result.multi else 'best'} trial {result.best_number}, {OBJECTIVE} {result.best_value:.4f}"
        if result.best_value is not None
        else "no trial complete"
    )
    counts = result.counts
    front = f"; {len(result.front)} trials on the front of {', '.join(result.objectives)}" if result.multi else ""
    run.note(
        f"tune: study {result.study_name}, {counts['COMPLETE']} complete, "
        f"{counts['PRUNED']} pruned, {counts['FAIL']} failed{front}; {best}"
    )
    frame = trials_frame(study, result.objectives)
    if not frame.empty:
        run.log_table(frame.to_dict("records"), "tuning/trials.json")
    if result.multi and result.front:
        run.log_table(
            [{"trial": t["number"], **t["values"], "chosen": t["number"] == result.best_number} for t in result.front],
            "tuning/pareto_front.json",
        )
        _tag_front(study, {t["number"] for t in result.front})
    run.log_document(result.best_document(), "tuning/best_params.yaml")
    for name, fig in _figures(study, result.objectives).items():
        run.log_figure(fig, f"tuning/{name}.png")
        plt.close(fig)


def _tag_front(study: optuna.Study, on_front: set[int]) -> None:
    from mlflow import MlflowClient

    client = MlflowClient()
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if run_id := t.user_attrs.get(MLFLOW_RUN_ATTR):
            client.set_tag(run_id, ON_FRONT_TAG, str(t.number in on_front).lower())

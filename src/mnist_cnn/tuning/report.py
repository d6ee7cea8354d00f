"""What a study reports: the progress bar while it runs, the summary and table of the best
trials, Optuna's figures, and the parent MLflow run's params, metrics and artifacts."""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import optuna
import optuna.visualization.matplotlib as ovm
import pandas as pd
from tqdm import tqdm

from mnist_cnn.tracking.runs import StageRun
from mnist_cnn.tuning.storage import count_trials, open_storage
from mnist_cnn.tuning.trial import OBJECTIVE, VALUES_ATTR

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudyResult:
    study_name: str
    storage: str
    counts: dict[str, int]
    best_number: int | None
    best_value: float | None
    best_params: dict[str, Any]  # by params key, e.g. {"model.filters.0": 48}
    epochs_trained: int
    seconds: float
    parent_run_id: str
    table: str  # the best complete trials, printable

    def best_document(self) -> dict[str, Any]:
        """The best params file's content (see tuning.best)."""
        return {
            "study_name": self.study_name,
            "storage": self.storage,
            "best_trial": self.best_number,
            f"best_{OBJECTIVE}": round(self.best_value, 6) if self.best_value is not None else None,
            "trials": {k.lower(): v for k, v in self.counts.items()},
            # 4 significant digits: the trial's 0.5180283722804798 reads as 0.518 in params.yaml
            "params": {k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in self.best_params.items()},
        }


class Progress:
    """A progress bar polling the study: trials done, best value so far, time left."""

    def __init__(self, location: str, study_name: str, total: int, deadline: float | None, enabled: bool):
        self.location, self.study_name, self.total, self.deadline = location, study_name, total, deadline
        self.enabled = enabled
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            study = optuna.load_study(study_name=self.study_name, storage=open_storage(self.location, 1))
        except Exception:  # the bar is a nicety; the study itself reports real errors
            return
        start, first, shown = time.time(), None, None
        tty = sys.stderr.isatty()
        bar = tqdm(
            total=self.total,
            desc="tuning",
            unit="trial",
            dynamic_ncols=True,
            disable=not tty,
            bar_format="{desc}: {n_fmt}/{total_fmt} |{bar}| {elapsed}{postfix}",
        )
        with bar:
            while True:
                stopping = self._stop.wait(1.0)
                try:
                    trials = study.get_trials(deepcopy=False)
                except Exception:
                    continue
                finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
                complete = [t.value for t in finished if t.state.name == "COMPLETE" and t.value is not None]
                first = len(finished) if first is None else first
                done_now = len(finished) - first
                status = [f"best {max(complete):.4f}" if complete else "best -"]
                if len(finished) > len(complete):
                    status.append(f"{len(finished) - len(complete)} pruned")
                left = None
                if done_now > 0:
                    left = (time.time() - start) / done_now * max(0, self.total - len(finished))
                if self.deadline is not None:
                    left = min(left if left is not None else math.inf, max(0.0, self.deadline - time.time()))
                if left is not None and math.isfinite(left):
                    status.append(f"~{_duration(left)} left")
                bar.n = min(len(finished), self.total)
                bar.set_postfix_str(", ".join(status), refresh=True)
                if not tty and len(finished) != shown:  # logs get one line per finished trial
                    shown = len(finished)
                    print(f"tuning: {shown}/{self.total} trials, " + ", ".join(status), file=sys.stderr, flush=True)
                if stopping:
                    return


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def summarise(study: optuna.Study, storage: str, parent_run_id: str, seconds: float) -> StudyResult:
    """The study's counts, best trial and table; `storage` as shown to people (no password)."""
    counts = count_trials(study)
    epochs = sum(int(t.user_attrs.get("epochs_trained", 0)) for t in study.get_trials(deepcopy=False))
    try:
        best = study.best_trial
    except ValueError:
        best = None
    best_params = dict(best.user_attrs.get(VALUES_ATTR, {})) if best is not None else {}
    return StudyResult(
        study_name=study.study_name,
        storage=storage,
        counts=counts,
        best_number=best.number if best else None,
        best_value=best.value if best else None,
        best_params=best_params,
        epochs_trained=epochs,
        seconds=seconds,
        parent_run_id=parent_run_id,
        table=best_table(study),
    )


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, state, value, epochs, seconds and each searched value."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                OBJECTIVE: t.value,
                "epochs_trained": t.user_attrs.get("epochs_trained", 0),
                "seconds": t.user_attrs.get("seconds"),
                **t.params,
            }
        )
    return pd.DataFrame(rows)


def best_table(study: optuna.Study, top: int = 5) -> str:
    frame = trials_frame(study)
    if frame.empty:
        return "no trials"
    done = frame[frame["state"] == "COMPLETE"].sort_values(OBJECTIVE, ascending=False).head(top)
    if done.empty:
        return "no complete trial yet"
    return done.to_string(index=False, float_format=lambda v: f"{v:.4g}")


def _figures(study: optuna.Study) -> dict[str, Any]:
    """Optuna's matplotlib figures; one that cannot be drawn yet (too few trials) is skipped."""
    plots = {
        "optimization_history": ovm.plot_optimization_history,
        "param_importances": ovm.plot_param_importances,
        "intermediate_values": ovm.plot_intermediate_values,
        "parallel_coordinate": ovm.plot_parallel_coordinate,
    }
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
    """The parent run: best params and value, counts, the trials table and Optuna's figures."""
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
    run.log_metrics(metrics)
    best = (
        f"best {OBJECTIVE} {result.best_value:.4f} (trial {result.best_number})"
        if result.best_value is not None
        else "no trial complete"
    )
    counts = result.counts
    run.note(
        f"tune: study {result.study_name}, {counts['COMPLETE']} complete, "
        f"{counts['PRUNED']} pruned, {counts['FAIL']} failed; {best}"
    )
    frame = trials_frame(study)
    if not frame.empty:
        run.log_table(frame.to_dict("records"), "tuning/trials.json")
    run.log_document(result.best_document(), "tuning/best_params.yaml")
    for name, fig in _figures(study).items():
        run.log_figure(fig, f"tuning/{name}.png")
        plt.close(fig)

"""One trial: train the sampled CNN as a nested MLflow run, report each epoch to the pruner (one
objective), measure its objectives and tell the study how it ended."""

from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import optuna
from optuna.trial import TrialState

from mnist_cnn import data, liveness
from mnist_cnn.config import Params
from mnist_cnn.data import Split
from mnist_cnn.schema import flatten
from mnist_cnn.tracking import lineage, runs
from mnist_cnn.tuning import objectives
from mnist_cnn.tuning.space import trial_params

OBJECTIVE = objectives.QUALITY  # what the pruner watches
MLFLOW_RUN_ATTR = "mlflow_run_id"
PARENT_RUN_ATTR = "mlflow_parent_run_id"  # the `tune` run of the worker's command
TAG_TRIAL = "mnist_cnn.trial"
VALUES_ATTR = "values"  # the trial's values by params key: {"model.filters.0": 48, ...}

log = logging.getLogger(__name__)


def trial_id(storage: optuna.storages.BaseStorage, study_name: str, number: int) -> int:
    """The storage's id of trial `number` (Optuna's Trial keeps it private)."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study_name), number)


@contextlib.contextmanager
def heartbeat(trial: optuna.Trial, study_name: str, storage: optuna.storages.BaseStorage) -> Iterator[None]:
    """Record the trial's heartbeat every `heartbeat_interval` seconds while it runs. Kept instead
    of Optuna's thread because that one ends at the first database error (benchmarks/optuna_fit.py
    shows it), and a database restart would then fail every running trial."""
    interval = getattr(storage, "get_heartbeat_interval", lambda: None)()  # journal files have no heartbeats
    if not interval:
        yield
        return
    beating = trial_id(storage, study_name, trial.number)
    stop = threading.Event()

    def beat() -> None:
        while True:
            try:
                storage.record_heartbeat(beating)
            except Exception as exc:  # the database is restarting or unreachable: try again next beat
                log.warning(
                    "trial %d: heartbeat not recorded (%s)", trial.number, str(exc).strip().splitlines()[0][:200]
                )
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"trial-{trial.number}-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def load_trial_data(params: Params, data_dir: str | Path) -> tuple[Split, Split]:
    """The stratified training share the trials fit on, and the validation split they are scored on."""
    train = data.load_split(data_dir, "train")
    val = data.load_split(data_dir, "val")
    if params.tune.train_fraction < 1:
        _, train = data.stratified_split(train, params.tune.train_fraction, params.tune.seed)
    return train, val


def run_trial(
    trial: optuna.Trial,
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    params: Params,
    train: Split,
    val: Split,
    experiment_id: str,
    parent_run_id: str,
) -> None:
    """Train one trial as a nested MLflow run under `parent_run_id` and tell the study how it ended."""
    import keras  # these load TensorFlow: only in the processes that train
    from optuna_integration import KerasPruningCallback

    from mnist_cnn import training

    keras.backend.clear_session(free_memory=True)
    model_params, train_params, values = trial_params(params, trial)
    start = time.perf_counter()
    epochs_done = 0
    state, status = "FAIL", "FAILED"
    scores, taken = None, False
    multi = len(params.tune.objectives) > 1  # Optuna prunes single-objective studies only
    run = mlflow.start_run(
        experiment_id=experiment_id,
        run_name=f"trial-{trial.number}",
        parent_run_id=parent_run_id,
        nested=True,
        log_system_metrics=True,
        tags={
            TAG_TRIAL: str(trial.number),
            "optuna.study_name": study.study_name,
            "optuna.trial_number": str(trial.number),
            lineage.TAG_STAGE: "tune-trial",
            liveness.TAG_OWNER: liveness.owner_token(),
        },
    )
    trial.set_user_attr(MLFLOW_RUN_ATTR, run.info.run_id)
    trial.set_user_attr(PARENT_RUN_ATTR, parent_run_id)
    trial.set_user_attr(VALUES_ATTR, values)

    def on_epoch(epoch: int, row: dict[str, float]) -> None:
        nonlocal epochs_done
        epochs_done = epoch
        runs.log_epoch(epoch, row)
        trial.set_user_attr("epochs_trained", epoch)

    try:
        with heartbeat(trial, study.study_name, storage):
            runs.log_params(
                {
                    **{f"trial.{name}": v for name, v in trial.params.items()},
                    **flatten(model_params, "model."),
                    **flatten(train_params, "train."),
                    "tune.train_images": len(train),
                    "tune.val_images": len(val),
                }
            )
            with tempfile.TemporaryDirectory(prefix="mnist-trial-") as work:
                result = training.train(
                    model_params,
                    train_params,
                    train,
                    val,
                    Path(work),
                    on_epoch=[on_epoch],
                    extra_callbacks=[] if multi else [KerasPruningCallback(trial, OBJECTIVE)],
                    verbose=0,
                )
            scores = objectives.measure(params.tune.objectives, result, result.model)
        state, status = "COMPLETE", "FINISHED"
        mlflow.log_metrics(objective_metrics(params.tune.objectives, scores))
    except optuna.TrialPruned:
        state, status = "PRUNED", "FINISHED"
    except optuna.exceptions.UpdateFinishedTrialError:
        taken = True  # a report or attribute found the trial failed elsewhere: its heartbeat had stopped
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except Exception as exc:
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:1000])
        raise
    finally:
        seconds = time.perf_counter() - start
        if not taken:
            try:
                trial.set_user_attr("seconds", round(seconds, 3))
                taken = not settle(study, storage, trial, state, scores)
            except optuna.exceptions.UpdateFinishedTrialError:
                taken = True
        if taken:
            log.warning(
                "trial %d was failed while this worker could not reach the study (no heartbeat for longer than "
                "the grace period) and another worker took its place; its result is dropped, this worker goes on",
                trial.number,
            )
            state, status = "FAIL", "KILLED"
        mlflow.log_metrics({"trial_seconds": seconds, "epochs_trained": epochs_done})
        mlflow.set_tag("optuna.state", state)
        mlflow.end_run(status)


def objective_metrics(names: tuple[str, ...], values: list[float]) -> dict[str, float]:
    """A trial's objectives under the project's metric names (val_accuracy: best_val_accuracy)."""
    return {("best_" + n if n == OBJECTIVE else n): v for n, v in zip(names, values, strict=True)}


def settle(
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    trial: optuna.Trial,
    state: str,
    scores: list[float] | None,
) -> bool:
    """Tell the study how the trial ended. False when it had been finished elsewhere (failed by
    another worker after its heartbeat stopped): then nothing is told, and nothing overwritten."""
    try:
        if state == "COMPLETE":
            study.tell(trial, scores if len(scores) > 1 else scores[0])
        else:
            study.tell(trial, state=TrialState[state])
        return True
    except optuna.exceptions.UpdateFinishedTrialError:
        # Finished meanwhile: by this tell, when a lost connection made the storage repeat it, or elsewhere.
        return storage.get_trial(trial_id(storage, study.study_name, trial.number)).state.name == state
    except ValueError as exc:
        if str(exc).startswith("Cannot tell a "):  # Optuna: the trial is no longer RUNNING
            return False
        raise

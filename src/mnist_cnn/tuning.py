"""Optuna tuning of the CNN: search space, sampler and pruner from params.yaml's `tune:` section.

Trials train on a stratified share of the training split and are scored on the validation split
(never the test set); each trial is a nested MLflow run under one parent run per invocation.
The study persists (journal file under `optuna/` by default, or any Optuna storage URL), so an
interrupted study resumes with the same command. `workers > 1` runs that many processes on the
same study: a trial is claimed under a lock only while the study holds fewer than `n_trials`
finished or running trials, so N workers and M trials give M distinct trials (the lock is per
machine: with a database shared by several machines, each may start one trial too many at the
end). A trial whose worker died (SIGKILL, power loss) is marked failed, and its MLflow run
killed, as soon as any process of the study looks, so it never stays RUNNING.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnist_cnn.atomic import file_lock
from mnist_cnn.config import ModelParams, Params, SearchParam, TrainParams, from_mapping, lookup, to_dict
from mnist_cnn.errors import ConfigError, TuneError

log = logging.getLogger(__name__)

OBJECTIVE = "val_accuracy"
TAG_TRIAL = "mnist_cnn.trial"
WORKER_ATTR = "worker"
MLFLOW_RUN_ATTR = "mlflow_run_id"
VALUES_ATTR = "values"  # the trial's values by params key: {"model.filters.0": 48, ...}


# --- search space --------------------------------------------------------------------------


def apply_values(params: Params, values: dict[str, Any]) -> tuple[ModelParams, TrainParams]:
    """`params`' model and train sections with `{"model.filters.0": 48, ...}` set, validated."""
    tree = {"model": to_dict(params.model), "train": to_dict(params.train)}
    for dotted, value in values.items():
        parts = dotted.split(".")
        try:
            parent = lookup(tree, ".".join(parts[:-1]))
            lookup(tree, dotted)
        except KeyError as exc:
            raise ConfigError(f"{dotted!r} is not a params key ({exc.args[0]})") from None
        if isinstance(parent, list):
            parent[int(parts[-1])] = value
        else:
            parent[parts[-1]] = value
    return from_mapping(ModelParams, tree["model"], "model"), from_mapping(TrainParams, tree["train"], "train")


def _endpoints(spec: SearchParam) -> list[Any]:
    if spec.type == "categorical":
        return list(spec.choices)
    cast = int if spec.type == "int" else float
    return [cast(spec.low), cast(spec.high)]


def check_space(params: Params) -> None:
    """Every search dimension must address an existing key, and every value it can take must
    give valid model/train params; raises ConfigError naming the dimension otherwise."""
    for name, spec in params.tune.space.items():
        for value in _endpoints(spec):
            try:
                apply_values(params, {spec.param: value})
            except ConfigError as exc:
                raise ConfigError(f"tune.space.{name} ({spec.param} = {value!r}): {exc}") from None


def suggest(trial, name: str, spec: SearchParam) -> Any:
    if spec.type == "categorical":
        return trial.suggest_categorical(name, list(spec.choices))
    if spec.type == "int":
        step = int(spec.step) if spec.step is not None else 1
        return trial.suggest_int(name, int(spec.low), int(spec.high), step=step, log=spec.log)
    return trial.suggest_float(name, spec.low, spec.high, step=spec.step, log=spec.log)


def trial_params(params: Params, trial) -> tuple[ModelParams, TrainParams, dict[str, Any]]:
    """Sample the trial's values and build its params: the tune epochs, no early stopping."""
    values = {name: suggest(trial, name, spec) for name, spec in params.tune.space.items()}
    model_params, train_params = apply_values(params, {params.tune.space[n].param: v for n, v in values.items()})
    train_params = dataclasses.replace(train_params, epochs=params.tune.epochs, early_stopping_patience=0)
    return model_params, train_params, values


# --- storage and study ---------------------------------------------------------------------


def storage_location(params: Params, root: Path) -> str:
    """The study's storage as given (a URL) or the default journal file, as an absolute path."""
    storage = params.tune.storage.strip()
    if not storage:
        return str(root / "optuna" / f"{params.tune.study_name}.journal")
    if "://" in storage:
        return storage
    return str((root / storage).resolve())


def open_storage(location: str, workers: int):
    """An Optuna storage for `location`; raises TuneError, before any trial, when it is unusable."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if "://" not in location:
        path = Path(location)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        except OSError as exc:
            raise TuneError(f"cannot use the journal storage {path}: {exc}") from None
    if location.startswith("sqlite") and workers > 1:
        raise TuneError(
            f"SQLite storage {_redact(location)} is not safe for {workers} parallel workers; use the default journal "
            "file (leave tune.storage empty), a journal path, or a server database such as postgresql://..."
        )
    try:
        return optuna.storages.RDBStorage(
            location, heartbeat_interval=30, grace_period=120, engine_kwargs={"pool_pre_ping": True}
        )
    except Exception as exc:  # sqlalchemy errors, missing drivers, bad URLs
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = " (install the database driver, e.g. psycopg2-binary)" if "DB access module" in first else ""
        raise TuneError(f"cannot open the Optuna storage {_redact(location)}: {first.replace(location, _redact(location))}{hint}") from None


def make_sampler(params: Params, seed: int, parallel: bool):
    import optuna

    sampler = params.tune.sampler
    if sampler.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=sampler.n_startup_trials, multivariate=sampler.multivariate, constant_liar=parallel
    )


def make_pruner(params: Params):
    import optuna

    pruner = params.tune.pruner
    if pruner.name in ("median", "percentile"):
        return optuna.pruners.PercentilePruner(
            50.0 if pruner.name == "median" else pruner.percentile,
            n_startup_trials=pruner.n_startup_trials,
            n_warmup_steps=pruner.n_warmup_steps,
        )
    if pruner.name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=pruner.min_resource, max_resource=params.tune.epochs, reduction_factor=pruner.reduction_factor
        )
    return optuna.pruners.NopPruner()


def sampler_seed(base: int, *salt: int) -> int:
    """A distinct, reproducible seed per worker and per resumed round."""
    digest = hashlib.sha256(json.dumps([base, *salt]).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def lock_path(location: str, root: Path, study_name: str) -> Path:
    if "://" not in location:
        return Path(location).with_name(Path(location).name + ".claim")  # not ".lock": Optuna's own
    return root / "optuna" / f".{study_name}.lock"


def _this_worker() -> dict[str, Any]:
    import psutil

    return {"host": socket.gethostname(), "pid": os.getpid(), "started": psutil.Process().create_time()}


def _is_dead(worker: Any) -> bool:
    """True for a worker of this machine that no longer runs (other machines: heartbeats decide)."""
    import psutil

    if not isinstance(worker, dict) or worker.get("host") != socket.gethostname():
        return False
    try:
        return abs(psutil.Process(int(worker["pid"])).create_time() - float(worker["started"])) > 1.0
    except (psutil.NoSuchProcess, KeyError, ValueError, TypeError):
        return True
    except psutil.Error:
        return False


def fail_stale_trials(study) -> list[int]:
    """Mark RUNNING trials whose worker died as FAIL, and their MLflow runs KILLED."""
    import optuna
    from optuna.trial import TrialState

    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _is_dead(trial.user_attrs.get(WORKER_ATTR)):
            continue
        try:
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except (RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # finished meanwhile
        failed.append(trial.number)
        _kill_mlflow_run(trial.user_attrs.get(MLFLOW_RUN_ATTR))
        log.warning("trial %d was left running by a worker that died; marked failed", trial.number)
    optuna.storages.fail_stale_trials(study)  # other machines' trials, by heartbeat (RDB storages)
    return failed


def _kill_mlflow_run(run_id: str | None) -> None:
    if not run_id:
        return
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient()
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, "KILLED")
    except Exception as exc:  # the study must go on even if the tracking store is down
        log.warning("could not mark MLflow run %s killed: %s", run_id, exc)


def count_trials(study) -> dict[str, int]:
    from optuna.trial import TrialState

    counts = {s.name: 0 for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)}
    for trial in study.get_trials(deepcopy=False):
        if trial.state.name in counts:
            counts[trial.state.name] += 1
    return counts


def claim(study, n_trials: int, lock: Path):
    """Start a trial if the study holds fewer than `n_trials` complete, pruned or running ones."""
    with file_lock(lock):  # "count, then start a trial" by one worker of this machine at a time
        fail_stale_trials(study)
        counts = count_trials(study)
        if counts["COMPLETE"] + counts["PRUNED"] + counts["RUNNING"] >= n_trials:
            return None
        trial = study.ask()
        trial.set_user_attr(WORKER_ATTR, _this_worker())
        return trial


# --- trials --------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker process needs (picklable: workers are spawned, not forked)."""

    params_path: str
    overrides: tuple[str, ...]
    data_dir: str
    storage: str
    lock: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    seed: int
    parallel: bool
    deadline: float | None
    threads: int = 0


def load_trial_data(params: Params, data_dir: str | Path):
    """The stratified training share the trials fit on, and the validation split they are scored on."""
    from mnist_cnn import data

    train = data.load_split(data_dir, "train")
    val = data.load_split(data_dir, "val")
    if params.tune.train_fraction < 1:
        _, train = data.stratified_split(train, params.tune.train_fraction, params.tune.seed)
    return train, val


def run_trial(trial, study, params: Params, train, val, spec: WorkerSpec) -> None:
    """Train one trial as a nested MLflow run and tell the study how it ended."""
    import keras
    import mlflow
    import optuna
    from optuna_integration import KerasPruningCallback

    from mnist_cnn import config, tracking, training

    keras.backend.clear_session(free_memory=True)
    model_params, train_params, values = trial_params(params, trial)
    start = time.perf_counter()
    epochs_done = 0
    state, status = "FAIL", "FAILED"
    run = mlflow.start_run(
        experiment_id=spec.experiment_id,
        run_name=f"trial-{trial.number}",
        parent_run_id=spec.parent_run_id,
        nested=True,
        tags={
            TAG_TRIAL: str(trial.number),
            "optuna.study_name": study.study_name,
            "optuna.trial_number": str(trial.number),
            tracking.TAG_STAGE: "tune-trial",
            **tracking.owner_tag(),
        },
    )
    trial.set_user_attr(MLFLOW_RUN_ATTR, run.info.run_id)
    trial.set_user_attr(VALUES_ATTR, {params.tune.space[name].param: value for name, value in values.items()})

    def on_epoch(epoch: int, row: dict[str, float]) -> None:
        nonlocal epochs_done
        epochs_done = epoch
        mlflow.log_metrics(row, step=epoch)
        trial.set_user_attr("epochs_trained", epoch)

    try:
        tracking.log_params(
            {
                **{f"trial.{name}": value for name, value in values.items()},
                **config.flatten(model_params, "model."),
                **config.flatten(train_params, "train."),
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
                extra_callbacks=[KerasPruningCallback(trial, OBJECTIVE)],
                verbose=0,
            )
        value = float(result.best[OBJECTIVE])
        state, status = "COMPLETE", "FINISHED"
        mlflow.log_metric(f"best_{OBJECTIVE}", value)
    except optuna.TrialPruned:
        state, status = "PRUNED", "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except Exception as exc:
        trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:1000])
        raise
    finally:
        seconds = time.perf_counter() - start
        trial.set_user_attr("seconds", round(seconds, 3))
        mlflow.log_metrics({"trial_seconds": seconds, "epochs_trained": epochs_done})
        mlflow.set_tag("optuna.state", state)
        mlflow.end_run(status)
        if state == "COMPLETE":
            study.tell(trial, value)
        else:
            study.tell(trial, state=getattr(optuna.trial.TrialState, state))


def _set_threads(threads: int) -> None:
    if threads <= 0:
        return
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(max(1, threads // 2))


def worker(spec: WorkerSpec) -> None:
    """Claim and run trials until the study holds `n_trials` of them or the deadline passes."""
    import mlflow
    import optuna

    from mnist_cnn import config

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _set_threads(spec.threads)
    params = config.load_params(spec.params_path, list(spec.overrides))
    storage = open_storage(spec.storage, 1)
    study = optuna.load_study(
        study_name=params.tune.study_name,
        storage=storage,
        sampler=make_sampler(params, spec.seed, spec.parallel),
        pruner=make_pruner(params),
    )
    train, val = load_trial_data(params, spec.data_dir)
    mlflow.set_tracking_uri(spec.tracking_uri)
    while spec.deadline is None or time.time() < spec.deadline:
        trial = claim(study, params.tune.n_trials, Path(spec.lock))
        if trial is None:
            return
        run_trial(trial, study, params, train, val, spec)


def _worker_process(spec: WorkerSpec) -> None:
    logging.basicConfig(level=logging.WARNING, format=f"worker {os.getpid()} %(levelname)s: %(message)s")
    try:
        worker(spec)
    except KeyboardInterrupt:
        raise SystemExit(130) from None


# --- the study -----------------------------------------------------------------------------


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


class _Progress:
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
        import sys

        import optuna
        from tqdm import tqdm

        try:
            study = optuna.load_study(study_name=self.study_name, storage=open_storage(self.location, 1))
        except Exception:  # the bar is a nicety; the study itself reports real errors
            return
        start, first, shown = time.time(), None, None
        tty = sys.stderr.isatty()
        bar = tqdm(total=self.total, desc="tuning", unit="trial", dynamic_ncols=True, disable=not tty,
                   bar_format="{desc}: {n_fmt}/{total_fmt} |{bar}| {elapsed}{postfix}")
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


def run_study(
    params: Params,
    params_path: str | Path,
    overrides: list[str],
    data_dir: str | Path,
    root: Path,
    progress: bool = True,
) -> StudyResult:
    """Run (or resume) the study up to `tune.n_trials` finished trials and log it to MLflow."""
    import multiprocessing

    import mlflow
    import optuna

    from mnist_cnn import config, data, tracking

    tune = params.tune
    check_space(params)
    for name in ("train", "val"):
        path = Path(data_dir) / f"{name}.npz"
        if not path.is_file():
            raise TuneError(f"{path} is missing; run `dvc repro preprocess` first (or pass --data-dir)")
    data.load_split(data_dir, "val")
    location = storage_location(params, root)
    storage = open_storage(location, tune.workers)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(
            study_name=tune.study_name, storage=storage, direction="maximize", load_if_exists=True,
            sampler=make_sampler(params, tune.seed, False), pruner=make_pruner(params),
        )
    except Exception as exc:
        raise TuneError(f"cannot create or load study {tune.study_name!r} in {_redact(location)}: {exc}") from None
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise TuneError(f"study {tune.study_name!r} in {_redact(location)} minimises; it was not made by mnist-cnn tune")
    lock = lock_path(location, root, tune.study_name)
    experiment_id = tracking.configure(params.tracking, root)  # set the store up once, before fanning out
    fail_stale_trials(study)
    before = count_trials(study)
    start = time.perf_counter()
    deadline = time.time() + tune.timeout_s if tune.timeout_s else None

    with tracking.stage_run("tune", experiment_id, root) as parent:
        tracking.log_params(
            {
                **config.flatten(tune, "tune."),
                **config.flatten(params.model, "model."),
                **config.flatten(params.train, "train."),
            }
        )
        mlflow.set_tags({"optuna.study_name": tune.study_name, "optuna.storage": _redact(location)})
        spec = WorkerSpec(
            params_path=str(Path(params_path).resolve()),
            overrides=tuple(overrides),
            data_dir=str(Path(data_dir).resolve()),
            storage=location,
            lock=str(lock),
            tracking_uri=mlflow.get_tracking_uri(),
            experiment_id=experiment_id,
            parent_run_id=parent.info.run_id,
            seed=0,
            parallel=tune.workers > 1,
            deadline=deadline,
        )
        with _Progress(location, tune.study_name, tune.n_trials, deadline, progress):
            _run_rounds(study, spec, tune.workers, tune.n_trials, tune.seed, before, multiprocessing.get_context("spawn"))
        result = _summarise(study, location, parent.info.run_id, time.perf_counter() - start)
        log_study(study, result)
    return result


def _run_rounds(study, spec: WorkerSpec, workers: int, n_trials: int, seed: int, before: dict[str, int], ctx) -> None:
    """Run workers until the study is full or the deadline passes; a round that adds no trial
    (every worker failing) stops with the trials' errors."""
    total_before = sum(before.values())
    for round_index in range(1000):
        counts = count_trials(study)
        finished = counts["COMPLETE"] + counts["PRUNED"]
        if finished >= n_trials or (spec.deadline is not None and time.time() >= spec.deadline):
            return
        salt = (total_before, round_index)
        if workers == 1:
            worker(dataclasses.replace(spec, seed=sampler_seed(seed, 0, *salt)))
        else:
            threads = max(1, (os.cpu_count() or 1) // workers)
            procs = [
                ctx.Process(
                    target=_worker_process,
                    args=(dataclasses.replace(spec, seed=sampler_seed(seed, i, *salt), threads=threads),),
                    name=f"tune-worker-{i}",
                )
                for i in range(workers)
            ]
            for proc in procs:
                proc.start()
            for proc in procs:
                proc.join()
            fail_stale_trials(study)
            errors = _trial_errors(study)
            crashed = [p for p in procs if p.exitcode and p.exitcode > 0]
            if crashed:
                raise TuneError(
                    f"{len(crashed)} tuning worker(s) failed" + (f": {errors[-1]}" if errors else "; see the log above")
                )
            killed = [p for p in procs if p.exitcode and p.exitcode < 0]
            if killed:
                log.warning("%d worker(s) were killed; their trials are marked failed and others take their place", len(killed))
        after = count_trials(study)
        if after["COMPLETE"] + after["PRUNED"] == finished:
            errors = _trial_errors(study)
            raise TuneError("no trial finished in a round of workers" + (f"; last error: {errors[-1]}" if errors else ""))


def _trial_errors(study) -> list[str]:
    return [t.user_attrs["error"] for t in study.get_trials(deepcopy=False) if "error" in t.user_attrs]


def _redact(location: str) -> str:
    """A storage URL without its password, for logs and tags."""
    if "://" in location and "@" in location:
        scheme, rest = location.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return location


def _summarise(study, location: str, parent_run_id: str, seconds: float) -> StudyResult:
    counts = count_trials(study)
    epochs = sum(int(t.user_attrs.get("epochs_trained", 0)) for t in study.get_trials(deepcopy=False))
    try:
        best = study.best_trial
    except ValueError:
        best = None
    best_params = dict(best.user_attrs.get(VALUES_ATTR, {})) if best is not None else {}
    return StudyResult(
        study_name=study.study_name,
        storage=_redact(location),
        counts=counts,
        best_number=best.number if best else None,
        best_value=best.value if best else None,
        best_params=best_params,
        epochs_trained=epochs,
        seconds=seconds,
        parent_run_id=parent_run_id,
        table=best_table(study),
    )


def trials_frame(study):
    """One row per trial: number, state, value, epochs, seconds and each searched value."""
    import pandas as pd

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


def best_table(study, top: int = 5) -> str:
    frame = trials_frame(study)
    if frame.empty:
        return "no trials"
    done = frame[frame["state"] == "COMPLETE"].sort_values(OBJECTIVE, ascending=False).head(top)
    if done.empty:
        return "no complete trial yet"
    return done.to_string(index=False, float_format=lambda v: f"{v:.4g}")


def _figures(study) -> dict[str, Any]:
    """Optuna's matplotlib figures; one that cannot be drawn yet (too few trials) is skipped."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import optuna.visualization.matplotlib as ovm

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


def log_study(study, result: StudyResult) -> None:
    """The parent run: best params and value, counts, the trials table and Optuna's figures."""
    import matplotlib.pyplot as plt
    import mlflow

    from mnist_cnn import tracking

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
        tracking.log_params({f"best.{k}": v for k, v in result.best_params.items()})
    mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
    frame = trials_frame(study)
    if not frame.empty:
        tracking.log_table(frame.to_dict("records"), "tuning/trials.json")
    tracking.log_dict(best_document(result), "tuning/best_params.yaml")
    for name, fig in _figures(study).items():
        tracking.log_figure(fig, f"tuning/{name}.png")
        plt.close(fig)


# --- best params -----------------------------------------------------------------------------


def best_document(result: StudyResult) -> dict[str, Any]:
    return {
        "study_name": result.study_name,
        "storage": result.storage,
        "best_trial": result.best_number,
        f"best_{OBJECTIVE}": round(result.best_value, 6) if result.best_value is not None else None,
        "trials": {k.lower(): v for k, v in result.counts.items()},
        # 4 significant digits: the trial's 0.5180283722804798 reads as 0.518 in params.yaml
        "params": {k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in result.best_params.items()},
    }


def write_best(result: StudyResult, path: str | Path) -> None:
    import yaml

    from mnist_cnn import atomic

    header = (
        f"# Best trial of Optuna study {result.study_name!r}, written by `mnist-cnn tune`.\n"
        "# Scored on the validation split. Copy into params.yaml with: mnist-cnn tune --apply\n"
    )
    atomic.write_text(Path(path), header + yaml.safe_dump(best_document(result), sort_keys=False))


def apply_best(best_path: str | Path, params_path: str | Path) -> list[tuple[str, Any, Any]]:
    """Write the best params file's values into params.yaml (comments kept); return
    (key, old, new) for each value that changed."""
    from mnist_cnn.config import edit_params_file, load_params, read_yaml

    best_path = Path(best_path)
    if not best_path.is_file():
        raise TuneError(f"{best_path} not found; run `mnist-cnn tune` first (or pass --best)")
    doc = read_yaml(best_path)
    values = doc.get("params")
    if not isinstance(values, dict) or not values:
        raise TuneError(f"{best_path} holds no best params (did any trial complete?)")
    current = to_dict(load_params(params_path))
    apply_values(load_params(params_path), values)  # every key must exist and every value be valid
    changes = [(k, lookup(current, k), v) for k, v in values.items() if lookup(current, k) != v]

    def edit(tree) -> None:
        for dotted, value in values.items():
            parts = dotted.split(".")
            node = tree
            for part in parts[:-1]:
                node = node[int(part)] if isinstance(node, list) else node[part]
            if isinstance(node, list):
                node[int(parts[-1])] = value
            else:
                node[parts[-1]] = value

    if changes:
        edit_params_file(params_path, edit)
    return changes

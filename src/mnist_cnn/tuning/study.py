"""Run or resume the Optuna study of params.yaml's `tune:` section.

Trials train on a stratified share of the training split and are scored on the validation split
(never the test set); each trial is a nested MLflow run under one parent run per invocation.
The study persists (see `storage`), so an interrupted study resumes with the same command.
`workers > 1` runs that many spawned processes on the same study, each with its own sampler seed.
Workers ask and tell rather than `study.optimize` with `MaxTrialsCallback`, which counts after a
trial ends and so overshoots `n_trials` (11 trials for 8 with 4 workers: benchmarks/optuna_fit.py).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import multiprocessing
import os
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import optuna

from mnist_cnn import data, entrypoint
from mnist_cnn.config import Params
from mnist_cnn.errors import TuneError
from mnist_cnn.schema import flatten
from mnist_cnn.tracking.runs import stage_run
from mnist_cnn.tuning import objectives
from mnist_cnn.tuning.database import retry
from mnist_cnn.tuning.progress import Progress
from mnist_cnn.tuning.report import StudyResult, log_study, summarise
from mnist_cnn.tuning.space import check_space
from mnist_cnn.tuning.storage import (
    claim,
    claim_lock,
    count_trials,
    fail_stale_trials,
    lock_path,
    open_storage,
    redact,
    storage_location,
)
from mnist_cnn.tuning.trial import load_trial_data, run_trial

log = logging.getLogger(__name__)

WAIT_S = 2.0  # between looks at a study whose last trials run elsewhere


def make_sampler(params: Params, seed: int, parallel: bool) -> optuna.samplers.BaseSampler:
    sampler = params.tune.sampler
    if sampler.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=sampler.n_startup_trials, multivariate=sampler.multivariate, constant_liar=parallel
    )


def make_pruner(params: Params) -> optuna.pruners.BasePruner:
    pruner = params.tune.pruner
    if len(params.tune.objectives) > 1:
        return optuna.pruners.NopPruner()  # Optuna has no pruning for multi-objective studies
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


# --- workers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker process needs (picklable: workers are spawned, not forked)."""

    params: Params  # validated once, by the command: workers never re-read params.yaml
    data_dir: str
    storage: str
    lock: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    seed: int
    parallel: bool
    deadline: float | None
    threads: int = 0  # TensorFlow CPU threads; 0: TensorFlow's own choice


def _set_threads(threads: int) -> None:
    if threads <= 0:
        return
    import tensorflow as tf  # only worker processes that train load TensorFlow

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(max(1, threads // 2))


def worker(spec: WorkerSpec) -> None:
    """Claim and run trials until the study holds `n_trials` finished ones or the deadline
    passes; while the last slots are held by trials running elsewhere, wait for them."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _set_threads(spec.threads)
    params = spec.params
    tune = params.tune
    storage = open_storage(spec.storage, 1, tune.heartbeat_s, tune.reconnect_s)
    study = optuna.load_study(
        study_name=tune.study_name,
        storage=storage,
        sampler=make_sampler(params, spec.seed, spec.parallel),
        pruner=make_pruner(params),
    )
    train, val = load_trial_data(params, spec.data_dir)
    mlflow.set_tracking_uri(spec.tracking_uri)
    lock = functools.partial(claim_lock, spec.storage, tune.study_name, Path(spec.lock), tune.heartbeat_s)

    def claim_one() -> optuna.Trial | None:
        return claim(study, tune.n_trials, lock())

    while spec.deadline is None or time.time() < spec.deadline:
        trial = retry(claim_one, "claiming a trial", tune.reconnect_s)
        if trial is not None:
            run_trial(trial, study, storage, params, train, val, spec.experiment_id, spec.parent_run_id)
            continue
        counts = count_trials(study)
        if counts["COMPLETE"] + counts["PRUNED"] >= tune.n_trials:
            return
        # The last slots are held by trials running elsewhere (other workers, other machines):
        # wait until they finish, or until they are failed as dead and a slot opens again.
        time.sleep(WAIT_S)


def _worker_process(spec: WorkerSpec) -> None:
    logging.basicConfig(level=logging.WARNING, format=f"worker {os.getpid()} %(levelname)s: %(message)s")
    entrypoint.quiet_libraries()
    entrypoint.load_tensorflow()
    try:
        worker(spec)
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def _run_rounds(study: optuna.Study, spec: WorkerSpec, workers: int, n_trials: int, seed: int) -> None:
    """Run workers until the study is full or the deadline passes; a round that adds no trial
    (every worker failing) stops with the trials' errors."""
    total_before = sum(count_trials(study).values())
    ctx = multiprocessing.get_context("spawn")
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
                log.warning(
                    "%d worker(s) were killed; their trials are marked failed and others take their place", len(killed)
                )
        after = count_trials(study)
        if after["COMPLETE"] + after["PRUNED"] == finished:
            errors = _trial_errors(study)
            raise TuneError(
                "no trial finished in a round of workers" + (f"; last error: {errors[-1]}" if errors else "")
            )


def _trial_errors(study: optuna.Study) -> list[str]:
    return [t.user_attrs["error"] for t in study.get_trials(deepcopy=False) if "error" in t.user_attrs]


# --- the study ------------------------------------------------------------------------------


def _open_study(params: Params, location: str) -> optuna.Study:
    tune = params.tune
    storage = open_storage(location, tune.workers, tune.heartbeat_s, tune.reconnect_s)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    wanted = objectives.directions(tune.objectives)
    try:
        study = optuna.create_study(
            study_name=tune.study_name,
            storage=storage,
            directions=wanted,
            load_if_exists=True,
            sampler=make_sampler(params, tune.seed, False),
            pruner=make_pruner(params),
        )
    except Exception as exc:
        raise TuneError(f"cannot create or load study {tune.study_name!r} in {redact(location)}: {exc}") from None
    found = [d.name.lower() for d in study.directions]
    if found != wanted:
        raise TuneError(
            f"study {tune.study_name!r} in {redact(location)} optimises {found}, but tune.objectives "
            f"{list(tune.objectives)} needs {wanted}; give this study another name (--study-name)"
        )
    if len(wanted) > 1 and tune.pruner.name != "none":
        log.warning(
            "tune.objectives lists %d objectives: Optuna has no pruning for multi-objective studies, so "
            "tune.pruner (%s) is not used; every trial trains its %d epochs",
            len(wanted),
            tune.pruner.name,
            tune.epochs,
        )
    return study


def run_study(
    params: Params,
    data_dir: str | Path,
    root: Path,
    progress: bool = True,
) -> StudyResult:
    """Run (or resume) the study up to `tune.n_trials` finished trials and log it to MLflow."""
    tune = params.tune
    check_space(params)
    for name in ("train", "val"):
        path = Path(data_dir) / f"{name}.npz"
        if not path.is_file():
            raise TuneError(f"{path} is missing; run `dvc repro preprocess` first (or pass --data-dir)")
    data.load_split(data_dir, "val")
    location = storage_location(params, root)
    study = _open_study(params, location)
    fail_stale_trials(study)
    start = time.perf_counter()
    deadline = time.time() + tune.timeout_s if tune.timeout_s else None

    with stage_run("tune", params.tracking, root) as parent:  # sets the store up once, before fanning out
        parent.log_params(
            {**flatten(tune, "tune."), **flatten(params.model, "model."), **flatten(params.train, "train.")}
        )
        parent.set_tags({"optuna.study_name": tune.study_name, "optuna.storage": redact(location)})
        spec = WorkerSpec(
            params=params,
            data_dir=str(Path(data_dir).resolve()),
            storage=location,
            lock=str(lock_path(location, root, tune.study_name)),
            tracking_uri=mlflow.get_tracking_uri(),
            experiment_id=parent.experiment_id,
            parent_run_id=parent.run_id,
            seed=0,
            parallel=tune.workers > 1,
            deadline=deadline,
        )
        quality = tune.objectives.index(objectives.QUALITY)
        with Progress(location, tune.study_name, tune.n_trials, deadline, progress, quality):
            _run_rounds(study, spec, tune.workers, tune.n_trials, tune.seed)
        seconds = time.perf_counter() - start
        result = summarise(study, redact(location), parent.run_id, seconds, tune.objectives, tune.choose_within)
        log_study(parent, study, result)
    return result

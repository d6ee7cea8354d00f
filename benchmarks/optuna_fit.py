"""Where tuning keeps its own piece instead of Optuna's, measured (no training: trials sleep).

1. Trial count: `study.optimize` with `MaxTrialsCallback(n)` in W worker processes on one study
   checks the count after a trial ends, so trials already running finish too; `claim` (tuning's
   count-then-ask under a lock) gives exactly n.
2. Heartbeats: Optuna's heartbeat thread ends at the first storage error, so after a database
   restart the running trial goes silent and is failed as stale; tuning's `heartbeat` logs the
   error and beats on.

    python benchmarks/optuna_fit.py [--workers 4] [--trials 8]
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import threading
import time
import warnings
from pathlib import Path

import optuna
from optuna.storages.journal import JournalFileBackend, JournalStorage

from mnist_cnn.tuning.storage import claim, claim_lock, count_trials
from mnist_cnn.tuning.trial import heartbeat

TRIAL_S = 0.5


def _objective(trial: optuna.Trial) -> float:
    time.sleep(TRIAL_S)
    return trial.suggest_float("x", 0, 1)


def _optuna_worker(journal: str, n_trials: int) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name="fit", storage=JournalStorage(JournalFileBackend(journal)))
    study.optimize(_objective, callbacks=[optuna.study.MaxTrialsCallback(n_trials)])


def _claim_worker(journal: str, n_trials: int) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name="fit", storage=JournalStorage(JournalFileBackend(journal)))
    while (trial := claim(study, n_trials, claim_lock(journal, "fit", Path(journal + ".claim")))) is not None:
        study.tell(trial, _objective(trial))


def finished_trials(target, workers: int, n_trials: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        journal = str(Path(tmp) / "fit.journal")
        optuna.create_study(study_name="fit", storage=JournalStorage(JournalFileBackend(journal)))
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=target, args=(journal, n_trials)) for _ in range(workers)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()
        study = optuna.load_study(study_name="fit", storage=JournalStorage(JournalFileBackend(journal)))
        return count_trials(study)["COMPLETE"]


class FlakyStorage(optuna.storages.RDBStorage):
    """Heartbeats fail once, on the second beat, as during a database restart."""

    beats = 0

    def record_heartbeat(self, trial_id: int) -> None:
        type(self).beats += 1
        if type(self).beats == 2:
            raise ConnectionError("server closed the connection unexpectedly")
        super().record_heartbeat(trial_id)


def beats_through_one_error(own: bool, seconds: float = 5.0) -> int:
    FlakyStorage.beats = 0
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        storage = FlakyStorage(f"sqlite:///{tmp}/fit.db", heartbeat_interval=1, grace_period=60)
        study = optuna.create_study(study_name="fit", storage=storage)
        if own:
            trial = study.ask()
            with heartbeat(trial, "fit", storage):
                time.sleep(seconds)
            study.tell(trial, 0.0)
        else:
            hook, threading.excepthook = threading.excepthook, lambda args: None  # the thread's traceback
            try:
                study.optimize(lambda t: time.sleep(seconds) or 0.0, n_trials=1)
            finally:
                threading.excepthook = hook
        return FlakyStorage.beats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--trials", type=int, default=8)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    print(f"{args.workers} workers, n_trials {args.trials}, trials of {TRIAL_S:g} s, one journal study:")
    for name, target in (("Optuna MaxTrialsCallback", _optuna_worker), ("tuning's claim", _claim_worker)):
        print(f"  {name:<26} {finished_trials(target, args.workers, args.trials)} complete trials")
    print("heartbeats during a 5 s trial at 1 s, the 2nd beat failing:")
    print(f"  {'Optuna (study.optimize)':<26} {beats_through_one_error(own=False)} beats")
    print(f"  {'tuning.trial.heartbeat':<26} {beats_through_one_error(own=True)} beats")


if __name__ == "__main__":
    main()

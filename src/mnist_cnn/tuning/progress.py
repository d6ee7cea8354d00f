"""The progress bar of a running study: trials done, the best validation accuracy so far, time
left; one line per finished trial when stderr is not a terminal."""

from __future__ import annotations

import math
import sys
import threading
import time

import optuna
from tqdm import tqdm

from mnist_cnn.tuning.storage import open_storage


class Progress:
    """A progress bar polling the study: trials done, best value so far, time left."""

    def __init__(
        self, location: str, study_name: str, total: int, deadline: float | None, enabled: bool, quality: int = 0
    ):
        self.location, self.study_name, self.total, self.deadline = location, study_name, total, deadline
        self.quality = quality  # the index of val_accuracy among the study's values
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
                complete = [t.values[self.quality] for t in finished if t.state.name == "COMPLETE" and t.values]
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

"""Fit the CNN: optimizer, learning-rate schedule, early stopping, best-on-validation
checkpoint, resumable backups. Knows nothing of MLflow; per-epoch hooks do the logging."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from mnist_cnn import augmentation
from mnist_cnn.config import CalibrationParams, ModelParams, TrainParams
from mnist_cnn.data import Split
from mnist_cnn.model import build_model
from mnist_cnn.schema import to_dict

EpochHook = Callable[[int, dict[str, float]], None]

# Keras' history keys -> the project's metric names (also used by MLflow and DVC files).
_METRIC_NAMES = {
    "loss": "train_loss",
    "accuracy": "train_accuracy",
    "val_loss": "val_loss",
    "val_accuracy": "val_accuracy",
    "learning_rate": "learning_rate",
}


@dataclasses.dataclass
class TrainResult:
    model: object
    history: list[dict[str, float]]
    best_epoch: int
    seconds: float
    images_per_second: float

    @property
    def best(self) -> dict[str, float]:
        return next(row for row in self.history if row["epoch"] == self.best_epoch)

    def summary(self) -> dict[str, float]:
        """The run's figures under the project's metric names (MLflow and reports/train_metrics.json)."""
        return {
            "best_epoch": self.best_epoch,
            "epochs_trained": len(self.history),
            "best_val_accuracy": self.best["val_accuracy"],
            "best_val_loss": self.best["val_loss"],
            "train_seconds": self.seconds,
            "train_images_per_second": self.images_per_second,
        }


def resume_dir(work_root: Path, model_params: ModelParams, params: TrainParams, data_checksums: dict[str, str]) -> Path:
    """The folder of a run's resumable backup under `work_root`: keyed on the params and the
    data, so a backup is only resumed by a run that would train the same model."""
    key = json.dumps([to_dict(model_params), to_dict(params), data_checksums], sort_keys=True)
    return Path(work_root) / hashlib.sha256(key.encode()).hexdigest()[:16]


def make_deterministic(seed: int) -> None:
    """Same params and seed give bit-identical weights on CPU."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX), as oneDNN then does."""
    try:
        flags = next(
            (
                line.split(":", 1)[1].split()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("flags")
            ),
            [],
        )
    except OSError:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags))


def precision_policy(mode: str) -> str:
    """The Keras dtype policy of train.mixed_precision (see TrainParams)."""
    if mode == "auto":
        if tf.config.list_physical_devices("GPU"):
            return "mixed_float16"
        return "mixed_bfloat16" if native_bfloat16() else "float32"
    return {"on": "mixed_float16", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}.get(mode, "float32")


def use_mixed_precision(mode: str) -> bool:
    policy = precision_policy(mode)
    keras.mixed_precision.set_global_policy(policy)
    return policy != "float32"


def in_float32(model, params: ModelParams, seed: int):
    """The trained network rebuilt under float32 with its weights (kept in float32 by mixed
    precision anyway): the saved model computes the same on any machine."""
    keras.mixed_precision.set_global_policy("float32")
    plain = build_model(params, seed=seed)
    plain.set_weights(model.get_weights())
    return plain


def learning_rate(params: TrainParams, steps_per_epoch: int):
    """A float or a built-in Keras schedule (serializable, so the saved model loads safely)."""
    sched = params.schedule
    total = max(1, steps_per_epoch * params.epochs)
    lr = params.learning_rate
    if sched.name == "onecycle":
        warmup = int(total * sched.warmup_fraction)
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=lr / 25.0,
            decay_steps=max(1, total - warmup),
            alpha=sched.final_fraction,
            warmup_target=lr,
            warmup_steps=warmup,
        )
    if sched.name == "cosine":
        return keras.optimizers.schedules.CosineDecay(lr, decay_steps=total, alpha=sched.final_fraction)
    if sched.name == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(lr, decay_steps=steps_per_epoch, decay_rate=sched.decay_rate)
    return lr


def make_optimizer(params: TrainParams, steps_per_epoch: int):
    lr = learning_rate(params, steps_per_epoch)
    if params.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=params.weight_decay)
    if params.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=0.9, nesterov=True, weight_decay=params.weight_decay or None)
    return keras.optimizers.Adam(lr)


def training_graph(model_params: ModelParams, params: TrainParams, steps_per_epoch: int):
    """(fitted, network, mixed): the network under train.mixed_precision's policy, behind its
    augmentation and compiled; fit `fitted`, save `network`. `mixed`: a mixed policy is on."""
    mixed = use_mixed_precision(params.mixed_precision)
    network = build_model(model_params, seed=params.seed)
    fitted = augmentation.for_training(network, model_params.augment, params.seed)
    compile_model(fitted, params, steps_per_epoch)
    return fitted, network, mixed


def _one_hot(params: TrainParams) -> bool:
    return bool(params.label_smoothing or params.nondigits)


def compile_model(model, params: TrainParams, steps_per_epoch: int) -> None:
    if _one_hot(params):
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=params.label_smoothing)
    else:
        loss = keras.losses.SparseCategoricalCrossentropy()
    model.compile(optimizer=make_optimizer(params, steps_per_epoch), loss=loss, metrics=["accuracy"])


def encode_labels(y: np.ndarray, params: TrainParams) -> np.ndarray:
    """Sparse labels, or one-hot rows where the loss needs them; NONDIGIT becomes the uniform row."""
    if not _one_hot(params):
        return y
    rows = np.vstack([np.eye(10, dtype="float32"), np.full((1, 10), 0.1, dtype="float32")])
    return rows[np.asarray(y, dtype=np.int64)]


NONDIGIT = 10  # the label of a generated non-digit: its target is uniform over the ten digits


def with_nondigits(split: Split, share: float, seed: int) -> Split:
    """Outlier exposure (Hendrycks et al. 2019): `share` of the split's size in generated
    non-digits, labelled NONDIGIT, appended (fit shuffles every epoch)."""
    n = round(len(split) * share)
    if n == 0:
        return split
    x = _nondigits(n, seed)
    return Split(np.concatenate([split.x, x]), np.concatenate([split.y.astype(np.int64), np.full(n, NONDIGIT)]))


@functools.lru_cache(maxsize=2)
def _nondigits(n: int, seed: int) -> np.ndarray:
    """Generated once per process (a tuning worker trains many trials on the same share)."""
    from mnist_cnn import nondigits

    return nondigits.generate(n, seed=seed, split="train")


def _read_history(path: Path) -> list[dict[str, float]]:
    rows = []
    try:
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut short by the kill
    except FileNotFoundError:
        return []
    by_epoch = {int(r["epoch"]): r for r in rows if "epoch" in r}
    return [by_epoch[e] for e in sorted(by_epoch)]


def _epoch_callback(hook: EpochHook, timings: list[float]):
    class _Hook(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = dict(logs or {})
            if "learning_rate" not in logs:
                logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            row = {_METRIC_NAMES[k]: float(v) for k, v in logs.items() if k in _METRIC_NAMES}
            row["seconds"] = time.perf_counter() - self._t0
            timings.append(row["seconds"])
            hook(epoch + 1, row)

    return _Hook()


def train(
    model_params: ModelParams,
    params: TrainParams,
    train_split: Split,
    val_split: Split,
    work_dir: Path,
    on_epoch: Sequence[EpochHook] = (),
    extra_callbacks: Sequence[object] = (),
    verbose: int = 2,
) -> TrainResult:
    """Train from scratch (or resume from `work_dir/backup`) and return the best-on-validation model.

    `work_dir` holds the resumable backup and the best weights; it is kept after a crash so the
    same call resumes from the last completed epoch, and emptied after success.
    """
    make_deterministic(params.seed)
    train_split = with_nondigits(train_split, params.nondigits, params.seed)
    steps = math.ceil(len(train_split) / params.batch_size)
    fitted, model, mixed = training_graph(model_params, params, steps)

    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    best_path = work_dir / "best.weights.h5"
    history_path = work_dir / "history.jsonl"
    # Rows of the epochs a killed run completed: BackupAndRestore resumes after them.
    history = _read_history(history_path) if (work_dir / "backup").exists() else []
    if not history:
        history_path.unlink(missing_ok=True)
        best_path.unlink(missing_ok=True)
    timings: list[float] = []
    for row in history:  # the resumed run's curves start at epoch 1
        for hook in on_epoch:
            hook(int(row["epoch"]), {k: v for k, v in row.items() if k != "epoch"})

    def record(epoch: int, row: dict[str, float]) -> None:
        history[:] = [r for r in history if r["epoch"] < epoch]
        history.append({"epoch": epoch, **row})
        with open(history_path, "a") as fh:
            fh.write(json.dumps(history[-1]) + "\n")
        for hook in on_epoch:
            hook(epoch, row)

    best_so_far = max((r.get("val_accuracy", 0.0) for r in history), default=None)
    callbacks = [
        _epoch_callback(record, timings),  # before the backup: a resumed epoch replaces its row
        keras.callbacks.BackupAndRestore(str(work_dir / "backup"), delete_checkpoint=True),
        keras.callbacks.ModelCheckpoint(
            str(best_path),
            monitor="val_accuracy",
            mode="max",
            save_best_only=True,
            save_weights_only=True,
            initial_value_threshold=best_so_far,
        ),
    ]
    if params.schedule.name == "plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss",
                factor=params.schedule.plateau_factor,
                patience=params.schedule.plateau_patience,
                min_lr=params.learning_rate * params.schedule.final_fraction,
            )
        )
    if params.early_stopping_patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=params.early_stopping_patience)
        )
    callbacks.extend(extra_callbacks)

    x_train = train_split.x[..., None]
    x_val = val_split.x[..., None]
    start = time.perf_counter()
    fitted.fit(
        x_train,
        encode_labels(train_split.y, params),
        validation_data=(x_val, encode_labels(val_split.y, params)),
        batch_size=params.batch_size,
        epochs=params.epochs,
        shuffle=True,
        callbacks=callbacks,
        verbose=verbose,
    )
    seconds = time.perf_counter() - start
    if best_path.exists():
        fitted.load_weights(str(best_path))
        best_path.unlink()
    if mixed:
        model = in_float32(model, model_params, params.seed)
    history_path.unlink(missing_ok=True)
    if not history:
        raise RuntimeError("training ran no epoch")
    best_epoch = max(history, key=lambda r: (r.get("val_accuracy", 0.0), -r.get("val_loss", 0.0)))["epoch"]
    trained_images = len(train_split) * len(timings)
    fit_seconds = sum(timings) or seconds
    return TrainResult(
        model=model,
        history=history,
        best_epoch=int(best_epoch),
        seconds=seconds,
        images_per_second=trained_images / fit_seconds,
    )


def calibrate(model, val_split: Split, params: CalibrationParams, batch_size: int = 1024):
    """The network with its validation-fitted temperature baked in, its calibration record, and
    the figures of the fit (`temperature`, `abstain_threshold`, `val_ece` before and after)."""
    from mnist_cnn.calibrate import abstain_threshold, ece, fit_temperature, rescale
    from mnist_cnn.evaluation import predict_proba
    from mnist_cnn.model import with_temperature
    from mnist_runtime.calibration import Calibration

    raw = predict_proba(model, val_split.x, batch_size)
    temperature = fit_temperature(raw, val_split.y)
    proba = rescale(raw, temperature)
    record = Calibration(temperature, abstain_threshold(proba, params.abstain_rate))
    metrics = {
        "temperature": temperature,
        "abstain_threshold": record.abstain_below,
        "val_ece": ece(proba, val_split.y, params.bins),
        "val_ece_uncalibrated": ece(raw, val_split.y, params.bins),
        "val_not_sure": float(np.mean(~record.sure(proba))),
    }
    return with_temperature(model, temperature), record, metrics

"""`mnist-cnn tune`: real Optuna studies on the MNIST subset (1-2 epochs per trial), logged to a
real MLflow store, with pruning, resume after SIGKILL, two workers and bad-input errors."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers import experiment_runs, store_client
from mnist_cnn import config
from mnist_cnn.errors import ConfigError
from mnist_cnn.tuning import space
from tuning_kit import MULTI, check_pareto_study, env_for, load_study, run_tune, states, tune_cmd

ROOT = Path(__file__).resolve().parents[1]

# --- search space validation ---------------------------------------------------------------


def params_with(*overrides: str):
    return config.load_params(ROOT / "params.yaml", list(overrides))


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "tune.space.dropout.low=0.7",
            r"tune\.space\.dropout has an empty or inverted range: low 0\.7 must be below high 0\.6",
        ),
        ("tune.space.dropout.high=0.1", r"tune\.space\.dropout has an empty or inverted range"),
        ("tune.space.learning_rate.low=0", r"tune\.space\.learning_rate is log-scaled: low must be positive"),
        ("tune.space.batch_size.choices=[]", r"tune\.space\.batch_size is categorical and needs a non-empty"),
        ("tune.space.conv1_filters.low=16.5", r"tune\.space\.conv1_filters is int: low, high and step must be whole"),
        ("tune.space.dropout.param=model.dropuot", r"tune\.space\.dropout\.param 'model\.dropuot' is not a params key"),
        ("tune.space.dropout.param=data.val_fraction", r"must be under model or train"),
        ("tune.space.dropout.type=normal", r"tune\.space\.dropout\.type must be one of"),
        ("tune.space.dropout.spread=2", r"unknown key\(s\) tune\.space\.dropout\.spread"),
        ("tune.pruner.name=asha", r"tune\.pruner\.name must be one of \['percentile', 'median', 'hyperband', 'none'\]"),
        ("tune.n_trials=0", r"tune\.n_trials must be at least 1"),
        ("tune.tirals=3", r"unknown key\(s\) tune\.tirals"),
    ],
)
def test_bad_search_space_is_rejected_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        params_with(override)


def test_values_outside_what_the_model_accepts_are_caught_before_any_trial():
    params = params_with("tune.space.dropout.high=1.5")
    with pytest.raises(
        ConfigError, match=r"tune\.space\.dropout \(model\.dropout = 1\.5\).*model\.dropout must be in \[0, 1\)"
    ):
        space.check_space(params)
    params = params_with("tune.space.conv2_filters.param=model.filters.3")
    with pytest.raises(ConfigError, match=r"'model\.filters\.3' is not a params key"):
        space.check_space(params)


def test_with_values_sets_list_entries_and_scalars():
    params = params_with()
    sampled = config.with_values(params, {"model.filters.1": 96, "train.batch_size": 64, "model.dropout": 0.2})
    model, train = sampled.model, sampled.train
    assert model.filters == (params.model.filters[0], 96)
    assert (train.batch_size, model.dropout) == (64, 0.2)


# --- bad input on the command line: one clear error, nothing started ---------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra, message",
    [
        (["--set=tune.space.dropout.low=0.9"], "tune.space.dropout has an empty or inverted range"),
        (
            [
                "--set=tune.space.lr.param=train.learnig_rate",
                "--set=tune.space.lr.type=float",
                "--set=tune.space.lr.low=0.1",
                "--set=tune.space.lr.high=0.2",
            ],
            "'train.learnig_rate' is not a params key",
        ),
        (
            ["--storage", "sqlite:////nonexistent-dir/sub/optuna.db"],
            "cannot open the Optuna storage sqlite:////nonexistent-dir",
        ),
        (["--storage", "postgresql://tuner:secret@127.0.0.1:1/optuna"], "cannot open the Optuna storage postgresql://"),
        (
            ["--storage", "sqlite:///optuna.db", "--workers", "2"],
            "SQLite storage sqlite:///optuna.db is not safe for 2 parallel workers",
        ),
        (["--trials", "0"], "tune.n_trials must be at least 1"),
    ],
)
def test_bad_input_fails_before_any_trial(workdir, processed, extra, message):
    proc = run_tune(workdir, processed, *extra, check=False)
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, last
    assert "secret" not in proc.stderr
    assert not (workdir / "mlflow.db").exists() or not experiment_runs(workdir), "no MLflow run may start"
    assert not (workdir / "tuning").exists()


@pytest.mark.slow
def test_missing_data_is_a_clear_error(workdir, tmp_path):
    proc = run_tune(workdir, tmp_path / "nowhere", check=False)
    assert proc.returncode == 1
    assert "nowhere/train.npz is missing; run `dvc repro preprocess`" in proc.stderr


@pytest.mark.slow
def test_apply_without_a_best_file_is_a_clear_error(workdir):
    proc = subprocess.run(["mnist-cnn", "tune", "--apply"], cwd=workdir, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "tuning/best_params.yaml not found; run `mnist-cnn tune` first" in proc.stderr


# --- a real study ------------------------------------------------------------------------------


@pytest.mark.slow
def test_study_logs_nested_runs_and_writes_best_params(workdir, processed):
    proc = run_tune(workdir, processed, "--trials", "4")
    study = load_study(workdir)
    assert states(study).count("RUNNING") == 0
    finished = [t for t in study.get_trials(deepcopy=False) if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 4
    assert "best trials (validation accuracy):" in proc.stdout
    assert not [line for line in proc.stderr.splitlines() if " INFO " in line], "MLflow's INFO lines stay hidden"

    all_runs = experiment_runs(workdir)
    parents = [r for r in all_runs if r.data.tags.get("mnist_cnn.stage") == "tune"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    children = [r for r in all_runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 4
    for child in children:
        assert child.data.tags["optuna.state"] in ("COMPLETE", "PRUNED")
        assert child.info.status == "FINISHED"
        assert {"trial.conv1_filters", "trial.dropout", "trial.learning_rate", "trial.batch_size"} <= set(
            child.data.params
        )
        assert child.data.params["train.epochs"] == "2"
        assert child.data.params["tune.train_images"] == "800"  # half of the training split: never the test set
        assert child.data.metrics["trial_seconds"] > 0
        history = store_client(workdir).get_metric_history(child.info.run_id, "epoch/val_accuracy")
        assert [m.step for m in history] == list(range(1, int(child.data.metrics["epochs_trained"]) + 1))
        assert not store_client(workdir).list_artifacts(child.info.run_id), "trials log no model"

    best = study.best_trial
    assert parent.data.metrics["best_val_accuracy"] == pytest.approx(best.value)
    assert parent.data.params["best.model.dropout"] == str(best.params["dropout"])
    assert parent.data.metrics["trials_complete"] + parent.data.metrics["trials_pruned"] == 4
    artifacts = {a.path for a in store_client(workdir).list_artifacts(parent.info.run_id, "tuning")}
    assert {
        "tuning/trials.csv",
        "tuning/trials.json",
        "tuning/best_params.yaml",
        "tuning/optimization_history.png",
        "tuning/param_importances.png",
        "tuning/intermediate_values.png",
        "tuning/parallel_coordinate.png",
    } <= artifacts

    best_file = config.read_yaml(workdir / "tuning" / "best_params.yaml")
    assert best_file["best_trial"] == best.number
    assert best_file["params"]["model.filters.0"] == best.params["conv1_filters"]
    assert best_file["params"]["train.learning_rate"] == pytest.approx(
        best.params["learning_rate"], rel=1e-3
    )  # 4 significant digits

    # --apply writes them into params.yaml, comments kept, and the file still loads
    before = (workdir / "params.yaml").read_text()
    applied = subprocess.run(["mnist-cnn", "tune", "--apply"], cwd=workdir, capture_output=True, text=True, timeout=60)
    assert applied.returncode == 0, applied.stderr
    after = (workdir / "params.yaml").read_text()
    assert "# Optuna study run by `mnist-cnn tune`" in after
    assert after.count("\n#") == before.count("\n#")
    params = config.load_params(workdir / "params.yaml")
    assert params.model.filters[0] == best.params["conv1_filters"]
    assert params.model.dense_units == (best.params["dense_units"],)
    assert params.train.batch_size == best.params["batch_size"]
    again = subprocess.run(["mnist-cnn", "tune", "--apply"], cwd=workdir, capture_output=True, text=True, timeout=60)
    assert "already holds the best params" in again.stdout


@pytest.mark.slow
def test_pruning_prunes_weak_trials_when_forced(workdir, processed):
    # A learning-rate range reaching 1e-6 makes some trials hopeless; the median pruner must stop them.
    run_tune(
        workdir,
        processed,
        "--trials",
        "6",
        "--set=tune.epochs=3",
        "--set=tune.sampler.name=random",
        "--set=tune.space.learning_rate.low=0.000001",
        "--set=tune.pruner.n_startup_trials=2",
    )
    study = load_study(workdir)
    pruned = [t for t in study.get_trials(deepcopy=False) if t.state.name == "PRUNED"]
    assert pruned, states(study)
    assert all(t.user_attrs["epochs_trained"] < 3 for t in pruned)
    children = {
        r.data.tags.get("optuna.trial_number"): r
        for r in experiment_runs(workdir)
        if "mlflow.parentRunId" in r.data.tags
    }
    for t in pruned:
        assert children[str(t.number)].data.tags["optuna.state"] == "PRUNED"


@pytest.mark.slow
def test_two_workers_give_exactly_the_asked_number_of_distinct_trials(workdir, processed):
    run_tune(workdir, processed, "--trials", "6", "--workers", "2", "--set=tune.pruner.name=none")
    study = load_study(workdir)
    trials = study.get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 6, "none lost, none doubled"
    assert len({t.user_attrs["worker"].rsplit(":", 2)[1] for t in trials}) == 2, (
        "both workers ran trials (owner tokens' pids)"
    )
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 6, "each worker samples with its own seed"
    nested = [r for r in experiment_runs(workdir) if "mlflow.parentRunId" in r.data.tags]
    assert len(nested) == 6 and len({r.data.tags["mlflow.parentRunId"] for r in nested}) == 1


@pytest.mark.slow
def test_killed_study_resumes_with_the_same_command(workdir, processed):
    cmd = tune_cmd(processed, "--trials", "5", "--set=tune.pruner.name=none")
    proc = subprocess.Popen(
        cmd,
        cwd=workdir,
        env=env_for(workdir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    journal = workdir / "optuna" / "mnist-cnn.journal"
    deadline = time.time() + 300
    try:
        while time.time() < deadline:  # kill it mid-trial, once two trials are done
            if journal.exists():
                trials = load_study(workdir).get_trials(deepcopy=False)
                running = [t for t in trials if t.state.name == "RUNNING" and "mlflow_run_id" in t.user_attrs]
                if [t.state.name for t in trials].count("COMPLETE") >= 2 and running:
                    break
            assert proc.poll() is None, "the study ended before it could be interrupted"
            time.sleep(0.2)
        else:
            pytest.fail("the study never reached its third trial")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    interrupted = states(load_study(workdir))
    assert interrupted.count("RUNNING") == 1

    run_tune(workdir, processed, "--trials", "5", "--set=tune.pruner.name=none")
    study = load_study(workdir)
    s = states(study)
    assert s.count("COMPLETE") == 5 and s.count("RUNNING") == 0
    assert s.count("FAIL") == 1, "the killed trial is marked failed, not left running"
    killed = next(t for t in study.get_trials(deepcopy=False) if t.state.name == "FAIL")
    run = store_client(workdir).get_run(killed.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED"
    parents = [r for r in experiment_runs(workdir) if r.data.tags.get("mnist_cnn.stage") == "tune"]
    assert sorted(r.info.status for r in parents) == ["FINISHED", "KILLED"], (
        "one parent run per invocation, none left running"
    )


@pytest.mark.slow
def test_trials_on_a_database_send_heartbeats_so_a_dead_machine_s_trials_can_be_failed(workdir, processed):
    """ask/tell does not start Optuna's heartbeat thread as study.optimize does; each trial does."""
    import sqlite3

    db = workdir / "optuna.db"
    run_tune(workdir, processed, "--trials", "1", "--storage", f"sqlite:///{db}")
    with sqlite3.connect(db) as con:
        (beats,) = con.execute("SELECT count(*) FROM trial_heartbeats").fetchone()
        (complete,) = con.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'").fetchone()
    assert complete == 1 and beats >= 1


@pytest.mark.slow
def test_a_multi_objective_study_logs_its_pareto_front_and_apply_takes_the_documented_choice(workdir, processed):
    proc = run_tune(workdir, processed, "--trials", "5", MULTI, "--set=tune.sampler.n_startup_trials=3")
    assert "Optuna has no pruning for multi-objective studies, so tune.pruner (percentile) is not used" in proc.stderr
    assert "the Pareto front of val_accuracy, parameters:" in proc.stdout
    study = load_study(workdir)
    assert states(study).count("COMPLETE") == 5, states(study)
    best_file = config.read_yaml(workdir / "tuning" / "best_params.yaml")
    check_pareto_study(study, experiment_runs(workdir), best_file, store_client(workdir))

    def apply(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["mnist-cnn", "tune", "--apply", *extra], cwd=workdir, capture_output=True, text=True, timeout=60
        )

    assert apply().returncode == 0
    chosen = study.trials[best_file["best_trial"]]
    assert config.load_params(workdir / "params.yaml").model.filters[0] == chosen.params["conv1_filters"]
    other = next((e for e in best_file["front"] if e["trial"] != chosen.number), best_file["front"][0])
    picked = apply("--pick", str(other["trial"]))
    assert picked.returncode == 0, picked.stderr
    assert config.load_params(workdir / "params.yaml").model.filters[0] == other["params"]["model.filters.0"]
    off_front = next((t.number for t in study.trials if t.number not in {e["trial"] for e in best_file["front"]}), 99)
    refused = apply("--pick", str(off_front))
    assert refused.returncode == 1 and f"trial {off_front} is not on the front" in refused.stderr

    # the same study name cannot be resumed with other objectives
    again = run_tune(workdir, processed, "--trials", "6", check=False)
    assert again.returncode == 1
    assert "optimises ['maximize', 'minimize'], but tune.objectives ['val_accuracy'] needs ['maximize']" in again.stderr

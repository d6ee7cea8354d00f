"""The fast tier's reach into modules the slow tests exercise through subprocesses: the CLI's
commands, the entry point's error line and quiet servers, the figures, tuning's report and best
params file, and the stack's settings, all called in this process on small inputs."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import optuna
import pytest
from matplotlib.figure import Figure

from helpers import ROOT
from mnist_cnn import cli, entrypoint, figures
from mnist_cnn.errors import ConfigError
from mnist_cnn.schema import parse_yaml, read_yaml
from mnist_cnn.tuning import best, report, study
from mnist_stack import control, settings

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def project(workdir: Path, monkeypatch) -> Path:
    """conftest's `workdir` (params.yaml, dvc.yaml, the presets) as the working directory."""
    monkeypatch.chdir(workdir)
    monkeypatch.delenv(entrypoint.VERBOSE_ENV, raising=False)
    yield workdir
    for name in ("mlflow", "alembic", "urllib3"):
        logging.getLogger(name).setLevel(logging.NOTSET)


def main(*argv: str) -> int:
    with pytest.raises(SystemExit) as exit_:
        cli.main(list(argv))
        raise SystemExit(0)
    return exit_.value.code or 0


# --- the CLI and the entry point ------------------------------------------------------------


def test_params_prints_the_resolved_values_with_an_override(project, capsys):
    assert main("params", "--set", "train.epochs=3") == 0
    assert parse_yaml(capsys.readouterr().out)["train"]["epochs"] == 3


def test_a_bad_override_is_one_error_line_and_exit_1(project, capsys):
    assert main("params", "--set", "train.epochz=3") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "train.epochz" in err[0]


def test_preset_lists_then_applies_keeping_params_yaml_comments(project, capsys):
    assert main("preset") == 0
    assert {"seed", "fast", "accurate"} <= set(capsys.readouterr().out.split())
    assert main("preset", "seed") == 0
    assert "preset seed applied" in capsys.readouterr().out
    text = (project / "params.yaml").read_text()
    assert (
        "# The single source of truth" in text and read_yaml(project / "params.yaml")["model"]["convs_per_block"] == 1
    )
    assert main("preset", "seed") == 0 and "already matches" in capsys.readouterr().out


def test_stack_status_of_an_empty_folder_says_how_to_make_one(project, capsys):
    assert main("stack", "status", "--dir", str(project / "nothing")) == 3
    assert "mnist-cnn stack up" in capsys.readouterr().out
    assert control.down(project / "nothing") == []


def test_tune_apply_copies_the_best_params_and_a_missing_file_is_a_clear_error(project, capsys):
    assert main("tune", "--apply", "--best", str(project / "missing.yaml")) == 1
    assert "run `mnist-cnn tune` first" in capsys.readouterr().err
    result = report.StudyResult("s", "journal", {"COMPLETE": 2, "PRUNED": 1, "FAIL": 0}, 1, 0.9876,
                                {"model.filters.0": 48, "model.dropout": 0.41234567}, 9, 12.0, "run", "table")  # fmt: skip
    best.write_best(result, project / "best.yaml")
    assert main("tune", "--apply", "--best", str(project / "best.yaml")) == 0
    params = read_yaml(project / "params.yaml")
    assert params["model"]["filters"][0] == 48 and params["model"]["dropout"] == 0.4123
    assert "# The single source of truth" in (project / "params.yaml").read_text()
    capsys.readouterr()
    assert main("tune", "--apply", "--best", str(project / "best.yaml")) == 0
    assert "already holds" in capsys.readouterr().out


def test_run_main_turns_a_project_error_into_one_line_and_lets_a_bug_raise(project, capsys):
    def broken():
        raise ConfigError("params.yaml: train.epochs must be >= 1; set it to 1 or more")

    with pytest.raises(SystemExit) as exit_:
        entrypoint.run_main(broken)
    assert exit_.value.code == 1
    assert capsys.readouterr().err.strip() == "error: params.yaml: train.epochs must be >= 1; set it to 1 or more"
    with pytest.raises(ZeroDivisionError):
        entrypoint.run_main(lambda: 1 / 0)


def test_quiet_server_adds_the_quiet_options_unless_verbose(monkeypatch):
    monkeypatch.delenv(entrypoint.VERBOSE_ENV, raising=False)
    cmd, env = entrypoint.quiet_server(["mlflow", "ui"], {"PYTHONWARNINGS": "error"})
    assert cmd == ["mlflow", "ui", "--uvicorn-opts", "--log-level warning"] and env["MLFLOW_LOGGING_LEVEL"] == "WARNING"
    assert env["PYTHONWARNINGS"].startswith("error,ignore:starlette")
    monkeypatch.setenv(entrypoint.VERBOSE_ENV, "1")
    assert entrypoint.quiet_server(["mlflow", "ui"], {}) == (["mlflow", "ui"], {})


# --- figures --------------------------------------------------------------------------------


def test_every_figure_draws_and_saves(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 255, (30, 28, 28), dtype=np.uint8), rng.integers(0, 10, 30)
    proba = rng.dirichlet(np.ones(10), 30)
    predicted, confidence = proba.argmax(1), proba.max(1)
    history = [{"epoch": e, "train_accuracy": 0.5 + e / 10, "val_accuracy": 0.5 + e / 12, "train_loss": 1 / e,
                "val_loss": 1.1 / e} for e in range(1, 4)]  # fmt: skip
    bins = [
        {"low": b / 5, "high": (b + 1) / 5, "images": 6, "confidence": (b + 0.5) / 5, "accuracy": b / 5}
        for b in range(5)
    ]
    drawn = {
        "grid": figures.image_grid(x[:6], [str(v) for v in y[:6]], "six", ["red"] * 6),
        "counts": figures.class_counts({"train": np.bincount(y, minlength=10), "val": np.bincount(y, minlength=10)}),
        "curves": figures.learning_curves(history, best_epoch=2),
        "confusion": figures.confusion_matrix(np.eye(10, dtype=int) * 5),
        "samples": figures.training_samples(x, y, n=12),
        "predictions": figures.sample_predictions(x, y, predicted, confidence, n=9),
        "worst": figures.worst_predictions(x, y, predicted, confidence, np.arange(4)),
        "reliability": figures.reliability_diagram({"MNIST test": bins}),
    }
    for name, fig in drawn.items():
        assert isinstance(fig, Figure) and fig.axes, name
        fig.savefig(tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


# --- tuning: report, samplers, best params file ---------------------------------------------


def small_study() -> optuna.Study:
    s = optuna.create_study(direction="maximize", study_name="small")
    dist = {"dropout": optuna.distributions.FloatDistribution(0.1, 0.6)}
    for i, (value, state) in enumerate([(0.95, "COMPLETE"), (0.97, "COMPLETE"), (None, "PRUNED"), (None, "FAIL")]):
        s.add_trial(optuna.trial.create_trial(
            params={"dropout": 0.2 + i / 10}, distributions=dist, value=value, state=optuna.trial.TrialState[state],
            user_attrs={"epochs_trained": 2, "seconds": 1.5, report.VALUES_ATTR: {"model.dropout": 0.2 + i / 10}},
            intermediate_values={0: 0.9} if state == "PRUNED" else None))  # fmt: skip
    return s


def test_summary_counts_states_and_names_the_best_trial():
    result = report.summarise(small_study(), "journal file", "parent", 61.0)
    assert (result.counts["COMPLETE"], result.counts["PRUNED"], result.counts["FAIL"]) == (2, 1, 1)
    assert (result.best_number, result.best_value, result.epochs_trained) == (1, 0.97, 8)
    assert result.best_params == {"model.dropout": pytest.approx(0.3)}
    assert result.table.splitlines()[1].split()[0] == "1"  # the best complete trial first
    frame = report.trials_frame(small_study())
    assert list(frame["state"]) == ["COMPLETE", "COMPLETE", "PRUNED", "FAIL"]
    assert report.best_table(optuna.create_study()) == "no trials"


def test_samplers_pruners_and_worker_seeds_follow_the_params():
    from mnist_cnn import config

    params = config.load_params(ROOT / "params.yaml")
    assert isinstance(study.make_sampler(params, 1, parallel=False), optuna.samplers.TPESampler)
    assert isinstance(study.make_pruner(params), optuna.pruners.PercentilePruner)
    off = config.load_params(ROOT / "params.yaml", ["tune.pruner.name=none", "tune.sampler.name=random"])
    assert isinstance(study.make_pruner(off), optuna.pruners.NopPruner)
    assert isinstance(study.make_sampler(off, 1, parallel=True), optuna.samplers.RandomSampler)
    multi = config.load_params(ROOT / "params.yaml", ["tune.objectives=[val_accuracy,latency_ms]"])
    assert isinstance(study.make_pruner(multi), optuna.pruners.NopPruner), "Optuna prunes one objective only"
    seeds = {study.sampler_seed(42, worker) for worker in range(8)}
    assert len(seeds) == 8 and study.sampler_seed(42, 3) == study.sampler_seed(42, 3)


# --- the stack's settings -------------------------------------------------------------------


def test_stack_settings_round_trip_private_and_exports_name_both_servers(tmp_path):
    s = settings.Settings(host="127.0.0.1", pg_port=5433, mlflow_port=5000, password="pw")
    settings.save_settings(tmp_path, s)
    assert settings.load_settings(tmp_path) == s
    assert oct(settings.settings_path(tmp_path).stat().st_mode & 0o777) == "0o600"
    assert settings.exports(s) == (
        "export MLFLOW_TRACKING_URI=http://127.0.0.1:5000\nexport OPTUNA_STORAGE=postgresql://mnist:pw@127.0.0.1:5433/optuna\n"
    )
    settings.settings_path(tmp_path).write_text("{not json")
    with pytest.raises(settings.StackError, match="damaged"):
        settings.load_settings(tmp_path)
    assert settings.load_settings(tmp_path / "none") is None


# --- the web page's app and the TFLite export, around an untrained network --------------------


@pytest.fixture(scope="module")
def classifier():
    from mnist_cnn import presets
    from mnist_cnn.model import build_model
    from mnist_runtime.calibration import Calibration
    from mnist_runtime.network import Classifier

    model_params, _ = presets.load("seed", directory=ROOT / "presets")
    return Classifier(build_model(model_params), Calibration(temperature=1.0, abstain_below=0.99))


def png_of_a_stroke() -> bytes:
    import io

    from PIL import Image, ImageDraw

    image = Image.new("L", (120, 120), 255)
    ImageDraw.Draw(image).line([(60, 15), (60, 105)], fill=0, width=9)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def test_the_app_serves_the_page_reads_an_upload_and_files_feedback(classifier, tmp_path):
    import base64

    from fastapi.testclient import TestClient

    from mnist_cnn.feedback import FeedbackStore
    from mnist_cnn.webapp.server import create_app

    client = TestClient(create_app(classifier, "untrained", FeedbackStore(tmp_path / "feedback", 100)))
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text and page.headers["X-Content-Type-Options"] == "nosniff"
    assert client.get("/api/info").json() == {"model": "untrained", "feedback": True, "abstain_below": 0.99}
    answer = client.post("/api/predict", content=png_of_a_stroke()).json()
    assert len(answer["probabilities"]) == 10 and len(base64.b64decode(answer["pixels"])) == 784
    assert answer["answer"] == "not sure" and answer["sure"] is False  # an untrained network is never 99% sure
    bad = client.post("/api/predict", content=b"not an image")
    assert bad.status_code in (400, 415, 422) and bad.json()["error"]
    assert client.post("/api/predict", content=b"").status_code == 415
    image = base64.b64encode(png_of_a_stroke()).decode()
    saved = client.post("/api/feedback", json={"image": image, "label": 1}).json()
    assert saved["label"] == 1 and saved["saved"].startswith("1/") and saved["conflict"] is False
    assert client.post("/api/feedback", json={"label": 1}).status_code == 422


def test_tflite_export_answers_like_the_keras_network(classifier, tmp_path):
    from mnist_cnn import export

    pixels = np.random.default_rng(1).integers(0, 255, (5, 28, 28)).astype(np.uint8)
    flat = export.to_tflite(classifier.keras_model)
    np.testing.assert_allclose(export.tflite_predict(flat, pixels), classifier(pixels), atol=1e-5)


def test_the_logged_model_loads_from_its_runtime_code_and_answers(classifier, tmp_path):
    import mlflow

    from mnist_cnn import packaging

    keras_path = tmp_path / "model.keras"
    classifier.keras_model.save(keras_path)
    previous = mlflow.get_tracking_uri()  # other tests in this process set theirs
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        with mlflow.start_run(experiment_id=mlflow.MlflowClient().create_experiment("in-process")):
            info = packaging.log_model(keras_path, np.zeros((1, 28, 28), np.uint8))
        local = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / "downloaded")))
    finally:
        mlflow.set_tracking_uri(previous)
    assert sorted(p.name for p in (local / "code").iterdir()) == ["mnist_runtime"]
    loaded = mlflow.pyfunc.load_model(str(local))
    pixels = np.random.default_rng(2).integers(0, 255, (3, 28, 28)).astype(np.uint8)
    answers = loaded.predict({"inputs": pixels.tolist()})
    assert len(answers) == 3 and set(answers.columns) >= {"digit", "confidence", "sure", "answer"}


def pareto_study() -> optuna.Study:
    """Two objectives (val_accuracy up, parameters down): trials 0, 1 and 3 make the front."""
    s = optuna.create_study(directions=["maximize", "minimize"], study_name="pareto")
    dist = {"dropout": optuna.distributions.FloatDistribution(0.1, 0.6)}
    for i, values in enumerate([(0.990, 50_000), (0.995, 90_000), (0.985, 95_000), (0.9935, 60_000)]):
        s.add_trial(optuna.trial.create_trial(
            params={"dropout": 0.2 + i / 10}, distributions=dist, values=list(values),
            user_attrs={"epochs_trained": 2, report.VALUES_ATTR: {"model.dropout": 0.2 + i / 10}}))  # fmt: skip
    return s


def test_the_choice_on_a_front_is_the_cheapest_within_the_tolerance_of_the_best():
    from mnist_cnn.tuning import objectives

    names = ("val_accuracy", "parameters")
    front = objectives.front(pareto_study())
    assert [t.number for t in front] == [0, 1, 3]
    assert objectives.choose(front, names, 0.002).number == 3  # 0.9935 is within 0.002 of 0.995, and smaller
    assert objectives.choose(front, names, 0.0).number == 1
    assert objectives.choose(front, names, 0.01).number == 0
    result = report.summarise(pareto_study(), "journal", "parent", 3.0, names, 0.002)
    assert (result.best_number, result.best_value, result.multi) == (3, 0.9935, True)
    assert [t["number"] for t in result.front] == [0, 1, 3]
    frame = report.trials_frame(pareto_study(), names)
    assert list(frame["on_front"]) == [True, True, False, True]
    assert set(report._figures(pareto_study(), names)) >= {"pareto_front", "param_importances"}


def test_apply_pick_takes_another_trial_of_the_front_and_refuses_one_off_it(project, capsys):
    result = report.summarise(pareto_study(), "journal", "parent", 3.0, ("val_accuracy", "parameters"), 0.002)
    best.write_best(result, project / "front.yaml")
    assert "--apply --pick TRIAL" in (project / "front.yaml").read_text()
    assert main("tune", "--apply", "--best", str(project / "front.yaml")) == 0
    assert read_yaml(project / "params.yaml")["model"]["dropout"] == 0.5  # trial 3, the choice
    assert main("tune", "--apply", "--pick", "1", "--best", str(project / "front.yaml")) == 0
    assert read_yaml(project / "params.yaml")["model"]["dropout"] == 0.3
    capsys.readouterr()
    assert main("tune", "--apply", "--pick", "2", "--best", str(project / "front.yaml")) == 1
    refused = capsys.readouterr().err
    assert "trial 2 is not on the front" in refused and "its trials: 0, 1, 3" in refused
    single = report.summarise(small_study(), "journal", "parent", 1.0)
    best.write_best(single, project / "single.yaml")
    assert main("tune", "--apply", "--pick", "1", "--best", str(project / "single.yaml")) == 1
    assert "has no front to --pick from" in capsys.readouterr().err

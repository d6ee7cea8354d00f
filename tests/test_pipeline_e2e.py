"""End to end: the real `dvc repro` in a copy of the project, on the MNIST subset served by a
loopback HTTP mirror (and USPS-format files made from it, in a local folder), then the registry,
`dvc exp run -S`, and a real `mlflow models serve`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import (
    SUBSET,
    MirrorServer,
    chromium,
    clean_env,
    copy_project,
    experiment_runs,
    free_port,
    run,
    store_client,
    subset_sha256,
    usps_params,
    wait_until_up,
)
from mnist_cnn.schema import dump_yaml, parse_yaml

pytestmark = pytest.mark.slow

BLOCK_TF = """
import runpy, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('tensorflow', 'keras'):
            raise ImportError(f'{name} must not be imported by this stage')
sys.meta_path.insert(0, Block())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory, usps_subset_dir):
    server = MirrorServer(SUBSET)
    dest = copy_project(tmp_path_factory.mktemp("project"))
    run(["mnist-cnn", "preset", "fast"], dest)  # the README's command; keeps the run short
    params = parse_yaml((dest / "params.yaml").read_text())
    params["data"]["mirrors"] = [server.url]
    params["data"]["sha256"] = subset_sha256()
    params["data"]["usps"] = usps_params(usps_subset_dir)
    params["train"]["epochs"] = 2
    params["register"]["min_test_accuracy"] = 0.5
    params["evaluate"]["nondigits"] = 200
    (dest / "params.yaml").write_text(dump_yaml(params))
    run(["git", "-c", "user.name=t", "-c", "user.email=t@l", "commit", "-qam", "test params"], dest)
    # system metrics every second, so the short training on the subset gets some
    first = run(["dvc", "repro"], dest, env=clean_env(MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL="1"))
    yield dest, first, server
    server.close()


def test_repro_trains_evaluates_and_registers_a_champion(project):
    dest, first, server = project
    assert any(p.endswith("train-images-idx3-ubyte.gz") for p in server.requests)
    assert sorted(p.name for p in (dest / "data" / "usps").iterdir()) == ["zip.test.gz", "zip.train.gz"]
    client = store_client(dest)
    champion = client.get_model_version_by_alias("mnist-cnn", "champion")
    report = json.loads((dest / "reports" / "register.json").read_text())
    assert report["version"] == int(champion.version) and report["alias"] == "champion"
    for tag in ("git_commit", "params", "test_accuracy", "data_sha256_train"):
        assert tag in champion.tags, tag
    metrics = json.loads((dest / "reports" / "test_metrics.json").read_text())
    assert 0.5 <= metrics["test_accuracy"] <= 1.0
    assert float(champion.tags["test_accuracy"]) == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    assert report["rule"] == "first" and report["usps_accuracy"] == pytest.approx(metrics["usps_accuracy"])


def test_evaluate_reads_real_digits_from_outside_mnist_and_says_how_calibrated_the_model_is(project, tmp_path):
    """The USPS fixture in every rendering through images.prepare, calibration before and after,
    "not sure" shares; the same figures as DVC metrics, MLflow metrics, version tags and model card."""
    dest, first, _ = project
    metrics = json.loads((dest / "reports" / "test_metrics.json").read_text())
    renderings = {"framed", "framed_light", "tight", "tight_light", "jpeg", "scan16"}
    assert {k[len("usps_accuracy_") :] for k in metrics if k.startswith("usps_accuracy_")} == renderings
    assert metrics["usps_images"] == 6 * 60 and metrics["nondigits_images"] == 200
    assert np.mean([metrics[f"usps_accuracy_{r}"] for r in renderings]) == pytest.approx(metrics["usps_accuracy"])
    for key in (
        "test_ece",
        "test_ece_uncalibrated",
        "usps_ece",
        "test_not_sure",
        "usps_not_sure",
        "nondigits_not_sure",
    ):
        assert 0.0 <= metrics[key] <= 1.0, key
    train = json.loads((dest / "reports" / "train_metrics.json").read_text())
    assert train["temperature"] > 0 and 0 < train["abstain_threshold"] < 1
    assert train["val_ece"] <= train["val_ece_uncalibrated"] + 1e-9  # the temperature minimises the validation NLL
    assert "usps_accuracy" in first.stdout and "not sure:" in first.stdout
    client = store_client(dest)
    info = json.loads((dest / "models" / "run.json").read_text())
    run = client.get_run(info["run_id"])
    assert run.data.metrics["usps_accuracy"] == pytest.approx(metrics["usps_accuracy"])
    assert "usps-test" in {d.dataset.name for d in run.inputs.dataset_inputs}
    artifacts = {a.path for a in client.list_artifacts(info["run_id"], "evaluation")}
    assert {"evaluation/usps_worst.png", "evaluation/reliability.png"} <= artifacts
    champion = client.get_model_version_by_alias("mnist-cnn", "champion")
    assert float(champion.tags["usps_accuracy"]) == pytest.approx(metrics["usps_accuracy"], abs=1e-6)
    assert "usps_accuracy" in champion.description
    card = Path(client.download_artifacts(info["run_id"], "model_card.md", str(tmp_path))).read_text()
    assert "| USPS: tight |" in card and "## Calibration" in card and "## Known misreads" in card


def test_runs_of_one_repro_share_a_pipeline_id_and_evaluate_joins_the_train_run(project):
    dest, _, _ = project
    runs = experiment_runs(dest)
    by_stage = {r.data.tags["mnist_cnn.stage"]: r for r in runs}
    assert set(by_stage) == {"pipeline", "download", "preprocess", "train", "register"}
    assert len({r.data.tags["mnist_cnn.pipeline_id"] for r in runs}) == 1
    assert all(r.info.status == "FINISHED" for r in runs)
    parent = by_stage.pop("pipeline").info.run_id
    assert all(r.data.tags["mlflow.parentRunId"] == parent for r in by_stage.values()), "one repro, one unit in the UI"
    train = by_stage["train"]
    # evaluate logged into the train run: model, curves and test metrics together
    assert "test_accuracy" in train.data.metrics and "epoch/val_accuracy" in train.data.metrics
    assert train.data.params["model.filters"] == "[32, 64]"
    history = store_client(dest).get_metric_history(train.info.run_id, "epoch/val_accuracy")
    assert [m.step for m in history] == [1, 2]
    artifacts = {a.path for a in store_client(dest).list_artifacts(train.info.run_id, "evaluation")}
    assert "evaluation/confusion_matrix.png" in artifacts and "evaluation/worst_predictions.png" in artifacts
    assert by_stage["download"].data.metrics["download_bytes"] > 0
    assert by_stage["preprocess"].data.metrics["test_images"] == 500


def test_dvc_metrics_and_plots_work(project):
    dest, _, _ = project
    shown = run(["dvc", "metrics", "show", "--json"], dest).stdout
    assert "test_accuracy" in shown and "best_val_accuracy" in shown
    plots = run(["dvc", "plots", "show", "--json"], dest).stdout
    for name in ("learning_curves", "confusion_matrix", "sample_predictions", "worst_predictions"):
        png = dest / "reports" / "figures" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert f"reports/figures/{name}.png" in plots, f"{name}.png is not a DVC plot"


def test_repro_prints_no_native_tensorflow_lines_or_library_warnings(project):
    _, first, _ = project
    lines = (first.stdout + first.stderr).splitlines()
    noise = [
        line
        for line in lines
        if line[:5] in ("E0000", "W0000", "I0000")
        or "absl::InitializeLog" in line
        or "Warning:" in line
        or "Add type hints" in line
        or "NodeDef mentions" in line
        or "Downloading artifacts" in line
        or line.startswith(("Successfully registered model", "Created version"))
    ]
    assert not noise, noise[:5]
    assert any("best epoch" in line for line in lines) and any("test_accuracy" in line for line in lines)


def test_mlflow_shows_datasets_system_metrics_descriptions_and_the_model_training_view(project):
    dest, _, _ = project
    client = store_client(dest)
    experiment = client.get_experiment_by_name("mnist-cnn")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    by_stage = {r.data.tags["mnist_cnn.stage"]: r for r in experiment_runs(dest)}
    train = client.get_run(by_stage["train"].info.run_id)
    sums = {
        line.split()[1]: line.split()[0]
        for line in (dest / "data" / "processed" / "SHA256SUMS").read_text().splitlines()
    }
    inputs = {d.dataset.name: d for d in train.inputs.dataset_inputs}
    assert set(inputs) == {"train", "val", "test", "usps-test"}
    for name, item in inputs.items():
        if name != "usps-test":
            assert item.dataset.digest == sums[f"{name}.npz"][:36], "the digest is the file's content SHA-256"
    from mnist_cnn.data import file_sha256

    assert inputs["usps-test"].dataset.digest == file_sha256(dest / "data" / "usps" / "zip.test.gz")[:36]
    contexts = {name: {t.value for t in item.tags if t.key == "mlflow.data.context"} for name, item in inputs.items()}
    assert contexts == {"train": {"training"}, "val": {"validation"}, "test": {"testing"}, "usps-test": {"real-digits"}}
    assert any(k.startswith("system/cpu_utilization") for k in train.data.metrics), sorted(train.data.metrics)
    assert not [k for k in train.data.metrics if "_digit_" in k], "per-digit figures live in the report table"
    # The UI shows `prefix/` sections before its plain "Model metrics": every curve under epoch/, no single value there.
    model_metrics = [k for k in train.data.metrics if not k.startswith("system/")]
    curves = {k for k in model_metrics if len(client.get_metric_history(train.info.run_id, k)) > 1}
    assert curves == {k for k in model_metrics if k.startswith("epoch/")} and "epoch/val_loss" in curves, sorted(
        model_metrics
    )
    info = json.loads((dest / "models" / "run.json").read_text())
    linked = client.get_logged_model(info["model_id"]).metrics
    assert any(m.key == "test_accuracy" and m.dataset_name == "test" for m in linked), (
        "test metrics link model and dataset"
    )
    note = train.data.tags["mlflow.note.content"]
    assert note.startswith("train + evaluate: preset fast") or note.startswith("train + evaluate: custom"), note
    assert "test_accuracy 0." in note
    champion = client.get_model_version_by_alias("mnist-cnn", "champion")
    assert champion.description.startswith("test_accuracy 0.") and "usps_accuracy 0." in champion.description
    assert "@champion" in champion.description
    assert all(r.data.tags.get("mlflow.note.content") for r in by_stage.values())


def test_the_readme_screenshot_script_shoots_every_page_of_the_champion(project, tmp_path):
    """`docs/screenshots.py` (how the README's images are made) runs over the pipeline's store in
    Chromium, each page once it shows its data (the script fails naming the page otherwise), and
    refuses a folder with no store."""
    from matplotlib.image import imread

    dest, _, _ = project
    out = tmp_path / "img"
    script = dest / "docs" / "screenshots.py"
    shots = [sys.executable, str(script), "--project", str(dest), "--out", str(out), "--chromium", chromium()]
    done = run(shots + ["--timeout", "60"], dest)
    names = {"mlflow_runs", "mlflow_run", "mlflow_charts", "mlflow_registry", "mlflow_model_card", "mlflow_reliability"}
    assert {p.stem for p in out.iterdir()} == names, done.stdout
    for png in out.iterdir():
        pixels = imread(png)
        assert pixels.shape[:2] == (900, 1400), png.name
        assert pixels[..., :3].std() > 0.05, f"{png.name} is a blank page"
    empty = tmp_path / "empty"
    empty.mkdir()
    refused = run(
        [sys.executable, str(script), "--project", str(empty), "--out", str(empty / "img")], dest, check=False
    )
    assert refused.returncode != 0 and "run `dvc repro`" in refused.stderr, refused.stderr
    assert not list(empty.iterdir()), "no store or folder made where there was none"


def test_second_repro_with_nothing_changed_runs_nothing(project):
    dest, _, _ = project
    before = len(experiment_runs(dest))
    out = run(["dvc", "repro"], dest).stdout
    assert "Running stage" not in out
    assert len(experiment_runs(dest)) == before


def test_editing_what_the_model_does_not_ship_leaves_the_pipeline_up_to_date(project):
    dest, _, _ = project
    unshipped = ["src/mnist_cnn/webapp/static/app.js", "src/mnist_stack/control.py", "src/mnist_cnn/cli.py",
                 "src/mnist_cnn/tuning/study.py"]  # fmt: skip
    originals = {rel: (dest / rel).read_bytes() for rel in [*unshipped, "src/mnist_runtime/images.py"]}
    try:
        for rel in unshipped:
            (dest / rel).write_bytes(
                originals[rel] + b"\n// edited\n" if rel.endswith(".js") else originals[rel] + b"\n# edited\n"
            )
        status = run(["dvc", "status", "--json"], dest).stdout
        assert json.loads(status) == {}, status
        (dest / "src/mnist_runtime/images.py").write_bytes(originals["src/mnist_runtime/images.py"] + b"\n# edited\n")
        stale = json.loads(run(["dvc", "status", "--json"], dest).stdout)
        assert {"preprocess", "train", "evaluate"} <= set(stale), stale
        assert "download" not in stale and "register" not in stale
    finally:
        for rel, content in originals.items():
            (dest / rel).write_bytes(content)
    assert json.loads(run(["dvc", "status", "--json"], dest).stdout) == {}


def test_the_registered_model_ships_only_its_runtime(project):
    from urllib.parse import urlparse

    dest, _, _ = project
    client = store_client(dest)
    champion = client.get_model_version_by_alias("mnist-cnn", "champion")
    code = Path(urlparse(client.get_model_version_download_uri("mnist-cnn", champion.version)).path) / "code"
    assert [p.name for p in code.iterdir()] == ["mnist_runtime"]
    shipped = {p.name for p in (code / "mnist_runtime").glob("*.py")}
    assert shipped == {p.name for p in (dest / "src" / "mnist_runtime").glob("*.py")}
    assert "pyfunc_model.py" in shipped


def test_scoring_server_serves_the_champion(project):
    import requests

    dest, _, _ = project
    port = free_port()
    server = subprocess.Popen(
        [
            "mlflow",
            "models",
            "serve",
            "-m",
            "models:/mnist-cnn@champion",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=dest,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(f"{url}/ping", server)
        with np.load(dest / "data" / "processed" / "test.npz") as npz:
            x, y = npz["x"][:64], npz["y"][:64]
        resp = requests.post(f"{url}/invocations", json={"inputs": x[..., None].tolist()}, timeout=30)
        assert resp.status_code == 200, resp.text
        preds = resp.json()["predictions"]
        assert len(preds) == 64
        assert set(preds[0]) == {"digit", "confidence", "probabilities", "sure", "answer"}
        assert abs(sum(preds[0]["probabilities"]) - 1) < 1e-3
        digits = np.array([p["digit"] for p in preds])
        assert np.mean(digits == y) >= 0.5
        bad = requests.post(f"{url}/invocations", json={"inputs": [[1, 2, 3]]}, timeout=30)
        assert bad.status_code == 400 and "shape" in bad.json()["message"]
        assert requests.post(f"{url}/invocations", json={"inputs": x[:1].tolist()}, timeout=30).status_code == 200
    finally:
        server.terminate()
        server.wait(30)


def test_exp_run_with_set_param_retrains_and_registers_a_new_version(project):
    dest, _, _ = project
    before = {int(v.version) for v in store_client(dest).search_model_versions("name='mnist-cnn'")}
    run(["dvc", "exp", "run", "-S", "train.epochs=1"], dest)
    versions = store_client(dest).search_model_versions("name='mnist-cnn'")
    new = [v for v in versions if int(v.version) not in before]
    assert len(new) == 1
    report = json.loads((dest / "reports" / "register.json").read_text())
    assert report["version"] == int(new[0].version) and report["alias"] in ("champion", "challenger")
    assert json.loads(new[0].tags["params"])["train"]["epochs"] == 1


def test_light_stages_never_import_tensorflow(project, tmp_path):
    from digit_images import make_set
    from mnist_cnn.feedback import FeedbackStore

    dest, _, server = project
    env = clean_env(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'other.db'}")
    sample = make_set(per_digit=1, seed=1)[4]
    FeedbackStore(tmp_path / "feedback").save(sample.data, sample.digit)  # the feedback path runs too
    for args in (
        ["stages/download.py", "--out-dir", str(tmp_path / "raw"), "--usps-dir", str(tmp_path / "usps")],
        [
            "stages/preprocess.py",
            "--raw-dir",
            str(tmp_path / "raw"),
            "--feedback-dir",
            str(tmp_path / "feedback"),
            "--out-dir",
            str(tmp_path / "processed"),
        ],
    ):
        run([sys.executable, "-c", BLOCK_TF, *args], dest, env=env)
    assert (tmp_path / "processed" / "test.npz").is_file()
    assert len(np.load(tmp_path / "processed" / "feedback.npz")["y"]) == 1


def test_unreachable_tracking_server_is_one_clear_error(project, tmp_path):
    dest, _, _ = project
    env = clean_env(MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}")
    cmd = [
        sys.executable,
        "stages/download.py",
        "--out-dir",
        str(tmp_path / "raw"),
        "--usps-dir",
        str(tmp_path / "usps"),
    ]
    proc = run(cmd, dest, env=env, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: MLflow tracking server")
    assert not (tmp_path / "raw").exists() and not (tmp_path / "usps").exists()


def test_tune_apply_then_repro_registers_the_tuned_model(project):
    dest, _, _ = project
    client = store_client(dest)
    before = {int(v.version) for v in client.search_model_versions("name='mnist-cnn'")}
    tuned = run(
        ["mnist-cnn", "tune", "--trials", "2", "--no-progress", "--set=tune.epochs=1", "--set=tune.train_fraction=0.5"],
        dest,
    )
    assert "best: trial" in tuned.stdout
    best = parse_yaml((dest / "tuning" / "best_params.yaml").read_text())["params"]
    applied = run(["mnist-cnn", "tune", "--apply"], dest).stdout
    changed = [line.split(":")[0] for line in applied.splitlines() if " -> " in line]
    assert "model.dropout" in changed  # a float from a continuous range never equals the preset's
    diff = run(["dvc", "params", "diff"], dest).stdout
    for key in changed:  # `model.filters.0` shows as the whole list `model.filters`
        assert ".".join(key.split(".")[:2]) in diff, diff
    run(["dvc", "repro"], dest)
    versions = store_client(dest).search_model_versions("name='mnist-cnn'")
    new = [v for v in versions if int(v.version) not in before]
    assert len(new) == 1
    registered = json.loads(new[0].tags["params"])
    assert registered["model"]["filters"][0] == best["model.filters.0"]
    assert registered["train"]["batch_size"] == best["train.batch_size"]
    assert registered["model"]["dropout"] == pytest.approx(best["model.dropout"])

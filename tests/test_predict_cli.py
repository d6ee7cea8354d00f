"""`mnist-cnn predict` on image files the tests make (drawn and font digits in several sizes,
polarities, formats and modes), against a local `.keras` file and the registry's champion."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import tiny_model
from digit_images import make_set, write_set
from helpers import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """(keras path, store with a registered champion) of a model trained on the subset."""
    work = tmp_path_factory.mktemp("predict")
    keras_path = tiny_model.train(work / "tiny.keras", epochs=2)
    store = work / "store"
    tiny_model.log(keras_path, store, register_as="mnist-cnn")
    return keras_path, store


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    samples = make_set(per_digit=2, seed=7)
    return samples, write_set(samples, tmp_path_factory.mktemp("digits"))


def cli(*args: str, store=None, cwd=ROOT) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    if store is not None:
        env["MLFLOW_TRACKING_URI"] = tiny_model.tracking_uri(store)
    cmd = [sys.executable, "-c", "from mnist_cnn.cli import main; main()", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def expected_digits(keras_path, paths) -> list[int]:
    from mnist_runtime import images
    from mnist_runtime.network import Classifier

    x = np.stack([images.prepare(p) for p in paths])[..., None].astype(np.float32)
    return Classifier.load(keras_path)(x).argmax(axis=1).tolist()


def test_predict_prints_file_digit_and_confidence(model, files):
    keras_path, _ = model
    samples, paths = files
    proc = cli("predict", *map(str, paths), "--model", str(keras_path))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == len(paths)
    rows = [line.split("\t") for line in lines]
    assert [r[0] for r in rows] == [str(p) for p in paths]
    assert [int(r[1]) for r in rows] == expected_digits(keras_path, paths)
    assert all(0.0 < float(r[2]) <= 1.0 for r in rows)


def test_predict_json_with_the_registry_champion_by_default(model, files, tmp_path):
    keras_path, store = model
    _, paths = files
    proc = cli(
        "predict", *map(str, paths[:6]), "--json", "--params", str(ROOT / "params.yaml"), store=store, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.strip().splitlines()]
    assert [r["file"] for r in records] == [str(p) for p in paths[:6]]
    assert [r["digit"] for r in records] == expected_digits(keras_path, paths[:6]), "the champion is the logged model"
    for r in records:
        assert set(r) == {"file", "digit", "confidence", "probabilities", "sure", "answer"}
        assert len(r["probabilities"]) == 10 and r["confidence"] == pytest.approx(max(r["probabilities"]), abs=1e-6)
        assert r["sure"] is True and r["answer"] == str(r["digit"])  # this model carries no threshold


def test_below_the_models_threshold_the_answer_is_not_sure_and_the_top_digit_stays(model, files, tmp_path):
    import shutil

    from mnist_runtime import calibration

    keras_path, _ = model
    _, paths = files
    strict = tmp_path / "strict.keras"
    shutil.copy(keras_path, strict)
    calibration.write(strict, calibration.Calibration(temperature=1.0, abstain_below=0.9999999))
    proc = cli("predict", *map(str, paths[:4]), "--model", str(strict))
    assert proc.returncode == 0, proc.stderr
    digits = expected_digits(keras_path, paths[:4])
    assert [line.split("\t")[1] for line in proc.stdout.strip().splitlines()] == [f"not sure ({d}?)" for d in digits]
    proc = cli("predict", str(paths[0]), "--model", str(strict), "--json")
    record = json.loads(proc.stdout)
    assert (record["sure"], record["answer"], record["digit"]) == (False, "not sure", digits[0])


def test_unreadable_files_are_reported_and_the_others_still_predicted(model, files, tmp_path):
    keras_path, _ = model
    _, paths = files
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    text = tmp_path / "notes.jpg"
    text.write_text("hello")
    missing = tmp_path / "missing.bmp"
    proc = cli(
        "predict", str(paths[0]), str(broken), str(missing), str(text), str(paths[1]), "--model", str(keras_path)
    )
    assert proc.returncode == 1
    assert [line.split("\t")[0] for line in proc.stdout.strip().splitlines()] == [str(paths[0]), str(paths[1])]
    err = proc.stderr
    assert f"error: {broken}: cannot decode image" in err or f"error: {broken}: not a PNG/JPEG/BMP image" in err
    assert f"error: {missing}: cannot read the file (No such file or directory)" in err
    assert f"error: {text}: not a PNG/JPEG/BMP image" in err
    assert "3 of 5 images could not be read" in err
    assert "Traceback" not in err


def test_save_grid_writes_the_inputs_as_the_model_saw_them(model, files, tmp_path):
    keras_path, _ = model
    _, paths = files
    grid = tmp_path / "out" / "grid.png"
    proc = cli("predict", *map(str, paths[:12]), "--model", str(keras_path), "--save-grid", str(grid))
    assert proc.returncode == 0, proc.stderr
    with Image.open(grid) as im:
        assert im.format == "PNG" and im.width > 200 and im.height > 200
    assert not [p for p in grid.parent.iterdir() if p != grid], "written atomically, no temporary left"


def test_no_champion_is_one_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = cli("predict", "x.png", "--params", str(ROOT / "params.yaml"), store=tmp_path / "empty", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: the model registry at")
    assert "has no mnist-cnn@champion" in proc.stderr


def test_mnist_recipe_beats_plain_resize_on_custom_digits(model):
    """Even a model trained for seconds on 2,000 images reads outside digits far better once they
    are brought to MNIST's form (the full-MNIST figures are in benchmarks/custom_digits.py)."""
    from mnist_runtime import images
    from mnist_runtime.network import Classifier

    classifier = Classifier.load(model[0])
    samples = make_set(per_digit=10, seed=3)
    labels = np.array([s.digit for s in samples])
    grays = [images.load_gray(s.data) for s in samples]

    def accuracy(prepare) -> float:
        x = np.stack([prepare(g) for g in grays])[..., None].astype(np.float32)
        return float((classifier(x).argmax(axis=1) == labels).mean())

    mnist_style, plain = accuracy(images.mnist_style), accuracy(images.plain_resize)
    assert mnist_style >= plain + 0.2, (mnist_style, plain)

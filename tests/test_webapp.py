"""`mnist-cnn app`: the real server on 127.0.0.1 with a model trained on the subset, its JSON
API, its limits, the feedback store, and the page driven in headless Chromium (Debian's
`chromium`, through Playwright): draw with mouse events, upload a PNG, send feedback.
Screenshots go to tests/artifacts/ (or $MNIST_CNN_TEST_ARTIFACTS)."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests

import tiny_model
from conftest import ROOT, SUBSET, chromium, free_port, stage_cmd, subset_sha256, wait_until_up
from digit_images import make_set

pytestmark = pytest.mark.slow

ARTIFACTS = Path(os.environ.get("MNIST_CNN_TEST_ARTIFACTS", ROOT / "tests" / "artifacts"))


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_model.train(tmp_path_factory.mktemp("webapp") / "tiny.keras", epochs=2)


@pytest.fixture(scope="module")
def classifier(model):
    from mnist_cnn.serving.network import Classifier

    return Classifier.load(model)


@pytest.fixture(scope="module")
def app(model, tmp_path_factory):
    """(base URL, feedback folder) of a running `mnist-cnn app`."""
    feedback = tmp_path_factory.mktemp("feedback-store") / "feedback"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    cmd = [sys.executable, "-c", "from mnist_cnn.cli import main; main()", "app", "--model", str(model),
           "--port", str(port), "--feedback-dir", str(feedback), "--feedback-limit", "50"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/api/info", proc)
        yield url, feedback
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def png(gray: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(gray.astype(np.uint8), "L").save(buffer, format="PNG")
    return buffer.getvalue()


def expected(classifier, data: bytes) -> tuple[int, np.ndarray]:
    from mnist_cnn import images

    pixels = images.prepare(data)
    return int(classifier(pixels[None]).argmax()), pixels


def samples():
    return [s for s in make_set(per_digit=1, seed=3) if s.name.endswith(".png")]


# --- the API ----------------------------------------------------------------------------------


def test_predict_answers_the_digit_its_probabilities_and_the_28x28_input(app, classifier):
    url, _ = app
    for sample in samples()[:4]:
        answer = requests.post(f"{url}/api/predict", data=sample.data, headers={"Content-Type": "image/png"}, timeout=30)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        digit, pixels = expected(classifier, sample.data)
        assert body["digit"] == digit
        assert len(body["probabilities"]) == 10 and sum(body["probabilities"]) == pytest.approx(1.0, abs=1e-4)
        assert body["confidence"] == max(body["probabilities"])
        assert np.array_equal(np.frombuffer(base64.b64decode(body["pixels"]), np.uint8).reshape(28, 28), pixels)


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [
        (b"this is not an image", 415, "not a PNG/JPEG/BMP image"),
        (b"", 415, "empty request"),
        ("blank", 422, "no digit found"),
        ("huge", 413, "over the limit"),
    ],
)
def test_bad_uploads_get_a_clear_4xx_and_the_server_keeps_answering(app, data, status, words):
    url, _ = app
    if data == "blank":
        data = png(np.full((200, 200), 255))
    elif data == "huge":
        data = b"\x89PNG" + os.urandom(9 * 1024 * 1024)
    answer = requests.post(f"{url}/api/predict", data=data, timeout=60)
    assert answer.status_code == status and words in answer.json()["error"]
    assert requests.post(f"{url}/api/predict", data=samples()[0].data, timeout=30).status_code == 200


def test_a_flood_of_requests_is_refused_with_429_then_served_again(app):
    url, _ = app
    codes = [requests.get(f"{url}/api/info", timeout=10).status_code for _ in range(120)]
    assert 429 in codes and codes[0] == 200
    refused = requests.get(f"{url}/api/info", timeout=10)
    assert refused.status_code == 429 and "slow down" in refused.json()["error"] and refused.headers["Retry-After"] == "1"
    time.sleep(2.5)  # the bucket refills
    assert requests.get(f"{url}/api/info", timeout=10).status_code == 200
    assert requests.get(url, timeout=10).status_code == 200, "the page itself is never rate limited"


def test_feedback_stores_the_image_under_its_label_and_never_a_client_path(app):
    url, folder = app
    sample = samples()[1]
    body = {"image": base64.b64encode(sample.data).decode(), "label": 7}
    answer = requests.post(f"{url}/api/feedback", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    saved = folder / answer.json()["saved"]
    assert saved.parent == folder / "7" and saved.suffix == ".png" and saved.is_file()
    assert requests.post(f"{url}/api/feedback", json=body, timeout=30).json()["saved"] == answer.json()["saved"], "stored once"
    for bad in ({**body, "label": "../../etc"}, {**body, "label": 10}, {**body, "label": True}, {"label": 3}, {**body, "image": "%%%"}):
        answer = requests.post(f"{url}/api/feedback", json=bad, timeout=30)
        assert answer.status_code == 422, (bad, answer.text)
    blank = {"image": base64.b64encode(png(np.zeros((50, 50)))).decode(), "label": 1}
    assert requests.post(f"{url}/api/feedback", json=blank, timeout=30).status_code == 422
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert files == [saved], "nothing else written, no temporary file left"


def test_the_feedback_store_stops_at_its_limit_and_loads_what_it_holds(tmp_path):
    from mnist_cnn import feedback

    store = feedback.FeedbackStore(tmp_path / "fb", limit=3)
    data = [s for s in make_set(per_digit=1, seed=5)]
    for s in data[:3]:
        store.save(s.data, s.digit)
    with pytest.raises(feedback.FeedbackFull, match="limit of 3 images"):
        store.save(data[3].data, data[3].digit)
    x, y, paths = feedback.load(tmp_path / "fb")
    assert x.shape == (3, 28, 28) and x.dtype == np.uint8 and sorted(y.tolist()) == sorted(s.digit for s in data[:3])
    assert all(p.parent.name == str(label) for p, label in zip(paths, y))


def test_preprocess_makes_feedback_a_split_of_its_own_or_folds_it_into_training(tmp_path):
    """The loop back into the pipeline: stored feedback becomes data/processed/feedback.npz (the
    evaluate stage's feedback_accuracy), or joins the training split with data.feedback_use=train."""
    from mnist_cnn import data, feedback

    store = feedback.FeedbackStore(tmp_path / "feedback")
    digits = make_set(per_digit=1, seed=9)[:4]
    for s in digits:
        store.save(s.data, s.digit)
    sums = [f"--set=data.sha256.{name}={digest}" for name, digest in subset_sha256().items()]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sizes = {}
    for use in ("evaluate", "train"):
        out = tmp_path / use
        cmd = stage_cmd("preprocess", "--raw-dir", str(SUBSET), "--feedback-dir", str(tmp_path / "feedback"),
                        "--out-dir", str(out), *sums, f"--set=data.feedback_use={use}")
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        sizes[use] = {name: len(data.load_split(out, name)) for name in ("train", "feedback")}
        if use == "evaluate":
            assert "feedback: 4 images" in proc.stdout
            fb = data.load_split(out, "feedback")
            assert sorted(fb.y.tolist()) == sorted(s.digit for s in digits)
            assert "feedback" in data.processed_checksums(out)
    assert sizes["evaluate"]["feedback"] == 4 and sizes["train"]["feedback"] == 0
    assert sizes["train"]["train"] == sizes["evaluate"]["train"] + 4


# --- the page in a real browser -----------------------------------------------------------------


def seen_pixels(page) -> np.ndarray:
    rgba = page.evaluate("Array.from(document.getElementById('seen').getContext('2d').getImageData(0, 0, 28, 28).data)")
    return np.array(rgba, np.uint8).reshape(28, 28, 4)[..., 0]


def shown(page) -> tuple[int, list[float]]:
    digit = int(page.text_content("#digit"))
    percents = [float(t.rstrip("%")) for t in page.locator("#bars .pct").all_text_contents()]
    return digit, percents


def test_the_page_in_chromium_draw_upload_and_feedback(app, classifier, tmp_path):
    from playwright.sync_api import sync_playwright

    url, folder = app
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), headless=True)
        try:
            page = browser.new_page(viewport={"width": 980, "height": 640})
            errors = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url)
            page.wait_for_function("document.getElementById('model').textContent.endsWith('.keras')")

            # draw a 7 with the mouse: a top bar, then the diagonal down
            box = page.locator("#pad").bounding_box()
            x, y, w, h = box["x"], box["y"], box["width"], box["height"]
            page.mouse.move(x + 0.25 * w, y + 0.2 * h)
            page.mouse.down()
            page.mouse.move(x + 0.75 * w, y + 0.2 * h, steps=12)
            page.mouse.move(x + 0.42 * w, y + 0.85 * h, steps=16)
            page.mouse.up()
            page.wait_for_function("document.body.dataset.state === 'idle' && document.getElementById('digit').textContent !== '?'")
            drawn = base64.b64decode(page.evaluate("document.getElementById('pad').toDataURL('image/png')").split(",", 1)[1])
            digit, pixels = expected(classifier, drawn)
            assert shown(page)[0] == digit
            assert len(shown(page)[1]) == 10 and sum(shown(page)[1]) == pytest.approx(100, abs=0.6)
            assert np.abs(seen_pixels(page).astype(int) - pixels).max() <= 1, "the 28x28 image is what the model saw"
            assert "ms" in page.text_content("#latency")
            page.screenshot(path=str(ARTIFACTS / "app-drawn.png"))

            # feedback: "that's wrong, it was 7"
            page.click("#labels button[data-label='7']")
            page.wait_for_function("document.getElementById('feedback-status').textContent.startsWith('Saved as a 7')")
            assert len(list((folder / "7").glob("*.png"))) >= 1

            # upload a PNG file
            sample = next(s for s in samples() if s.digit == 3)
            upload = tmp_path / "three.png"
            upload.write_bytes(sample.data)
            before = page.text_content("#latency")
            page.set_input_files("#file", str(upload))
            page.wait_for_function(f"document.body.dataset.state === 'idle' && document.getElementById('latency').textContent !== {before!r}")
            assert shown(page)[0] == expected(classifier, sample.data)[0]
            page.screenshot(path=str(ARTIFACTS / "app-uploaded.png"))

            # a file that is not an image: a clear message, and the page goes on working
            bad = tmp_path / "notes.png"
            bad.write_text("not an image")
            page.set_input_files("#file", str(bad))
            page.wait_for_function("document.getElementById('status').textContent.includes('not a PNG/JPEG/BMP image')")
            assert page.text_content("#digit") == "?"
            page.click("#clear")
            page.mouse.move(x + 0.5 * w, y + 0.15 * h)
            page.mouse.down()
            page.mouse.move(x + 0.5 * w, y + 0.85 * h, steps=12)
            page.mouse.up()
            page.wait_for_function("document.getElementById('digit').textContent !== '?'")
            page.click("#undo")
            page.wait_for_function("document.getElementById('digit').textContent === '?'")
            assert not errors, errors
        finally:
            browser.close()

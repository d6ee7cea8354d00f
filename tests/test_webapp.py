"""`mnist-cnn app`: the real server on 127.0.0.1 with a model trained on the subset, its JSON
API, its limits, the feedback store, and the page driven in headless Chromium (Debian's
`chromium`, through Playwright): draw with mouse events, upload a PNG, send feedback, "not sure"
on a scribble. The model is trained with outlier exposure and calibrated (`tiny_model.CALIBRATED`).
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
from digit_images import make_set
from helpers import ROOT, SUBSET, chromium, free_port, stage_cmd, subset_sha256, wait_until_up

pytestmark = pytest.mark.slow

ARTIFACTS = Path(os.environ.get("MNIST_CNN_TEST_ARTIFACTS", ROOT / "tests" / "artifacts"))


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_model.train(tmp_path_factory.mktemp("webapp") / "tiny.keras", **tiny_model.CALIBRATED)


@pytest.fixture(scope="module")
def classifier(model):
    from mnist_runtime.network import Classifier

    return Classifier.load(model)


@pytest.fixture(scope="module")
def app(model, tmp_path_factory):
    """(base URL, feedback folder) of a running `mnist-cnn app`."""
    feedback = tmp_path_factory.mktemp("feedback-store") / "feedback"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    cmd = [
        sys.executable,
        "-c",
        "from mnist_cnn.cli import main; main()",
        "app",
        "--model",
        str(model),
        "--port",
        str(port),
        "--feedback-dir",
        str(feedback),
        "--feedback-limit",
        "50",
    ]
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
    from mnist_runtime import images

    pixels = images.prepare(data)
    return int(classifier(pixels[None]).argmax()), pixels


def samples():
    return [s for s in make_set(per_digit=1, seed=3) if s.name.endswith(".png")]


def predict(url: str, data: bytes) -> dict:
    answer = requests.post(f"{url}/api/predict", data=data, headers={"Content-Type": "image/png"}, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


# --- the API ----------------------------------------------------------------------------------


def test_predict_answers_the_digit_its_probabilities_and_the_28x28_input(app, classifier):
    url, _ = app
    for sample in samples()[:4]:
        answer = requests.post(
            f"{url}/api/predict", data=sample.data, headers={"Content-Type": "image/png"}, timeout=30
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        digit, pixels = expected(classifier, sample.data)
        assert body["digit"] == digit
        assert len(body["probabilities"]) == 10 and sum(body["probabilities"]) == pytest.approx(1.0, abs=1e-4)
        assert body["confidence"] == max(body["probabilities"])
        assert np.array_equal(np.frombuffer(base64.b64decode(body["pixels"]), np.uint8).reshape(28, 28), pixels)


def test_predict_says_not_sure_on_a_non_digit_and_answers_a_digit_it_is_sure_of(app, classifier):
    from mnist_cnn import nondigits
    from mnist_runtime.calibration import NOT_SURE
    from mnist_runtime.pyfunc import format_predictions

    url, _ = app
    threshold = requests.get(f"{url}/api/info", timeout=10).json()["abstain_below"]
    assert threshold == pytest.approx(classifier.calibration.abstain_below) and 0.3 < threshold < 0.95
    for kind, seed in (("scribbles", 0), ("scribbles", 2), ("textures", 4)):
        data = png(np.clip(nondigits.render(kind, np.random.default_rng(seed), "test"), 0, 255))
        body = predict(url, data)
        assert (body["sure"], body["answer"]) == (False, NOT_SURE), (kind, seed, body["confidence"], threshold)
        assert body["confidence"] < threshold and body["digit"] == int(np.argmax(body["probabilities"]))
    for sample in samples()[:3]:
        body = predict(url, sample.data)
        digit, pixels = expected(classifier, sample.data)
        row = format_predictions(classifier(pixels[None]), classifier.calibration).iloc[0]
        assert (body["sure"], body["answer"]) == (bool(row["sure"]), row["answer"]), "the scoring server's rule"
        assert body["digit"] == digit
    assert any(predict(url, s.data)["answer"] == str(s.digit) for s in samples()), "sure of some digit"


def test_a_plain_predict_function_is_never_not_sure():
    import threading

    import uvicorn

    from mnist_cnn.webapp.server import create_app

    port = free_port()
    app = create_app(lambda x: np.full((len(x), 10), 0.1), "flat")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until_up(f"http://127.0.0.1:{port}/api/info")
        assert requests.get(f"http://127.0.0.1:{port}/api/info", timeout=10).json()["abstain_below"] == 0.0
        body = predict(f"http://127.0.0.1:{port}", samples()[0].data)
        assert (body["digit"], body["sure"], body["answer"]) == (0, True, "0")
    finally:
        server.should_exit = True
        thread.join(10)


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
    with requests.Session() as session:  # kept alive: fast enough to outrun the refill on a busy machine
        answers = [session.get(f"{url}/api/info", timeout=10) for _ in range(200)]
    codes = [a.status_code for a in answers]
    assert 429 in codes and codes[0] == 200
    refused = answers[codes.index(429)]  # the bucket refills meanwhile: a later request may be served
    assert "slow down" in refused.json()["error"] and refused.headers["Retry-After"] == "1"
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
    assert requests.post(f"{url}/api/feedback", json=body, timeout=30).json()["saved"] == answer.json()["saved"], (
        "stored once"
    )
    for bad in (
        {**body, "label": "../../etc"},
        {**body, "label": 10},
        {**body, "label": True},
        {"label": 3},
        {**body, "image": "%%%"},
    ):
        answer = requests.post(f"{url}/api/feedback", json=bad, timeout=30)
        assert answer.status_code == 422, (bad, answer.text)
    blank = {"image": base64.b64encode(png(np.zeros((50, 50)))).decode(), "label": 1}
    assert requests.post(f"{url}/api/feedback", json=blank, timeout=30).status_code == 422
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert files == [saved], "nothing else written, no temporary file left"


def test_a_second_label_that_disagrees_is_kept_aside_and_a_corrupt_record_is_a_409(app):
    url, folder = app
    image = base64.b64encode(samples()[2].data).decode()
    first = requests.post(f"{url}/api/feedback", json={"image": image, "label": 2}, timeout=30).json()
    assert first["conflict"] is False and first["saved"].startswith("2/")
    second = requests.post(f"{url}/api/feedback", json={"image": image, "label": 5}, timeout=30).json()
    assert second["conflict"] is True and second["saved"] == f"conflicts/{first['saved'].split('/')[1]}"
    record = (folder / second["saved"]).with_suffix(".json")
    record.write_text("{not json")
    answer = requests.post(f"{url}/api/feedback", json={"image": image, "label": 5}, timeout=30)
    assert answer.status_code == 409 and "kept aside for review" in answer.json()["error"]
    record.unlink()


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
    assert all(p.parent.name == str(label) for p, label in zip(paths, y, strict=True))


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
        cmd = stage_cmd(
            "preprocess",
            "--raw-dir",
            str(SUBSET),
            "--feedback-dir",
            str(tmp_path / "feedback"),
            "--out-dir",
            str(out),
            *sums,
            f"--set=data.feedback_use={use}",
        )
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
    """The top digit (its bar: the big answer may be "not sure") and the ten percentages shown."""
    digit = int(page.get_attribute("#bars li.top", "data-digit"))
    percents = [float(t.rstrip("%")) for t in page.locator("#bars .pct").all_text_contents()]
    return digit, percents


SEVEN = [[(0.25, 0.2), (0.75, 0.2), (0.42, 0.85)]]  # a top bar, then the diagonal down
ONE = [[(0.5, 0.15), (0.5, 0.85)]]
SCRIBBLE = [
    [(0.15 + 0.07 * i, 0.2 if i % 2 == 0 else 0.8) for i in range(11)],  # a dense zigzag ...
    [(0.15, 0.35), (0.85, 0.65), (0.15, 0.65), (0.85, 0.35)],
]  # ... crossed: no digit


def draw(page, strokes: list[list[tuple[float, float]]], steps: int = 12) -> None:
    """Draw with the mouse on the pad: each stroke a polyline in shares of the pad's width and height."""
    box = page.locator("#pad").bounding_box()

    def at(p: tuple[float, float]) -> tuple[float, float]:
        return box["x"] + p[0] * box["width"], box["y"] + p[1] * box["height"]

    for points in strokes:
        page.mouse.move(*at(points[0]))
        page.mouse.down()
        for p in points[1:]:
            page.mouse.move(*at(p), steps=steps)
        page.mouse.up()


def answered(page) -> None:
    page.wait_for_function(
        "document.body.dataset.state === 'idle' && document.getElementById('digit').textContent !== '?'"
    )


def open_page(browser, url: str, errors: list[str]):
    page = browser.new_page(viewport={"width": 980, "height": 640})
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    page.wait_for_function("document.getElementById('model').textContent.endsWith('.keras')")
    return page


def test_the_page_in_chromium_draw_upload_and_feedback(app, classifier, tmp_path):
    from playwright.sync_api import sync_playwright

    url, folder = app
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), headless=True)
        try:
            errors = []
            page = open_page(browser, url, errors)
            draw(page, SEVEN)
            answered(page)
            drawn = base64.b64decode(
                page.evaluate("document.getElementById('pad').toDataURL('image/png')").split(",", 1)[1]
            )
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
            page.click("#labels button[data-label='1']")  # the same drawing, another label
            page.wait_for_function(
                "document.getElementById('feedback-status').textContent.includes('disagrees with an earlier label')"
            )
            assert "kept aside" in page.text_content("#feedback-status")

            # upload a PNG file
            sample = next(s for s in samples() if s.digit == 3)
            upload = tmp_path / "three.png"
            upload.write_bytes(sample.data)
            before = page.text_content("#latency")
            page.set_input_files("#file", str(upload))
            page.wait_for_function(
                f"document.body.dataset.state === 'idle' && document.getElementById('latency').textContent !== {before!r}"
            )
            assert shown(page)[0] == expected(classifier, sample.data)[0]
            page.screenshot(path=str(ARTIFACTS / "app-uploaded.png"))

            # a file that is not an image: a clear message, and the page goes on working
            bad = tmp_path / "notes.png"
            bad.write_text("not an image")
            page.set_input_files("#file", str(bad))
            page.wait_for_function("document.getElementById('status').textContent.includes('not a PNG/JPEG/BMP image')")
            assert page.text_content("#digit") == "?"
            page.click("#clear")
            draw(page, ONE)
            page.wait_for_function("document.getElementById('digit').textContent !== '?'")
            page.click("#undo")
            page.wait_for_function("document.getElementById('digit').textContent === '?'")
            assert not errors, errors
        finally:
            browser.close()


def test_the_page_says_not_sure_on_a_scribble_and_reads_a_digit_drawn_after_it(app, classifier):
    from playwright.sync_api import sync_playwright

    url, _ = app
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), headless=True)
        try:
            errors = []
            page = open_page(browser, url, errors)
            assert page.locator("[aria-live] #digit").count() == 1, "the answer is announced"
            draw(page, SCRIBBLE)
            answered(page)
            drawn = base64.b64decode(
                page.evaluate("document.getElementById('pad').toDataURL('image/png')").split(",", 1)[1]
            )
            guess, pixels = expected(classifier, drawn)
            confidence = float(classifier(pixels[None]).max())
            assert page.text_content("#digit") == "not sure", f"a scribble read as {guess} ({confidence:.0%})"
            best, percent = page.text_content("#confidence").rsplit(", ", 1)
            assert best == f"best guess {guess}" and float(percent.rstrip("%")) == pytest.approx(
                100 * confidence, abs=0.051
            )
            digit, percents = shown(page)
            assert digit == guess and len(percents) == 10 and sum(percents) == pytest.approx(100, abs=0.6)
            page.screenshot(path=str(ARTIFACTS / "app-not-sure.png"))

            page.click("#clear")
            page.wait_for_function("document.getElementById('digit').textContent === '?'")
            draw(page, SEVEN)
            answered(page)
            assert page.text_content("#digit") == "7" and page.text_content("#confidence").endswith("% sure")
            assert shown(page)[0] == 7
            assert not errors, errors
        finally:
            browser.close()

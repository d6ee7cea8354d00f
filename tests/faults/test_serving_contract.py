"""Contract of the scoring server (issues 4 and 6): a real `mlflow models serve` (127.0.0.1, free port,
one worker) on a model trained on the subset: every input form, every kind of bad input, concurrent requests, and the logged model."""

from __future__ import annotations

import base64
import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

import tiny_model
from digit_images import make_set
from helpers import SUBSET
from mnist_cnn.schema import parse_yaml

pytestmark = pytest.mark.slow

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(url, keras Classifier, model URI, store) for a freshly trained and logged model."""
    from mnist_runtime.network import Classifier

    work = tmp_path_factory.mktemp("served")
    keras_path = tiny_model.train(work / "tiny.keras")
    store = work / "store"
    uri = tiny_model.log(keras_path, store)
    proc, url = tiny_model.serve(uri, store, work / "server.log")
    yield url, Classifier.load(keras_path), uri, store
    tiny_model.stop(proc)


@pytest.fixture(scope="module")
def testset():
    from mnist_cnn import data

    return data.load_idx_pair(SUBSET, "t10k")


def post(url: str, body, headers=JSON, timeout: float = 60) -> requests.Response:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(f"{url}/invocations", data=data, headers=headers, timeout=timeout)


def png_b64(img: np.ndarray, invert: bool = True, fmt: str = "PNG", scale: int = 1) -> str:
    """An MNIST digit as a user's file: dark ink on white, optionally enlarged."""
    im = Image.fromarray(255 - img if invert else img)
    if scale > 1:
        im = im.resize((28 * scale, 28 * scale), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    im.convert("RGB" if fmt == "JPEG" else "L").save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


def check_records(preds: list, n: int) -> None:
    assert len(preds) == n
    for rec in preds:
        assert set(rec) == {"digit", "confidence", "probabilities", "sure", "answer"}
        assert isinstance(rec["digit"], int) and 0 <= rec["digit"] <= 9
        assert len(rec["probabilities"]) == 10 and sum(rec["probabilities"]) == pytest.approx(1.0, abs=1e-4)
        assert rec["confidence"] == pytest.approx(max(rec["probabilities"]), abs=1e-6)
        assert rec["digit"] == int(np.argmax(rec["probabilities"]))


# --- accepted input -------------------------------------------------------------------------

PIXEL_FORMS = {
    "inputs N,28,28": lambda x: {"inputs": x.tolist()},
    "inputs N,28,28,1": lambda x: {"inputs": x[..., None].tolist()},
    "inputs N,784": lambda x: {"inputs": x.reshape(len(x), 784).tolist()},
    "inputs floats": lambda x: {"inputs": (x.astype(float) + 0.25).clip(0, 255).tolist()},
    "instances": lambda x: {"instances": x.tolist()},
    "dataframe_split 784 columns": lambda x: {"dataframe_split": {"data": x.reshape(len(x), 784).tolist()}},
    "inputs pixels_b64": lambda x: {"inputs": {"pixels_b64": base64.b64encode(x.tobytes()).decode()}},
    "dataframe_split pixels_b64 per row": lambda x: {
        "dataframe_split": {"columns": ["pixels_b64"], "data": [[base64.b64encode(i.tobytes()).decode()] for i in x]}
    },
}


@pytest.mark.parametrize("form", list(PIXEL_FORMS))
def test_pixel_forms_give_the_networks_predictions(served, testset, form):
    url, classifier, _, _ = served
    x = testset.x[:5]
    resp = post(url, PIXEL_FORMS[form](x))
    assert resp.status_code == 200, resp.text
    preds = resp.json()["predictions"]
    check_records(preds, 5)
    pixels = x[..., None].astype(np.float32) + (0.25 if form == "inputs floats" else 0)
    expected = classifier(np.clip(pixels, 0, 255))
    assert [p["digit"] for p in preds] == expected.argmax(axis=1).tolist()
    assert np.allclose([p["probabilities"] for p in preds], expected, atol=1e-5)


IMAGE_FORMS = {
    "dataframe_split image": lambda items: {"dataframe_split": {"columns": ["image"], "data": [[i] for i in items]}},
    "dataframe_records image": lambda items: {"dataframe_records": [{"image": i} for i in items]},
    "inputs image": lambda items: {"inputs": {"image": items}},
}


@pytest.mark.parametrize("form", list(IMAGE_FORMS))
def test_image_forms_go_through_the_mnist_recipe(served, testset, form):
    from mnist_runtime import images

    url, classifier, _, _ = served
    samples = make_set(per_digit=1, seed=11)
    items = [base64.b64encode(s.data).decode() for s in samples]
    resp = post(url, IMAGE_FORMS[form](items))
    assert resp.status_code == 200, resp.text
    preds = resp.json()["predictions"]
    check_records(preds, len(items))
    expected = classifier(np.stack([images.prepare(s.data) for s in samples])[..., None].astype(np.float32))
    assert [p["digit"] for p in preds] == expected.argmax(axis=1).tolist(), "server and images.prepare agree"


def test_mnist_digits_as_user_files_keep_most_of_the_accuracy(served, testset):
    """MNIST test digits saved as enlarged dark-on-light PNG/JPEG files are recognised about as
    well as their raw pixels: the recipe undoes what a user's file does to them."""
    url, classifier, _, _ = served
    x, y = testset.x[:200], testset.y[:200]
    raw = (classifier(x[..., None].astype(np.float32)).argmax(axis=1) == y).mean()
    items = [png_b64(img, fmt=("PNG", "JPEG", "BMP")[i % 3], scale=1 + i % 4) for i, img in enumerate(x)]
    resp = post(url, {"dataframe_split": {"columns": ["image"], "data": [[i] for i in items]}})
    assert resp.status_code == 200, resp.text
    acc = (np.array([p["digit"] for p in resp.json()["predictions"]]) == y).mean()
    assert acc >= raw - 0.1, (acc, raw)


def test_whole_subset_in_one_compact_request_matches_the_network(served, testset):
    url, classifier, _, _ = served
    body = {"inputs": {"pixels_b64": base64.b64encode(testset.x.tobytes()).decode()}}
    resp = post(url, body)
    assert resp.status_code == 200
    digits = np.array([p["digit"] for p in resp.json()["predictions"]])
    assert np.array_equal(digits, classifier(testset.x[..., None].astype(np.float32)).argmax(axis=1))


# --- bad input ------------------------------------------------------------------------------


def one_image() -> list:
    return np.zeros((1, 28, 28), int).tolist()


def nan_body() -> bytes:
    return ('{"inputs": [[' + ",".join(["0"] * 783 + ["NaN"]) + "]]}").encode()


def inf_body() -> bytes:
    return ('{"inputs": [[' + ",".join(["Infinity"] + ["0"] * 783) + "]]}").encode()


def big_png_b64(side: int) -> str:
    buf = io.BytesIO()
    Image.new("L", (side, side), 255).save(buf, format="PNG")  # compresses to a few hundred KB
    return base64.b64encode(buf.getvalue()).decode()


BAD = {
    "malformed JSON": (b'{"inputs": [[1, 2', JSON, 400, "valid JSON"),
    "not UTF-8": (b"\xff\xfe\x00{", JSON, 400, "valid JSON"),
    "JSON list, not object": (b"[1, 2, 3]", JSON, 400, "JSON dictionary"),
    "unknown key": ({"pixels": one_image()}, JSON, 400, "input fields"),
    "deeply nested JSON": (b"[" * 100_000 + b"]" * 100_000, JSON, 400, "nested too deeply"),
    "deeply nested inputs": (b'{"inputs": ' + b"[" * 5000 + b"0" + b"]" * 5000 + b"}", JSON, 400, "nested too deeply"),
    "wrong shape 28x27": ({"inputs": np.zeros((1, 28, 27), int).tolist()}, JSON, 400, r"input shape \(1, 28, 27\)"),
    "wrong shape 3 values": ({"inputs": [[1, 2, 3]]}, JSON, 400, r"input shape \(1, 3\)"),
    "ragged rows": ({"inputs": [[0] * 784, [0] * 783]}, JSON, 400, "rectangular|ragged|inhomogeneous"),
    "NaN": (nan_body(), JSON, 400, "NaN or Infinity"),
    "Infinity": (inf_body(), JSON, 400, "NaN or Infinity"),
    "above 255": ({"inputs": [[256] * 784]}, JSON, 400, "0-255"),
    "negative": ({"inputs": [[-1] * 784]}, JSON, 400, "0-255"),
    "strings as pixels": ({"inputs": [["a"] * 784]}, JSON, 400, "must be numbers"),
    "empty inputs": ({"inputs": []}, JSON, 400, "empty batch"),
    "empty records": ({"dataframe_records": []}, JSON, 400, "empty batch"),
    "empty image column": ({"dataframe_split": {"columns": ["image"], "data": []}}, JSON, 400, "empty batch"),
    "non-image in image": (
        {"dataframe_records": [{"image": base64.b64encode(b"hello").decode()}]},
        JSON,
        400,
        "image 0: not a PNG/JPEG/BMP image",
    ),  # fmt: skip
    "not base64 in image": ({"dataframe_records": [{"image": "%%%"}]}, JSON, 400, "not valid base64"),
    "number in image": ({"dataframe_records": [{"image": 7}]}, JSON, 400, "expected base64 text"),
    "image plus other column": ({"dataframe_records": [{"image": "x", "label": 1}]}, JSON, 400, "alone"),
    "huge image": ({"dataframe_records": [{"image": big_png_b64(8000)}]}, JSON, 400, "over the limit"),
    "decompression bomb": (
        {"dataframe_records": [{"image": big_png_b64(14000)}]},
        JSON,
        400,
        "over the limit",
    ),  # fmt: skip
    "pixels_b64 not whole images": (
        {"inputs": {"pixels_b64": base64.b64encode(bytes(700)).decode()}},
        JSON,
        400,
        "not a multiple of 784",
    ),  # fmt: skip
    "pixels_b64 not base64": ({"inputs": {"pixels_b64": "@@@@"}}, JSON, 400, "not valid base64"),
    "too many images": (
        {"inputs": {"pixels_b64": base64.b64encode(bytes(784 * 10_001)).decode()}},
        JSON,
        400,
        "limit of 10000",
    ),  # fmt: skip
    "50 MB body": (b'{"inputs": [' + b"0," * (25 * 1024 * 1024) + b"0]}", JSON, 413, "exceeds the limit"),
    "no Content-Type": (b'{"inputs": []}', {"Content-Type": ""}, 415, "Content-Type"),
    "text/plain": (b"1,2,3", {"Content-Type": "text/plain"}, 415, "content types"),
    "CSV of the wrong shape": (b"a,b\n1,2\n", {"Content-Type": "text/csv"}, 400, r"input shape \(1, 2\)"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_a_4xx_naming_the_problem(served, case):
    url = served[0]
    body, headers, status, message = BAD[case]
    resp = post(url, body, headers)
    assert resp.status_code == status, resp.text[:500]
    assert 400 <= resp.status_code < 500
    assert len(resp.content) < 5000, "the error must not echo a large request"
    import re

    assert re.search(message, resp.text), resp.text[:500]


def test_server_still_answers_after_the_bad_requests(served, testset):
    url = served[0]
    resp = post(url, {"inputs": testset.x[:2].tolist()})
    assert resp.status_code == 200
    check_records(resp.json()["predictions"], 2)
    assert requests.get(f"{url}/ping", timeout=10).status_code == 200


def test_concurrent_requests_of_every_form(served, testset):
    url, classifier, _, _ = served
    x = testset.x[:8]
    expected = classifier(x[..., None].astype(np.float32)).argmax(axis=1).tolist()
    bodies = [PIXEL_FORMS[f](x) for f in ("inputs N,28,28", "inputs N,784", "inputs pixels_b64")]
    bodies.append(BAD["NaN"][0])  # bad requests interleaved with good ones
    results, errors = [], []

    def client(i: int) -> None:
        with requests.Session() as session:
            for j in range(6):
                body = bodies[(i + j) % len(bodies)]
                try:
                    resp = session.post(f"{url}/invocations", data=body if isinstance(body, bytes) else json.dumps(body),
                                        headers=JSON, timeout=120)  # fmt: skip
                    results.append((isinstance(body, bytes), resp.status_code, resp.json()))
                except Exception as exc:  # noqa: BLE001 - reported below
                    errors.append(repr(exc))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert len(results) == 96
    for bad, status, payload in results:
        if bad:
            assert status == 400 and "NaN" in payload["message"]
        else:
            assert status == 200 and [p["digit"] for p in payload["predictions"]] == expected


# --- the logged model -----------------------------------------------------------------------


def test_logged_model_holds_no_pickle_and_loads_in_safe_mode(served, testset):
    import mlflow

    _, classifier, uri, store = served
    with tiny_model.using_store(store):
        local = Path(mlflow.artifacts.download_artifacts(uri))
        files = [p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()]
        assert not [f for f in files if f.endswith((".pkl", ".pickle", ".cloudpickle"))], files
        for f in files:  # no pickle stream hidden under another name (protocol 2+ starts with 0x80)
            if not f.endswith(".keras"):
                assert not (local / f).read_bytes()[:1] == b"\x80", f
        flavor = parse_yaml((local / "MLmodel").read_text())["flavors"]["python_function"]
        assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model"
        assert Path(flavor["model_code_path"]).name == "pyfunc_model.py" and "python_model" not in flavor
        assert flavor["artifacts"]["keras_model"]["path"].endswith(".keras")
        loaded = mlflow.pyfunc.load_model(uri)
    network = loaded.unwrap_python_model().model
    import keras

    safe = keras.saving.load_model(local / flavor["artifacts"]["keras_model"]["path"], compile=False, safe_mode=True)
    x = testset.x[:20, ..., None].astype(np.float32)
    assert np.allclose(np.asarray(network(x)), np.asarray(safe(x)), atol=1e-6)
    out = loaded.predict(testset.x[:20])
    assert out["digit"].tolist() == classifier(x).argmax(axis=1).tolist()

"""Latency and throughput of the real scoring server (`mlflow models serve`, one worker).

Takes a model (`--model`: a `.keras` file; default: the fast preset trained for one epoch on the
test subset, a few seconds), logs it with `mnist_cnn.packaging.log_model` into a throwaway sqlite store,
starts `mlflow models serve --env-manager local` on 127.0.0.1 and prints p50/p95 per request
for one image and for 256 images (JSON pixels, compact `pixels_b64`, PNG files) and requests/s
with 8 concurrent clients. Targets (issue 4, 2-core machine): p50 <= 10 ms for one image,
<= 150 ms for 256 images, >= 150 requests/s with 8 clients.

    python benchmarks/serving.py [--model models/model.keras] [--repeat 200] [--json results.json]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SUBSET = ROOT / "tests" / "fixtures" / "mnist-subset"


def train_small(path: Path) -> Path:
    from mnist_cnn import data, presets, training

    model_params, train_params = presets.load("fast", ["train.epochs=1"], directory=ROOT / "presets")
    train_split, val_split = data.load_idx_pair(SUBSET, "train"), data.load_idx_pair(SUBSET, "t10k")
    training.train(model_params, train_params, train_split, val_split, path.parent / "work", verbose=0).model.save(path)
    return path


def log_model(keras_path: Path, store: Path) -> str:
    import mlflow

    from mnist_cnn import packaging

    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
    if mlflow.get_experiment_by_name("serving-benchmark") is None:  # artifacts in the store, not in ./mlruns
        mlflow.create_experiment("serving-benchmark", artifact_location=(store / "artifacts").as_uri())
    mlflow.set_experiment("serving-benchmark")
    with mlflow.start_run():
        return packaging.log_model(keras_path, np.zeros((1, 28, 28), np.uint8)).model_uri


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_uri: str, store: Path, workers: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}", "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
           "-h", "127.0.0.1", "-p", str(port), "-w", str(workers)]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, cwd=store, stdout=open(store / "server.log", "wb"), stderr=subprocess.STDOUT)
    wait_until_answers(proc, port, "/ping", store / "server.log")
    return proc, port


def wait_until_answers(proc: subprocess.Popen, port: int, path: str, log: Path, timeout: float = 180) -> None:
    """Poll GET `path` until it answers 200; exit with the server's log if it dies or never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited: {log.read_text()[-3000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.5)
    proc.kill()
    sys.exit(f"server did not answer within {timeout:.0f} s")


class Client:
    """One keep-alive connection; `post` returns (seconds, status)."""

    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def post(self, body: bytes) -> tuple[float, int]:
        start = time.perf_counter()
        self.conn.request("POST", "/invocations", body, {"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        resp.read()
        return time.perf_counter() - start, resp.status


def latency(port: int, body: bytes, repeat: int) -> dict[str, float]:
    client = Client(port)
    for _ in range(min(10, repeat)):  # warm up
        client.post(body)
    times = []
    for _ in range(repeat):
        seconds, status = client.post(body)
        if status != 200:
            sys.exit(f"request failed with HTTP {status}")
        times.append(seconds * 1000)
    return {"p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95)), "requests": repeat}


def throughput(port: int, body: bytes, clients: int, seconds: float) -> dict[str, float]:
    counts, errors = [0] * clients, [0] * clients
    stop = time.monotonic() + seconds

    def loop(i: int) -> None:
        client = Client(port)
        while time.monotonic() < stop:
            _, status = client.post(body)
            counts[i] += 1
            errors[i] += status != 200

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    return {"requests_per_s": sum(counts) / elapsed, "requests": sum(counts), "errors": sum(errors), "clients": clients}


def bodies(x: np.ndarray) -> dict[str, bytes]:
    from PIL import Image

    def png(img: np.ndarray) -> str:
        buf = io.BytesIO()
        Image.fromarray(255 - img).save(buf, format="PNG")  # dark ink on white, as a user would send it
        return base64.b64encode(buf.getvalue()).decode()

    def pixels(n: int) -> bytes:
        return json.dumps({"inputs": x[:n].tolist()}).encode()

    def compact(n: int) -> bytes:
        return json.dumps({"inputs": {"pixels_b64": base64.b64encode(x[:n].tobytes()).decode()}}).encode()

    def images(n: int) -> bytes:
        return json.dumps({"dataframe_split": {"columns": ["image"], "data": [[png(i)] for i in x[:n]]}}).encode()

    return {
        "1 image, JSON pixels": pixels(1),
        "1 image, pixels_b64": compact(1),
        "1 image, PNG": images(1),
        "256 images, JSON pixels": pixels(256),
        "256 images, pixels_b64": compact(256),
        "256 images, PNG": images(256),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", type=Path, help="a .keras file (default: train the fast preset for one epoch on the subset)"
    )
    parser.add_argument("--repeat", type=int, default=200, help="requests per latency figure (256-image ones: a fifth)")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of the throughput run")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    from mnist_cnn import data

    x = data.load_idx_pair(SUBSET, "t10k").x
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp)
        keras_path = args.model or train_small(store / "model.keras")
        model_uri = log_model(keras_path, store)
        proc, port = start_server(model_uri, store, args.workers)
        try:
            results = {}
            for name, body in bodies(x).items():
                repeat = args.repeat if name.startswith("1 ") else max(10, args.repeat // 5)
                results[name] = latency(port, body, repeat)
                r = results[name]
                print(
                    f"{name:<26} p50 {r['p50_ms']:7.1f} ms   p95 {r['p95_ms']:7.1f} ms   ({len(body):,} bytes)",
                    flush=True,
                )
            tp = throughput(port, bodies(x)["1 image, JSON pixels"], args.clients, args.seconds)
            results[f"{args.clients} clients, 1 image, JSON pixels"] = tp
            print(f"{args.clients} concurrent clients, 1 image each: {tp['requests_per_s']:.0f} requests/s "
                  f"({tp['requests']} requests, {tp['errors']} errors)")  # fmt: skip
        finally:
            proc.terminate()
            proc.wait(30)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

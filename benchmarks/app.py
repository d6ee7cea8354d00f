"""Round-trip latency of the web page's API (`mnist-cnn app`), as the page uses it.

Starts the real app on 127.0.0.1 with a model (`--model`: a `.keras` file; default: the fast
preset trained for one epoch on the test subset, a few seconds) and times POST /api/predict,
one keep-alive connection as the browser has, for:
- what the page sends while drawing: the 280x280 pad as PNG, a growing stroke (target: under
  50 ms a round trip);
- uploads: a 1200x1600 phone-photo-sized JPEG and a 3000x4000 one.
Prints p50/p95/max per kind and the server's own share (`server_ms`).

    python benchmarks/app.py [--model models/model.keras] [--repeat 100]
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import free_port, train_small, wait_until_answers  # noqa: E402


def pad_png(progress: float) -> bytes:
    """The pad after `progress` (0-1) of a '2' drawn with the page's 22 px pen."""
    im = Image.new("L", (280, 280), 255)
    points = [(70, 90), (110, 55), (170, 55), (200, 100), (170, 150), (80, 220), (210, 220)]
    n = max(2, int(round(progress * len(points))))
    ImageDraw.Draw(im).line(points[:n], fill=0, width=22, joint="curve")
    buffer = io.BytesIO()
    im.save(buffer, format="PNG")
    return buffer.getvalue()


def photo_jpeg(width: int, height: int) -> bytes:
    rng = np.random.default_rng(0)
    paper = np.clip(200 + 30 * np.linspace(0, 1, width)[None, :] + rng.normal(0, 6, (height, width)), 0, 255)
    im = Image.fromarray(paper.astype(np.uint8), "L").convert("RGB")
    ImageDraw.Draw(im).line(
        [(width * 0.3, height * 0.3), (width * 0.7, height * 0.3), (width * 0.45, height * 0.8)],
        fill=(30, 30, 60),
        width=max(4, width // 40),
    )
    buffer = io.BytesIO()
    im.save(buffer, format="JPEG", quality=88)
    return buffer.getvalue()


def start(model: Path, work: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    cmd = [
        sys.executable,
        "-c",
        "from mnist_cnn.cli import main; main()",
        "app",
        "--model",
        str(model),
        "--port",
        str(port),
        "--no-feedback",
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(cmd, env=env, stdout=open(work / "app.log", "wb"), stderr=subprocess.STDOUT)
    wait_until_answers(proc, port, "/api/info", work / "app.log")
    return proc, port


def measure(port: int, bodies: list[bytes], repeat: int, pause: float) -> tuple[list[float], list[float]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    total, server = [], []
    for i in range(repeat):
        body = bodies[i % len(bodies)]
        start = time.perf_counter()
        conn.request("POST", "/api/predict", body=body, headers={"Content-Type": "application/octet-stream"})
        response = conn.getresponse()
        payload = response.read()
        total.append(1000 * (time.perf_counter() - start))
        if response.status != 200:
            sys.exit(f"HTTP {response.status}: {payload[:300]!r}")
        server.append(json.loads(payload)["server_ms"])
        time.sleep(pause)  # stay under the page's rate limit, as one person drawing does
    return total, server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a .keras file (default: a quick model trained on the subset)")
    parser.add_argument("--repeat", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mnist-app-bench-") as tmp:
        work = Path(tmp)
        model = args.model or train_small(work / "small.keras")
        proc, port = start(model, work)
        try:
            kinds = {
                "drawing (280x280 PNG)": ([pad_png(p) for p in np.linspace(0.3, 1.0, 8)], args.repeat),
                "photo upload 1200x1600 JPEG": ([photo_jpeg(1200, 1600)], max(10, args.repeat // 5)),
                "photo upload 3000x4000 JPEG": ([photo_jpeg(3000, 4000)], max(10, args.repeat // 10)),
            }
            print(f"{'request':<30}{'bytes':>9}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'server p50':>12}")
            for name, (bodies, repeat) in kinds.items():
                measure(port, bodies, 3, 0.05)  # warm up
                total, server = measure(port, bodies, repeat, 0.05)
                p95 = float(np.percentile(total, 95))
                print(
                    f"{name:<30}{len(bodies[-1]):>9}{statistics.median(total):>9.1f}{p95:>9.1f}{max(total):>9.1f}"
                    f"{statistics.median(server):>12.1f}"
                )
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()

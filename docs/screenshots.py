"""Take the README's screenshots of the MLflow UI with headless Chromium.

Starts `mlflow ui` on 127.0.0.1 over a project's tracking store (after a `dvc repro`), opens
the runs table, the champion's train run and its charts, the registered model, and the train run's
model card and reliability diagram in Debian's `chromium` driven by Playwright, and writes PNGs into docs/img/.

    pip install playwright && apt-get install chromium
    python docs/screenshots.py [--project .] [--out docs/img] [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGES_LOADED = "[...document.images].every(i => i.complete)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"mlflow ui exited {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    sys.exit(f"{url} did not answer within {timeout:.0f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", type=Path, default=ROOT, help="project whose mlflow.db is shown")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--timeout", type=float, default=120, help="seconds a page may take to show its data")
    args = parser.parse_args()

    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    from mnist_cnn.tracking.store import ML_VIEW

    db = (args.project / "mlflow.db").resolve()
    if not db.is_file():
        sys.exit(f"no tracking store at {db}: run `dvc repro` in {args.project} first")
    store = f"sqlite:///{db}"
    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("mnist-cnn")
    try:
        champion = client.get_model_version_by_alias("mnist-cnn", "champion")
    except MlflowException:
        champion = None
    if experiment is None or champion is None:
        sys.exit(f"no mnist-cnn@champion in {store}: run `dvc repro` in {args.project} first")
    run_id = champion.run_id
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    view = "?" + ML_VIEW  # MLflow 3.17's UI otherwise opens on its GenAI view
    runs = f"{url}/#/experiments/{experiment.experiment_id}"
    train_run = client.get_run(run_id).info.run_name
    # each page with the text it shows once its data is in (before, the UI draws grey placeholders)
    pages = {
        "mlflow_runs.png": (f"{runs}/runs{view}", "pipeline-"),
        "mlflow_run.png": (f"{runs}/runs/{run_id}{view}", "About this run"),
        "mlflow_charts.png": (f"{runs}/runs/{run_id}/model-metrics{view}", f"{train_run} (epoch/val_accuracy)"),
        "mlflow_registry.png": (f"{url}/#/models/mnist-cnn{view}", f"Version {champion.version}"),
        "mlflow_model_card.png": (f"{runs}/runs/{run_id}/artifacts/model_card.md{view}", "mnist-cnn version"),
        "mlflow_reliability.png": (
            f"{runs}/runs/{run_id}/artifacts/evaluation/reliability.png{view}",
            "evaluation/reliability.png",
        ),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    ui = subprocess.Popen(
        ["mlflow", "ui", "--backend-store-uri", store, "-h", "127.0.0.1", "-p", str(port)],
        cwd=args.project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_up(f"{url}/health", ui)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            for name, (address, ready) in pages.items():
                # a fresh page each: going from one artifact's hash route to another's keeps the first shown
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(address)
                try:  # the UI keeps polling, so it is never network-idle: wait for the page's own text
                    page.get_by_text(ready).first.wait_for(timeout=args.timeout * 1000)
                    page.wait_for_function(IMAGES_LOADED, timeout=args.timeout * 1000)
                except PlaywrightTimeout:
                    sys.exit(f"{name}: {address} did not show {ready!r} within {args.timeout} s")
                page.wait_for_timeout(2000)  # charts draw after their data arrives
                close = page.get_by_role("button", name="Close")
                if close.count():  # the assistant side panel hides half the page
                    close.first.click()
                    page.wait_for_timeout(500)
                expand = page.locator("[role=gridcell] button[data-component-id*=runnamecellrenderer]")
                if name == "mlflow_runs.png" and expand.count():  # show the pipeline's stage runs
                    expand.first.click()
                    page.evaluate("document.activeElement && document.activeElement.blur()")
                    page.wait_for_timeout(2000)
                page.screenshot(path=str(args.out / name))
                page.close()
                print(args.out / name)
            browser.close()
    finally:
        ui.terminate()
        ui.wait(30)


if __name__ == "__main__":
    main()

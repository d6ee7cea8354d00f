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
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# an <img> the artifact viewer shows (its alt is the artifact's path), fetched and decoded
IMAGE_SHOWN = "alt => [...document.images].some(i => i.alt === alt && i.complete && i.naturalWidth > 0)"


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


def champion_pages(client, champion, url: str) -> dict[str, tuple[str, str | re.Pattern, str | None]]:
    """Each screenshot's address, the text it shows once its data is in (until then the UI draws grey
    placeholders), and the artifact image it must show, if any."""
    from mnist_cnn.tracking.store import ML_VIEW, ui_links

    run = client.get_run(champion.run_id).info
    links = ui_links(url, run.experiment_id, champion.name)  # `mnist-cnn ui`'s own links
    view = "?" + ML_VIEW  # else the UI opens on its GenAI view
    runs = f"{url}/#/experiments/{run.experiment_id}"
    artifact = f"{runs}/runs/{run.run_id}/artifacts"
    return {
        "mlflow_runs.png": (links["runs"], re.compile(r"^pipeline-"), None),
        "mlflow_run.png": (f"{runs}/runs/{run.run_id}{view}", re.compile(r"^Metrics \(\d+\)$"), None),
        "mlflow_charts.png": (
            f"{runs}/runs/{run.run_id}/model-metrics{view}",
            f"{run.run_name} (epoch/val_accuracy)",
            None,
        ),
        "mlflow_registry.png": (links["models"], f"Version {champion.version}", None),
        "mlflow_model_card.png": (f"{artifact}/model_card.md{view}", f"mnist-cnn version {champion.version}", None),
        "mlflow_reliability.png": (
            f"{artifact}/evaluation/reliability.png{view}",
            "evaluation/reliability.png",
            "evaluation/reliability.png",
        ),
    }


def shoot(page, name: str, address: str, ready, image: str | None, path: Path, timeout_s: float) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.set_default_timeout(timeout_s * 1000)
    page.set_default_navigation_timeout(timeout_s * 1000)
    page.goto(address)
    # the UI keeps polling, so it is never network-idle: wait for what the page shows
    waiting_for = f"the text {ready.pattern if isinstance(ready, re.Pattern) else ready!r}"
    try:
        page.get_by_text(ready).filter(visible=True).first.wait_for()
        if image:
            waiting_for = f"the image {image}"
            page.wait_for_function(IMAGE_SHOWN, arg=image)
    except PlaywrightTimeout:
        sys.exit(f"{name}: {address} did not show {waiting_for} within {timeout_s:g} s")
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
    page.screenshot(path=str(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", type=Path, default=ROOT, help="project whose mlflow.db is shown")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--timeout", type=float, default=120, help="seconds a page may take to show its data")
    args = parser.parse_args()

    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    db = (args.project / "mlflow.db").resolve()
    if not db.is_file():
        sys.exit(f"no tracking store at {db}: run `dvc repro` in {args.project} first")
    store = f"sqlite:///{db}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    client = MlflowClient(tracking_uri=store)
    try:
        champion = client.get_model_version_by_alias("mnist-cnn", "champion")
    except MlflowException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        sys.exit(f"no mnist-cnn@champion in {store}: run `dvc repro` in {args.project} first")
    pages = champion_pages(client, champion, url)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    # a session of its own: stopping it stops uvicorn and MLflow's job runner with it
    ui = subprocess.Popen(
        ["mlflow", "ui", "--backend-store-uri", store, "-h", "127.0.0.1", "-p", str(port)],
        cwd=args.project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until_up(f"{url}/health", ui)
        # all six pages or none: they are shot into a temporary folder beside --out, then moved in
        with tempfile.TemporaryDirectory(prefix=".screenshots-", dir=args.out.parent) as tmp, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            for name, (address, ready, image) in pages.items():
                # a fresh page each: going from one artifact's hash route to another's keeps the first shown
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                try:
                    shoot(page, name, address, ready, image, Path(tmp) / name, args.timeout)
                except PlaywrightError as e:
                    sys.exit(f"{name}: {address}: {str(e).splitlines()[0]} (timeout {args.timeout:g} s)")
                page.close()
            browser.close()
            args.out.mkdir(exist_ok=True)
            for name in pages:
                shutil.move(Path(tmp) / name, args.out / name)
                print(args.out / name)
    finally:
        stop(ui)


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


if __name__ == "__main__":
    main()

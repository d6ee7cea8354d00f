"""The HTTP side of `mnist-cnn app`: one page (HTML, JS and CSS shipped in the package, no CDN)
and a small JSON API.

    GET  /               the page
    GET  /api/info       the model's name, whether feedback is taken, and `abstain_below`: the
                         confidence under which the answer is "not sure" (0: never)
    POST /api/predict    image bytes (PNG/JPEG/BMP) -> digit, confidence, 10 probabilities, `sure`
                         and `answer` (the digit, or "not sure"; `digit` keeps the top one), and
                         the 28x28 input as the model saw it (`images.prepare`)
    POST /api/feedback   {"image": base64, "label": 0-9} -> stored under the feedback folder;
                         `conflict` is true when an earlier label disagreed (kept aside for review)

The threshold is the predict callable's `calibration` record (`mnist_runtime.network.Classifier`); a
plain function without one is always sure. Every API answer is JSON; a problem is
{"error": "..."} with a 4xx: 409 an unreadable conflict record, 413 too large, 415 not an image,
422 no digit or a bad label, 429 too many requests (a token bucket per client address)."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from mnist_cnn.feedback import CONFLICTS, FeedbackError, FeedbackFull, FeedbackStore
from mnist_runtime import calibration, images

STATIC = Path(__file__).with_name("static")
MAX_UPLOAD = 8 * 1024 * 1024  # bytes of one request body
RATE = 30.0  # requests per second per client address, sustained ...
BURST = 60  # ... and at once
log = logging.getLogger(__name__)


class TooLarge(Exception):
    pass


class RateLimiter:
    """A token bucket per client address: `burst` requests at once, `rate` a second after."""

    def __init__(self, rate: float = RATE, burst: int = BURST):
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, client: str) -> bool:
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            allowed = tokens >= 1.0
            self._buckets[client] = (tokens - 1.0 if allowed else tokens, now)
            if len(self._buckets) > 10_000:  # forget idle clients
                self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 60}
            return allowed


def error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


def image_error(exc: images.ImageError) -> JSONResponse:
    if isinstance(exc, images.ImageTooLarge):
        return error(413, str(exc))
    if isinstance(exc, images.NoDigit):
        return error(422, str(exc))
    return error(415, str(exc))


async def read_body(request: Request, limit: int = MAX_UPLOAD) -> bytes:
    """The request body, refused once it passes `limit` bytes (with or without Content-Length)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(
    predict: Callable[[np.ndarray], np.ndarray],
    model_name: str,
    feedback: FeedbackStore | None = None,
    limiter: RateLimiter | None = None,
) -> FastAPI:
    """The app around `predict`, a function from (N, 28, 28) 0-255 pixels to (N, 10) probabilities
    (its `calibration` attribute, when it has one, sets the "not sure" threshold)."""
    record = getattr(predict, "calibration", calibration.NONE)
    app = FastAPI(title="mnist-cnn", docs_url=None, redoc_url=None, openapi_url=None)
    limiter = limiter or RateLimiter()

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if request.url.path.startswith("/api/"):
            client = request.client.host if request.client else "unknown"
            if not limiter.allow(client):
                return error(
                    429,
                    f"too many requests: at most {limiter.rate:.0f} a second, please slow down",
                    **{"Retry-After": "1"},
                )
            length = request.headers.get("content-length", "")
            if length.isdigit() and int(length) > MAX_UPLOAD:
                return error(413, f"request of {int(length)} bytes is over the limit of {MAX_UPLOAD}")
        response = await call_next(request)
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/info")
    async def info() -> dict:
        return {"model": model_name, "feedback": feedback is not None, "abstain_below": record.abstain_below}

    def classify(body: bytes) -> dict:
        start = time.perf_counter()
        pixels = images.prepare(body)
        proba = np.asarray(predict(pixels[None]), dtype=np.float64)[0]
        digit = int(proba.argmax())
        return {
            "digit": digit,
            "confidence": round(float(proba[digit]), 6),
            "probabilities": [round(float(p), 6) for p in proba],
            "sure": bool(record.sure(proba[None])[0]),
            "answer": record.answers(proba[None])[0],
            "pixels": base64.b64encode(pixels.tobytes()).decode("ascii"),  # 784 bytes, row by row
            "server_ms": round(1000 * (time.perf_counter() - start), 2),
        }

    @app.post("/api/predict")
    async def predict_route(request: Request) -> JSONResponse:
        try:
            body = await read_body(request)
        except TooLarge:
            return error(413, f"upload over the limit of {MAX_UPLOAD} bytes")
        if not body:
            return error(415, "empty request: send the image file's bytes as the body")
        try:
            return JSONResponse(await run_in_threadpool(classify, body))
        except images.ImageError as exc:
            return image_error(exc)

    @app.post("/api/feedback")
    async def feedback_route(request: Request) -> JSONResponse:
        if feedback is None:
            return error(403, "this server takes no feedback (started with --no-feedback)")
        try:
            payload = json.loads(await read_body(request))
            label, image = payload["label"], base64.b64decode(payload["image"], validate=True)
        except TooLarge:
            return error(413, f"feedback over the limit of {MAX_UPLOAD} bytes")
        except (ValueError, KeyError, TypeError, binascii.Error):
            return error(422, 'send JSON {"image": "<base64 PNG/JPEG/BMP>", "label": 0-9}')
        try:
            path = await run_in_threadpool(feedback.save, image, label)
        except ValueError as exc:
            return error(422, str(exc))
        except images.ImageError as exc:
            return image_error(exc)
        except FeedbackFull as exc:
            return error(507, str(exc))
        except FeedbackError as exc:
            log.error("feedback not saved: %s", exc)
            return error(
                409,
                "not saved: this image was sent before with other labels and is kept aside for review, "
                "but the server cannot read its record of them; the operator is told (server log)",
            )
        conflict = path.parent.name == CONFLICTS
        return JSONResponse({"saved": f"{path.parent.name}/{path.name}", "label": label, "conflict": conflict})

    return app

"""Fetch the data sets' gzip files (MNIST's four IDX files, USPS's zip.train and zip.test) from
lists of mirrors and verify their content.

A mirror is an http(s) URL or a local directory; $MNIST_MIRROR (MNIST) and $USPS_MIRROR (USPS)
are tried before the mirrors in params.yaml. Each file is streamed to a temporary name,
its decompressed SHA-256 checked, and only then renamed into place. Transient failures
(connection errors, timeouts, 429, 5xx) are retried with exponential backoff; 403/404, bad
content and exhausted retries fall through to the next mirror. Redirects from https to http
are refused.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

from mnist_cnn.atomic import atomic_path
from mnist_cnn.config import MNIST_FILES, USPS_FILES, DataParams, UspsParams
from mnist_cnn.errors import DataError

log = logging.getLogger(__name__)

CHUNK = 1 << 16


@dataclasses.dataclass(frozen=True)
class Dataset:
    """What differs between the data sets fetched: names, files, where to look, size limits."""

    name: str
    file_kind: str  # in messages: "too large for an MNIST file"
    env_var: str
    params_key: str  # the section of params.yaml with its `mirrors` and `sha256`
    files: tuple[str, ...]
    max_download_bytes: int
    max_decompressed_bytes: int

    def settings(self, params: DataParams) -> DataParams | UspsParams:
        section = params
        for part in self.params_key.split(".")[1:]:
            section = getattr(section, part)
        return section


# largest files: MNIST ~10 MB compressed, 47 MB decompressed; USPS ~2 MB and 15 MB
MNIST = Dataset("MNIST", "an MNIST file", "MNIST_MIRROR", "data", MNIST_FILES, 64 << 20, 64 << 20)
USPS = Dataset("USPS", "a USPS file", "USPS_MIRROR", "data.usps", USPS_FILES, 8 << 20, 32 << 20)


class _Transient(Exception):
    """Worth retrying on the same mirror."""


class _Fatal(Exception):
    """Give up on this mirror for this file."""


@dataclasses.dataclass(frozen=True)
class FetchResult:
    name: str
    mirror: str
    compressed_bytes: int
    decompressed_bytes: int
    sha256: str
    seconds: float
    attempts: int

    def row(self) -> dict[str, object]:
        """The file's row of the download table logged to MLflow."""
        return {
            "file": self.name,
            "source": self.mirror,
            "compressed_bytes": self.compressed_bytes,
            "decompressed_bytes": self.decompressed_bytes,
            "sha256": self.sha256,
            "attempts": self.attempts,
            "seconds": round(self.seconds, 3),
        }


class _NoDowngradeRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D401 - urllib API
        old = urllib.parse.urlsplit(req.full_url).scheme
        new = urllib.parse.urlsplit(newurl).scheme
        if old == "https" and new != "https":
            raise _Fatal(f"refused redirect from https to {new}: {newurl}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_opener = urllib.request.build_opener(_NoDowngradeRedirect())


def resolve_mirrors(params: DataParams, env: dict[str, str] | None = None, dataset: Dataset = MNIST) -> list[str]:
    """Mirrors in the order they are tried: the data set's variable ($MNIST_MIRROR, $USPS_MIRROR)
    first, then its list in params."""
    env = os.environ if env is None else env
    mirrors = list(dataset.settings(params).mirrors)
    extra = env.get(dataset.env_var, "").strip()
    if extra:
        mirrors = [extra] + [m for m in mirrors if m != extra]
    return mirrors


def _is_url(mirror: str) -> bool:
    return urllib.parse.urlsplit(mirror).scheme in ("http", "https")


def _join(mirror: str, filename: str) -> str:
    return mirror if mirror.endswith("/" + filename) else mirror.rstrip("/") + "/" + filename


def gunzip_sha256(path: Path, limit: int | None = None, dataset: Dataset = MNIST) -> tuple[str, int]:
    """SHA-256 and size of the decompressed content of gzip file `path` (at most `limit` bytes,
    by default the data set's)."""
    limit = dataset.max_decompressed_bytes if limit is None else limit
    digest = hashlib.sha256()
    size = 0
    try:
        with gzip.open(path, "rb") as fh:
            while chunk := fh.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise DataError(
                        f"{path.name}: decompresses to more than {limit} bytes; too large for {dataset.file_kind}"
                    )
                digest.update(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path.name}: not a valid gzip file ({exc})") from None
    return digest.hexdigest(), size


def _copy_stream(src, dst, total: int | None, label: str, progress: bool, dataset: Dataset) -> int:
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="B", unit_scale=True, desc=label, leave=False)
    written = 0
    try:
        while chunk := src.read(CHUNK):
            written += len(chunk)
            if written > dataset.max_download_bytes:
                raise _Fatal(f"more than {dataset.max_download_bytes} bytes; too large for {dataset.file_kind}")
            dst.write(chunk)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    if total is not None and written != total:
        raise _Transient(f"connection closed after {written} of {total} bytes")
    return written


def _fetch_once(url_or_path: str, dest: Path, timeout: float, progress: bool, dataset: Dataset) -> int:
    label = Path(urllib.parse.urlsplit(url_or_path).path).name
    if not _is_url(url_or_path):
        src = Path(url_or_path)
        if not src.is_file():
            raise _Fatal(f"no such file {src}")
        with open(src, "rb") as fin, open(dest, "wb") as fout:
            return _copy_stream(fin, fout, src.stat().st_size, label, progress, dataset)
    request = urllib.request.Request(url_or_path, headers={"User-Agent": "mnist-cnn-pipeline"})
    try:
        with _opener.open(request, timeout=timeout) as resp, open(dest, "wb") as fout:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            return _copy_stream(resp, fout, total, label, progress, dataset)
    except urllib.error.HTTPError as exc:
        if exc.code == 429 or exc.code >= 500:
            raise _Transient(f"HTTP {exc.code} {exc.reason}") from None
        raise _Fatal(f"HTTP {exc.code} {exc.reason}") from None
    except _Fatal:
        raise
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, _Fatal):
            raise reason from None
        raise _Transient(f"{type(reason).__name__}: {reason}") from None


def fetch_file(
    name: str,
    expected_sha256: str,
    mirrors: Iterable[str],
    out_dir: Path,
    params: DataParams,
    progress: bool = True,
    sleep: Callable[[float], None] = time.sleep,
    dataset: Dataset = MNIST,
) -> FetchResult:
    """Fetch `name`.gz of `dataset` into `out_dir` from the first mirror that serves verified content."""
    filename = f"{name}.gz"
    final = out_dir / filename
    failures: list[str] = []
    for mirror in mirrors:
        source = _join(mirror, filename)
        attempts = 0
        start = time.monotonic()
        while True:
            attempts += 1
            try:
                with atomic_path(final) as tmp:
                    size = _fetch_once(source, tmp, params.timeout_s, progress, dataset)
                    try:
                        digest, raw_size = gunzip_sha256(tmp, dataset=dataset)
                    except DataError as exc:
                        raise _Fatal(str(exc).split(": ", 1)[-1]) from None
                    if digest != expected_sha256:
                        raise _Fatal(
                            f"checksum mismatch: content sha256 {digest[:12]}..., expected {expected_sha256[:12]}..."
                        )
                return FetchResult(name, mirror, size, raw_size, digest, time.monotonic() - start, attempts)
            except _Transient as exc:
                if attempts < params.retries:
                    delay = params.backoff_s * 2 ** (attempts - 1)
                    log.warning("%s from %s: %s; retrying in %.1fs", filename, mirror, exc, delay)
                    sleep(delay)
                    continue
                failures.append(f"{mirror}: {exc} (after {attempts} attempts)")
            except _Fatal as exc:
                failures.append(f"{mirror}: {exc}")
            break
        log.warning("%s: giving up on %s", filename, failures[-1])
    detail = "\n  ".join(failures)
    raise DataError(
        f"could not fetch {filename} from any mirror:\n  {detail}\n"
        f"Set {dataset.env_var} to a reachable URL or a local directory holding the {dataset.name} files "
        f"({', '.join(f + '.gz' for f in dataset.files)})."
    )


def fetch_dataset(dataset: Dataset, params: DataParams, out_dir: Path, progress: bool = True) -> list[FetchResult]:
    """Fetch and verify all files of `dataset` into `out_dir` (which should be a fresh directory)."""
    mirrors = resolve_mirrors(params, dataset=dataset)
    for mirror in mirrors:
        if not _is_url(mirror) and urllib.parse.urlsplit(mirror).scheme not in ("", "file"):
            raise DataError(
                f"{dataset.name} mirror {mirror!r} is neither an http(s) URL nor a local directory "
                f"(check ${dataset.env_var} and {dataset.params_key}.mirrors)"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    sha256 = dataset.settings(params).sha256
    local = [_local(m) for m in mirrors]
    return [fetch_file(name, sha256[name], local, out_dir, params, progress, dataset=dataset) for name in dataset.files]


def fetch_all(params: DataParams, out_dir: Path, progress: bool = True) -> list[FetchResult]:
    """The four MNIST files into `out_dir`."""
    return fetch_dataset(MNIST, params, out_dir, progress)


def fetch_usps(params: DataParams, out_dir: Path, progress: bool = True) -> list[FetchResult]:
    """USPS's zip.train.gz and zip.test.gz into `out_dir`."""
    return fetch_dataset(USPS, params, out_dir, progress)


def _local(mirror: str) -> str:
    if mirror.startswith("file://"):
        return urllib.parse.unquote(urllib.parse.urlsplit(mirror).path)
    return mirror

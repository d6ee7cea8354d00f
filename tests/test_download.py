"""The real download code against a loopback mirror that fails on demand."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import subset_sha256

from mnist_cnn import download
from mnist_cnn.config import MNIST_FILES, DataParams
from mnist_cnn.errors import DataError
from mnist_cnn.schema import from_mapping

LABELS = "train-labels-idx1-ubyte"  # the smallest training file: quick to serve many times
LABELS_GZ = f"{LABELS}.gz"


@pytest.fixture(autouse=True)
def _no_env_mirror(monkeypatch):
    monkeypatch.delenv("MNIST_MIRROR", raising=False)


def make_params(mirrors, **overrides) -> DataParams:
    values = {
        "sha256": subset_sha256(),
        "mirrors": list(mirrors),
        "timeout_s": 2,
        "retries": 2,
        "backoff_s": 0.01,
        "val_fraction": 0.1,
        "split_seed": 42,
        "feedback_use": "evaluate",
    }
    values.update(overrides)
    return from_mapping(DataParams, values, prefix="data")


def backup_url(mirror) -> str:
    """A second mirror URL on the same server (it serves by basename), told apart by its path."""
    return mirror.url.replace("/mnist/", "/backup/")


def fetch(name, mirrors, out_dir, params=None, sleep=None):
    params = params or make_params(mirrors)
    kwargs = {"progress": False}
    if sleep is not None:
        kwargs["sleep"] = sleep
    return download.fetch_file(name, subset_sha256()[name], mirrors, out_dir, params, **kwargs)


def content_sha256(path: Path) -> str:
    return hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest()


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def deflate_error_offset(body: bytes) -> int:
    """An offset where flipping one byte breaks the deflate stream itself (zlib.error), not
    just the trailing CRC."""
    import zlib

    for i in range(10, len(body) - 8):
        try:
            gzip.decompress(body[:i] + bytes([body[i] ^ 0xFF]) + body[i + 1 :])
        except zlib.error:
            return i
        except (OSError, EOFError):
            continue
    raise AssertionError("no offset gives a zlib.error")


# --- the happy path -------------------------------------------------------------------------


def test_fetch_all_downloads_and_verifies_all_four_files(mirror, subset_dir, tmp_path):
    out = tmp_path / "raw"
    results = download.fetch_all(make_params([mirror.url]), out, progress=False)

    sums = subset_sha256()
    assert [r.name for r in results] == list(MNIST_FILES)
    assert listing(out) == sorted(f"{n}.gz" for n in MNIST_FILES), "only the four files, no temp files"
    for r in results:
        path = out / f"{r.name}.gz"
        assert r.mirror == mirror.url
        assert r.attempts == 1
        assert r.sha256 == sums[r.name] == content_sha256(path)
        assert r.compressed_bytes == path.stat().st_size
        assert r.decompressed_bytes == len(gzip.decompress(path.read_bytes()))
        assert path.read_bytes() == (subset_dir / path.name).read_bytes()
    assert sorted(p.rsplit("/", 1)[-1] for p in mirror.requests) == sorted(f"{n}.gz" for n in MNIST_FILES)


def test_gunzip_sha256_hashes_the_decompressed_content(subset_dir):
    digest, size = download.gunzip_sha256(subset_dir / LABELS_GZ)
    assert digest == subset_sha256()[LABELS]
    assert size == 8 + 2000


def test_gunzip_sha256_rejects_content_over_the_limit(subset_dir):
    with pytest.raises(DataError, match="decompresses to more than 100 bytes"):
        download.gunzip_sha256(subset_dir / LABELS_GZ, limit=100)


# --- failover and retries -------------------------------------------------------------------


def test_404_on_first_mirror_falls_through_to_the_second(mirror, tmp_path):
    mirror.faults[LABELS_GZ] = [404]
    backup = backup_url(mirror)
    result = fetch(LABELS, [mirror.url, backup], tmp_path)
    assert result.mirror == backup
    assert result.attempts == 1
    assert mirror.requests == ["/mnist/" + LABELS_GZ, "/backup/" + LABELS_GZ], "a 404 must not be retried"
    assert content_sha256(tmp_path / LABELS_GZ) == subset_sha256()[LABELS]


def test_500_then_success_is_retried_on_the_same_mirror_with_backoff(mirror, tmp_path):
    mirror.faults[LABELS_GZ] = [500]
    delays: list[float] = []
    result = fetch(LABELS, [mirror.url, backup_url(mirror)], tmp_path, sleep=delays.append)
    assert result.mirror == mirror.url
    assert result.attempts == 2
    assert delays == [pytest.approx(0.01)]
    assert mirror.requests == ["/mnist/" + LABELS_GZ] * 2


def test_429_is_retried(mirror, tmp_path):
    mirror.faults[LABELS_GZ] = [429]
    result = fetch(LABELS, [mirror.url], tmp_path)
    assert (result.mirror, result.attempts) == (mirror.url, 2)


def test_backoff_doubles_each_attempt(mirror, tmp_path):
    mirror.faults[LABELS_GZ] = [503, 503, 503]
    delays: list[float] = []
    params = make_params([mirror.url], retries=4, backoff_s=0.5)
    result = fetch(LABELS, [mirror.url], tmp_path, params=params, sleep=delays.append)
    assert result.attempts == 4
    assert delays == [0.5, 1.0, 2.0]


def test_exhausted_retries_fall_through_to_the_next_mirror(mirror, tmp_path):
    mirror.faults[LABELS_GZ] = [500, 502]
    backup = backup_url(mirror)
    result = fetch(LABELS, [mirror.url, backup], tmp_path)
    assert result.mirror == backup
    assert result.attempts == 1
    assert mirror.requests == ["/mnist/" + LABELS_GZ] * 2 + ["/backup/" + LABELS_GZ]


def test_corrupted_download_falls_through_to_the_next_mirror(mirror, tmp_path):
    mirror.faults[LABELS_GZ] = ["flip"]
    backup = backup_url(mirror)
    result = fetch(LABELS, [mirror.url, backup], tmp_path)
    assert result.mirror == backup
    assert mirror.requests == ["/mnist/" + LABELS_GZ, "/backup/" + LABELS_GZ], "bad content must not be retried"
    assert content_sha256(tmp_path / LABELS_GZ) == subset_sha256()[LABELS]
    assert listing(tmp_path) == [LABELS_GZ]


def test_checksum_mismatch_falls_through_to_the_next_mirror(mirror, subset_dir, tmp_path):
    # A valid gzip holding the wrong content: the t10k labels under the training labels' name.
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    shutil.copy(subset_dir / "t10k-labels-idx1-ubyte.gz", wrong / LABELS_GZ)
    out = tmp_path / "out"
    out.mkdir()

    with pytest.raises(DataError, match="checksum mismatch"):
        fetch(LABELS, [str(wrong)], out)
    assert listing(out) == []

    result = fetch(LABELS, [str(wrong), mirror.url], out)
    assert result.mirror == mirror.url
    assert content_sha256(out / LABELS_GZ) == subset_sha256()[LABELS]


def test_corrupt_deflate_stream_falls_through_to_the_next_mirror(mirror, subset_dir, tmp_path):
    body = (subset_dir / LABELS_GZ).read_bytes()
    i = deflate_error_offset(body)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / LABELS_GZ).write_bytes(body[:i] + bytes([body[i] ^ 0xFF]) + body[i + 1 :])
    out = tmp_path / "out"
    out.mkdir()
    result = fetch(LABELS, [str(bad), mirror.url], out)
    assert result.mirror == mirror.url


def test_truncated_download_is_retried(mirror, tmp_path):
    mirror.faults[LABELS_GZ] = ["truncate"]
    result = fetch(LABELS, [mirror.url, backup_url(mirror)], tmp_path)
    assert result.mirror == mirror.url
    assert result.attempts == 2
    assert content_sha256(tmp_path / LABELS_GZ) == subset_sha256()[LABELS]
    assert listing(tmp_path) == [LABELS_GZ]


def test_hanging_mirror_fails_over_within_the_timeout(mirror, tmp_path):
    mirror.faults[LABELS_GZ] = ["hang", "hang"]
    backup = backup_url(mirror)
    params = make_params([mirror.url, backup], timeout_s=0.5)
    start = time.monotonic()
    result = fetch(LABELS, [mirror.url, backup], tmp_path, params=params)
    elapsed = time.monotonic() - start
    assert result.mirror == backup
    assert elapsed < 10, f"took {elapsed:.1f}s; the hang lasts 30s, the timeout is 0.5s"
    assert listing(tmp_path) == [LABELS_GZ]


def test_http_redirect_on_the_same_scheme_is_followed(mirror, tmp_path):
    target = backup_url(mirror) + LABELS_GZ
    mirror.faults[LABELS_GZ] = [("redirect", target)]
    result = fetch(LABELS, [mirror.url], tmp_path)
    assert result.mirror == mirror.url
    assert mirror.requests == ["/mnist/" + LABELS_GZ, "/backup/" + LABELS_GZ]


def test_local_directory_without_the_file_falls_through(mirror, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = fetch(LABELS, [str(empty), mirror.url], tmp_path / "out")
    assert result.mirror == mirror.url


# --- total failure --------------------------------------------------------------------------


def test_all_mirrors_bad_raises_data_error_listing_every_mirror(mirror, tmp_path):
    backup = backup_url(mirror)
    third = mirror.url.replace("/mnist/", "/third/")
    mirror.faults[LABELS_GZ] = [404, 500, 500, "flip"]
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DataError) as info:
        fetch(LABELS, [mirror.url, backup, third], out)
    message = str(info.value)
    assert f"could not fetch {LABELS_GZ} from any mirror" in message
    for url in (mirror.url, backup, third):
        assert url in message
    assert "HTTP 404" in message
    assert "HTTP 500" in message and "after 2 attempts" in message
    assert "MNIST_MIRROR" in message, "the message should say how to fix it"
    assert listing(out) == [], "no temp or partial files after failures"


def test_failed_fetch_leaves_no_temp_files_and_an_existing_file_untouched(mirror, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / LABELS_GZ).write_bytes(b"previous content")
    mirror.faults[LABELS_GZ] = ["truncate", "truncate"]
    with pytest.raises(DataError, match="connection closed after"):
        fetch(LABELS, [mirror.url], out)
    assert listing(out) == [LABELS_GZ]
    assert (out / LABELS_GZ).read_bytes() == b"previous content"


def test_fetch_all_failure_leaves_no_partial_files(mirror, tmp_path):
    out = tmp_path / "out"
    mirror.faults["t10k-images-idx3-ubyte.gz"] = ["flip"]
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz"):
        download.fetch_all(make_params([mirror.url]), out, progress=False)
    names = listing(out)
    assert all(not n.startswith(".") for n in names), f"temp files left behind: {names}"
    assert "t10k-images-idx3-ubyte.gz" not in names


def test_mirror_that_is_neither_url_nor_directory_is_rejected_before_fetching(mirror, tmp_path):
    with pytest.raises(DataError, match=r"mirror 'ftp://example\.com/mnist/' is neither"):
        download.fetch_all(make_params(["ftp://example.com/mnist/", mirror.url]), tmp_path / "out", progress=False)
    assert mirror.requests == []


# --- MNIST_MIRROR ---------------------------------------------------------------------------


def test_resolve_mirrors_puts_mnist_mirror_first_without_duplicates():
    params = make_params(["https://a.example/", "https://b.example/"])
    assert download.resolve_mirrors(params, env={}) == ["https://a.example/", "https://b.example/"]
    assert download.resolve_mirrors(params, env={"MNIST_MIRROR": "/data/mnist"}) == [
        "/data/mnist",
        "https://a.example/",
        "https://b.example/",
    ]
    assert download.resolve_mirrors(params, env={"MNIST_MIRROR": " https://b.example/ "}) == [
        "https://b.example/",
        "https://a.example/",
    ]
    assert download.resolve_mirrors(params, env={"MNIST_MIRROR": "   "}) == ["https://a.example/", "https://b.example/"]


def test_resolve_mirrors_reads_the_environment(monkeypatch):
    monkeypatch.setenv("MNIST_MIRROR", "/somewhere")
    assert download.resolve_mirrors(make_params(["https://a.example/"]))[0] == "/somewhere"


@pytest.mark.parametrize("as_uri", [False, True], ids=["path", "file-uri"])
def test_mnist_mirror_local_directory_is_tried_first(monkeypatch, mirror, subset_dir, tmp_path, as_uri):
    monkeypatch.setenv("MNIST_MIRROR", subset_dir.as_uri() if as_uri else str(subset_dir))
    out = tmp_path / "raw"
    results = download.fetch_all(make_params([mirror.url]), out, progress=False)
    assert [r.name for r in results] == list(MNIST_FILES)
    assert {r.mirror for r in results} == {str(subset_dir)}
    assert mirror.requests == [], "the configured mirrors must not be contacted"
    for name in MNIST_FILES:
        assert (out / f"{name}.gz").read_bytes() == (subset_dir / f"{name}.gz").read_bytes()


# --- redirects ------------------------------------------------------------------------------


def test_https_to_http_redirect_is_refused():
    handler = download._NoDowngradeRedirect()
    request = urllib.request.Request("https://mirror.example/mnist/" + LABELS_GZ)
    with pytest.raises(download._Fatal, match="refused redirect from https to http"):
        handler.redirect_request(request, None, 302, "Found", {}, "http://evil.example/" + LABELS_GZ)


def test_https_to_https_redirect_is_allowed():
    handler = download._NoDowngradeRedirect()
    request = urllib.request.Request("https://mirror.example/mnist/" + LABELS_GZ)
    new = handler.redirect_request(request, None, 302, "Found", {}, "https://cdn.example/" + LABELS_GZ)
    assert new is not None and new.full_url == "https://cdn.example/" + LABELS_GZ

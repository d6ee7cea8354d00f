"""The real download code against a loopback mirror that fails on demand: MNIST, then USPS
(the USPS-format fixture files made from the MNIST subset), then the stage end to end."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from helpers import ROOT, MirrorServer, clean_env, read_sha256sums, stage_cmd, subset_sha256
from mnist_cnn import config, download
from mnist_cnn.config import MNIST_FILES, USPS_FILES, DataParams
from mnist_cnn.errors import DataError
from mnist_cnn.schema import dump_yaml, from_mapping, read_yaml, replace

LABELS = "train-labels-idx1-ubyte"  # the smallest training file: quick to serve many times
LABELS_GZ = f"{LABELS}.gz"
USPS_GZ = sorted(f"{n}.gz" for n in USPS_FILES)
UNUSED_USPS = {"mirrors": ["https://usps.invalid/"], "sha256": {name: "0" * 64 for name in USPS_FILES}}


@pytest.fixture(autouse=True)
def _no_env_mirror(monkeypatch):
    monkeypatch.delenv("MNIST_MIRROR", raising=False)
    monkeypatch.delenv("USPS_MIRROR", raising=False)


def make_params(mirrors, usps=UNUSED_USPS, **overrides) -> DataParams:
    values = {
        "sha256": subset_sha256(),
        "mirrors": list(mirrors),
        "usps": usps,
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


# --- USPS -----------------------------------------------------------------------------------


@pytest.fixture
def usps_mirror(usps_subset_dir):
    server = MirrorServer(usps_subset_dir)
    yield server
    server.close()


def usps_on(mirrors, directory: Path) -> dict:
    """params' data.usps: these mirrors, the checksums of the fixture files in `directory`."""
    return {"mirrors": [str(m) for m in mirrors], "sha256": read_sha256sums(directory)}


def test_the_usps_fixture_is_deterministic_and_in_the_real_files_text_formats(usps_subset_dir, tmp_path):
    import re

    from usps_fixture import write_usps_fixture

    assert write_usps_fixture(tmp_path) == read_sha256sums(usps_subset_dir)
    assert [(tmp_path / n).read_bytes() for n in USPS_GZ] == [(usps_subset_dir / n).read_bytes() for n in USPS_GZ]
    patterns = {"zip.train": r"\d\.0000( -?[01]\.\d{4}){256} \n", "zip.test": r"\d( -?(1|0(\.\d{0,2}[1-9])?)){256}\n"}
    for name, pattern in patterns.items():
        lines = gzip.decompress((tmp_path / f"{name}.gz").read_bytes()).decode().splitlines(keepends=True)
        assert len(lines) == 60 and all(re.fullmatch(pattern, line) for line in lines), lines[0][:80]
        for real in REAL_USPS:
            with gzip.open(real / f"{name}.gz", "rt") as fh:
                assert re.fullmatch(pattern, fh.readline()), f"the real {name} has another format"
        values = [float(v) for line in lines for v in line.split()[1:]]
        assert min(values) == -1 and max(values) == 1, "paper -1, ink 1"


def test_fetch_usps_downloads_and_verifies_both_files(usps_mirror, usps_subset_dir, tmp_path):
    out = tmp_path / "usps"
    results = download.fetch_usps(
        make_params(["https://mnist.invalid/"], usps_on([usps_mirror.url], usps_subset_dir)), out, progress=False
    )
    assert [r.name for r in results] == list(USPS_FILES)
    assert listing(out) == USPS_GZ, "only the two files, no temp files"
    for r in results:
        path = out / f"{r.name}.gz"
        assert (r.mirror, r.attempts) == (usps_mirror.url, 1)
        assert r.sha256 == read_sha256sums(usps_subset_dir)[r.name] == content_sha256(path)
        assert path.read_bytes() == (usps_subset_dir / path.name).read_bytes()
    assert sorted(p.rsplit("/", 1)[-1] for p in usps_mirror.requests) == USPS_GZ


def test_usps_checksum_mismatch_on_the_first_mirror_falls_over_to_the_second(usps_mirror, usps_subset_dir, tmp_path):
    swapped = tmp_path / "swapped"  # valid gzip files of the right format, each holding the other's content
    swapped.mkdir()
    shutil.copy(usps_subset_dir / "zip.test.gz", swapped / "zip.train.gz")
    shutil.copy(usps_subset_dir / "zip.train.gz", swapped / "zip.test.gz")
    first = MirrorServer(swapped)
    try:
        params = make_params(["https://mnist.invalid/"], usps_on([first.url, usps_mirror.url], usps_subset_dir))
        results = download.fetch_usps(params, tmp_path / "out", progress=False)
    finally:
        first.close()
    assert {r.mirror for r in results} == {usps_mirror.url}
    assert sorted(p.rsplit("/", 1)[-1] for p in first.requests) == USPS_GZ, "the first mirror was tried, once a file"
    for name in USPS_FILES:
        assert content_sha256(tmp_path / "out" / f"{name}.gz") == read_sha256sums(usps_subset_dir)[name]
    assert listing(tmp_path / "out") == USPS_GZ


@pytest.mark.parametrize("as_uri", [False, True], ids=["path", "file-uri"])
def test_usps_mirror_local_directory_is_tried_first_offline(
    monkeypatch, usps_mirror, usps_subset_dir, subset_dir, tmp_path, as_uri
):
    monkeypatch.setenv("USPS_MIRROR", usps_subset_dir.as_uri() if as_uri else str(usps_subset_dir))
    monkeypatch.setenv("MNIST_MIRROR", str(subset_dir))
    params = make_params(
        ["https://mnist.invalid/"], usps_on([usps_mirror.url, "https://usps.invalid/"], usps_subset_dir)
    )
    results = download.fetch_usps(params, tmp_path / "usps", progress=False)
    assert {r.mirror for r in results} == {str(usps_subset_dir)}
    assert usps_mirror.requests == [], "the configured mirrors must not be contacted"
    for name in USPS_GZ:
        assert (tmp_path / "usps" / name).read_bytes() == (usps_subset_dir / name).read_bytes()


def test_each_data_set_reads_its_own_mirror_variable():
    params = make_params(["https://mnist.example/"], {**UNUSED_USPS, "mirrors": ["https://usps.example/"]})
    env = {"MNIST_MIRROR": "/data/mnist", "USPS_MIRROR": "/data/usps"}
    assert download.resolve_mirrors(params, env=env) == ["/data/mnist", "https://mnist.example/"]
    assert download.resolve_mirrors(params, env=env, dataset=download.USPS) == ["/data/usps", "https://usps.example/"]
    assert download.resolve_mirrors(params, env={"MNIST_MIRROR": "/data/mnist"}, dataset=download.USPS) == [
        "https://usps.example/"
    ]


def test_no_mirror_serving_usps_names_usps_mirror_and_the_usps_files(usps_mirror, usps_subset_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for name in USPS_GZ:
        usps_mirror.faults[name] = [404]
    out = tmp_path / "out"
    params = make_params(["https://mnist.invalid/"], usps_on([str(empty), usps_mirror.url], usps_subset_dir))
    with pytest.raises(DataError) as info:
        download.fetch_usps(params, out, progress=False)
    message = str(info.value)
    assert "could not fetch zip.train.gz from any mirror" in message
    assert str(empty) in message and usps_mirror.url in message and "HTTP 404" in message
    assert "Set USPS_MIRROR" in message and "USPS files (zip.train.gz, zip.test.gz)" in message
    assert "MNIST" not in message
    assert listing(out) == [], "no temp or partial files"


def test_usps_size_limits_name_usps(usps_mirror, usps_subset_dir, tmp_path):
    with pytest.raises(DataError, match="decompresses to more than 100 bytes; too large for a USPS file"):
        download.gunzip_sha256(usps_subset_dir / "zip.test.gz", limit=100, dataset=download.USPS)
    tiny = dataclasses.replace(download.USPS, max_download_bytes=1000)
    params = make_params(["https://mnist.invalid/"], usps_on([usps_mirror.url], usps_subset_dir))
    with pytest.raises(DataError, match="more than 1000 bytes; too large for a USPS file"):
        download.fetch_file(
            "zip.test",
            params.usps.sha256["zip.test"],
            [usps_mirror.url],
            tmp_path,
            params,
            progress=False,
            dataset=tiny,
        )


REAL_USPS = [p for p in (Path("/work/shared/usps"), ROOT.parent / "shared" / "usps") if (p / "zip.test.gz").is_file()]


@pytest.mark.skipif(
    not REAL_USPS, reason="no offline copy of the real USPS files at /work/shared/usps or ../shared/usps"
)
def test_the_real_usps_files_match_params_yaml(monkeypatch, tmp_path):
    monkeypatch.setenv("USPS_MIRROR", str(REAL_USPS[0]))
    params = replace(config.load_params(ROOT / "params.yaml").data, retries=1, timeout_s=5)
    results = download.fetch_usps(params, tmp_path, progress=False)
    assert {r.mirror for r in results} == {str(REAL_USPS[0])}, "verified from the local copy"
    assert {r.name: r.sha256 for r in results} == params.usps.sha256


# --- the download stage, end to end ---------------------------------------------------------


def run_stage(tmp_path: Path, data: dict, **env: str) -> subprocess.CompletedProcess:
    """stages/download.py (dvc.yaml's command) into tmp_path/data, with params.yaml's `data` updated."""
    params = read_yaml(ROOT / "params.yaml")
    params["data"].update(data)
    (tmp_path / "params.yaml").write_text(dump_yaml(params))
    cmd = stage_cmd(
        "download",
        "--out-dir",
        str(tmp_path / "data" / "raw"),
        "--usps-dir",
        str(tmp_path / "data" / "usps"),
        "--params",
        str(tmp_path / "params.yaml"),
    )
    env = clean_env(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}", **env)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_download_stage_writes_mnist_and_usps_and_logs_all_six_files(mirror, usps_mirror, usps_subset_dir, tmp_path):
    data = {"mirrors": [mirror.url], "sha256": subset_sha256(), "usps": usps_on([usps_mirror.url], usps_subset_dir)}
    proc = run_stage(tmp_path, data, USPS_MIRROR=str(usps_subset_dir))
    assert proc.returncode == 0, proc.stderr
    assert listing(tmp_path / "data") == ["raw", "usps"], "no temp folders left"
    assert listing(tmp_path / "data" / "raw") == sorted(f"{n}.gz" for n in MNIST_FILES)
    assert listing(tmp_path / "data" / "usps") == USPS_GZ
    assert usps_mirror.requests == [], "$USPS_MIRROR comes first"
    lines = proc.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [*MNIST_FILES, *USPS_FILES]
    assert all(line.endswith("... ok)") for line in lines)

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run_,) = client.search_runs([client.get_experiment_by_name("mnist-cnn").experiment_id])
    assert run_.data.tags["mnist_cnn.usps_mirror_env"] == str(usps_subset_dir)
    assert run_.data.tags["mnist_cnn.mirror_env"] == ""
    assert run_.data.params["data.usps.sha256.zip.test"] == read_sha256sums(usps_subset_dir)["zip.test"]
    assert run_.data.params["data.usps.mirrors"] == f"[{usps_mirror.url}]"
    table = json.loads(
        Path(client.download_artifacts(run_.info.run_id, "download/files.json", str(tmp_path))).read_text()
    )
    assert table["data"] and [row[0] for row in table["data"]] == [*MNIST_FILES, *USPS_FILES]
    sources = dict(zip(table["columns"], zip(*table["data"], strict=True), strict=True))["source"]
    assert sources == (mirror.url,) * 4 + (str(usps_subset_dir),) * 2


@pytest.mark.slow
def test_download_stage_that_cannot_fetch_usps_leaves_nothing_half_written(
    mirror, usps_mirror, usps_subset_dir, tmp_path
):
    for name in USPS_GZ:
        usps_mirror.faults[name] = [404]
    empty = tmp_path / "empty"
    empty.mkdir()
    data = {"mirrors": [mirror.url], "sha256": subset_sha256(), "usps": usps_on([usps_mirror.url], usps_subset_dir)}
    proc = run_stage(tmp_path, data, USPS_MIRROR=str(empty))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    error = proc.stderr[proc.stderr.index("error: ") :]
    assert "zip.train.gz" in error and "Set USPS_MIRROR" in error and str(empty) in error, error
    assert any(p.endswith("train-images-idx3-ubyte.gz") for p in mirror.requests), "MNIST was fetched first"
    assert not (tmp_path / "data").exists() or listing(tmp_path / "data") == [], "no data/raw, data/usps or temp folder"

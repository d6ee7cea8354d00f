"""Outputs appear whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from mnist_cnn import atomic


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


class Boom(Exception):
    pass


# --- atomic_path ----------------------------------------------------------------------------


def test_atomic_path_replaces_the_file_on_success(tmp_path):
    target = tmp_path / "model.keras"
    target.write_text("old")
    with atomic.atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        assert tmp.name.endswith(".keras"), "writers that check the suffix must accept it"
        tmp.write_text("new")
        assert target.read_text() == "old", "the target must not change before the body ends"
    assert target.read_text() == "new"
    assert names(tmp_path) == ["model.keras"]


def test_atomic_path_keeps_the_old_file_and_leaves_no_temp_file_on_error(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with pytest.raises(Boom):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("half-writ")
            raise Boom
    assert target.read_text() == "old"
    assert names(tmp_path) == ["metrics.json"]


def test_atomic_path_creates_nothing_on_error_when_there_was_no_file(tmp_path):
    target = tmp_path / "sub" / "train.npz"
    with pytest.raises(Boom):
        with atomic.atomic_path(target) as tmp:
            tmp.write_bytes(b"x")
            raise Boom
    assert names(tmp_path / "sub") == []


def test_atomic_path_when_the_body_never_writes_leaves_an_empty_file(tmp_path):
    target = tmp_path / "out.txt"
    with atomic.atomic_path(target):
        pass
    assert target.read_bytes() == b""
    assert names(tmp_path) == ["out.txt"]


def test_write_helpers(tmp_path):
    atomic.write_json(tmp_path / "a.json", {"b": 1, "a": [1, 2]})
    assert (tmp_path / "a.json").read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    atomic.write_csv(tmp_path / "t.csv", ["x", "y"], [[1, 2], [3, 4]])
    assert (tmp_path / "t.csv").read_text() == "x,y\n1,2\n3,4\n"
    assert names(tmp_path) == ["a.json", "t.csv"]


# --- atomic_dir -----------------------------------------------------------------------------


def test_atomic_dir_replaces_a_directory_whole(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "stale.bin").write_text("old")
    (target / "keep-name.txt").write_text("old")
    with atomic.atomic_dir(target) as tmp:
        assert tmp.is_dir() and list(tmp.iterdir()) == []
        (tmp / "keep-name.txt").write_text("new")
        (tmp / "nested").mkdir()
        (tmp / "nested" / "f").write_text("n")
        assert (target / "stale.bin").exists(), "the old directory stays until the body ends"
    assert names(target) == ["keep-name.txt", "nested"], "nothing of the old directory may survive"
    assert (target / "keep-name.txt").read_text() == "new"
    assert (target / "nested" / "f").read_text() == "n"
    assert names(tmp_path) == ["model"], "no .tmp or .old directories left behind"


def test_atomic_dir_creates_a_new_directory(tmp_path):
    target = tmp_path / "deep" / "out"
    with atomic.atomic_dir(target) as tmp:
        (tmp / "f").write_text("x")
    assert names(target) == ["f"]
    assert names(tmp_path / "deep") == ["out"]


def test_atomic_dir_leaves_the_old_directory_and_nothing_else_on_error(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "weights").write_text("old")
    with pytest.raises(Boom):
        with atomic.atomic_dir(target) as tmp:
            (tmp / "weights").write_text("partial")
            raise Boom
    assert names(target) == ["weights"]
    assert (target / "weights").read_text() == "old"
    assert names(tmp_path) == ["model"]


def test_atomic_dir_on_error_without_an_old_directory_leaves_nothing(tmp_path):
    with pytest.raises(Boom):
        with atomic.atomic_dir(tmp_path / "out") as tmp:
            (tmp / "f").write_text("x")
            raise Boom
    assert names(tmp_path) == []

"""The feedback store keeps an image sent with different labels once, apart from training and
evaluation, until a person files it under a label (`mnist-cnn feedback`); real files in
tmp_path, real PNG drawings."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from digit_images import make_set
from helpers import ROOT
from mnist_cnn import feedback
from mnist_cnn.data import Split

DIGITS = make_set(per_digit=1, seed=11)  # one drawn PNG of each digit


def image(i: int) -> bytes:
    return DIGITS[i].data


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def record(path: Path) -> dict:
    return json.loads(path.with_suffix(".json").read_text())


def test_an_image_sent_with_two_labels_is_kept_once_in_conflicts_and_out_of_load(tmp_path):
    store = feedback.FeedbackStore(tmp_path / "fb")
    first = store.save(image(3), 3)
    assert first == tmp_path / "fb" / "3" / f"{first.stem}.png"
    other = store.save(image(1), 1)
    conflict = store.save(image(3), 5)
    assert conflict == tmp_path / "fb" / "conflicts" / first.name
    assert f"{conflict.parent.name}/{conflict.name}" == f"conflicts/{first.name}", "what the page shows"
    assert conflict.read_bytes() == tree(tmp_path / "fb")[f"conflicts/{first.name}"]
    pngs = sorted(p.relative_to(tmp_path / "fb").as_posix() for p in (tmp_path / "fb").rglob("*.png"))
    assert pngs == [f"1/{other.name}", f"conflicts/{first.name}"], "one stored copy, left its label folder"
    labels = record(conflict)["labels"]
    assert record(conflict)["id"] == first.stem and sorted(labels) == ["3", "5"]
    assert all(entry["count"] == 1 and entry["first"] <= entry["last"] for entry in labels.values())
    x, y, paths = feedback.load(tmp_path / "fb")
    assert paths == [other] and y.tolist() == [1] and x.shape == (1, 28, 28)
    assert store.files() == [other]


def test_later_sends_of_a_conflict_add_to_its_record_with_any_label(tmp_path):
    store = feedback.FeedbackStore(tmp_path / "fb")
    store.save(image(4), 4)
    conflict = store.save(image(4), 9)
    assert store.save(image(4), 7) == conflict and store.save(image(4), 9) == conflict
    labels = record(conflict)["labels"]
    assert {label: entry["count"] for label, entry in labels.items()} == {"4": 1, "7": 1, "9": 2}
    assert [p.name for p in (tmp_path / "fb").rglob("*.png")] == [conflict.name]
    assert [p.name for p in (tmp_path / "fb" / "conflicts").iterdir() if not p.name.startswith(".")] == sorted(
        [conflict.name, conflict.with_suffix(".json").name]
    )


def test_the_same_image_with_the_same_label_is_stored_once(tmp_path):
    store = feedback.FeedbackStore(tmp_path / "fb")
    path = store.save(image(2), 2)
    before = tree(tmp_path / "fb")
    assert store.save(image(2), 2) == path
    assert tree(tmp_path / "fb") == before == {f"2/{path.name}": path.read_bytes()}


def test_concurrent_sends_with_different_labels_keep_one_copy_and_every_label(tmp_path):
    store = feedback.FeedbackStore(tmp_path / "fb")
    labels = [6, 0, 8, 6, 0, 8, 6, 0]
    threads = [threading.Thread(target=store.save, args=(image(6), label)) for label in labels]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    pngs = list((tmp_path / "fb").rglob("*.png"))
    assert len(pngs) == 1 and pngs[0].parent.name == "conflicts"
    assert sorted(record(pngs[0])["labels"]) == ["0", "6", "8"]
    assert not [p for p in (tmp_path / "fb").rglob(".*.tmp*")], "no temporary file left"


def test_accept_files_a_conflict_under_its_label_and_load_sees_it(tmp_path):
    folder = tmp_path / "fb"
    store = feedback.FeedbackStore(folder)
    store.save(image(7), 7)
    conflict = store.save(image(7), 1)
    data = conflict.read_bytes()
    assert [c.id for c in feedback.conflicts(folder)] == [conflict.stem]
    path = feedback.resolve(folder, conflict.stem[:5], 7)
    assert path == folder / "7" / conflict.name and path.read_bytes() == data
    assert not conflict.exists() and not conflict.with_suffix(".json").exists()
    assert feedback.conflicts(folder) == [] and feedback.counts(folder)["7"] == 1
    x, y, paths = feedback.load(folder)
    assert paths == [path] and y.tolist() == [7]
    assert store.save(image(7), 7) == path, "accepted: the same label again is a no-op"


def test_relabel_moves_a_labelled_image_to_another_label(tmp_path):
    folder = tmp_path / "fb"
    old = feedback.FeedbackStore(folder).save(image(5), 3)
    data = old.read_bytes()
    new = feedback.relabel(folder, old.stem, "5")
    assert new == folder / "5" / old.name and new.read_bytes() == data and not old.exists()
    assert feedback.load(folder)[1].tolist() == [5]
    assert feedback.relabel(folder, f"5/{old.name}", 5) == new, "the page's `5/<id>.png` works as an id"
    assert tree(folder) == {f"5/{old.name}": data}


def test_images_stored_twice_before_conflicts_existed_are_conflicts(tmp_path):
    folder = tmp_path / "fb"
    path = feedback.FeedbackStore(folder).save(image(8), 8)
    (folder / "3").mkdir()
    shutil.copyfile(path, folder / "3" / path.name)
    assert feedback.load(folder)[2] == []
    [conflict] = feedback.conflicts(folder)
    assert conflict.id == path.stem and sorted(conflict.labels) == ["3", "8"]
    assert feedback.resolve(folder, path.stem, 8) == path
    assert [p.relative_to(folder).as_posix() for p in folder.rglob("*.png")] == [f"8/{path.name}"]


def test_unknown_or_ambiguous_ids_bad_labels_and_missing_folders_are_errors_that_change_nothing(tmp_path):
    folder = tmp_path / "fb"
    store = feedback.FeedbackStore(folder)
    labelled = store.save(image(0), 0)
    store.save(image(9), 9)
    conflict = store.save(image(9), 4)
    (folder / "2").mkdir()
    for name in ("abcd000000000001", "abcd000000000002"):  # two real images whose ids share a prefix
        shutil.copyfile(labelled, folder / "2" / f"{name}.png")
    before = tree(folder)
    cases = [
        (feedback.resolve, "ffff", 4, "no feedback image with id ffff"),
        (feedback.resolve, "abcd", 4, "ambiguous"),
        (feedback.relabel, "abcd", 4, "ambiguous"),
        (feedback.resolve, "abc", 4, "not an image id"),
        (feedback.resolve, "zzzz", 4, "not an image id"),
        (feedback.resolve, conflict.stem, 10, "label must be a digit 0-9"),
        (feedback.resolve, conflict.stem, "x", "label must be a digit 0-9"),
        (feedback.resolve, conflict.stem, True, "label must be a digit 0-9"),
        (feedback.resolve, labelled.stem, 4, "no conflict: it is labelled 0; `mnist-cnn feedback relabel"),
        (feedback.relabel, conflict.stem, 9, "is a conflict"),
    ]
    for move, ident, label, message in cases:
        with pytest.raises(feedback.FeedbackError, match=message):
            move(folder, ident, label)
        assert tree(folder) == before, (ident, label)
    for call in (feedback.counts, feedback.conflicts):
        with pytest.raises(feedback.FeedbackError, match="no feedback folder"):
            call(tmp_path / "missing")
    with pytest.raises(feedback.FeedbackError, match="no feedback folder"):
        feedback.resolve(tmp_path / "missing", conflict.stem, 4)
    assert not (tmp_path / "missing").exists()


def test_the_limit_counts_conflicting_images(tmp_path):
    store = feedback.FeedbackStore(tmp_path / "fb", limit=2)
    store.save(image(1), 1)
    store.save(image(1), 7)
    store.save(image(2), 2)
    with pytest.raises(feedback.FeedbackFull, match="limit of 2 images"):
        store.save(image(3), 3)
    assert store.save(image(1), 4).parent.name == "conflicts", "a known image may still gain a label at the limit"
    assert len(list((tmp_path / "fb").rglob("*.png"))) == 2


@pytest.mark.parametrize("use", ["evaluate", "train"])
def test_the_preprocess_split_leaves_conflicts_out_of_training_and_feedback(tmp_path, use):
    store = feedback.FeedbackStore(tmp_path / "fb")
    for i in (0, 1):
        store.save(image(i), i)
    store.save(image(2), 2)
    store.save(image(2), 3)
    train = Split(np.zeros((5, 28, 28), np.uint8), np.full(5, 9, np.uint8))
    new_train, corrected = feedback.split(tmp_path / "fb", train, use)
    if use == "evaluate":
        assert new_train is train and sorted(corrected.y.tolist()) == [0, 1]
    else:
        assert len(corrected) == 0 and sorted(new_train.y.tolist()) == [0, 1, *[9] * 5]


# --- the command ---------------------------------------------------------------------------------

NO_TENSORFLOW = """
import sys
from mnist_cnn.cli import main
try:
    main(sys.argv[1:])
finally:
    heavy = sorted(m for m in ("tensorflow", "keras", "mlflow") if m in sys.modules)
    print("loaded:", ",".join(heavy) or "none", file=sys.stderr)
"""


def cli(*args: str) -> subprocess.CompletedProcess:
    """`mnist-cnn feedback ...` in a fresh interpreter, reporting whether TensorFlow or MLflow loaded."""
    return subprocess.run(
        [sys.executable, "-c", NO_TENSORFLOW, "feedback", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_the_feedback_command_lists_accepts_and_relabels_without_tensorflow(tmp_path):
    folder = tmp_path / "fb"
    store = feedback.FeedbackStore(folder)
    kept = store.save(image(1), 1)
    store.save(image(6), 6)
    conflict = store.save(image(6), 5)
    store.save(image(6), 5)

    listed = cli("list", "--dir", str(folder))
    assert listed.returncode == 0, listed.stderr
    assert "loaded: none" in listed.stderr
    assert f"{folder}: 1 labelled images, 1 conflicting" in listed.stdout
    assert "    1  1" in listed.stdout and "    6  0" in listed.stdout
    assert f"{conflict.stem}  labels 5 (x2), 6 (x1)  {conflict}" in listed.stdout

    before = tree(folder)
    for args, message in [
        (("accept", "ffff", "5"), "no feedback image with id ffff"),
        (("accept", conflict.stem[:4], "12"), "label must be a digit 0-9, got '12'"),
        (("relabel", conflict.stem[:4], "6"), "is a conflict"),
    ]:
        failed = cli(*args, "--dir", str(folder))
        assert failed.returncode == 1 and failed.stderr.startswith("error: "), failed.stderr
        assert message in failed.stderr and "loaded: none" in failed.stderr
        assert tree(folder) == before, args
    missing = cli("list", "--dir", str(tmp_path / "missing"))
    assert missing.returncode == 1 and missing.stderr.startswith("error: no feedback folder"), missing.stderr

    accepted = cli("accept", conflict.stem[:6], "6", "--dir", str(folder))
    assert accepted.returncode == 0, accepted.stderr
    assert f"{conflict.stem} is labelled 6: {folder / '6' / conflict.name}" in accepted.stdout
    relabelled = cli("relabel", kept.stem, "7", "--dir", str(folder))
    assert relabelled.returncode == 0, relabelled.stderr
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png")) == [
        f"6/{conflict.name}",
        f"7/{kept.name}",
    ]
    assert "0 conflicting" in cli("list", "--dir", str(folder)).stdout

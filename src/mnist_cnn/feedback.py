"""Digits people corrected on the web page ("that's wrong, it was 7"), kept to measure and
improve the model on real handwriting.

Stored as `<folder>/<label>/<id>.png`, the id being the first 16 hex digits of the PNG's sha256:
grayscale PNGs re-encoded from the decoded image (no metadata of the original kept), at most
`MAX_SIDE` px, named by their content so a repeat is stored once; the label is the folder name,
the layout `keras.utils.image_dataset_from_directory` reads. Nothing the client sends is used as
a path.

An image sent with two different labels is kept once, as `<folder>/conflicts/<id>.png` beside
`<id>.json` (each label given: its count, first and last time); it is out of `files()` and
`load()`, so out of training and evaluation, until a person files it under a label (`resolve`,
`mnist-cnn feedback accept`). An image moves by a copy under a temporary name renamed into
place; its old file is removed only once the new one exists."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mnist_cnn.atomic import atomic_path, write_json, write_text
from mnist_cnn.data import Split
from mnist_cnn.errors import MnistCnnError
from mnist_runtime import images

MAX_SIDE = 560  # px: ample for a 28x28 digit, small on disk
LABELS = tuple(str(d) for d in range(10))
CONFLICTS = "conflicts"
_ID = re.compile(r"[0-9a-f]{4,16}")


class FeedbackFull(MnistCnnError):
    """The feedback folder holds its limit of images."""


class FeedbackError(MnistCnnError):
    """An image id, label or folder asked for does not match what the feedback folder holds."""


@dataclasses.dataclass(frozen=True)
class Conflict:
    id: str
    labels: dict[str, dict[str, Any]]  # label -> {"count": n, "first": time, "last": time}
    path: Path


class FeedbackStore:
    """Saves corrected digits under `folder`, at most `limit` images in all (conflicts included)."""

    def __init__(self, folder: Path, limit: int = 5000):
        self.folder = Path(folder)
        self.limit = limit
        self._lock = threading.Lock()

    def files(self) -> list[Path]:
        """The images with one label: what training and evaluation use."""
        held, conflicting = _held(self.folder), _conflicting(self.folder)
        return sorted(
            self.folder / labels[0] / f"{id_}.png"
            for id_, labels in held.items()
            if len(labels) == 1 and id_ not in conflicting
        )

    def save(self, image: bytes, label: int) -> Path:
        """Store `image` (PNG/JPEG/BMP bytes) as a `label` and return where it now is (under
        conflicts/ once it has been sent with another label); ImageError if it holds no digit,
        FeedbackFull at the limit, ValueError for a label that is not a digit."""
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label <= 9:
            raise ValueError(f"label must be a digit 0-9, got {label!r}")
        gray = images.load_gray(image)
        images.mnist_style(gray)  # a digit is there (NoDigit otherwise)
        im = Image.fromarray(np.clip(np.rint(gray), 0, 255).astype(np.uint8), mode="L")
        im.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        im.save(buffer, format="PNG", optimize=True)
        png = buffer.getvalue()
        self.folder.mkdir(parents=True, exist_ok=True)
        with self._lock, _locked(self.folder):
            return self._add(hashlib.sha256(png).hexdigest()[:16], png, str(label))

    def _add(self, id_: str, png: bytes, label: str) -> Path:
        conflict = self.folder / CONFLICTS / f"{id_}.png"
        if conflict.exists():
            _write_record(conflict, _counted(_read_record(conflict), label))
            return conflict
        held = _held(self.folder)
        given = held.get(id_, [])
        if given == [label]:
            return self.folder / label / f"{id_}.png"
        if given:
            copies = [self.folder / other / f"{id_}.png" for other in given]
            labels = {copy.parent.name: _stamped(copy) for copy in copies}
            _gitignored(conflict.parent)
            _placed(copies[0], conflict)
            _write_record(conflict, _counted(labels, label))
            for copy in copies:
                copy.unlink()
            return conflict
        if len({*held, *_conflicting(self.folder)}) >= self.limit:
            raise FeedbackFull(
                f"the feedback folder {self.folder} holds its limit of {self.limit} images; "
                "fold them into training (README: Feedback) or raise --feedback-limit; "
                "`mnist-cnn feedback list` shows what it holds"
            )
        path = self.folder / label / f"{id_}.png"
        with atomic_path(path) as tmp:
            tmp.write_bytes(png)
        return path


def load(folder: Path) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """The stored digits with one label as MNIST-style (N, 28, 28) uint8 pixels, their labels
    and files; conflicting ones are left out."""
    paths = FeedbackStore(folder).files()
    x = np.empty((len(paths), images.SIZE, images.SIZE), np.uint8)
    for i, path in enumerate(paths):
        x[i] = images.prepare(path)
    y = np.array([int(p.parent.name) for p in paths], dtype=np.int64)
    return x, y, paths


def split(folder: Path, train: Split, use: str) -> tuple[Split, Split]:
    """The training split and the feedback split the preprocess stage writes: with `use` ==
    "evaluate" the feedback digits are a split of their own (the evaluate stage's
    `feedback_accuracy`); with "train" they join the training split and the feedback split is
    empty (a model is not measured on what it trained on). A missing folder is no feedback."""
    x, y, _ = load(folder) if Path(folder).is_dir() else (np.zeros((0, 28, 28), np.uint8), np.zeros(0), [])
    digits = Split(x, y.astype(np.uint8))
    if use != "train" or not len(digits):
        return train, digits
    empty = Split(x[:0], digits.y[:0])
    return Split(np.concatenate([train.x, digits.x]), np.concatenate([train.y, digits.y])), empty


# --- review: what `mnist-cnn feedback` shows and does ---------------------------------------------


def counts(folder: Path) -> dict[str, int]:
    """Images per label, conflicts left out."""
    found = dict.fromkeys(LABELS, 0)
    for path in FeedbackStore(_existing(folder)).files():
        found[path.parent.name] += 1
    return found


def conflicts(folder: Path) -> list[Conflict]:
    """The images given more than one label, by id: those in conflicts/ and any the label
    folders hold twice (stored before conflicts were kept apart)."""
    folder = _existing(folder)
    conflicting = _conflicting(folder)
    found = [
        Conflict(id_, _read_record(folder / CONFLICTS / f"{id_}.png"), folder / CONFLICTS / f"{id_}.png")
        for id_ in sorted(conflicting)
    ]
    for id_, labels in _held(folder).items():
        if len(labels) > 1 and id_ not in conflicting:
            copies = [folder / label / f"{id_}.png" for label in labels]
            found.append(Conflict(id_, {copy.parent.name: _stamped(copy) for copy in copies}, copies[0]))
    return sorted(found, key=lambda conflict: conflict.id)


def resolve(folder: Path, ident: str, label: int | str) -> Path:
    """File the conflicting image `ident` (its id or a unique prefix) under `label`, drop its
    conflict record and return its new path."""
    folder, label = _existing(folder), _label(label)
    with _locked(folder):
        id_ = _find(folder, ident)
        conflict = folder / CONFLICTS / f"{id_}.png"
        copies = [folder / held / f"{id_}.png" for held in _held(folder).get(id_, [])]
        if not conflict.exists() and len(copies) == 1:
            raise FeedbackError(
                f"{id_} is no conflict: it is labelled {copies[0].parent.name}; "
                f"`mnist-cnn feedback relabel {id_} LABEL` moves it to another label"
            )
        target = _placed(conflict if conflict.exists() else copies[0], folder / label / f"{id_}.png")
        for copy in copies:
            if copy != target:
                copy.unlink()
        conflict.with_suffix(".json").unlink(missing_ok=True)
        conflict.unlink(missing_ok=True)
    return target


def relabel(folder: Path, ident: str, label: int | str) -> Path:
    """Move the image `ident` (its id or a unique prefix) from its label to `label` and return
    its new path."""
    folder, label = _existing(folder), _label(label)
    with _locked(folder):
        id_ = _find(folder, ident)
        held = _held(folder).get(id_, [])
        if id_ in _conflicting(folder) or len(held) > 1:
            raise FeedbackError(
                f"{id_} is a conflict (see `mnist-cnn feedback list`); "
                f"`mnist-cnn feedback accept {id_} LABEL` files it under a label"
            )
        source = folder / held[0] / f"{id_}.png"
        target = _placed(source, folder / label / f"{id_}.png")
        if source != target:
            source.unlink()
    return target


# --- the folder's contents -----------------------------------------------------------------------


def _held(folder: Path) -> dict[str, list[str]]:
    """id -> the label folders holding it."""
    held: dict[str, list[str]] = {}
    for label in LABELS:
        for path in sorted((folder / label).glob("*.png")):
            if not path.name.startswith("."):
                held.setdefault(path.stem, []).append(label)
    return held


def _conflicting(folder: Path) -> set[str]:
    return {p.stem for p in (folder / CONFLICTS).glob("*.png") if not p.name.startswith(".")}


def _existing(folder: Path) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise FeedbackError(
            f"no feedback folder {folder}: `mnist-cnn app` creates it with the first correction; "
            "give --dir if it lives elsewhere"
        )
    return folder


def _label(value: int | str) -> str:
    if isinstance(value, bool) or str(value) not in LABELS:
        raise FeedbackError(f"label must be a digit 0-9, got {value!r}")
    return str(value)


def _find(folder: Path, ident: str) -> str:
    """The one id in `folder` that `ident` (an id, a prefix of 4 or more, or `<dir>/<id>.png`) names."""
    text = Path(str(ident)).name.lower().removesuffix(".png")
    if not _ID.fullmatch(text):
        raise FeedbackError(
            f"{ident!r} is not an image id: give its 16 hex characters or a unique prefix "
            "of at least 4 (`mnist-cnn feedback list` shows the conflicts' ids)"
        )
    matches = sorted(id_ for id_ in {*_held(folder), *_conflicting(folder)} if id_.startswith(text))
    if not matches:
        raise FeedbackError(
            f"no feedback image with id {text} in {folder}: `mnist-cnn feedback list --dir {folder}` "
            "shows the conflicts; a labelled image's id is its file name in <label>/"
        )
    if len(matches) > 1:
        raise FeedbackError(
            f"id {text} is ambiguous in {folder}: {', '.join(matches)} all start with it; give more characters"
        )
    return matches[0]


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Held by one process at a time (the web server, `mnist-cnn feedback`): a lock on the folder
    itself, so no lock file lies among the images."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):  # a file system without flock (NFS): the server's thread lock only
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _placed(source: Path, target: Path) -> Path:
    if not target.exists():
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
    return target


# --- conflict records ----------------------------------------------------------------------------


def _time(seconds: float | None = None) -> str:
    """UTC, to the second: now, or `seconds` since the epoch."""
    when = datetime.datetime.fromtimestamp(time.time() if seconds is None else seconds, datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _stamped(path: Path) -> dict[str, Any]:
    """One label given, at the time its file was stored."""
    when = _time(path.stat().st_mtime)
    return {"count": 1, "first": when, "last": when}


def _counted(labels: dict[str, dict[str, Any]], label: str) -> dict[str, dict[str, Any]]:
    now = _time()
    entry = labels.setdefault(label, {"count": 0, "first": now})
    entry["count"] = int(entry.get("count", 0)) + 1
    entry["last"] = now
    return labels


def _read_record(image: Path) -> dict[str, dict[str, Any]]:
    """The labels given to the conflicting `image`, from the JSON beside it ({} if there is none)."""
    record = image.with_suffix(".json")
    try:
        labels = json.loads(record.read_text())["labels"]
    except FileNotFoundError:
        return {}
    except (ValueError, KeyError, TypeError) as exc:
        raise FeedbackError(
            f"{record} is not a conflict record ({exc}); delete it: its image stays a conflict, with no labels listed"
        ) from None
    if not isinstance(labels, dict) or not all(isinstance(v, dict) for v in labels.values()):
        raise FeedbackError(
            f'{record}: "labels" must map each label to its count and times; delete it: its image '
            "stays a conflict, with no labels listed"
        )
    return labels


def _write_record(image: Path, labels: dict[str, dict[str, Any]]) -> None:
    write_json(image.with_suffix(".json"), {"id": image.stem, "labels": labels})


def _gitignored(folder: Path) -> None:
    ignore = folder / ".gitignore"
    if not ignore.exists():
        write_text(
            ignore,
            "# conflicting feedback images (mnist-cnn feedback list): never committed, like the label folders\n*\n",
        )

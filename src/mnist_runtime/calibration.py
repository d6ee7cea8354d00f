"""The calibration record a model file carries, and how the model answers with it.

Training fits a temperature (already baked into the network) and an abstain threshold
(`mnist_cnn.calibrate`); the record travels inside the `.keras` file as an extra
`mnist_cnn/calibration.json` entry, which Keras' loader passes over, so a copied model file keeps
its threshold. An answer under the threshold is "not sure"; the top digit stays available.
"""

from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path

import numpy as np

ENTRY = "mnist_cnn/calibration.json"
NOT_SURE = "not sure"  # the answer below the threshold, wherever the model answers


@dataclasses.dataclass(frozen=True)
class Calibration:
    temperature: float  # already applied inside the network; kept to undo it for "before" figures
    abstain_below: float  # confidence under which the answer is "not sure" (0: never)

    def sure(self, proba: np.ndarray) -> np.ndarray:
        return np.asarray(proba).max(axis=1) >= self.abstain_below

    def answers(self, proba: np.ndarray) -> list[str]:
        """Each image's answer: its top digit, or NOT_SURE under the threshold."""
        return [
            str(d) if s else NOT_SURE for d, s in zip(np.asarray(proba).argmax(axis=1), self.sure(proba), strict=True)
        ]


NONE = Calibration(temperature=1.0, abstain_below=0.0)  # a network calibrated by nothing


def write(keras_path: str | Path, calibration: Calibration) -> None:
    """Add the record to a saved `.keras` file (write it before renaming the file into place)."""
    with zipfile.ZipFile(keras_path, "a") as archive:
        archive.writestr(ENTRY, json.dumps(dataclasses.asdict(calibration)))


def read(keras_path: str | Path) -> Calibration:
    """The record inside a `.keras` file; NONE for a file without one (trained before calibration)."""
    try:
        with zipfile.ZipFile(keras_path) as archive:
            if ENTRY not in archive.namelist():
                return NONE
            raw = json.loads(archive.read(ENTRY))
    except (zipfile.BadZipFile, OSError, ValueError):
        return NONE
    return Calibration(temperature=float(raw["temperature"]), abstain_below=float(raw["abstain_below"]))

"""Samples for training and evaluation, and the leakage-free split.

A :class:`Sample` is one image file on disk and its face box (or ``None`` for
"no face"). Training reads the train split's augmented copies; validation and
evaluation read the original val/test images resized once (never augmented),
so no copy of a test image is ever trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facetrack.labels import Box

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Sample:
    """One image on disk and its face box, normalized (see :mod:`facetrack.labels`), or None."""

    path: Path
    box: Box | None
    source_id: str = ""  # id of the original project image this sample comes from

    @property
    def has_face(self) -> bool:
        return self.box is not None


def targets(samples: Sequence[Sample]) -> tuple[np.ndarray, np.ndarray]:
    """The training targets of ``samples``: ``class`` ``(N, 1)`` (1.0 = face) and ``bbox`` ``(N, 4)``.

    Both float32; a no-face sample's box is ``[0, 0, 0, 0]`` (what the
    localization loss skips).
    """
    cls = np.array([[1.0 if s.box is not None else 0.0] for s in samples], np.float32).reshape(-1, 1)
    box = np.array(
        [s.box.to_list() if s.box is not None else [0.0] * 4 for s in samples], np.float32
    ).reshape(-1, 4)
    return cls, box

"""Samples for training and evaluation, and the leakage-free split.

A :class:`Sample` is one image file on disk and its face box (or ``None`` for
"no face"). Training reads the train split's augmented copies; validation and
evaluation read the original val/test images resized once (never augmented),
so no copy of a test image is ever trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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

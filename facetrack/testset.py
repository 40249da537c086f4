"""How far the test photos can be trusted: how many, from how many separate moments, boxes from where.

A score on a handful of test photos moves a lot with a single photo, and
photos of one burst are near copies of each other (the split keeps a burst
on one side, so a test set may hold only one or two bursts). The thresholds:

- :data:`MIN_TEST_FACES` = 20 test photos with a face: below it one photo
  more or less right moves a face score by more than 5 points.
- :data:`MIN_TEST_MOMENTS` = 3 separate moments (a burst, or a single photo):
  fewer, and the test shows the model one or two situations (one room, one
  light, one shirt), not how it does in general.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from facetrack.box_sources import box_sources
from facetrack.data import Sample

logger = logging.getLogger(__name__)

MIN_TEST_FACES = 20
MIN_TEST_MOMENTS = 3
PRETRAINED_SOURCE = "mtcnn"


@dataclass(frozen=True)
class TestSetSummary:
    """Counts of the test photos (originals, not augmented copies)."""

    photos: int
    faces: int
    moments: int
    suggested_faces: int  # face photos whose boxes were accepted from the pretrained face finder
    hand_faces: int  # face photos whose boxes were drawn by hand or came from the user's own model
    unknown_faces: int  # face photos whose boxes' origin was not recorded (older labels, imports)

    @property
    def no_face(self) -> int:
        return self.photos - self.faces

    @property
    def too_few(self) -> bool:
        """True when the figures on these photos should not be trusted much."""
        return self.faces < MIN_TEST_FACES or self.moments < MIN_TEST_MOMENTS


def summarize_test_set(project: Any, samples: Sequence[Sample]) -> TestSetSummary:
    """Summarize the test ``samples`` of ``project`` (one sample per original photo)."""
    originals: dict[str, bool] = {}
    for s in samples:
        originals[s.source_id] = originals.get(s.source_id, False) or s.has_face
    moments: set[str] = set()
    for image_id in originals:
        try:
            burst = project.info(image_id).burst
        except (OSError, ValueError) as exc:
            logger.info("no meta for test photo %s: %s", image_id, exc)
            burst = None
        moments.add(f"burst:{burst}" if burst else f"photo:{image_id}")
    sources = box_sources(project)
    face_ids = [i for i, face in originals.items() if face]
    suggested = sum(1 for i in face_ids if sources.get(i) == PRETRAINED_SOURCE)
    hand = sum(1 for i in face_ids if i in sources and sources[i] != PRETRAINED_SOURCE)
    return TestSetSummary(
        photos=len(originals),
        faces=len(face_ids),
        moments=len(moments),
        suggested_faces=suggested,
        hand_faces=hand,
        unknown_faces=len(face_ids) - suggested - hand,
    )

"""Temporal smoothing of live detections across frames, one track per face.

Each frame's detections are matched to the tracks of the previous frames by
overlap (IoU of the track's predicted box and the detection, greedy: the
best-overlapping pair first, each track and each detection used at most
once), so two faces never swap boxes and two boxes never merge into one.
Every track is smoothed on its own with an alpha-beta filter (position and
velocity), so a moving face is followed without lag and a still face does
not jitter. A track is shown once it has been seen in ``min_hits`` frames,
held (not moved) through ``hold`` missed frames, and forgotten after
``max_missing`` missed frames. Boxes are smoothed in normalized
coordinates, so the frame size may change between frames.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from facetrack.detect import Detection, to_box
from facetrack.labels import iou


@dataclass(frozen=True)
class TrackedFace:
    """One face shown on a frame: its track's id (stable while the face is followed) and smoothed detection."""

    track_id: int
    detection: Detection


class _Track:
    """A followed face: smoothed box (normalized ``[x1, y1, x2, y2]``), box velocity per frame, score."""

    def __init__(self, track_id: int, det: Detection) -> None:
        self.id = track_id
        self.box = np.array(det.box.to_list(), np.float64)
        self.velocity = np.zeros(4, np.float64)
        self.score = float(det.score)
        self.frame_size = det.frame_size
        self.hits = 1
        self.missing = 0

    def predicted(self) -> np.ndarray:
        """Where the box should be on this frame (last box moved by its velocity)."""
        return self.box + self.velocity

    def update(self, det: Detection, alpha: float, beta: float) -> None:
        predicted = self.predicted()
        residual = np.array(det.box.to_list(), np.float64) - predicted
        self.box = predicted + alpha * residual
        self.velocity = self.velocity + beta * residual
        self.score = alpha * float(det.score) + (1.0 - alpha) * self.score
        self.frame_size = det.frame_size
        self.hits += 1
        self.missing = 0

    def miss(self) -> None:
        """No detection this frame: keep the box where it was and stop its motion."""
        self.missing += 1
        self.velocity[:] = 0.0

    def detection(self) -> Detection:
        w, h = self.frame_size
        return Detection.from_box(self.score, to_box(self.box), w, h)


def match_by_iou(
    predicted: Sequence[Sequence[float]], boxes: Sequence[Sequence[float]], min_iou: float
) -> list[tuple[int, int]]:
    """Greedy one-to-one matching of ``predicted`` to ``boxes`` by IoU: ``(i, j)`` pairs, best overlap first.

    A pair is only made when its IoU is at least ``min_iou`` (and above 0);
    each index appears in at most one pair.
    """
    pairs = []
    for i, a in enumerate(predicted):
        for j, b in enumerate(boxes):
            overlap = iou(a, b)
            if overlap >= min_iou and overlap > 0.0:
                pairs.append((overlap, i, j))
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    used_i: set[int] = set()
    used_j: set[int] = set()
    out = []
    for _, i, j in pairs:
        if i not in used_i and j not in used_j:
            used_i.add(i)
            used_j.add(j)
            out.append((i, j))
    return out


class BoxSmoother:
    """Per-face temporal smoothing of detections (see the module doc). Thread-safe.

    ``alpha`` (``0 < alpha <= 1``): weight of the new detection in a track's
    box and score (1 = no smoothing). ``beta`` (``0 <= beta <= 1``): how fast a
    track learns its motion (0 = no velocity). ``match_iou``: the smallest
    IoU between a track's predicted box and a detection for them to be the
    same face. ``min_hits``: frames a new face must be seen in before it is
    shown. ``hold``: missed frames a shown face is still drawn for.
    ``max_missing``: missed frames after which a track is forgotten (a track
    not yet shown is forgotten at its first miss).
    """

    def __init__(
        self,
        alpha: float = 0.5,
        beta: float = 0.1,
        match_iou: float = 0.25,
        min_hits: int = 2,
        hold: int = 2,
        max_missing: int = 5,
    ) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {beta}")
        if not 0.0 < match_iou <= 1.0:
            raise ValueError(f"match_iou must be in (0, 1], got {match_iou}")
        if min_hits < 1 or hold < 0 or max_missing < hold:
            raise ValueError(
                f"need min_hits >= 1 and 0 <= hold <= max_missing, got {min_hits}, {hold}, {max_missing}"
            )
        self.alpha, self.beta, self.match_iou = float(alpha), float(beta), float(match_iou)
        self.min_hits, self.hold, self.max_missing = int(min_hits), int(hold), int(max_missing)
        self._lock = threading.Lock()
        self._tracks: list[_Track] = []
        self._next_id = 1

    def reset(self) -> None:
        """Forget every tracked face."""
        with self._lock:
            self._tracks = []

    def track(self, detections: Sequence[Detection]) -> list[TrackedFace]:
        """Match this frame's detections to the tracks, smooth them, and return the faces to show.

        The result is sorted by track id (the oldest face first).
        """
        with self._lock:
            tracks = self._tracks
            pairs = match_by_iou(
                [t.predicted() for t in tracks], [d.box.to_list() for d in detections], self.match_iou
            )
            matched_tracks = {i for i, _ in pairs}
            matched_dets = {j for _, j in pairs}
            for i, j in pairs:
                tracks[i].update(detections[j], self.alpha, self.beta)
            for i, t in enumerate(tracks):
                if i not in matched_tracks:
                    t.miss()
            # a shown face survives max_missing missed frames; a new one not yet shown, none
            tracks = [
                t
                for t in tracks
                if t.missing <= self.max_missing and (t.missing == 0 or t.hits >= self.min_hits)
            ]
            for j, d in enumerate(detections):
                if j not in matched_dets:
                    tracks.append(_Track(self._next_id, d))
                    self._next_id += 1
            self._tracks = tracks
            return [
                TrackedFace(t.id, t.detection())
                for t in tracks
                if t.hits >= self.min_hits and t.missing <= self.hold
            ]

    def update(self, detections: Sequence[Detection]) -> list[Detection]:
        """The smoothed detections to draw on this frame, highest score first."""
        shown = [f.detection for f in self.track(detections)]
        return sorted(shown, key=lambda d: -d.score)

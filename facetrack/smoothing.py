"""Temporal smoothing of live detections across frames."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from facetrack.detect import Detection, to_box
from facetrack.labels import iou


class BoxSmoother:
    """Exponential moving average of the face box and score across frames.

    ``alpha`` (``0 < alpha <= 1``): weight of the new frame (1 = no
    smoothing). A new box whose IoU with the smoothed one is below
    ``reset_iou`` (the face jumped, or another face) replaces it outright.
    When no face is detected, the last smoothed box is still shown for
    ``hold`` frames (hides one-frame dropouts); after ``max_missing``
    consecutive empty frames the state resets. Boxes are smoothed in
    normalized coordinates, so the frame size may change. Thread-safe.
    """

    def __init__(
        self, alpha: float = 0.5, reset_iou: float = 0.3, max_missing: int = 3, hold: int = 1
    ) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha = float(alpha)
        self.reset_iou = float(reset_iou)
        self.max_missing = int(max_missing)
        self.hold = int(hold)
        self._lock = threading.Lock()
        self._state: np.ndarray | None = None  # [x1, y1, x2, y2, score]
        self._last: Detection | None = None
        self._missing = 0

    def reset(self) -> None:
        """Forget the tracked face."""
        with self._lock:
            self._state, self._last, self._missing = None, None, 0

    def update(self, detections: Sequence[Detection]) -> list[Detection]:
        """Smooth this frame's detections (0 or 1, the best is used) and return 0 or 1."""
        with self._lock:
            if not detections:
                self._missing += 1
                if self._missing >= self.max_missing:
                    self._state, self._last = None, None
                if self._last is not None and self._missing <= self.hold:
                    return [self._last]
                return []
            d = max(detections, key=lambda det: det.score)
            new = np.array([*d.box.to_list(), d.score], dtype=np.float64)
            if self._state is None or iou(self._state[:4], new[:4]) < self.reset_iou:
                self._state = new
            else:
                self._state = self.alpha * new + (1.0 - self.alpha) * self._state
            self._missing = 0
            w, h = d.frame_size
            out = Detection.from_box(float(self._state[4]), to_box(self._state[:4]), w, h)
            self._last = out
            return [out]

"""The live page's frame processor: shared between the page and streamlit-webrtc's frame callback.

Two threads meet here and nowhere else:

* the **script thread** (the page) calls :meth:`LiveProcessor.configure` with the
  detector, threshold and smoothing the user chose, and :meth:`snapshot` to
  show the measured frames per second and the faces in the frame;
* the **frame callback thread** (streamlit-webrtc's worker) calls
  :meth:`process` on every video frame: every face above the threshold is
  detected, smoothed on its own track (:class:`facetrack.smoothing.BoxSmoother`)
  and drawn with its score. It never calls ``st.*``.

All shared fields are read and written under one lock. The detector is
called outside that lock (it has its own), so a slow frame never blocks the
page.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from facetrack.detect import Detection, draw_detections
from facetrack.smoothing import BoxSmoother

FPS_WINDOW = 30  # frames the FPS is measured over
STREAM_GAP = 2.0  # seconds without frames after which a new stream starts (fresh smoother)


@dataclass(frozen=True)
class LiveStats:
    """What the page shows about the stream (a copy; safe to keep)."""

    fps: float | None  # frames per second over the last FPS_WINDOW frames (None until 2 frames)
    frames: int  # frames processed since the page was opened
    faces: int  # frames in which at least one face was shown
    faces_in_frame: int  # faces drawn on the last frame
    most_faces: int  # the most faces drawn on one frame since the page was opened
    last_score: float | None  # the best detection's score on the last frame (None: no face found)
    model_ms: float | None  # mean time the model took per frame (ms), recent frames
    frame_size: tuple[int, int] | None  # (width, height) of the last frame
    backend: str | None  # "litert" or "keras"
    error: str | None  # the last error in the callback, if any


class LiveProcessor:
    """Runs a detector on frames; thread-safe. One per browser session (and so per stream)."""

    def __init__(self, threshold: float = 0.5, smoothing: bool = True) -> None:
        self._lock = threading.Lock()
        self._detector: Any = None
        self._threshold = float(threshold)
        self._smoothing = bool(smoothing)
        self._smoother = BoxSmoother()
        self._times: deque[float] = deque(maxlen=FPS_WINDOW)
        self._model_ms: deque[float] = deque(maxlen=FPS_WINDOW)
        self._frames = 0
        self._faces = 0
        self._faces_in_frame = 0
        self._most_faces = 0
        self._last_score: float | None = None
        self._frame_size: tuple[int, int] | None = None
        self._error: str | None = None

    # -- script thread ------------------------------------------------------------
    def configure(self, detector: Any, threshold: float, smoothing: bool) -> None:
        """Set what the next frames use (called by the page on every run)."""
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        with self._lock:
            if detector is not self._detector:
                self._smoother = BoxSmoother()
                self._model_ms.clear()
                self._error = None
            self._detector = detector
            self._threshold = float(threshold)
            if smoothing != self._smoothing:
                self._smoother.reset()
            self._smoothing = bool(smoothing)

    def snapshot(self) -> LiveStats:
        with self._lock:
            fps = None
            if len(self._times) >= 2 and self._times[-1] > self._times[0]:
                fps = (len(self._times) - 1) / (self._times[-1] - self._times[0])
            model_ms = sum(self._model_ms) / len(self._model_ms) if self._model_ms else None
            backend = getattr(self._detector, "backend", None)
            return LiveStats(
                fps=fps,
                frames=self._frames,
                faces=self._faces,
                faces_in_frame=self._faces_in_frame,
                most_faces=self._most_faces,
                last_score=self._last_score,
                model_ms=model_ms,
                frame_size=self._frame_size,
                backend=backend,
                error=self._error,
            )

    # -- frame callback thread ------------------------------------------------------
    def process(self, bgr: np.ndarray, now: float | None = None) -> np.ndarray:
        """Detect every face, smooth each one and draw them on one BGR frame (in place when possible)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            detector, threshold, smoothing = self._detector, self._threshold, self._smoothing
            if self._times and now - self._times[-1] > STREAM_GAP:
                self._times.clear()  # a new stream: FPS and smoothing start afresh
                self._smoother.reset()
            smoother = self._smoother
        h, w = bgr.shape[:2]
        detections: list[Detection] = []
        score = None
        error = None
        elapsed = None
        if detector is not None:
            t0 = time.perf_counter()
            try:
                detections = detector.detect(bgr, "bgr", threshold=threshold)
                score = max((d.score for d in detections), default=None)
            except Exception as exc:  # noqa: BLE001 - a bad frame must not end the stream
                error = f"{type(exc).__name__}: {exc}"
            elapsed = (time.perf_counter() - t0) * 1000.0
            if smoothing:
                detections = smoother.update(detections)
        with self._lock:
            self._times.append(now)
            self._frames += 1
            self._faces += bool(detections)
            self._faces_in_frame = len(detections)
            self._most_faces = max(self._most_faces, len(detections))
            self._last_score = score
            self._frame_size = (w, h)
            if elapsed is not None:
                self._model_ms.append(elapsed)
            if error:
                self._error = error
            fps = None
            if len(self._times) >= 2 and self._times[-1] > self._times[0]:
                fps = (len(self._times) - 1) / (self._times[-1] - self._times[0])
        return draw_detections(bgr, detections, color="bgr", fps=fps)

"""Face detection on frames: load a run's model, find every face, draw.

Conventions:

- Frames are ``numpy`` arrays ``(H, W, 3)`` uint8 in BGR (OpenCV,
  streamlit-webrtc's ``bgr24``) or RGB (``color="rgb"``); grayscale and
  4-channel frames work too (see :mod:`facetrack.inference`, which resizes
  the whole frame to the model's input and runs the model).
- The model's raw outputs become faces through :func:`facetrack.decode.decode`
  (threshold, non-maximum suppression, a maximum count), the one decoding
  used by evaluation, ``detect``, suggestions and Live. A run's
  ``decode.json`` (its threshold picked on validation, NMS overlap, maximum
  count) comes with it. A run trained before the dense head (outputs
  ``class (1, 1)``, ``bbox (1, 4)``) decodes to at most one face.
- A :class:`Detection` holds the normalized :class:`~facetrack.labels.Box`
  and its corners in the frame's own pixels (sorted, clipped to the frame).

Thread safety: a :class:`Detector` may be shared between threads (the page and
the streamlit-webrtc frame callback thread): each call holds the detector's
lock around its input buffer and interpreter.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facetrack.decode import DecodeSettings, decode, load_decode_settings
from facetrack.evaluate import is_face
from facetrack.inference import (
    RESIZE_MODES,
    DetectorError,
    KerasRunner,
    LiteRTRunner,
    frame_to_rgb_input,
)
from facetrack.labels import FACE_LABEL, Box
from facetrack.runs import KERAS_FILE, TFLITE_FILE, RunError, check_input_size, input_hw

log = logging.getLogger(__name__)

BACKENDS = ("auto", "litert", "keras")
_MIN_SIDE = 1e-4  # smallest normalized box side a prediction is widened to
__all__ = ["RESIZE_MODES", "Detection", "Detector", "DetectorError", "frame_to_rgb_input", "to_box"]


def to_box(values: Sequence[float]) -> Box:
    """A valid :class:`Box` from 4 raw model outputs ``[x1, y1, x2, y2]``.

    Corners are sorted and clipped to ``[0, 1]``; NaN becomes 0; a degenerate
    box (zero width or height) is widened to a tiny box so it stays valid.
    """
    v = [0.0 if not math.isfinite(float(x)) else min(max(float(x), 0.0), 1.0) for x in values]
    x1, x2 = sorted((v[0], v[2]))
    y1, y2 = sorted((v[1], v[3]))

    def widen(a: float, b: float) -> tuple[float, float]:
        if b - a >= _MIN_SIDE:
            return a, b
        c = min(max((a + b) / 2, _MIN_SIDE / 2), 1 - _MIN_SIDE / 2)
        return c - _MIN_SIDE / 2, c + _MIN_SIDE / 2

    x1, x2 = widen(x1, x2)
    y1, y2 = widen(y1, y2)
    return Box(x1, y1, x2, y2)


@dataclass(frozen=True)
class Detection:
    """One detected face.

    ``box``: normalized ``[x1, y1, x2, y2]`` (see :mod:`facetrack.labels`).
    ``x1, y1, x2, y2``: the same corners in the frame's pixels (ints, sorted,
    clipped to ``0..W`` and ``0..H``). ``frame_size``: ``(W, H)`` of the frame.
    """

    score: float
    box: Box
    x1: int
    y1: int
    x2: int
    y2: int
    frame_size: tuple[int, int]
    label: str = FACE_LABEL

    @classmethod
    def from_box(cls, score: float, box: Box, width: int, height: int) -> Detection:
        """Build a detection for a frame of ``width`` x ``height`` pixels."""
        px1, py1, px2, py2 = box.to_pixels(width, height)
        x1 = min(max(round(px1), 0), width)
        x2 = min(max(round(px2), 0), width)
        y1 = min(max(round(py1), 0), height)
        y2 = min(max(round(py2), 0), height)
        return cls(float(score), box, x1, y1, x2, y2, (int(width), int(height)))

    def to_dict(self) -> dict[str, Any]:
        """``{"score": s, "box": [x1, y1, x2, y2]}`` with the box in frame pixels."""
        return {"score": round(self.score, 4), "box": [self.x1, self.y1, self.x2, self.y2]}


def _load_keras_model(path: Path) -> Any:
    from facetrack.model import ModelLoadError, load_model  # registers the custom layers

    try:
        return load_model(path)
    except ModelLoadError as exc:
        raise DetectorError(str(exc)) from exc


def detections_from(score: float, box: Box, width: int, height: int, threshold: float) -> list[Detection]:
    """One scored box on a ``width`` x ``height`` frame as detections: that face, or none below ``threshold``."""
    if not is_face(score, threshold):
        return []
    return [Detection.from_box(score, box, width, height)]


def detections_from_outputs(
    scores: Any, boxes: Any, width: int, height: int, settings: DecodeSettings
) -> list[Detection]:
    """Raw outputs of one image (per cell, or one box) as every face above the threshold, best first.

    Decoded by :func:`facetrack.decode.decode`; NaN scores count as 0.
    """
    sc = np.nan_to_num(np.asarray(scores, np.float32), nan=0.0)
    bx = np.nan_to_num(np.asarray(boxes, np.float32), nan=0.0)
    kept_scores, kept_boxes = decode(sc, bx, settings)
    return [
        Detection.from_box(float(s), to_box(b), width, height)
        for s, b in zip(kept_scores, kept_boxes, strict=True)
    ]


class Detector:
    """A face detector for frames: every face above the threshold, highest score first.

    Build it with :meth:`from_run`, :meth:`from_tflite` or
    :meth:`from_keras_model`. ``runner(x)`` maps the ``(1, h, w, 3)`` input to
    the image's raw ``(class, bbox)`` outputs (see :mod:`facetrack.inference`).
    ``backend`` is ``"litert"`` or ``"keras"``; ``input_size`` is ``S`` or
    ``(h, w)``; ``threshold`` (settable, ``0..1``) is the minimum score for
    :meth:`detect` to return a face; ``decode_settings`` the rest of the
    decoding (NMS overlap, maximum count; its threshold is replaced by
    ``threshold``). Safe to share between threads (calls are serialised by a lock).
    """

    def __init__(
        self,
        runner: Callable[[np.ndarray], tuple[Any, Any]],
        input_size: int | tuple[int, int],
        backend: str,
        threshold: float = 0.5,
        resize: str = "fast",
        source: Path | None = None,
        decode_settings: DecodeSettings | None = None,
    ) -> None:
        if resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
        self._runner = runner
        self.input_hw = input_hw(input_size)
        self.backend = backend
        self.resize = resize
        self.source = source
        self.decode_settings = decode_settings or DecodeSettings()
        self.fallback_reason = ""  # why "auto" chose Keras over a present .tflite
        self._lock = threading.Lock()
        self._buf = np.empty((1, *self.input_hw, 3), np.float32)
        self._threshold = 0.5
        self.threshold = threshold

    @property
    def input_size(self) -> int:
        """The input width in pixels (the side of a square model); see :attr:`input_hw`."""
        return self.input_hw[1]

    @property
    def threshold(self) -> float:
        """Minimum score (``0..1``) for a face to be reported."""
        return self._threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        value = float(value)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {value}")
        self._threshold = value

    @classmethod
    def from_tflite(
        cls,
        path: Path,
        threshold: float = 0.5,
        num_threads: int = 2,
        resize: str = "fast",
        decode_settings: DecodeSettings | None = None,
    ) -> Detector:
        """A LiteRT detector on a ``.tflite`` file (see :mod:`facetrack.export`).

        ``decode_settings`` None: the ``decode.json`` beside the file (defaults when there is none).
        """
        runner = LiteRTRunner(Path(path), num_threads)
        if decode_settings is None:
            decode_settings = load_decode_settings(Path(path).parent)
        return cls(runner, runner.input_hw, "litert", threshold, resize, Path(path), decode_settings)

    @classmethod
    def from_keras_model(
        cls,
        model: Any,
        threshold: float = 0.5,
        resize: str = "fast",
        decode_settings: DecodeSettings | None = None,
    ) -> Detector:
        """A detector calling an in-memory Keras model (traced once, no ``predict``)."""
        runner = KerasRunner(model)
        return cls(runner, runner.input_hw, "keras", threshold, resize, None, decode_settings)

    @classmethod
    def from_run(
        cls,
        run_dir: Path,
        backend: str = "auto",
        threshold: float | None = None,
        num_threads: int = 2,
        resize: str = "fast",
    ) -> Detector:
        """Load a run folder's model (or a folder holding an exported model and its ``decode.json``).

        ``backend="auto"``: LiteRT on ``model.tflite`` when present, else the
        Keras ``model.keras`` (also when the ``.tflite`` cannot be loaded;
        ``fallback_reason`` then says why). ``"litert"`` / ``"keras"`` force one (error if
        its file is missing). The input size comes from the model itself
        (``settings.json``'s ``input_size`` is checked against it).
        ``threshold``: None takes the run's (``decode.json``, picked on
        validation; 0.5 when the run has none).
        """
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        run_dir = Path(run_dir)
        settings = load_decode_settings(run_dir)
        thr = settings.threshold if threshold is None else float(threshold)
        tflite_path, keras_path = run_dir / TFLITE_FILE, run_dir / KERAS_FILE
        fallback_reason = ""
        det: Detector | None = None
        if backend == "auto":
            backend = "litert" if tflite_path.is_file() else "keras"
            if backend == "litert" and keras_path.is_file():
                try:  # a broken .tflite (or no LiteRT) falls back to the Keras model
                    det = cls.from_tflite(tflite_path, thr, num_threads, resize, settings)
                except (DetectorError, ImportError) as exc:
                    backend, fallback_reason = "keras", str(exc)
        if backend == "litert":
            if not tflite_path.is_file():
                raise DetectorError(
                    f"run {run_dir.name} has no {TFLITE_FILE}: export it with "
                    f"`python -m facetrack export --run {run_dir} --format tflite`"
                )
            if det is None:
                det = cls.from_tflite(tflite_path, thr, num_threads, resize, settings)
        else:
            if not keras_path.is_file():
                raise DetectorError(f"run {run_dir.name} has no {KERAS_FILE}: train a model first")
            det = cls.from_keras_model(_load_keras_model(keras_path), thr, resize, settings)
            det.source = keras_path
            det.fallback_reason = fallback_reason
        try:
            check_input_size(run_dir, det.input_hw)
        except RunError as exc:
            raise DetectorError(str(exc)) from exc
        return det

    def preprocess(self, frame: np.ndarray, color: str = "bgr") -> np.ndarray:
        """The model input for ``frame``: a new ``(1, h, w, 3)`` float32 RGB array."""
        return frame_to_rgb_input(frame, self.input_hw, color, resize=self.resize)

    def predict_outputs(self, frame: np.ndarray, color: str = "bgr") -> tuple[np.ndarray, np.ndarray]:
        """The model's raw ``(class, bbox)`` outputs for ``frame`` (see :mod:`facetrack.inference`)."""
        with self._lock:
            x = frame_to_rgb_input(frame, self.input_hw, color, out=self._buf, resize=self.resize)
            scores, boxes = self._runner(x)
        return np.asarray(scores, np.float32), np.asarray(boxes, np.float32)

    def predict_raw(self, frame: np.ndarray, color: str = "bgr") -> tuple[float, Box]:
        """The best face's score (``0..1``) and normalized box for ``frame``, whatever the threshold."""
        scores, boxes = self.predict_outputs(frame, color)
        sc = np.nan_to_num(scores.reshape(-1), nan=0.0)
        best = int(np.argmax(sc))
        return float(sc[best]), to_box(boxes.reshape(-1, 4)[best])

    def detect(
        self, frame: np.ndarray, color: str = "bgr", threshold: float | None = None
    ) -> list[Detection]:
        """Every face (score >= threshold) in ``frame``'s pixels, highest score first.

        ``threshold`` overrides :attr:`threshold` for this call (a detector
        cached for several browser sessions keeps one shared default). A
        run of the older one-box kind gives at most one face.
        """
        scores, boxes = self.predict_outputs(frame, color)
        h, w = np.asarray(frame).shape[:2]
        thr = self._threshold if threshold is None else float(threshold)
        return detections_from_outputs(scores, boxes, w, h, self.decode_settings.replace(threshold=thr))


# -- drawing ---------------------------------------------------------------

_BOX_BGR = (80, 220, 60)  # green
_TEXT_BGR = (0, 0, 0)
_FPS_BG_BGR = (32, 32, 32)
_FPS_TEXT_BGR = (255, 255, 255)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _paint(c: tuple[int, int, int], frame: np.ndarray, color: str) -> tuple[int, ...] | int:
    if frame.ndim == 2 or frame.shape[2] == 1:
        return int(round(0.114 * c[0] + 0.587 * c[1] + 0.299 * c[2]))
    bgr = c if color == "bgr" else (c[2], c[1], c[0])
    return (*bgr, 255) if frame.shape[2] == 4 else bgr


def _font(side: int) -> tuple[float, int]:
    """Font scale and thickness for a frame whose shorter side is ``side`` pixels."""
    return max(0.3, side / 900), max(1, round(side / 480))


def draw_box(
    frame: np.ndarray,
    corners: Sequence[float],
    rgb: tuple[int, int, int],
    label: str = "",
    color: str = "bgr",
    thickness: int | None = None,
) -> np.ndarray:
    """Draw one box (pixel ``corners`` ``x1, y1, x2, y2``) in ``rgb``, with ``label`` on a filled tag, IN PLACE.

    The one box drawer (live frames, photos in pages). ``color``: channel order
    of ``frame``; the label sits above the box, else inside it.
    """
    h, w = frame.shape[:2]
    side = min(h, w)
    thick = thickness or max(1, round(side / 240))
    box_c = _paint((rgb[2], rgb[1], rgb[0]), frame, color)
    x1, y1 = min(int(round(corners[0])), w - 1), min(int(round(corners[1])), h - 1)
    x2, y2 = max(min(int(round(corners[2])), w - 1), x1), max(min(int(round(corners[3])), h - 1), y1)
    cv2.rectangle(frame, (x1, y1), (x2, y2), box_c, thick, cv2.LINE_8)
    if label:
        font_scale, font_thick = _font(side)
        (tw, th), base = cv2.getTextSize(label, _FONT, font_scale, font_thick)
        pad = max(1, thick)
        lh = th + base + 2 * pad
        top = y1 - lh if y1 - lh >= 0 else y1  # above the box, else inside it
        left = min(x1, max(0, w - tw - 2 * pad))
        cv2.rectangle(frame, (left, top), (left + tw + 2 * pad, top + lh), box_c, -1)
        text_c = _paint(_TEXT_BGR, frame, color)
        cv2.putText(
            frame, label, (left + pad, top + pad + th), _FONT, font_scale, text_c, font_thick, cv2.LINE_AA
        )
    return frame


def draw_detections(
    frame: np.ndarray,
    detections: Sequence[Detection],
    color: str = "bgr",
    fps: float | None = None,
    copy: bool = False,
) -> np.ndarray:
    """Draw boxes with a "face 0.93" label, and optionally "FPS 27.3", and return the frame.

    Draws IN PLACE on ``frame`` (fast: no copy of a 640x480 frame) unless
    ``copy=True`` or the array is read-only, and returns the drawn array.
    ``color``: channel order of ``frame`` (``"bgr"`` or ``"rgb"``); 1- and
    4-channel frames work too. Line width and font scale with the frame's
    size. Detections' pixel corners must be in this frame's pixels; a
    detection made on a frame of another size is rescaled from its box.
    """
    if copy or not frame.flags.writeable or not frame.flags.c_contiguous:
        frame = np.array(frame, copy=True, order="C")
    h, w = frame.shape[:2]
    if h < 1 or w < 1:
        return frame
    side = min(h, w)
    thick = max(1, round(side / 240))
    font_scale, font_thick = _font(side)
    box_rgb = (_BOX_BGR[2], _BOX_BGR[1], _BOX_BGR[0])
    for d in detections:
        if d.frame_size != (w, h):
            d = Detection.from_box(d.score, d.box, w, h)
        draw_box(frame, (d.x1, d.y1, d.x2, d.y2), box_rgb, f"{d.label} {d.score:.2f}", color, thick)
    if fps is not None and math.isfinite(fps):
        text = f"FPS {fps:.1f}"
        (tw, th), base = cv2.getTextSize(text, _FONT, font_scale, font_thick)
        pad = max(2, thick * 2)
        cv2.rectangle(
            frame, (0, 0), (tw + 2 * pad, th + base + 2 * pad), _paint(_FPS_BG_BGR, frame, color), -1
        )
        cv2.putText(
            frame,
            text,
            (pad, pad + th),
            _FONT,
            font_scale,
            _paint(_FPS_TEXT_BGR, frame, color),
            font_thick,
            cv2.LINE_AA,
        )
    return frame

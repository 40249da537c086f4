"""Live face detection: load a run's model, predict one face per frame, draw, smooth.

Conventions:

- Frames are ``numpy`` arrays ``(H, W, 3)`` uint8 in BGR (OpenCV,
  streamlit-webrtc's ``bgr24``) or RGB (``color="rgb"``); grayscale
  ``(H, W)`` / ``(H, W, 1)`` and BGRA/RGBA ``(H, W, 4)`` are accepted too.
  Any size: the whole frame is resized (no crop) to the model's ``S x S``.
- The model takes float32 RGB ``0..255`` ``(1, S, S, 3)`` and returns
  ``class`` ``(1, 1)`` and ``bbox`` ``(1, 4)`` normalized ``[x1, y1, x2, y2]``.
- A :class:`Detection` holds the normalized :class:`~facetrack.labels.Box`
  and its corners in the frame's own pixels (sorted, clipped to the frame).

Thread safety: a :class:`Detector` may be shared between threads (the page and
the streamlit-webrtc frame callback thread): each call holds the detector's
lock around its input buffer and interpreter. A :class:`BoxSmoother` is
per video stream; it also locks, so a page may read it while the callback
updates it.
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

from facetrack.evaluate import is_face
from facetrack.export import model_input_size, named_outputs
from facetrack.labels import FACE_LABEL, Box
from facetrack.runs import KERAS_FILE, TFLITE_FILE, RunError, check_input_size

log = logging.getLogger(__name__)

BACKENDS = ("auto", "litert", "keras")
RESIZE_MODES = ("fast", "area", "linear")
_MIN_SIDE = 1e-4  # smallest normalized box side a prediction is widened to


class DetectorError(RuntimeError):
    """A detector that cannot be built; the message says why."""


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


def _as_uint8(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype == np.uint8:
        return frame
    if np.issubdtype(frame.dtype, np.floating) and frame.size and float(np.nanmax(frame)) <= 1.0:
        frame = frame * 255.0
    return np.clip(np.nan_to_num(frame), 0, 255).astype(np.uint8)


def _checked_frame(frame: np.ndarray) -> np.ndarray:
    """``frame`` as a C-contiguous uint8 ``(H, W)`` or ``(H, W, 3|4)`` array; ValueError otherwise."""
    frame = _as_uint8(frame)
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    if frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[2] not in (3, 4)):
        raise ValueError(f"frame must be (H, W), (H, W, 3) or (H, W, 4), got shape {frame.shape}")
    h, w = frame.shape[:2]
    if h < 1 or w < 1:
        raise ValueError(f"frame is empty: shape {frame.shape}")
    return frame if frame.flags.c_contiguous else np.ascontiguousarray(frame)


def _resize_frame(frame: np.ndarray, size: int, resize: str) -> np.ndarray:
    """``frame`` resized to ``size`` x ``size`` the ``resize`` way (see :func:`frame_to_rgb_input`)."""
    h, w = frame.shape[:2]
    if (w, h) == (size, size):
        return frame
    if resize == "linear" or (w <= 2 * size and h <= 2 * size and resize == "fast"):
        interp = cv2.INTER_AREA if (resize != "linear" and w >= size and h >= size) else cv2.INTER_LINEAR
        return cv2.resize(frame, (size, size), interpolation=interp)
    if resize == "area":
        return cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)
    # fast: bilinear to 2S (few taps), then an exact 2:1 area average
    mid = cv2.resize(frame, (2 * size, 2 * size), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(mid, (size, size), interpolation=cv2.INTER_AREA)


def frame_to_rgb_input(
    frame: np.ndarray,
    size: int,
    color: str = "bgr",
    out: np.ndarray | None = None,
    resize: str = "fast",
) -> np.ndarray:
    """Resize a whole frame to ``(1, size, size, 3)`` float32 RGB ``0..255``.

    ``frame``: ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``,
    uint8 (other dtypes are clipped to ``0..255``; floats in ``0..1`` are
    scaled). ``color``: ``"bgr"`` or ``"rgb"``, the channel order of 3/4
    channel frames (alpha is dropped). No crop: the aspect ratio is not kept,
    as in training. ``resize``: ``"fast"`` (bilinear to ``2S`` then area
    ``2:1``; close to ``"area"`` at a fifth of the cost), ``"area"`` (exact
    area averaging) or ``"linear"`` (cheapest, aliases on big frames).
    ``out``: optional buffer ``(1, size, size, 3)`` float32 to fill.
    """
    if color not in ("bgr", "rgb"):
        raise ValueError(f"color must be 'bgr' or 'rgb', got {color!r}")
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
    small = _resize_frame(_checked_frame(frame), size, resize)
    if out is None:
        out = np.empty((1, size, size, 3), np.float32)
    if small.ndim == 2:
        out[0] = small[:, :, None]
    elif color == "bgr":
        np.copyto(out[0], small[:, :, 2::-1], casting="unsafe")  # BGR(A) -> RGB
    else:
        np.copyto(out[0], small[:, :, :3], casting="unsafe")
    return out


class _LiteRTRunner:
    """One LiteRT interpreter (XNNPACK on CPU); not thread-safe by itself."""

    def __init__(self, path: Path, num_threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        try:  # a damaged file fails to open, or opens and fails later (e.g. in allocate_tensors)
            it = Interpreter(model_path=str(path), num_threads=num_threads)
            outputs = {}
            signatures = it.get_signature_list()
            if signatures:
                runner = it.get_signature_runner(next(iter(signatures)))
                outputs = {k: v["index"] for k, v in runner.get_output_details().items()}
                del runner  # it holds tensor views that would block invoke()
            if "class" not in outputs or "bbox" not in outputs:  # map by shape
                for d in it.get_output_details():
                    shape = tuple(int(s) for s in d["shape"])
                    if shape[-1:] == (1,):
                        outputs["class"] = d["index"]
                    elif shape[-1:] == (4,):
                        outputs["bbox"] = d["index"]
            if "class" not in outputs or "bbox" not in outputs:
                raise DetectorError(f"{path.name}: outputs must be class (1, 1) and bbox (1, 4)")
            inp = it.get_input_details()
            if len(inp) != 1 or len(inp[0]["shape"]) != 4:
                raise DetectorError(f"{path.name}: expected one (1, S, S, 3) input")
            shape = [int(s) for s in inp[0]["shape"]]
            if inp[0]["dtype"] != np.float32 or shape[3] != 3 or shape[1] != shape[2] or shape[1] < 1:
                raise DetectorError(f"{path.name}: input must be float32 (1, S, S, 3), got {shape}")
            if shape[0] != 1:
                it.resize_tensor_input(inp[0]["index"], [1, shape[1], shape[2], 3])
            it.allocate_tensors()
        except DetectorError:
            raise
        except Exception as exc:
            raise DetectorError(f"{path.name} is damaged and cannot be used ({exc})") from exc
        self.interpreter = it
        self.input_index = inp[0]["index"]
        self.class_index = outputs["class"]
        self.bbox_index = outputs["bbox"]
        self.input_size = shape[1]

    def __call__(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        it = self.interpreter
        it.set_tensor(self.input_index, x)
        it.invoke()
        score = float(it.get_tensor(self.class_index).reshape(-1)[0])
        return score, it.get_tensor(self.bbox_index).reshape(-1)[:4].copy()


class _KerasRunner:
    """The Keras model called through one traced ``tf.function`` (not ``predict``)."""

    def __init__(self, model: Any) -> None:
        import tensorflow as tf

        self.model = model
        self.input_size = model_input_size(model)
        s = self.input_size

        @tf.function(input_signature=[tf.TensorSpec([1, s, s, 3], tf.float32)], reduce_retracing=True)
        def call(x: Any) -> dict[str, Any]:
            return named_outputs(model, model(x, training=False))

        self._call = call

    def __call__(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        out = self._call(x)
        score = float(out["class"].numpy().reshape(-1)[0])
        return score, out["bbox"].numpy().reshape(-1)[:4]


def _load_keras_model(path: Path) -> Any:
    from facetrack.model import ModelLoadError, load_model  # registers the custom layers

    try:
        return load_model(path)
    except ModelLoadError as exc:
        raise DetectorError(str(exc)) from exc


def detections_from(score: float, box: Box, width: int, height: int, threshold: float) -> list[Detection]:
    """A model's answer on a ``width`` x ``height`` frame as detections: one face, or none below ``threshold``."""
    if not is_face(score, threshold):
        return []
    return [Detection.from_box(score, box, width, height)]


class Detector:
    """A face detector for live frames: one face (or none) per frame.

    Build it with :meth:`from_run`, :meth:`from_tflite` or
    :meth:`from_keras_model`. ``backend`` is ``"litert"`` or ``"keras"``;
    ``input_size`` is the model's ``S``; ``threshold`` (settable, ``0..1``)
    is the minimum score for :meth:`detect` to return a face.
    Safe to share between threads (calls are serialised by a lock).
    """

    def __init__(
        self,
        runner: Callable[[np.ndarray], tuple[float, np.ndarray]],
        input_size: int,
        backend: str,
        threshold: float = 0.5,
        resize: str = "fast",
        source: Path | None = None,
    ) -> None:
        if resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
        self._runner = runner
        self.input_size = int(input_size)
        self.backend = backend
        self.resize = resize
        self.source = source
        self.fallback_reason = ""  # why "auto" chose Keras over a present .tflite
        self._lock = threading.Lock()
        self._buf = np.empty((1, self.input_size, self.input_size, 3), np.float32)
        self._threshold = 0.5
        self.threshold = threshold

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
        cls, path: Path, threshold: float = 0.5, num_threads: int = 2, resize: str = "fast"
    ) -> Detector:
        """A LiteRT detector on a ``.tflite`` file (see :mod:`facetrack.export`)."""
        runner = _LiteRTRunner(Path(path), num_threads)
        return cls(runner, runner.input_size, "litert", threshold, resize, Path(path))

    @classmethod
    def from_keras_model(cls, model: Any, threshold: float = 0.5, resize: str = "fast") -> Detector:
        """A detector calling an in-memory Keras model (traced once, no ``predict``)."""
        runner = _KerasRunner(model)
        return cls(runner, runner.input_size, "keras", threshold, resize)

    @classmethod
    def from_run(
        cls,
        run_dir: Path,
        backend: str = "auto",
        threshold: float = 0.5,
        num_threads: int = 2,
        resize: str = "fast",
    ) -> Detector:
        """Load a run folder's model.

        ``backend="auto"``: LiteRT on ``model.tflite`` when present, else the
        Keras ``model.keras`` (also when the ``.tflite`` cannot be loaded;
        ``fallback_reason`` then says why). ``"litert"`` / ``"keras"`` force one (error if
        its file is missing). The input size comes from the model itself
        (``settings.json``'s ``input_size`` is checked against it).
        """
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        run_dir = Path(run_dir)
        tflite_path, keras_path = run_dir / TFLITE_FILE, run_dir / KERAS_FILE
        fallback_reason = ""
        det: Detector | None = None
        if backend == "auto":
            backend = "litert" if tflite_path.is_file() else "keras"
            if backend == "litert" and keras_path.is_file():
                try:  # a broken .tflite (or no LiteRT) falls back to the Keras model
                    det = cls.from_tflite(tflite_path, threshold, num_threads, resize)
                except (DetectorError, ImportError) as exc:
                    backend, fallback_reason = "keras", str(exc)
                    log.warning("%s unusable, using %s instead: %s", tflite_path, KERAS_FILE, exc)
        if backend == "litert":
            if not tflite_path.is_file():
                raise DetectorError(
                    f"run {run_dir.name} has no {TFLITE_FILE}: export it with "
                    f"`python -m facetrack export --run {run_dir} --format tflite`"
                )
            if det is None:
                det = cls.from_tflite(tflite_path, threshold, num_threads, resize)
        else:
            if not keras_path.is_file():
                raise DetectorError(f"run {run_dir.name} has no {KERAS_FILE}: train a model first")
            det = cls.from_keras_model(_load_keras_model(keras_path), threshold, resize)
            det.source = keras_path
            det.fallback_reason = fallback_reason
        try:
            check_input_size(run_dir, det.input_size)
        except RunError as exc:
            raise DetectorError(str(exc)) from exc
        return det

    def preprocess(self, frame: np.ndarray, color: str = "bgr") -> np.ndarray:
        """The model input for ``frame``: a new ``(1, S, S, 3)`` float32 RGB array."""
        return frame_to_rgb_input(frame, self.input_size, color, resize=self.resize)

    def predict_raw(self, frame: np.ndarray, color: str = "bgr") -> tuple[float, Box]:
        """Score (``0..1``) and normalized box for ``frame``, whatever the threshold."""
        with self._lock:
            x = frame_to_rgb_input(frame, self.input_size, color, out=self._buf, resize=self.resize)
            score, raw = self._runner(x)
        if not math.isfinite(score):
            score = 0.0
        return score, to_box(raw)

    def detect(
        self, frame: np.ndarray, color: str = "bgr", threshold: float | None = None
    ) -> list[Detection]:
        """At most one :class:`Detection` (score >= threshold) in ``frame``'s pixels.

        ``threshold`` overrides :attr:`threshold` for this call (a detector
        cached for several browser sessions keeps one shared default).
        """
        score, box = self.predict_raw(frame, color)
        h, w = np.asarray(frame).shape[:2]
        return detections_from(score, box, w, h, self._threshold if threshold is None else threshold)


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

"""Frames in, raw model outputs out: frame preprocessing and the two model runners (LiteRT, Keras).

:class:`facetrack.detect.Detector` decodes what the runners return with
:func:`facetrack.decode.decode`. Conventions:

- Frames are ``numpy`` arrays ``(H, W, 3)`` uint8 in BGR (OpenCV,
  streamlit-webrtc's ``bgr24``) or RGB (``color="rgb"``); grayscale
  ``(H, W)`` / ``(H, W, 1)`` and BGRA/RGBA ``(H, W, 4)`` are accepted too.
  Any size: the whole frame is resized (no crop) to the model's input
  ``(h, w)`` (``S x S`` for the older square models, e.g. 120x160 for the
  dense 4:3 model).
- The model takes float32 RGB ``0..255`` ``(1, h, w, 3)``. A runner returns
  the image's raw ``(class, bbox)`` arrays without the batch axis: per cell
  ``(Gh, Gw, 1)`` and ``(Gh, Gw, 4)`` for the dense (multi-face) head, or
  ``(1,)`` and ``(4,)`` for a run trained before it (one face per photo).
  Boxes are normalized ``[x1, y1, x2, y2]``.

A runner is not thread-safe by itself (the Detector locks around it).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facetrack.runs import input_hw

log = logging.getLogger(__name__)

RESIZE_MODES = ("fast", "area", "linear")


class DetectorError(RuntimeError):
    """A detector that cannot be built; the message says why."""


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


def _resize_frame(frame: np.ndarray, hw: tuple[int, int], resize: str) -> np.ndarray:
    """``frame`` resized to ``hw`` = ``(h, w)`` the ``resize`` way (see :func:`frame_to_rgb_input`)."""
    th, tw = hw
    h, w = frame.shape[:2]
    if (h, w) == (th, tw):
        return frame
    if resize == "linear" or (w <= 2 * tw and h <= 2 * th and resize == "fast"):
        interp = cv2.INTER_AREA if (resize != "linear" and w >= tw and h >= th) else cv2.INTER_LINEAR
        return cv2.resize(frame, (tw, th), interpolation=interp)
    if resize == "area":
        return cv2.resize(frame, (tw, th), interpolation=cv2.INTER_AREA)
    # fast: bilinear to twice the size (few taps), then an exact 2:1 area average
    mid = cv2.resize(frame, (2 * tw, 2 * th), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(mid, (tw, th), interpolation=cv2.INTER_AREA)


def frame_to_rgb_input(
    frame: np.ndarray,
    size: int | tuple[int, int],
    color: str = "bgr",
    out: np.ndarray | None = None,
    resize: str = "fast",
) -> np.ndarray:
    """Resize a whole frame to ``(1, h, w, 3)`` float32 RGB ``0..255``.

    ``size``: ``S`` (square) or ``(h, w)``. ``frame``: ``(H, W)``,
    ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``, uint8 (other dtypes are
    clipped to ``0..255``; floats in ``0..1`` are scaled). ``color``:
    ``"bgr"`` or ``"rgb"``, the channel order of 3/4 channel frames (alpha is
    dropped). No crop: the aspect ratio is not kept, as in training.
    ``resize``: ``"fast"`` (bilinear to twice the size then area ``2:1``;
    close to ``"area"`` at a fifth of the cost), ``"area"`` (exact area
    averaging) or ``"linear"`` (cheapest, aliases on big frames).
    ``out``: optional buffer ``(1, h, w, 3)`` float32 to fill.
    """
    if color not in ("bgr", "rgb"):
        raise ValueError(f"color must be 'bgr' or 'rgb', got {color!r}")
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
    hw = input_hw(size)
    small = _resize_frame(_checked_frame(frame), hw, resize)
    if out is None:
        out = np.empty((1, *hw, 3), np.float32)
    if small.ndim == 2:
        out[0] = small[:, :, None]
    elif color == "bgr":
        np.copyto(out[0], small[:, :, 2::-1], casting="unsafe")  # BGR(A) -> RGB
    else:
        np.copyto(out[0], small[:, :, :3], casting="unsafe")
    return out


def _output_indices(it: Any, name: str) -> dict[str, int]:
    """``{"class": index, "bbox": index}`` by signature name, else by the last axis (1 and 4)."""
    outputs: dict[str, int] = {}
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
        raise DetectorError(f"{name}: outputs must be class (..., 1) and bbox (..., 4)")
    return outputs


class LiteRTRunner:
    """One LiteRT interpreter (XNNPACK on CPU) on a ``.tflite`` file; not thread-safe by itself."""

    def __init__(self, path: Path, num_threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        try:
            it = Interpreter(model_path=str(path), num_threads=num_threads)
        except Exception as exc:
            raise DetectorError(f"cannot load {path}: {exc}") from exc
        outputs = _output_indices(it, path.name)
        inp = it.get_input_details()
        if len(inp) != 1 or len(inp[0]["shape"]) != 4:
            raise DetectorError(f"{path.name}: expected one (1, H, W, 3) input")
        shape = [int(s) for s in inp[0]["shape"]]
        if inp[0]["dtype"] != np.float32 or shape[3] != 3 or shape[1] < 1 or shape[2] < 1:
            raise DetectorError(f"{path.name}: input must be float32 (1, H, W, 3), got {shape}")
        if shape[0] != 1:
            it.resize_tensor_input(inp[0]["index"], [1, shape[1], shape[2], 3])
        it.allocate_tensors()
        self.interpreter = it
        self.input_index = inp[0]["index"]
        self.class_index = outputs["class"]
        self.bbox_index = outputs["bbox"]
        self.input_hw = (shape[1], shape[2])

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        it = self.interpreter
        it.set_tensor(self.input_index, x)
        it.invoke()
        return it.get_tensor(self.class_index)[0].copy(), it.get_tensor(self.bbox_index)[0].copy()


class KerasRunner:
    """The Keras model called through one traced ``tf.function`` (not ``predict``)."""

    def __init__(self, model: Any) -> None:
        import tensorflow as tf

        from facetrack.export import model_input_hw, named_outputs

        self.model = model
        self.input_hw = model_input_hw(model)
        h, w = self.input_hw

        @tf.function(input_signature=[tf.TensorSpec([1, h, w, 3], tf.float32)], reduce_retracing=True)
        def call(x: Any) -> dict[str, Any]:
            return named_outputs(model, model(x, training=False))

        self._call = call

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self._call(x)
        return out["class"].numpy()[0], out["bbox"].numpy()[0]

"""Image helpers for pages: cached thumbnails, boxes drawn for display, a paged gallery, canvas boxes.

Thumbnails are cached by file path *and* modification time, so a photo replaced
or deleted in another tab never shows a stale picture for long.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import streamlit as st

from facetrack.detect import draw_box
from facetrack.images import ImageError, encode_jpeg, read_rgb
from facetrack.labels import Box, LabelError

BOX_RGB = (46, 204, 113)  # the green of a saved box
SUGGESTION_RGB = (255, 170, 0)  # orange: a suggestion not yet accepted
CANVAS_MAX_W, CANVAS_MAX_H = 640, 520
ORIGIN = {"left": 0.0, "center": 0.5, "right": 1.0, "top": 0.0, "bottom": 1.0}


@st.cache_data(max_entries=2000, show_spinner=False)
def _thumbnail(path: str, mtime: float, side: int) -> bytes | None:
    del mtime  # part of the cache key only
    try:
        rgb = read_rgb(Path(path))
    except (ImageError, OSError, ValueError):
        return None
    return encode_jpeg(shrink(rgb, side), quality=85)


def shrink(rgb: np.ndarray, side: int) -> np.ndarray:
    """Downscale so the longer side is at most ``side`` pixels (never enlarges)."""
    h, w = rgb.shape[:2]
    scale = side / max(h, w)
    if scale >= 1:
        return rgb
    return cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def thumbnail(path: Path, side: int = 320) -> bytes | None:
    """A JPEG of the image at ``path`` no larger than ``side`` pixels, or None if it is gone/broken."""
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return None
    return _thumbnail(str(path), mtime, side)


def draw_boxes(
    rgb: np.ndarray,
    boxes: Sequence[Box],
    color: tuple[int, int, int] = BOX_RGB,
    labels: Sequence[str] | None = None,
) -> np.ndarray:
    """A copy of ``rgb`` with normalized ``boxes`` drawn (line width scales with the image)."""
    out = np.array(rgb, copy=True, order="C")
    h, w = out.shape[:2]
    thick = max(1, round(min(h, w) / 120))
    for i, box in enumerate(boxes):
        label = labels[i] if labels and i < len(labels) else ""
        draw_box(out, box.to_pixels(w, h), color, label, "rgb", thick)
    return out


def page_count(n_items: int, per_page: int) -> int:
    """How many pages ``n_items`` fill (at least 1)."""
    return max(1, math.ceil(n_items / per_page))


def page_slice(items: Sequence, page: int, per_page: int) -> Sequence:
    """Items of 1-based ``page`` (clamped to the valid range)."""
    page = min(max(1, page), page_count(len(items), per_page))
    return items[(page - 1) * per_page : page * per_page]


# -- canvas <-> boxes ----------------------------------------------------------------------
@st.cache_data(max_entries=64, show_spinner=False)
def _canvas_background(path: str, mtime: float, cw: int, ch: int) -> bytes | None:
    del mtime  # part of the cache key only
    try:
        rgb = read_rgb(Path(path))
    except (ImageError, OSError, ValueError):
        return None
    interpolation = cv2.INTER_AREA if cw < rgb.shape[1] else cv2.INTER_CUBIC
    return encode_jpeg(cv2.resize(rgb, (cw, ch), interpolation=interpolation), quality=90)


def canvas_background(path: Path, cw: int, ch: int) -> bytes | None:
    """The photo at ``path`` as a ``cw`` x ``ch`` JPEG for the drawing canvas (cached), None if gone.

    A JPEG is a tenth of the PNG the canvas would make of a PIL image, and is made once per photo.
    """
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return None
    return _canvas_background(str(path), mtime, cw, ch)


def canvas_size(width: int, height: int) -> tuple[int, int]:
    """Canvas size showing a ``width`` x ``height`` photo whole (scaled up or down, same shape)."""
    scale = min(CANVAS_MAX_W / width, CANVAS_MAX_H / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def rect_object(box: Box, cw: int, ch: int, color: str) -> dict[str, Any]:
    """A Fabric.js ``Rect`` for a normalized box on a ``cw`` x ``ch`` canvas."""
    x1, y1, x2, y2 = box.to_pixels(cw, ch)
    return {
        "type": "Rect",
        "left": x1,
        "top": y1,
        "width": x2 - x1,
        "height": y2 - y1,
        "originX": "left",
        "originY": "top",
        "scaleX": 1,
        "scaleY": 1,
        "angle": 0,
        "fill": "rgba(0, 0, 0, 0)",
        "stroke": color,
        "strokeWidth": 3,
        "strokeUniform": True,
    }


def boxes_from_canvas(json_data: dict | None, cw: int, ch: int) -> list[Box] | None:
    """Normalized boxes of the canvas's ``Rect`` objects (size = width*scaleX, height*scaleY).

    None when the canvas sent nothing. Rects too small or outside the photo are left out.
    """
    if not json_data or "objects" not in json_data:
        return None
    boxes = []
    for obj in json_data.get("objects") or []:
        if not isinstance(obj, dict) or obj.get("type") not in ("Rect", "rect"):
            continue
        try:
            w = float(obj.get("width", 0)) * float(obj.get("scaleX", 1) or 1)
            h = float(obj.get("height", 0)) * float(obj.get("scaleY", 1) or 1)
            left = float(obj.get("left", 0)) - ORIGIN.get(obj.get("originX", "left"), 0.0) * w
            top = float(obj.get("top", 0)) - ORIGIN.get(obj.get("originY", "top"), 0.0) * h
            boxes.append(Box.from_pixels([left, top, left + w, top + h], cw, ch))
        except (LabelError, TypeError, ValueError):
            continue
    return boxes


def same_boxes(a: list[Box] | None, b: list[Box] | None, tol: float = 0.004) -> bool:
    """True when both lists hold the same boxes, to ``tol`` (a fraction of the photo)."""
    if a is None or b is None:
        return a is b
    if len(a) != len(b):
        return False
    return all(
        max(abs(p - q) for p, q in zip(x.to_list(), y.to_list(), strict=True)) <= tol
        for x, y in zip(a, b, strict=True)
    )


def overlap_of_smaller(a: Box, b: Box) -> float:
    """The share of the smaller box that lies inside the other (1: one box inside the other)."""
    w = min(a.x2, b.x2) - max(a.x1, b.x1)
    h = min(a.y2, b.y2) - max(a.y1, b.y1)
    if w <= 0 or h <= 0:
        return 0.0
    return w * h / min(a.area, b.area)


def merge_drawn(drawn: list[Box], shown: list[Box], replace_at: float = 0.5) -> list[Box]:
    """The boxes to save from the canvas: what the user drew or changed, and the starting boxes left alone.

    A starting box (a suggestion, or a saved box) left untouched is dropped when a box the
    user drew covers half of it or more (or lies half inside it): drawing a face's box again
    replaces it. Every other box is kept, in the canvas's order.
    """
    untouched = [b for b in drawn if any(same_boxes([b], [s]) for s in shown)]
    users = [b for b in drawn if b not in untouched]
    return [b for b in drawn if b in users or all(overlap_of_smaller(b, u) < replace_at for u in users)]

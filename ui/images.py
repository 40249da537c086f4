"""Image helpers for pages: cached thumbnails, boxes drawn for display, a paged gallery.

Thumbnails are cached by file path *and* modification time, so a photo replaced
or deleted in another tab never shows a stale picture for long.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import streamlit as st

from facetrack.images import ImageError, encode_jpeg, read_rgb
from facetrack.labels import Box

BOX_RGB = (46, 204, 113)  # the green of a saved box
SUGGESTION_RGB = (255, 170, 0)  # orange: a suggestion not yet accepted


@st.cache_data(max_entries=2000, show_spinner=False)
def _thumbnail(path: str, mtime: float, side: int) -> bytes | None:
    del mtime  # part of the cache key only
    try:
        rgb = read_rgb(Path(path))
    except (ImageError, OSError, ValueError):
        return None
    h, w = rgb.shape[:2]
    scale = side / max(h, w)
    if scale < 1:
        rgb = cv2.resize(
            rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
        )
    return encode_jpeg(rgb, quality=85)


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
        x1, y1, x2, y2 = (round(v) for v in box.to_pixels(w, h))
        cv2.rectangle(out, (x1, y1), (min(x2, w - 1), min(y2, h - 1)), color, thick, cv2.LINE_AA)
        if labels and i < len(labels) and labels[i]:
            scale = max(0.35, min(h, w) / 600)
            (tw, th), base = cv2.getTextSize(labels[i], cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
            top = max(0, y1 - th - base - 4)
            cv2.rectangle(out, (x1, top), (x1 + tw + 4, top + th + base + 4), color, -1)
            cv2.putText(
                out,
                labels[i],
                (x1 + 2, top + th + 2),
                cv2.FONT_HERSHEY_SIMPLEX,
                scale,
                (0, 0, 0),
                1,
                cv2.LINE_AA,
            )
    return out


def page_count(n_items: int, per_page: int) -> int:
    """How many pages ``n_items`` fill (at least 1)."""
    return max(1, math.ceil(n_items / per_page))


def page_slice(items: Sequence, page: int, per_page: int) -> Sequence:
    """Items of 1-based ``page`` (clamped to the valid range)."""
    page = min(max(1, page), page_count(len(items), per_page))
    return items[(page - 1) * per_page : page * per_page]

"""labelme JSON in and out, and the :class:`Box` type.

Box convention, used everywhere in FaceTrack: normalized ``[x1, y1, x2, y2]``
in ``[0, 1]`` relative to the image's width and height, with ``x1 < x2`` and
``y1 < y2`` (albumentations' ``"albumentations"`` format). labelme files store
pixel corners in any order, possibly outside the image: :func:`Box.from_pixels`
sorts and clips them on load.

A labelme file with no shapes means "no face"; no label file means "not
labelled yet". Files written here open unchanged in the labelme desktop app.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facetrack.fileio import atomic_write_json

FACE_LABEL = "face"
LABELME_VERSION = "5.5.0"
# A box smaller than this many pixels on either side after clipping is refused.
MIN_BOX_PIXELS = 2.0


class LabelError(ValueError):
    """A label file or box that cannot be used; the message says why."""


@dataclass(frozen=True)
class Box:
    """A face box, normalized ``[x1, y1, x2, y2]`` in [0, 1], x1 < x2, y1 < y2."""

    x1: float
    y1: float
    x2: float
    y2: float

    def __post_init__(self) -> None:
        vals = (self.x1, self.y1, self.x2, self.y2)
        if not all(0.0 <= v <= 1.0 for v in vals):
            raise LabelError(f"box {vals} is not inside [0, 1]")
        if not (self.x1 < self.x2 and self.y1 < self.y2):
            raise LabelError(f"box {vals} has no area")

    @classmethod
    def from_pixels(
        cls,
        points: Any,
        width: int,
        height: int,
        min_pixels: float = MIN_BOX_PIXELS,
    ) -> Box:
        """Build a box from two pixel corners in any order, clipped to the image.

        ``points`` is ``[[xa, ya], [xb, yb]]`` or ``[xa, ya, xb, yb]``. Raises
        :class:`LabelError` when the points are malformed, or when the box is
        thinner than ``min_pixels`` after clipping (zero-size, or wholly
        outside the image).
        """
        if width <= 0 or height <= 0:
            raise LabelError(f"image size {width}x{height} is not valid")
        try:
            flat = (
                [float(v) for pair in points for v in pair]
                if _is_pairs(points)
                else [float(v) for v in points]
            )
        except (TypeError, ValueError) as exc:
            raise LabelError(f"box points {points!r} are not numbers") from exc
        if len(flat) != 4 or any(v != v for v in flat):  # v != v catches NaN
            raise LabelError(f"box needs two corners, got {points!r}")
        xa, ya, xb, yb = flat
        x1, x2 = sorted((min(max(xa, 0.0), width), min(max(xb, 0.0), width)))
        y1, y2 = sorted((min(max(ya, 0.0), height), min(max(yb, 0.0), height)))
        if x2 - x1 < min_pixels or y2 - y1 < min_pixels:
            raise LabelError(
                f"box {[round(v, 1) for v in flat]} is empty or outside the {width}x{height} image"
            )
        return cls(x1 / width, y1 / height, x2 / width, y2 / height)

    @classmethod
    def from_normalized(cls, values: Any) -> Box:
        """Build a box from normalized values in any corner order, clipped to [0, 1]."""
        xa, ya, xb, yb = (min(max(float(v), 0.0), 1.0) for v in values)
        x1, x2 = sorted((xa, xb))
        y1, y2 = sorted((ya, yb))
        return cls(x1, y1, x2, y2)

    def to_list(self) -> list[float]:
        """``[x1, y1, x2, y2]`` normalized."""
        return [self.x1, self.y1, self.x2, self.y2]

    def to_pixels(self, width: int, height: int) -> tuple[float, float, float, float]:
        """Corners in pixels of an image of ``width`` x ``height``."""
        return (self.x1 * width, self.y1 * height, self.x2 * width, self.y2 * height)

    @property
    def area(self) -> float:
        """Normalized area (fraction of the image)."""
        return (self.x2 - self.x1) * (self.y2 - self.y1)

    def iou(self, other: Box) -> float:
        """Intersection over union with another box (both normalized)."""
        return iou(self.to_list(), other.to_list())


def iou(a: Any, b: Any) -> float:
    """Intersection over union of two ``[x1, y1, x2, y2]`` boxes in the same units."""
    ix1, iy1 = max(a[0], b[0]), max(a[1], b[1])
    ix2, iy2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, ix2 - ix1) * max(0.0, iy2 - iy1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _is_pairs(points: Any) -> bool:
    return isinstance(points, (list, tuple)) and len(points) > 0 and isinstance(points[0], (list, tuple))


@dataclass(frozen=True)
class Label:
    """The label of one image: its size in pixels and its face boxes (may be empty)."""

    image_path: str
    width: int
    height: int
    boxes: tuple[Box, ...] = field(default_factory=tuple)

    @property
    def has_face(self) -> bool:
        return len(self.boxes) > 0


def labelme_dict(label: Label) -> dict[str, Any]:
    """The labelme JSON document for ``label`` (rectangles labelled ``face``)."""
    shapes = []
    for box in label.boxes:
        x1, y1, x2, y2 = box.to_pixels(label.width, label.height)
        shapes.append(
            {
                "label": FACE_LABEL,
                "points": [[round(x1, 2), round(y1, 2)], [round(x2, 2), round(y2, 2)]],
                "group_id": None,
                "description": "",
                "shape_type": "rectangle",
                "flags": {},
                "mask": None,
            }
        )
    return {
        "version": LABELME_VERSION,
        "flags": {},
        "shapes": shapes,
        "imagePath": label.image_path,
        "imageData": None,
        "imageHeight": int(label.height),
        "imageWidth": int(label.width),
    }


def parse_labelme(doc: Any, source: str = "label") -> Label:
    """Validate a labelme document and return its :class:`Label`.

    Rectangles labelled ``face`` (any case) become boxes, sorted and clipped.
    Other shape types or labels are ignored. Raises :class:`LabelError` with a
    message naming ``source`` when the document is not usable.
    """
    if not isinstance(doc, dict):
        raise LabelError(f"{source}: not a labelme file (expected a JSON object)")
    missing = [k for k in ("shapes", "imageHeight", "imageWidth") if k not in doc]
    if missing:
        raise LabelError(f"{source}: not a labelme file (missing {', '.join(missing)})")
    width, height = doc["imageWidth"], doc["imageHeight"]
    if (
        not isinstance(width, int)
        or not isinstance(height, int)
        or isinstance(width, bool)
        or width <= 0
        or height <= 0
    ):
        raise LabelError(
            f"{source}: imageWidth/imageHeight must be positive integers, got {width!r}x{height!r}"
        )
    if not isinstance(doc["shapes"], list):
        raise LabelError(f"{source}: 'shapes' must be a list")
    image_path = doc.get("imagePath") or ""
    if not isinstance(image_path, str):
        raise LabelError(f"{source}: 'imagePath' must be a string")
    boxes = []
    for i, shape in enumerate(doc["shapes"]):
        if not isinstance(shape, dict):
            raise LabelError(f"{source}: shape {i} is not an object")
        if shape.get("shape_type", "polygon") != "rectangle":
            continue
        if str(shape.get("label", "")).strip().lower() != FACE_LABEL:
            continue
        try:
            boxes.append(Box.from_pixels(shape.get("points"), width, height))
        except LabelError as exc:
            raise LabelError(f"{source}: shape {i}: {exc}") from exc
    return Label(image_path=image_path, width=width, height=height, boxes=tuple(boxes))


def read_labelme(path: Path) -> Label:
    """Read and validate a labelme JSON file. Raises :class:`LabelError`."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LabelError(f"{path.name}: not valid JSON ({exc})") from exc
    return parse_labelme(doc, source=path.name)


def write_labelme(path: Path, label: Label) -> None:
    """Write ``label`` as a labelme JSON file, atomically."""
    atomic_write_json(Path(path), labelme_dict(label))

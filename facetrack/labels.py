"""labelme JSON in and out, and the :class:`Box` type.

Box convention, used everywhere in FaceTrack: normalized ``[x1, y1, x2, y2]``
in ``[0, 1]`` relative to the image's width and height, with ``x1 < x2`` and
``y1 < y2`` (albumentations' ``"albumentations"`` format). labelme files store
pixel corners in any order, possibly outside the image: :func:`Box.from_pixels`
sorts and clips them on load.

A labelme file with no shapes means "no face"; no label file means "not
labelled yet". A file whose only shapes are not faces (people, cars) is "not
labelled yet" too, unless its labelme flag ``no_face`` is set. Files written
here open unchanged in the labelme desktop app, and keep every shape, flag and
key FaceTrack does not use (labelme's own ``other_data`` habit). Reading is
bounded: :data:`MAX_LABEL_BYTES`, :data:`MAX_SHAPES`, :data:`MAX_DEPTH`; a bad
file raises :class:`LabelError`, never another exception.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from facetrack.fileio import atomic_write_bytes

FACE_LABEL = "face"
LABELME_VERSION = "5.5.0"
# A box smaller than this many pixels on either side after clipping is refused.
MIN_BOX_PIXELS = 2.0
# Coordinates further than this from the origin are refused as absurd (not clipped).
MAX_COORD = 1e9
# A label file is refused, before parsing, when larger than this or holding more shapes.
MAX_LABEL_BYTES = 16 * 1024 * 1024
MAX_SHAPES = 1000
# Deepest nesting of lists and objects accepted in a label file (labelme's own files go 5 deep).
MAX_DEPTH = 40
# labelme's image-level flag that FaceTrack uses for "no face" when a file keeps other shapes.
NO_FACE_FLAG = "no_face"
# The keys labelme's own writer puts first; any other top-level key is kept as it is.
_LABELME_KEYS = ("version", "flags", "shapes", "imagePath", "imageData", "imageHeight", "imageWidth")

logger = logging.getLogger(__name__)


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
        except (TypeError, ValueError, OverflowError) as exc:
            raise LabelError(f"box points {_short(points)} are not numbers") from exc
        if len(flat) != 4:
            raise LabelError(f"box needs two corners, got {_short(points)}")
        if not all(math.isfinite(v) and abs(v) <= MAX_COORD for v in flat):
            raise LabelError(f"box points {_short(points)} are not finite pixel coordinates")
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


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_pairs(points: Any) -> bool:
    return isinstance(points, (list, tuple)) and len(points) > 0 and isinstance(points[0], (list, tuple))


@dataclass(frozen=True)
class Label:
    """The label of one image: its size in pixels, its face boxes, and what FaceTrack keeps for others.

    ``boxes`` are the ``face`` rectangles, normalized (see the module doc).
    Everything else in the labelme file is kept and written back untouched,
    as labelme itself does with data it does not know: ``other_shapes``
    (shapes with another label or type, verbatim, in pixels), ``flags``
    (labelme's image flags), ``extra`` (unknown top-level keys) and
    ``face_keys`` (per box, the face shape's own keys such as ``group_id``,
    ``description`` or ``flags``).

    A label with no face box says "no face" only when it has no other shape
    either, or when ``no_face`` is set (stored as the labelme flag
    ``no_face``); a photo whose file holds only other shapes (people, cars)
    is not labelled for faces yet. ``notes`` say, in words, what reading the
    file did (shapes kept, polygons turned into rectangles).
    """

    image_path: str
    width: int
    height: int
    boxes: tuple[Box, ...] = field(default_factory=tuple)
    other_shapes: tuple[dict[str, Any], ...] = field(default_factory=tuple, hash=False)
    flags: dict[str, Any] = field(default_factory=dict, hash=False)
    extra: dict[str, Any] = field(default_factory=dict, hash=False)
    face_keys: tuple[dict[str, Any], ...] = field(default_factory=tuple, hash=False)
    no_face: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple, compare=False, hash=False)

    @property
    def has_face(self) -> bool:
        return len(self.boxes) > 0

    @property
    def is_labelled(self) -> bool:
        """True when the label says where the faces are: boxes, or clearly none."""
        return bool(self.boxes) or self.no_face or not self.other_shapes

    def with_boxes(self, boxes: list[Box] | tuple[Box, ...]) -> Label:
        """This label with new face boxes; every other shape, flag and key stays.

        Each new box keeps the extra keys (``group_id``, ``description``...) of
        the old face box it overlaps most (IoU >= 0.5), so moving a box does
        not lose them. An empty list marks the photo "no face" explicitly.
        """
        boxes = tuple(boxes)
        if len(boxes) + len(self.other_shapes) > MAX_SHAPES:
            raise LabelError(f"{len(boxes)} boxes is more than the {MAX_SHAPES} a photo may hold")
        free = list(range(len(self.boxes)))
        keys: list[dict[str, Any]] = []
        for box in boxes:
            best = max(free, key=lambda i: box.iou(self.boxes[i]), default=None)
            if best is not None and box.iou(self.boxes[best]) >= 0.5:
                free.remove(best)
                keys.append(self._face_keys(best))
            else:
                keys.append({})
        return replace(self, boxes=boxes, face_keys=tuple(keys), no_face=not boxes, notes=())

    def _face_keys(self, i: int) -> dict[str, Any]:
        return dict(self.face_keys[i]) if i < len(self.face_keys) else {}

    def resized(self, width: int, height: int) -> Label:
        """This label for the same image stored at ``width`` x ``height`` (kept shapes are scaled)."""
        if (width, height) == (self.width, self.height):
            return self
        sx, sy = width / self.width, height / self.height
        shapes = tuple(_scale_shape(shape, sx, sy) for shape in self.other_shapes)
        return replace(self, width=int(width), height=int(height), other_shapes=shapes)


def _scale_shape(shape: dict[str, Any], sx: float, sy: float) -> dict[str, Any]:
    """``shape`` with its points scaled; a shape whose points are not pairs of numbers is kept as it is."""
    points = shape.get("points")
    try:
        scaled = [[round(float(x) * sx, 2), round(float(y) * sy, 2)] for x, y in points]
    except (TypeError, ValueError, OverflowError):
        return shape
    return {**shape, "points": scaled}


def labelme_dict(label: Label) -> dict[str, Any]:
    """The labelme JSON document for ``label``: face rectangles first, then the kept shapes and keys."""
    shapes: list[dict[str, Any]] = []
    for i, box in enumerate(label.boxes):
        x1, y1, x2, y2 = box.to_pixels(label.width, label.height)
        shape: dict[str, Any] = {
            "label": FACE_LABEL,
            "points": [[round(x1, 2), round(y1, 2)], [round(x2, 2), round(y2, 2)]],
            "group_id": None,
            "description": "",
            "shape_type": "rectangle",
            "flags": {},
            "mask": None,
        }
        kept = label._face_keys(i)
        shape.update({k: v for k, v in kept.items() if k not in ("points", "shape_type")})
        shapes.append(shape)
    shapes += [dict(s) for s in label.other_shapes]
    flags = {k: v for k, v in label.flags.items() if k != NO_FACE_FLAG}
    if label.no_face and not label.boxes and label.other_shapes:
        flags[NO_FACE_FLAG] = True
    doc: dict[str, Any] = {
        "version": LABELME_VERSION,
        "flags": flags,
        "shapes": shapes,
        "imagePath": label.image_path,
        "imageData": None,
        "imageHeight": int(label.height),
        "imageWidth": int(label.width),
    }
    doc.update({k: v for k, v in label.extra.items() if k not in _LABELME_KEYS})
    return doc


def _check_size(doc: dict[str, Any], source: str) -> tuple[int, int]:
    width, height = doc["imageWidth"], doc["imageHeight"]
    if (
        not isinstance(width, int)
        or not isinstance(height, int)
        or isinstance(width, bool)
        or isinstance(height, bool)
        or not 0 < width <= MAX_COORD
        or not 0 < height <= MAX_COORD
    ):
        raise LabelError(
            f"{source}: imageWidth/imageHeight must be positive integers, got {_short(width)}x{_short(height)}"
        )
    return width, height


def _face_shape(shape: dict[str, Any]) -> str | None:
    """ "rectangle" or "polygon" when ``shape`` is a face FaceTrack reads, else None (kept as it is)."""
    if str(shape.get("label", "")).strip().lower() != FACE_LABEL:
        return None
    kind = shape.get("shape_type") or "polygon"  # labelme's default when the key is missing
    return kind if kind in ("rectangle", "polygon") else None


def _polygon_corners(points: Any) -> list[list[float]]:
    try:
        xs = [float(p[0]) for p in points]
        ys = [float(p[1]) for p in points]
    except (TypeError, ValueError, IndexError, KeyError, OverflowError) as exc:
        raise LabelError(f"polygon points {_short(points)} are not numbers") from exc
    if len(xs) < 2:
        raise LabelError(f"polygon needs at least two points, got {_short(points)}")
    return [[min(xs), min(ys)], [max(xs), max(ys)]]


def _describe(shapes: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for shape in shapes:
        kind = f"{shape.get('label', '?')} {shape.get('shape_type') or 'polygon'}"
        counts[kind] = counts.get(kind, 0) + 1
    return ", ".join(f"{k} x{n}" if n > 1 else k for k, n in sorted(counts.items()))


def _check_header(doc: Any, source: str) -> tuple[int, int, list[Any], str, dict[str, Any]]:
    """The validated size, shapes, imagePath and flags of a labelme document."""
    if not isinstance(doc, dict):
        raise LabelError(f"{source}: not a labelme file (expected a JSON object)")
    missing = [k for k in ("shapes", "imageHeight", "imageWidth") if k not in doc]
    if missing:
        raise LabelError(f"{source}: not a labelme file (missing {', '.join(missing)})")
    width, height = _check_size(doc, source)
    shapes = doc["shapes"]
    if not isinstance(shapes, list):
        raise LabelError(f"{source}: 'shapes' must be a list")
    if len(shapes) > MAX_SHAPES:
        raise LabelError(f"{source}: {len(shapes)} shapes; FaceTrack reads at most {MAX_SHAPES} per photo")
    image_path = doc.get("imagePath") or ""
    if not isinstance(image_path, str):
        raise LabelError(f"{source}: 'imagePath' must be a string")
    flags = doc.get("flags") or {}
    if not isinstance(flags, dict):
        raise LabelError(f"{source}: 'flags' must be an object")
    return width, height, shapes, image_path, flags


def _split_shapes(
    shapes: list[Any], width: int, height: int, source: str
) -> tuple[list[Box], list[dict[str, Any]], list[dict[str, Any]], int]:
    """Face boxes, each face shape's other keys, the shapes kept as they are, and how many were polygons."""
    boxes: list[Box] = []
    face_keys: list[dict[str, Any]] = []
    others: list[dict[str, Any]] = []
    polygons = 0
    for i, shape in enumerate(shapes):
        if not isinstance(shape, dict):
            raise LabelError(f"{source}: shape {i} is not an object")
        kind = _face_shape(shape)
        if kind is None:
            others.append(shape)
            continue
        try:
            points = shape.get("points") if kind == "rectangle" else _polygon_corners(shape.get("points"))
            boxes.append(Box.from_pixels(points, width, height))
        except LabelError as exc:
            raise LabelError(f"{source}: shape {i}: {exc}") from exc
        polygons += kind == "polygon"
        face_keys.append({k: v for k, v in shape.items() if k not in ("points", "shape_type")})
    return boxes, face_keys, others, polygons


def parse_labelme(doc: Any, source: str = "label") -> Label:
    """Validate a labelme document and return its :class:`Label`.

    Rectangles labelled ``face`` (any case) become boxes, sorted and clipped;
    a polygon labelled ``face`` (or a face shape without ``shape_type``,
    which labelme reads as a polygon) becomes its bounding rectangle. Every
    other shape, the flags and unknown keys are kept in the label, untouched.
    Embedded ``imageData`` is dropped (FaceTrack stores the photo itself).
    Raises :class:`LabelError` with a message naming ``source`` when the
    document is not usable.
    """
    width, height, shapes_in, image_path, flags = _check_header(doc, source)
    boxes, face_keys, others, polygons = _split_shapes(shapes_in, width, height, source)
    notes = []
    if polygons:
        notes.append(f"{polygons} face polygon(s) stored as their bounding rectangle(s)")
    if others:
        notes.append(f"kept {len(others)} other shape(s), not used by FaceTrack: {_describe(others)}")
    no_face = not boxes and (not others or flags.get(NO_FACE_FLAG) is True)
    if others and not boxes and not no_face:
        notes.append("no face rectangle: not labelled for faces yet (mark it on the Label page)")
    if doc.get("imageData"):
        notes.append("embedded imageData dropped (the photo is stored beside the label)")
    return Label(
        image_path=image_path,
        width=width,
        height=height,
        boxes=tuple(boxes),
        other_shapes=tuple(others),
        flags={k: v for k, v in flags.items() if k != NO_FACE_FLAG},
        extra={k: v for k, v in doc.items() if k not in _LABELME_KEYS},
        face_keys=tuple(face_keys),
        no_face=no_face,
        notes=tuple(notes),
    )


def _depth(doc: Any) -> int:
    """How deeply lists and objects nest in ``doc`` (iterative: safe on any input)."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            node = list(node.values())
        if isinstance(node, list):
            deepest = max(deepest, level)
            if level > MAX_DEPTH:
                return level
            stack.extend((child, level + 1) for child in node if isinstance(child, (dict, list)))
    return deepest


def check_label_size(size: int, source: str = "label") -> None:
    """Refuse a label file of ``size`` bytes larger than :data:`MAX_LABEL_BYTES` (before reading it)."""
    if size > MAX_LABEL_BYTES:
        raise LabelError(
            f"{source}: {size / 2**20:.0f} MB is larger than the {MAX_LABEL_BYTES // 2**20} MB "
            "a label file may be (save it without image data in labelme)"
        )


def parse_label_bytes(data: bytes, source: str = "label") -> Label:
    """Parse the bytes of a labelme file, refusing oversized, overfull or malicious ones first.

    Raises :class:`LabelError` for anything that is not a usable labelme
    file: larger than :data:`MAX_LABEL_BYTES`, more than :data:`MAX_SHAPES`
    shapes, not UTF-8, not JSON, numbers too long to read, nesting deeper
    than :data:`MAX_DEPTH`.
    """
    check_label_size(len(data), source)
    if data.count(b'"points"') > MAX_SHAPES:
        raise LabelError(
            f"{source}: more than {MAX_SHAPES} shapes; FaceTrack reads at most {MAX_SHAPES} per photo"
        )
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except RecursionError as exc:
        raise LabelError(f"{source}: not a labelme file (JSON nested too deeply)") from exc
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError and over-long integers
        raise LabelError(f"{source}: not valid JSON ({_short(str(exc), 120)})") from exc
    if _depth(doc) > MAX_DEPTH:
        raise LabelError(f"{source}: not a labelme file (JSON nested deeper than {MAX_DEPTH} levels)")
    return parse_labelme(doc, source=source)


def read_labelme(path: Path) -> Label:
    """Read and validate a labelme JSON file. Raises :class:`LabelError` (FileNotFoundError if missing)."""
    path = Path(path)
    with open(path, "rb") as fh:
        data = fh.read(MAX_LABEL_BYTES + 1)
    return parse_label_bytes(data, source=path.name)


def labelme_bytes(label: Label) -> bytes:
    """The UTF-8 file content for ``label``, checked to read back as the same boxes.

    Raises :class:`LabelError` when the written file would not read back
    (for example a box that is thinner than :data:`MIN_BOX_PIXELS` in the
    stored image's pixels): FaceTrack never stores a label it cannot read.
    """
    doc = labelme_dict(label)
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:  # kept text with lone surrogates: write them as \\u escapes
        data = (json.dumps(doc, indent=2, ensure_ascii=True) + "\n").encode("ascii")
    try:
        again = parse_label_bytes(data, source=label.image_path or "label")
    except LabelError as exc:
        raise LabelError(
            f"this label cannot be stored as a {label.width}x{label.height} image's label: {exc}"
        ) from exc
    if len(again.boxes) != len(label.boxes):
        raise LabelError("this label would not read back with the same boxes")
    return data


def write_labelme(path: Path, label: Label) -> None:
    """Write ``label`` as a labelme JSON file, atomically (refusing one that would not read back)."""
    atomic_write_bytes(Path(path), labelme_bytes(label))

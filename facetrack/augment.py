"""Augmentation: what the app's sliders set, the albumentations pipeline, preview and generation.

Only the train split is augmented. Validation and test images are stored once,
resized to the same ``output_size x output_height`` (4:3, as webcam frames
and the dense model's input) without any other change, so a model is never
trained on a copy of an image it is tested on.

Every face box follows each transform. Visibility rule: a crop or rotation
that leaves less than ``AugmentSettings.min_visibility`` of a face's box area
inside the image drops that face; the others stay (clipped to the image), and
the copy becomes a "no face" example only when no face is left. Boxes are
normalized ``[x1, y1, x2, y2]``.

Layout on disk (``<project>/augmented/``)::

    settings.json                   the AugmentSettings used
    train/<image id>_<k>.jpg        k = 0 .. copies - 1
    train/<image id>.json           {"source", "split", "key", "copies": [{"file", "boxes", "box", "bytes"}]}
    val/<image id>_0.jpg, val/<image id>.json, test/... the same with one plain copy

The per-image JSON is written last, so it marks a finished image: generation
resumes by skipping images whose JSON matches the current settings. ``boxes``
lists every face of a copy (``box``, its first face, is what sets made before
multi-face training stored); the key includes :data:`FORMAT`, so a set made
before is stale and generated again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import sys
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facetrack.data import AUGMENTED_SETTINGS_FILE, SPLITS, marker_ok, sample_counts
from facetrack.fileio import (
    DISK_FULL_MESSAGE,
    DiskFull,
    atomic_write_json,
    disk_full_error,
    ensure_free_space,
    is_disk_full,
    read_json,
    write_disposable,
)
from facetrack.images import encode_jpeg, read_rgb
from facetrack.labels import Box, LabelError
from facetrack.limits import AUGMENT_LIMITS, DEFAULT_COPIES, DEFAULT_MULTI_FACE_COPIES, range_problems

log = logging.getLogger(__name__)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import albumentations as A

JPEG_QUALITY = 92
FORMAT = 2  # 2: every face of a copy in "boxes", 4:3 copies (1: one "box", square copies)


@dataclass(frozen=True)
class AugmentSettings:
    """Every knob the augment page shows. Probabilities are in [0, 1]."""

    # Defaults: the best configuration of benchmarks/dense_research.py (benchmarks/README.md).
    copies_per_image: int = DEFAULT_COPIES  # augmented copies of each training photo
    # copies of a training photo with two faces or more (0: copies_per_image)
    multi_face_copies: int = DEFAULT_MULTI_FACE_COPIES
    output_size: int = 160  # width of the images written (>= the model's input width)
    output_height: int = 120  # their height (0: square); 160x120 is the webcam's 4:3
    crop_probability: float = 0.8  # share of copies that are a random crop (others: the whole photo)
    crop_scale_min: float = 0.3  # smallest crop, as a share of the photo's area
    zoom_out: float = 0.45  # shrink the photo by up to this share on a plain border (small, far faces)
    zoom_out_probability: float = 0.3  # chance of a zoom-out
    horizontal_flip: bool = True  # mirror half of the copies
    vertical_flip: bool = False  # faces are not upside down: off by default
    # Photometric changes: strong enough for faces in shadow, old prints and tinted photos
    # (benchmarks/README.md, pipeline.py section, rows 20 and 20p: face photos told from no-face
    # photos better, AUC 0.9885 and 0.9858 against 0.9815-0.9835 in four runs before).
    brightness: float = 0.3  # +- share of full brightness
    contrast: float = 0.35  # +- share
    color_probability: float = 0.7  # chance of a brightness/contrast change
    gamma: int = 35  # +- percent
    rgb_shift: int = 15  # +- levels per channel (0..255)
    blur_probability: float = 0.1  # chance of a slight blur
    # chance of a grayscale copy: faces come in grayscale too, so colour alone must not decide
    grayscale_probability: float = 0.2
    rotation: int = 10  # +- degrees
    rotation_probability: float = 0.4  # chance of a rotation
    min_visibility: float = 0.5  # a face keeping less than this share of its box is dropped
    seed: int = 0

    def __post_init__(self) -> None:
        problems = range_problems(self, AUGMENT_LIMITS)  # the ranges the sliders show too
        if self.output_height and not 32 <= self.output_height <= 1024:
            problems.append("output height must be between 32 and 1024 pixels (or 0: square)")
        if problems:
            raise ValueError("; ".join(problems))
        for f in fields(self):  # 20.0 from a JSON file is the whole number 20; 0 is the float 0.0
            if f.type in ("int", "float"):
                object.__setattr__(self, f.name, (int if f.type == "int" else float)(getattr(self, f.name)))
        for name in ("horizontal_flip", "vertical_flip"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name.replace('_', ' ')} must be true or false")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> AugmentSettings:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in names})

    @property
    def output_hw(self) -> tuple[int, int]:
        """``(height, width)`` of the images written."""
        return (self.output_height or self.output_size), self.output_size

    def copies_for(self, faces: int) -> int:
        """Copies of a training photo with ``faces`` faces."""
        return self.multi_face_copies if faces >= 2 and self.multi_face_copies else self.copies_per_image

    def key(self) -> str:
        """A short hash of the settings; changes whenever any setting changes."""
        text = json.dumps({**self.to_dict(), "format": FORMAT}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def build_pipeline(settings: AugmentSettings) -> A.Compose:
    """The albumentations pipeline for the train split (``output_hw`` images, every box follows)."""
    h, w = settings.output_hw
    aspect = w / h
    transforms: list[Any] = []
    if settings.rotation > 0:
        transforms.append(
            A.Rotate(
                limit=(-settings.rotation, settings.rotation),
                rotate_method="ellipse",
                border_mode=cv2.BORDER_REFLECT_101,
                p=settings.rotation_probability,
            )
        )
    if settings.zoom_out > 0 and settings.zoom_out_probability > 0:
        # Crops only zoom in; this makes faces smaller, as a face far from the camera is.
        # The border is plain grey, so no unlabelled mirrored face appears in it.
        transforms.append(
            A.Affine(
                scale=(1.0 - min(settings.zoom_out, 0.9), 1.0),
                keep_ratio=True,
                border_mode=cv2.BORDER_CONSTANT,
                fill=114,
                p=settings.zoom_out_probability,
            )
        )
    # OneOf picks a child in proportion to the children's p (fixed when OneOf is built)
    crop_p = settings.crop_probability
    transforms.append(
        A.OneOf(
            [
                A.RandomResizedCrop(
                    size=(h, w),
                    scale=(settings.crop_scale_min, 1.0),
                    ratio=(aspect * 0.6, aspect * 1.4),
                    p=max(crop_p, 1e-9),
                ),
                A.Resize(h, w, p=max(1.0 - crop_p, 1e-9)),
            ],
            p=1.0,
        )
    )
    if settings.horizontal_flip:
        transforms.append(A.HorizontalFlip(p=0.5))
    if settings.vertical_flip:
        transforms.append(A.VerticalFlip(p=0.5))
    if settings.brightness > 0 or settings.contrast > 0:
        transforms.append(
            A.RandomBrightnessContrast(
                brightness_limit=settings.brightness,
                contrast_limit=settings.contrast,
                p=settings.color_probability,
            )
        )
    if settings.gamma > 0:
        transforms.append(A.RandomGamma(gamma_limit=(100 - settings.gamma, 100 + settings.gamma), p=0.3))
    if settings.rgb_shift > 0:
        lim = (-settings.rgb_shift, settings.rgb_shift)
        transforms.append(A.RGBShift(r_shift_limit=lim, g_shift_limit=lim, b_shift_limit=lim, p=0.3))
    if settings.blur_probability > 0:
        transforms.append(A.GaussianBlur(blur_limit=(3, 5), p=settings.blur_probability))
    if settings.grayscale_probability > 0:
        transforms.append(A.ToGray(num_output_channels=3, p=settings.grayscale_probability))
    return A.Compose(
        transforms,
        bbox_params=A.BboxParams(
            format="albumentations",
            label_fields=["labels"],
            min_visibility=settings.min_visibility,
            clip=True,
            filter_invalid_bboxes=True,
        ),
        seed=settings.seed,
        strict=True,
    )


def _working_copy(rgb: np.ndarray, output_size: int) -> np.ndarray:
    """Downscale big photos once so that crops are not computed on millions of useless pixels."""
    h, w = rgb.shape[:2]
    limit = 3 * output_size
    if min(h, w) <= limit:
        return rgb
    scale = limit / min(h, w)
    return cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)


def _as_boxes(boxes: Box | Sequence[Box] | None) -> list[Box]:
    if boxes is None:
        return []
    if isinstance(boxes, Box):
        return [boxes]
    return list(boxes)


def augment_image(
    rgb: np.ndarray, boxes: Box | Sequence[Box] | None, settings: AugmentSettings, count: int, seed: int
) -> list[tuple[np.ndarray, list[Box]]]:
    """``count`` augmented copies of one RGB photo, each with every face box still in it.

    ``boxes``: the photo's faces (a list; one Box or None work too). A face
    cut off by a crop is dropped; an empty list means "no face".
    """
    pipeline = build_pipeline(settings)
    pipeline.set_random_seed(seed)
    work = _working_copy(rgb, min(settings.output_hw))
    bboxes = [b.to_list() for b in _as_boxes(boxes)]
    labels = ["face"] * len(bboxes)
    out = []
    for _ in range(count):
        result = pipeline(
            image=work, bboxes=np.asarray(bboxes, dtype=np.float32).reshape(-1, 4), labels=labels
        )
        out.append((result["image"], _valid_boxes(result["bboxes"])))
    return out


def _valid_boxes(bboxes: Any) -> list[Box]:
    out = []
    for values in np.asarray(bboxes, dtype=np.float64).reshape(-1, 4):
        try:
            out.append(Box.from_normalized(values))
        except LabelError:
            continue
    return out


def plain_copy(rgb: np.ndarray, output_hw: int | tuple[int, int]) -> np.ndarray:
    """The whole photo resized to ``(h, w)`` (``S``: a square), as the live detector sees whole frames."""
    h, w = (output_hw, output_hw) if isinstance(output_hw, int) else output_hw
    return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)


def preview(
    rgb: np.ndarray,
    boxes: Box | Sequence[Box] | None,
    settings: AugmentSettings,
    count: int = 8,
    seed: int | None = None,
) -> list[tuple[np.ndarray, list[Box]]]:
    """A few augmented copies with every face box, for the sliders' live preview (one photo, in process)."""
    return augment_image(rgb, boxes, settings, count, settings.seed if seed is None else seed)


# -- generation -----------------------------------------------------------------


@dataclass(frozen=True)
class GenerateReport:
    """What :func:`generate` did."""

    done: int  # images processed in this call
    skipped: int  # images already generated with the same settings (resumed)
    failed: list[tuple[str, str]]  # (image id, reason)
    counts: dict[str, int]  # samples per split after generation
    stopped: bool = False


Progress = Callable[[int, int], None]


def _task(
    image_path: str, boxes: list[list[float]], split: str, settings_doc: dict, out_dir: str, key: str
) -> tuple[str, str | None]:
    """Augment one photo (every face in ``boxes``) and write its copies; runs in a worker process.

    Returns (id, error). On a full disk the copies written so far are removed
    and the error starts with :data:`DISK_FULL_MESSAGE`, so that :func:`generate` stops.
    """
    image_id = Path(image_path).stem
    entries: list[dict[str, Any]] = []
    try:
        settings = AugmentSettings.from_dict(settings_doc)
        rgb = read_rgb(image_path)
        faces = [Box(*b) for b in boxes]
        if split == "train":
            count = settings.copies_for(len(faces))
            copies = augment_image(rgb, faces, settings, count, _seed(settings.seed, image_id))
        else:
            copies = [(plain_copy(rgb, settings.output_hw), faces)]
        folder = Path(out_dir) / split
        for k, (img, kept) in enumerate(copies):
            name = f"{image_id}_{k}.jpg"
            data = encode_jpeg(img, JPEG_QUALITY)
            # Written directly; the marker below (atomic, written last) lists each size,
            # so a copy cut short by a crash is found and its photo generated again.
            entries.append({"file": name})  # listed first, so a partial file is removed on failure
            write_disposable(folder / name, data)
            listed = [[round(v, 6) for v in b.to_list()] for b in kept]
            entries[-1] = {
                "file": name,
                "boxes": listed,
                "box": listed[0] if listed else None,
                "bytes": len(data),
            }
        atomic_write_json(
            folder / f"{image_id}.json",
            {"source": image_id, "split": split, "key": key, "copies": entries},
            parents=False,
        )
        return image_id, None
    except Exception as exc:  # reported per image; the rest proceeds (but not on a full disk)
        if not is_disk_full(exc):
            log.warning("augmenting %s failed: %s: %s", image_id, type(exc).__name__, exc)
            return image_id, f"{type(exc).__name__}: {exc}"
        for entry in entries:
            (Path(out_dir) / split / entry["file"]).unlink(missing_ok=True)
        return image_id, str(disk_full_error(Path(out_dir), exc))


def _seed(base: int, image_id: str) -> int:
    return (base * 1_000_003 + int(hashlib.sha256(image_id.encode()).hexdigest()[:8], 16)) % (2**31)


def generate(
    project: Any,
    settings: AugmentSettings,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    workers: int | None = None,
) -> GenerateReport:
    """Generate the augmented set of ``project`` (a :class:`facetrack.workspace.Project`).

    Resumable: images already generated with the same settings are skipped; a
    change of settings regenerates everything. Runs ``workers`` processes
    (default: one per CPU core; 0 = in this process). ``progress(done, total)``
    is called as images finish; ``should_stop()`` ends the run early (what is
    finished stays).
    """
    out = project.augmented_dir
    key = settings.key()
    _start_generation(out, settings, key)
    split = project.split()
    tasks, skipped = _plan(project, split, settings, key)
    _prune(out, split)
    tally = _Tally(skipped, len(tasks) + skipped, progress, should_stop)
    if progress:
        progress(skipped, tally.total)
    ensure_free_space(out, _bytes_needed(tasks, settings), "augmentation")
    n_workers = min(os.cpu_count() or 1, 4) if workers is None else workers
    if n_workers <= 0 or len(tasks) < 8:
        _run_here(tasks, tally)
    else:
        _run_in_pool(tasks, n_workers, tally)
    if tally.disk_full:  # every photo cut short removed its own copies; finished photos stay (resumable)
        raise DiskFull(tally.disk_full)
    return GenerateReport(
        done=tally.done,
        skipped=skipped,
        failed=tally.failed,
        counts=sample_counts(project.augmented_dir, split),
        stopped=tally.stopped,
    )


def _start_generation(out: Path, settings: AugmentSettings, key: str) -> None:
    """Record the settings; a change of settings removes what older settings generated."""
    settings_path = out / AUGMENTED_SETTINGS_FILE
    try:
        old_key = read_json(settings_path).get("key")
    except (FileNotFoundError, ValueError, AttributeError):
        old_key = None
    if old_key != key and out.exists():
        shutil.rmtree(out)
    out.mkdir(exist_ok=True)  # one level: a deleted project is not re-created
    atomic_write_json(settings_path, {"key": key, "settings": settings.to_dict()}, parents=False)


def _plan(
    project: Any, split: dict[str, str], settings: AugmentSettings, key: str
) -> tuple[list[tuple], int]:
    """The tasks for photos not generated yet with ``key``, and how many are done already."""
    out = project.augmented_dir
    tasks = []
    skipped = 0
    for image_id, side in sorted(split.items()):
        boxes = project.boxes(image_id)
        if boxes is None:
            continue
        if marker_ok(out / side / f"{image_id}.json", key):
            skipped += 1
            continue
        faces = [b.to_list() for b in boxes]
        tasks.append((str(project.image_path(image_id)), faces, side, settings.to_dict(), str(out), key))
    return tasks, skipped


def _bytes_needed(tasks: list[tuple], settings: AugmentSettings) -> int:
    """About what the copies of ``tasks`` take on disk (a JPEG is under a quarter of its pixels' bytes)."""
    copies = sum(settings.copies_per_image if t[2] == "train" else 1 for t in tasks)
    return copies * settings.output_size**2 * 3 // 4 + 2 * 2**20  # and room for the markers


@dataclass
class _Tally:
    """What a generation has done so far; reports progress and asks whether to stop."""

    skipped: int
    total: int
    progress: Progress | None
    should_stop: Callable[[], bool] | None
    done: int = 0
    stopped: bool = False
    failed: list[tuple[str, str]] = field(default_factory=list)
    disk_full: str = ""  # the first "the disk is full" error: generation ends

    def finished(self, image_id: str, err: str | None) -> None:
        self.done += 1
        if err and err.startswith(DISK_FULL_MESSAGE):
            self.disk_full = self.disk_full or err
        elif err:
            self.failed.append((image_id, err))

    def report(self) -> None:
        if self.progress:
            self.progress(self.skipped + self.done, self.total)

    def stop_requested(self) -> bool:
        return bool(self.disk_full) or bool(self.should_stop and self.should_stop())


def _run_here(tasks: list[tuple], tally: _Tally) -> None:
    for t in tasks:
        if tally.stop_requested():
            tally.stopped = True
            break
        _, err = _task(*t)
        tally.finished(Path(t[0]).stem, err)
        tally.report()


def _run_in_pool(tasks: list[tuple], n_workers: int, tally: _Tally) -> None:
    # fork starts workers at once; never fork a process that holds TensorFlow's threads (spawn then)
    ctx = multiprocessing.get_context("spawn" if "tensorflow" in sys.modules else "fork")
    with ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx) as pool:
        pending: set[Future] = set()
        queue = list(reversed(tasks))
        while queue or pending:
            while queue and len(pending) < 4 * n_workers and not tally.stopped:
                pending.add(pool.submit(_task, *queue.pop()))
            finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for f in finished:
                tally.finished(*f.result())
            if finished:
                tally.report()
            if not tally.stopped and tally.stop_requested():
                tally.stopped = True
                queue.clear()


def _prune(out: Path, split: dict[str, str]) -> None:
    """Remove generated files of photos that were deleted or that sit on another side now."""
    for side in SPLITS:
        folder = out / side
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            image_id = path.stem.rsplit("_", 1)[0] if path.suffix == ".jpg" else path.stem
            if split.get(image_id) != side:
                path.unlink(missing_ok=True)

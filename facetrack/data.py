"""Samples, their targets, the image loader, the generated set on disk, and the training batches.

A :class:`Sample` is one image file on disk and every face box in it (none
for "no face"). Training reads the train split's augmented copies; validation and
evaluation read the original val/test images resized once (never augmented),
so no copy of a test image is ever trained on. The split itself (which photo
is on which side) is assigned by :meth:`facetrack.workspace.Project.split`
(only generation and training do that); the listing functions here take it
as an argument and never write anything.

The generated set (``<project>/augmented/``, written by
:func:`facetrack.augment.generate`) is ``settings.json`` (``{"settings", "key"}``)
and, per split side, ``<image id>_<k>.jpg`` copies with a ``<image id>.json``
marker ``{"source", "split", "key", "copies": [{"file", "boxes", "box", "bytes"}]}``
(``boxes``: every face of the copy; ``box``: the first, as older sets had).

This module imports TensorFlow only inside the functions that build
``tf.data`` pipelines, so listing and counting samples stays light.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facetrack.fileio import read_json
from facetrack.labels import Box
from facetrack.runs import SETTINGS_FILE, input_hw

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
DEFAULT_BATCH_SIZE = 32
AUGMENTED_SETTINGS_FILE = SETTINGS_FILE  # augmented/settings.json: the generation's settings and key


@dataclass(frozen=True)
class Sample:
    """One image on disk and every face box in it, normalized (see :mod:`facetrack.labels`).

    ``boxes``: every face (empty: "no face"). ``box``: the first face or None
    (what the one-box head of older runs trains on); given alone it becomes
    the only face, so ``Sample(path, box)`` still reads as before.
    """

    path: Path
    box: Box | None = None
    source_id: str = ""  # id of the original project image this sample comes from
    boxes: tuple[Box, ...] = ()

    def __post_init__(self) -> None:
        boxes = tuple(self.boxes)
        if not boxes and self.box is not None:
            boxes = (self.box,)
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "box", boxes[0] if boxes else None)

    @property
    def has_face(self) -> bool:
        return bool(self.boxes)

    def box_array(self) -> np.ndarray:
        """Every face box as ``(K, 4)`` float32 normalized ``[x1, y1, x2, y2]`` (``K`` may be 0)."""
        return np.asarray([b.to_list() for b in self.boxes], np.float32).reshape(-1, 4)


def targets(samples: Sequence[Sample], grid: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The training targets of ``samples``.

    ``grid`` None (the one-box head): ``class`` ``(N, 1)`` (1.0 = face) and
    ``bbox`` ``(N, 4)`` of the first face, ``[0, 0, 0, 0]`` for no face (what
    the localization loss skips). ``grid`` ``(Gh, Gw)`` (the dense head):
    per-cell targets of every face, ``(N, Gh, Gw, 1)`` and ``(N, Gh, Gw, 4)``
    (:func:`facetrack.dense.dense_targets`). Float32.
    """
    if grid is not None:
        from facetrack.dense import dense_targets

        return dense_targets([s.box_array() for s in samples], grid)
    cls = np.array([[1.0 if s.box is not None else 0.0] for s in samples], np.float32).reshape(-1, 1)
    box = np.array(
        [s.box.to_list() if s.box is not None else [0.0] * 4 for s in samples], np.float32
    ).reshape(-1, 4)
    return cls, box


# --------------------------------------------------------------------------- the generated set


def generation_key(augmented_dir: Path) -> str | None:
    """The key of the settings the generated set was made with, or None when there is none."""
    try:
        doc = read_json(Path(augmented_dir) / AUGMENTED_SETTINGS_FILE)
    except (FileNotFoundError, ValueError):
        return None
    return doc.get("key") if isinstance(doc, dict) else None


def marker_ok(marker: Path, key: str | None) -> bool:
    """True when a photo's marker says its copies were made with ``key`` and they are all there."""
    try:
        doc = read_json(marker)
    except (FileNotFoundError, ValueError):
        return False
    if doc.get("key") != key:
        return False
    for c in doc.get("copies", []):
        try:
            size = (marker.parent / c["file"]).stat().st_size
        except OSError:
            return False
        if "bytes" in c and size != c["bytes"]:
            return False
    return True


def _copy_boxes(copy: dict[str, Any]) -> tuple[Box, ...]:
    """The face boxes of one generated copy: ``"boxes"`` (every face), else the older ``"box"``."""
    raw = copy.get("boxes")
    if raw is None:
        raw = [copy["box"]] if copy.get("box") else []
    return tuple(Box.from_normalized(b) for b in raw)


def _marker_samples(marker: Path, key: str | None) -> list[Sample]:
    try:
        doc = read_json(marker)
    except ValueError:
        return []
    if doc.get("key") != key:
        return []
    out = []
    for c in doc.get("copies", []):
        path = marker.parent / c["file"]
        if path.exists():
            out.append(Sample(path=path, source_id=marker.stem, boxes=_copy_boxes(c)))
    return out


def list_samples(augmented_dir: Path, side: str, split: Mapping[str, str]) -> list[Sample]:
    """The generated samples of one side of ``split`` (image id -> side), for training and evaluation.

    Only images still on ``side`` of ``split`` are returned; the train side
    gives augmented copies, val/test one plain copy. Reads only.
    """
    if side not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}")
    folder = Path(augmented_dir) / side
    if not folder.is_dir():
        return []
    key = generation_key(augmented_dir)
    if key is None:
        return []
    samples: list[Sample] = []
    for marker in sorted(folder.glob("*.json")):
        if split.get(marker.stem) == side:
            samples.extend(_marker_samples(marker, key))
    return samples


def sample_counts(augmented_dir: Path, split: Mapping[str, str]) -> dict[str, int]:
    """Number of generated samples per side, and faces among them (``train``, ``train_faces``, ...)."""
    result = {}
    for side in SPLITS:
        samples = list_samples(augmented_dir, side, split)
        result[side] = len(samples)
        result[f"{side}_faces"] = sum(s.has_face for s in samples)
    return result


def is_stale(augmented_dir: Path, split: Mapping[str, str], labelled: Sequence[str]) -> bool:
    """True when a labelled photo is not yet in the generated set (it needs a Generate).

    ``labelled``: the project's labelled image ids; one missing from ``split``
    has not been assigned a side yet, so it is not generated either.
    """
    key = generation_key(augmented_dir)
    if key is None:
        return True
    return any(
        image_id not in split
        or not marker_ok(Path(augmented_dir) / split[image_id] / f"{image_id}.json", key)
        for image_id in labelled
    )


# --------------------------------------------------------------------------- image loading


def image_dataset(
    samples: Sequence[Sample], input_size: int | Sequence[int], batch_size: int = DEFAULT_BATCH_SIZE
):
    """A streaming ``tf.data.Dataset`` of the images of ``samples``, in order.

    Each image file (JPEG/PNG of any size) is decoded and resized to the
    input size (``S`` or ``(h, w)``; plain resize, aspect ignored, as the live
    detector does) as float32 RGB 0..255: batches ``(B, h, w, 3)``. Training
    reads the same resize from its caches (:mod:`facetrack.cache`).
    """
    import tensorflow as tf

    h, w = input_hw(input_size)

    def load(path):
        img = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        img = tf.image.resize(tf.cast(img, tf.float32), (h, w), method="bilinear", antialias=True)
        img = tf.clip_by_value(img, 0.0, 255.0)
        img.set_shape((h, w, 3))
        return img

    ds = tf.data.Dataset.from_tensor_slices([str(s.path) for s in samples])
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(int(batch_size)).prefetch(tf.data.AUTOTUNE)


# --------------------------------------------------------------------------- training batches


# Cached features up to this size are trained on from memory (in-graph shuffling and
# batching: a few ms less per step than streaming); larger caches stream from disk.
FEATURES_IN_MEMORY_BYTES = 512 * 2**20


def streamed_batches(
    samples: Sequence[Sample],
    batch_size: int,
    shuffle: bool,
    seed: int,
    xshape: tuple[int, ...],
    make_batch: Any,
    target_arrays: tuple[np.ndarray, np.ndarray] | None = None,
):
    """A ``tf.data`` pipeline of batches assembled in Python, with their targets.

    Batches are ``batch_size`` samples in a new random order each epoch
    (``shuffle``), sorted within the batch for memmap reads.
    ``make_batch(idx, boxes, rng)`` returns ``(x float32 (B, *xshape), boxes)``
    where ``boxes`` are the batch's rows of the box targets (it may move them).
    ``target_arrays``: ``(class, bbox)`` targets of every sample (default: the
    one-box :func:`targets`). Elements are ``(x, {"class", "bbox"})``.
    """
    import tensorflow as tf

    n = len(samples)
    cls, box = targets(samples) if target_arrays is None else target_arrays
    rng = np.random.default_rng(seed)

    def gen():
        order = rng.permutation(n) if shuffle else np.arange(n)
        for i in range(0, n, batch_size):
            idx = np.sort(order[i : i + batch_size])
            x, boxes = make_batch(idx, box[idx], rng)
            yield x, {"class": cls[idx], "bbox": boxes}

    sig = (
        tf.TensorSpec((None, *xshape), tf.float32),
        {
            "class": tf.TensorSpec((None, *cls.shape[1:]), tf.float32),
            "bbox": tf.TensorSpec((None, *box.shape[1:]), tf.float32),
        },
    )
    ds = tf.data.Dataset.from_generator(gen, output_signature=sig)
    return ds.apply(tf.data.experimental.assert_cardinality(-(-n // batch_size))).prefetch(2)


def feature_dataset(
    feats: np.ndarray,
    samples: Sequence[Sample],
    batch_size: int,
    shuffle: bool,
    seed: int,
    grid: tuple[int, int] | None = None,
):
    """Batches ``(features (B, h, w, c) float32, {"class", "bbox"})`` of cached features.

    Targets as :func:`targets` says for ``grid`` (None: the one-box head).
    """
    import tensorflow as tf

    cls, box = targets(samples, grid)
    if feats.nbytes <= FEATURES_IN_MEMORY_BYTES:
        ds = tf.data.Dataset.from_tensor_slices((np.asarray(feats), cls, box))
        if shuffle:
            ds = ds.shuffle(len(samples), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size).map(lambda x, c, b: (tf.cast(x, tf.float32), {"class": c, "bbox": b}))
        return ds.prefetch(2)
    return streamed_batches(
        samples,
        batch_size,
        shuffle,
        seed,
        feats.shape[1:],
        lambda idx, boxes, rng: (np.asarray(feats[idx], np.float32), boxes),
        (cls, box),
    )


def jitter_batch(
    images: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, flip: bool, jitter: float
) -> tuple[np.ndarray, np.ndarray]:
    """Augment a uint8 batch ``(B, S, S, 3)`` and its boxes ``(B, 4)``; returns float32 images and boxes.

    ``jitter`` > 0: a random window of ``1 - jitter`` .. 1 of each side that
    keeps the whole face box, resized back to ``S``, and brightness and
    contrast varied slightly. ``flip``: half of the images mirrored
    left-right. A no-face image has box ``[0, 0, 0, 0]``, which stays so.
    """
    import cv2

    k, size = len(images), images.shape[1]
    boxes = boxes.copy()
    has = boxes[:, 2] > boxes[:, 0]
    out = np.empty(images.shape, np.float32)
    if jitter > 0:
        cw = rng.uniform(1.0 - jitter, 1.0, k)
        ch = np.clip(cw * rng.uniform(0.92, 1.08, k), 0.0, 1.0)
        lo_x = np.where(has, np.maximum(0.0, boxes[:, 2] - cw), 0.0)
        hi_x = np.where(has, np.minimum(boxes[:, 0], 1.0 - cw), 1.0 - cw)
        lo_y = np.where(has, np.maximum(0.0, boxes[:, 3] - ch), 0.0)
        hi_y = np.where(has, np.minimum(boxes[:, 1], 1.0 - ch), 1.0 - ch)
        ok = (hi_x >= lo_x) & (hi_y >= lo_y)
        x0 = np.where(ok, lo_x + rng.random(k) * np.maximum(hi_x - lo_x, 0.0), 0.0)
        y0 = np.where(ok, lo_y + rng.random(k) * np.maximum(hi_y - lo_y, 0.0), 0.0)
        cw, ch = np.where(ok, cw, 1.0), np.where(ok, ch, 1.0)
        gain = rng.uniform(0.85, 1.15, k)
        shift = rng.uniform(-20.0, 20.0, k)
        for i in range(k):
            # Output pixel u (centre u + 0.5) samples the window at x0 * S + (u + 0.5) * cw, bilinear.
            m = np.array(
                [
                    [cw[i], 0.0, x0[i] * size + 0.5 * cw[i] - 0.5],
                    [0.0, ch[i], y0[i] * size + 0.5 * ch[i] - 0.5],
                ],
                np.float32,
            )
            out[i] = cv2.warpAffine(
                images[i],
                m,
                (size, size),
                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                borderMode=cv2.BORDER_REPLICATE,
            )
            out[i] *= gain[i]
            out[i] += 128.0 * (1.0 - gain[i]) + shift[i]
        np.clip(out, 0.0, 255.0, out=out)
        moved = np.stack(
            [
                (boxes[:, 0] - x0) / cw,
                (boxes[:, 1] - y0) / ch,
                (boxes[:, 2] - x0) / cw,
                (boxes[:, 3] - y0) / ch,
            ],
            axis=1,
        )
        boxes = np.where(has[:, None], np.clip(moved, 0.0, 1.0), boxes).astype(np.float32)
    else:
        out[:] = images
    if flip:
        do = rng.random(k) < 0.5
        out[do] = out[do, :, ::-1]
        flipped = np.stack([1.0 - boxes[:, 2], boxes[:, 1], 1.0 - boxes[:, 0], boxes[:, 3]], axis=1)
        boxes = np.where((do & has)[:, None], flipped, boxes).astype(np.float32)
    return out, boxes


def pixel_dataset(
    pixels: np.ndarray,
    samples: Sequence[Sample],
    batch_size: int,
    shuffle: bool,
    seed: int,
    flip: bool = False,
    jitter: float = 0.0,
):
    """Stream training batches from cached pixels (:func:`cached_pixels`), augmented per batch.

    Elements are ``(image (B, S, S, 3) float32 0..255, {"class": (B, 1), "bbox": (B, 4)})``;
    ``flip`` and ``jitter`` as :func:`jitter_batch` says, new draws every
    epoch, so every epoch sees new variants of the augmented set.
    """
    return streamed_batches(
        samples,
        batch_size,
        shuffle,
        seed,
        pixels.shape[1:],
        lambda idx, boxes, rng: jitter_batch(np.asarray(pixels[idx]), boxes, rng, flip, jitter),
    )


def dense_batches(
    images: np.ndarray,
    boxes_per_image: Sequence[np.ndarray],
    batch_size: int,
    grid: tuple[int, int],
    target_settings: Any = None,
    seed: int = 0,
    flip: bool = True,
    mosaic: float = 0.0,
    drop_remainder: bool = False,
):
    """A ``tf.data`` pipeline for ``model.fit``: shuffled batches of ``(image, {"class", "bbox"})``.

    ``images``: uint8 ``(N, H, W, 3)`` RGB (an array or a memmap);
    ``boxes_per_image[i]``: ``(K_i, 4)`` normalized, ``K_i >= 0``. Each epoch
    draws a new order of the ``N`` images plus ``round(mosaic * N)`` 2x2
    mosaics of four random images at half size (drawn anew each epoch,
    :func:`facetrack.dense.mosaic`: small faces, several per image), mirrors
    half of the images (``flip``, boxes follow) and picks the batch's
    per-cell targets (:func:`facetrack.dense.dense_targets` with
    ``target_settings``, built once for each image as it is and mirrored;
    a mosaic's when it is made). Elements: float32 ``(B, H, W, 3)`` 0..255 and
    ``{"class": (B, Gh, Gw, 1), "bbox": (B, Gh, Gw, 4)}``; ``drop_remainder``
    drops the last incomplete batch.
    """
    import tensorflow as tf

    from facetrack.dense import dense_targets, flip_boxes
    from facetrack.dense import mosaic as make_mosaic

    n = len(images)
    total = n + (int(round(float(mosaic) * n)) if n else 0)
    boxes = [np.asarray(b, np.float32).reshape(-1, 4) for b in boxes_per_image]
    rng = np.random.default_rng(seed)
    gh, gw = int(grid[0]), int(grid[1])
    stop = total - batch_size + 1 if drop_remainder else total
    # The targets of every image, as it is and mirrored, built once: an epoch only picks them.
    plain_targets = dense_targets(boxes, (gh, gw), target_settings)
    mirror_targets = (
        dense_targets([flip_boxes(b) for b in boxes], (gh, gw), target_settings) if flip else None
    )

    def pick_targets(real: np.ndarray, mirror: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if mirror_targets is None:
            return plain_targets[0][real], plain_targets[1][real]
        m = mirror[:, None, None, None]
        return tuple(
            np.where(m, f[real], p[real]) for p, f in zip(plain_targets, mirror_targets, strict=True)
        )

    def gen():
        order = rng.permutation(total)
        for i in range(0, stop, batch_size):
            chunk = order[i : i + batch_size]
            real = np.sort(chunk[chunk < n])
            xb = np.asarray(images[real], np.uint8)
            mirror = rng.random(len(real)) < 0.5 if flip else np.zeros(len(real), bool)
            xb[mirror] = xb[mirror, :, ::-1]
            cls, box = pick_targets(real, mirror)
            k = int((chunk >= n).sum())
            if k:
                xm, bm = make_mosaic(images, boxes, k, int(rng.integers(2**31)))
                if flip:
                    flipped = rng.random(k) < 0.5
                    xm[flipped] = xm[flipped, :, ::-1]
                    bm = [flip_boxes(b) if f else b for b, f in zip(bm, flipped, strict=True)]
                cm, boxm = dense_targets(bm, (gh, gw), target_settings)
                xb, cls, box = (
                    np.concatenate([xb, xm]),
                    np.concatenate([cls, cm]),
                    np.concatenate([box, boxm]),
                )
            yield xb, {"class": cls, "bbox": box}

    sig = (
        tf.TensorSpec((None, *images.shape[1:]), tf.uint8),
        {
            "class": tf.TensorSpec((None, gh, gw, 1), tf.float32),
            "bbox": tf.TensorSpec((None, gh, gw, 4), tf.float32),
        },
    )
    batches = total // batch_size if drop_remainder else -(-total // batch_size)
    ds = tf.data.Dataset.from_generator(gen, output_signature=sig)
    # uint8 through the generator (a quarter of float32's bytes), float32 for the model
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y))
    return ds.apply(tf.data.experimental.assert_cardinality(batches)).prefetch(2)


def dense_pixel_dataset(
    pixels: np.ndarray,
    samples: Sequence[Sample],
    batch_size: int,
    grid: tuple[int, int],
    seed: int,
    flip: bool = True,
    mosaic: float = 0.0,
):
    """Training batches for the dense head from cached pixels (``(N, h, w, 3)`` uint8) of ``samples``.

    Every face of each sample is a target; see :func:`dense_batches` (mirror, mosaics, per-cell targets).
    """
    return dense_batches(pixels, [s.box_array() for s in samples], batch_size, grid, None, seed, flip, mosaic)

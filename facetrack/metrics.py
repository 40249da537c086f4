"""Detection metrics over every face (pure numpy).

Per image the model gives detections (scores ``(M,)``, boxes ``(M, 4)``) and
the labels give true faces (``(K, 4)``, ``K`` may be 0); boxes are normalized
``[x1, y1, x2, y2]`` (see :mod:`facetrack.labels`).

Matching (:func:`match_image`): detections are visited best score first; each
takes the still-unmatched true face it overlaps most, if that IoU is at least
``iou_threshold`` (0.5), and is a true positive; otherwise it is a false alarm.
So each true face is matched at most once: a duplicate detection of a face is
a false alarm, and a face found twice counts once.

:func:`face_metrics` pools every detection of every image:

- ``ap50``: all-point interpolated average precision over all faces (every
  detection given, ranked by score; decode with a low threshold for it).
- ``recall``, ``precision``: of the detections with ``score >= threshold``.
- ``mean_iou``: mean IoU of the true faces matched at the threshold.
- ``presence_accuracy``: share of images where "has a detection at the
  threshold" agrees with "has a true face".
- ``faces``: number of true faces; ``images``, ``images_with_faces``.

A figure that is undefined (no faces: recall, AP, mean IoU; no detections:
precision) is ``None``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` ``(M, 4)`` against every box of ``b`` ``(K, 4)`` -> ``(M, K)``."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def match_image(
    scores: np.ndarray, boxes: np.ndarray, true_boxes: np.ndarray, iou_threshold: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Match one image's detections to its true faces, greedy by score.

    Returns ``(is_tp (M,) bool, iou (M,) float)`` in the order of ``scores``:
    ``iou`` is the IoU with the matched face (0 for a false alarm).
    """
    scores = np.asarray(scores, np.float64).reshape(-1)
    m = scores.shape[0]
    is_tp = np.zeros(m, bool)
    ious = np.zeros(m, np.float64)
    truth = np.asarray(true_boxes, np.float64).reshape(-1, 4)
    if m == 0 or truth.shape[0] == 0:
        return is_tp, ious
    overlap = iou_matrix(boxes, truth)
    free = np.ones(truth.shape[0], bool)
    for i in np.argsort(-scores, kind="stable"):
        cand = np.where(free, overlap[i], -1.0)
        j = int(np.argmax(cand))
        if cand[j] >= iou_threshold:
            free[j] = False
            is_tp[i] = True
            ious[i] = cand[j]
    return is_tp, ious


def average_precision(scores: np.ndarray, is_tp: np.ndarray, n_positives: int) -> float | None:
    """All-point interpolated AP of detections ranked by ``scores``; None when there are no positives."""
    if n_positives <= 0:
        return None
    scores = np.asarray(scores, np.float64).reshape(-1)
    if scores.size == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    tp = np.asarray(is_tp, bool)[order].astype(np.float64)
    ctp = np.cumsum(tp)
    recall = ctp / n_positives
    precision = ctp / np.arange(1, tp.size + 1)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    idx = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


@dataclass
class ImageFaces:
    """One image's counts at the threshold (for a gallery sorted worst first)."""

    faces: int
    found: int
    missed: int
    false_alarms: int
    best_score: float

    @property
    def errors(self) -> int:
        return self.missed + self.false_alarms


@dataclass
class FaceMetrics:
    """Every figure of :func:`face_metrics` (see the module docstring)."""

    threshold: float
    images: int = 0
    images_with_faces: int = 0
    faces: int = 0
    detections: int = 0  # at the threshold
    true_positives: int = 0  # at the threshold
    ap50: float | None = None
    recall: float | None = None
    precision: float | None = None
    mean_iou: float | None = None
    presence_accuracy: float | None = None
    per_image: list[ImageFaces] = field(default_factory=list)

    @property
    def f1(self) -> float | None:
        """Harmonic mean of recall and precision at the threshold (None when either is undefined)."""
        r, p = self.recall, self.precision
        if r is None or p is None:
            return None
        return 0.0 if r + p == 0 else 2 * r * p / (r + p)

    def to_dict(self) -> dict[str, Any]:
        """The figures without ``per_image``."""
        d = asdict(self)
        d.pop("per_image")
        return d


def face_metrics(
    detections: Sequence[tuple[np.ndarray, np.ndarray]],
    truths: Sequence[np.ndarray | Sequence[Sequence[float]]],
    threshold: float = 0.5,
    iou_threshold: float = 0.5,
) -> FaceMetrics:
    """Metrics over every face of every image.

    ``detections[i]``: ``(scores (M,), boxes (M, 4))`` of image ``i`` (all of
    them, low scores too: AP uses every detection). ``truths[i]``: its true
    boxes ``(K, 4)`` (an empty list for "no face").
    """
    if len(detections) != len(truths):
        raise ValueError(f"{len(detections)} images of detections but {len(truths)} of labels")
    m = FaceMetrics(threshold=float(threshold), images=len(truths))
    all_scores, all_tp, matched_ious = [], [], []
    presence_ok = 0
    for (scores, boxes), truth in zip(detections, truths, strict=True):
        scores = np.asarray(scores, np.float64).reshape(-1)
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        truth = np.asarray(truth, np.float64).reshape(-1, 4)
        k = truth.shape[0]
        is_tp, _ = match_image(scores, boxes, truth, iou_threshold)
        all_scores.append(scores)
        all_tp.append(is_tp)
        above = scores >= threshold
        tp_at, ious_at = match_image(scores[above], boxes[above], truth, iou_threshold)
        found = int(tp_at.sum())
        matched_ious.extend(ious_at[tp_at].tolist())
        m.faces += k
        m.images_with_faces += int(k > 0)
        m.detections += int(above.sum())
        m.true_positives += found
        presence_ok += int(bool(above.any()) == (k > 0))
        m.per_image.append(
            ImageFaces(
                faces=k,
                found=found,
                missed=k - found,
                false_alarms=int(above.sum()) - found,
                best_score=float(scores.max()) if scores.size else 0.0,
            )
        )
    if m.images:
        m.presence_accuracy = presence_ok / m.images
    scores_cat = np.concatenate(all_scores) if all_scores else np.zeros(0)
    tp_cat = np.concatenate(all_tp) if all_tp else np.zeros(0, bool)
    m.ap50 = average_precision(scores_cat, tp_cat, m.faces)
    if m.faces:
        m.recall = m.true_positives / m.faces
    if m.detections:
        m.precision = m.true_positives / m.detections
    if matched_ious:
        m.mean_iou = float(np.mean(matched_ious))
    return m


# The thresholds validation chooses from, and the window its figure is averaged over: on a few
# hundred photos the figure jumps by a photo from one candidate to the next, so a lone peak is
# noise and a broad high range is not (benchmarks/README.md, pipeline.py section).
THRESHOLD_CANDIDATES: tuple[float, ...] = tuple(float(t) for t in np.round(np.arange(0.2, 0.801, 0.01), 2))
THRESHOLD_WINDOW = 0.05


def best_threshold(
    detections: Sequence[tuple[np.ndarray, np.ndarray]],
    truths: Sequence[np.ndarray | Sequence[Sequence[float]]],
    candidates: Sequence[float] = THRESHOLD_CANDIDATES,
    window: float = THRESHOLD_WINDOW,
) -> float:
    """The score threshold (among ``candidates``) that best serves faces and photos on a validation set.

    The figure of a threshold is the mean of the F1 over faces (recall and
    precision at the threshold) and the presence accuracy; it is averaged
    over the candidates within ``window`` of it (0: itself alone), and the
    best average wins, ties going to the higher threshold. Meant for the
    decode settings saved with a run (``decode.json``).
    """
    ts = np.asarray([float(t) for t in candidates], np.float64)
    if ts.size == 0:
        raise ValueError("no candidate thresholds")
    if not float(window) >= 0.0:
        raise ValueError(f"the averaging window must be 0 or more, got {window}")
    values = np.empty(ts.size)
    for i, thr in enumerate(ts):
        m = face_metrics(detections, truths, threshold=float(thr))
        values[i] = ((m.f1 or 0.0) + (m.presence_accuracy or 0.0)) / 2
    near = np.abs(ts[:, None] - ts[None, :]) <= float(window) + 1e-9
    smoothed = (near * values[None, :]).sum(axis=1) / near.sum(axis=1)
    best = np.flatnonzero(smoothed >= smoothed.max() - 1e-12)
    return float(ts[best[np.argmax(ts[best])]])

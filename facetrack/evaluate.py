"""Metrics for a trained detector on labelled images.

Each image has at most one face. A model returns, per image, a presence score
in [0, 1] and a box as normalized ``[x1, y1, x2, y2]`` (see
:mod:`facetrack.labels`). The metrics:

- ``presence_accuracy``: share of images where ``score >= threshold`` agrees
  with "has a face".
- ``precision``, ``recall``, ``f1``: of the presence decision (a face image
  predicted "face" is a true positive, whatever its box).
- ``fp_rate``: share of no-face images predicted "face".
- ``mean_iou``, ``hit_rate``: over face images, the predicted box against
  the true box regardless of the score; ``hit_rate`` is the share with
  IoU >= 0.5.
- ``ap50``: average precision at IoU 0.5. All images are ranked by score; a
  detection is a true positive when the image has a face and IoU >= 0.5,
  otherwise a false positive; all-points interpolated AP (VOC 2010+) over
  ``n_faces`` positives.

A metric that is undefined (e.g. box metrics with no face image, precision
with no predicted face) is ``None`` and ``notes`` says why.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facetrack.data import DEFAULT_BATCH_SIZE, Sample, image_dataset

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- prediction


def predict_samples(
    model: Any, samples: Sequence[Sample], input_size: int, batch_size: int = DEFAULT_BATCH_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``model`` over the images of ``samples``, streaming in batches.

    Returns ``(scores, boxes)``: ``scores`` ``(N,)`` float32 presence scores in
    [0, 1], ``boxes`` ``(N, 4)`` float32 normalized ``[x1, y1, x2, y2]``.
    """
    if len(samples) == 0:
        return np.zeros((0,), np.float32), np.zeros((0, 4), np.float32)
    ds = image_dataset(samples, input_size, batch_size)
    out = model.predict(ds, verbose=0)
    return unpack_predictions(out)


def unpack_predictions(out: Any) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(out, dict):
        scores, boxes = out["class"], out["bbox"]
    else:
        scores, boxes = out[0], out[1]
    return np.asarray(scores, np.float32).reshape(-1), np.asarray(boxes, np.float32).reshape(-1, 4)


# --------------------------------------------------------------------------- metrics


@dataclass
class ImageResult:
    """One evaluated image. Boxes are normalized ``[x1, y1, x2, y2]``; ``true_box`` None = no face.

    ``iou`` is None for a no-face image. ``correct``: presence decided right
    and, for a face image, IoU >= 0.5. ``badness`` (0..2, higher is worse,
    for a worst-first gallery): face image ``(1 - score) + (1 - iou)``,
    no-face image ``2 * score``.
    """

    path: str
    source_id: str
    true_box: list[float] | None
    pred_box: list[float]
    score: float
    iou: float | None
    correct: bool
    badness: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Metrics:
    """Detector metrics on a set of images (see the module docstring for definitions)."""

    threshold: float = 0.5
    presence_accuracy: float | None = None
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    fp_rate: float | None = None
    mean_iou: float | None = None
    hit_rate: float | None = None
    ap50: float | None = None
    n_images: int = 0
    n_faces: int = 0
    n_no_face: int = 0
    notes: list[str] = field(default_factory=list)
    per_image: list[ImageResult] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict of the numbers (``per_image`` left out; see :meth:`per_image_dicts`)."""
        d = asdict(self)
        d.pop("per_image")
        d["counts"] = {"n_images": self.n_images, "n_faces": self.n_faces, "n_no_face": self.n_no_face}
        return d

    def per_image_dicts(self, worst_first: bool = True) -> list[dict[str, Any]]:
        """Per-image results as dicts, worst first by default."""
        items = sorted(self.per_image, key=lambda r: -r.badness) if worst_first else self.per_image
        return [r.to_dict() for r in items]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise IoU of two ``(N, 4)`` arrays of ``[x1, y1, x2, y2]`` boxes -> ``(N,)``."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = ix * iy
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def average_precision(scores: np.ndarray, is_tp: np.ndarray, n_positives: int) -> float | None:
    """All-points interpolated AP of detections ranked by ``scores`` (None when no positives)."""
    if n_positives <= 0:
        return None
    if len(scores) == 0:
        return 0.0
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    tp = np.asarray(is_tp, bool)[order].astype(np.float64)
    ctp = np.cumsum(tp)
    cfp = np.cumsum(1.0 - tp)
    recall = ctp / n_positives
    precision = ctp / np.maximum(ctp + cfp, 1e-12)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    idx = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


def is_face(score: Any, threshold: float) -> Any:
    """The one rule from a presence score to a detection: ``score >= threshold`` (works on arrays too)."""
    return score >= threshold


def compute_metrics(
    samples: Sequence[Sample], scores: np.ndarray, boxes: np.ndarray, threshold: float = 0.5
) -> Metrics:
    """Metrics from predictions: ``scores`` ``(N,)`` and ``boxes`` ``(N, 4)`` normalized, one per sample."""
    n = len(samples)
    scores = np.asarray(scores, np.float64).reshape(-1)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(scores) != n or len(boxes) != n:
        raise ValueError(f"{n} samples but {len(scores)} scores and {len(boxes)} boxes")
    m = Metrics(threshold=float(threshold), n_images=n)
    if n == 0:
        m.notes.append("no images to evaluate")
        return m
    has = np.array([s.box is not None for s in samples], bool)
    true = np.array([s.box.to_list() if s.box is not None else [0.0] * 4 for s in samples], np.float64)
    pred = is_face(scores, threshold)
    ious = box_iou(true, boxes)
    m.n_faces = int(has.sum())
    m.n_no_face = int(n - has.sum())
    tp = int((pred & has).sum())
    fp = int((pred & ~has).sum())
    fn = int((~pred & has).sum())
    m.presence_accuracy = float(np.mean(pred == has))
    if tp + fp > 0:
        m.precision = tp / (tp + fp)
    else:
        m.notes.append("precision undefined: no image was predicted to have a face")
    if m.n_faces > 0:
        m.recall = tp / (tp + fn)
        m.mean_iou = float(ious[has].mean())
        m.hit_rate = float((ious[has] >= 0.5).mean())
        m.ap50 = average_precision(scores, has & (ious >= 0.5), m.n_faces)
    else:
        m.notes.append("no face images: recall, mean IoU, hit rate and AP50 are undefined")
    if m.precision is not None and m.recall is not None:
        m.f1 = 0.0 if m.precision + m.recall == 0 else 2 * m.precision * m.recall / (m.precision + m.recall)
    if m.n_no_face > 0:
        m.fp_rate = fp / m.n_no_face
    else:
        m.notes.append("no images without a face: false-positive rate is undefined")
    for i, s in enumerate(samples):
        face = bool(has[i])
        iou_i = float(ious[i]) if face else None
        correct = bool(pred[i] == face) and (not face or iou_i >= 0.5)
        bad = (1.0 - scores[i]) + (1.0 - iou_i) if face else 2.0 * scores[i]
        m.per_image.append(
            ImageResult(
                path=str(s.path),
                source_id=s.source_id,
                true_box=s.box.to_list() if s.box is not None else None,
                pred_box=[float(v) for v in boxes[i]],
                score=float(scores[i]),
                iou=iou_i,
                correct=correct,
                badness=float(bad),
            )
        )
    return m


def validation_score(
    samples: Sequence[Sample], scores: np.ndarray, boxes: np.ndarray, threshold: float = 0.5
) -> float:
    """The checkpoint score (higher is better, 0..1).

    Mean over images of: for a face image, ``[score >= threshold] * IoU``; for a
    no-face image, ``[score < threshold]``. It rewards presence and box
    quality together, unlike the raw loss (which grows with overconfidence
    while boxes still improve). 0.0 for no images.
    """
    if len(samples) == 0:
        return 0.0
    has = np.array([s.box is not None for s in samples], bool)
    true = np.array([s.box.to_list() if s.box is not None else [0.0] * 4 for s in samples], np.float64)
    pred = is_face(np.asarray(scores).reshape(-1), threshold)
    ious = box_iou(true, boxes)
    per = np.where(has, pred * ious, (~pred).astype(np.float64))
    return float(per.mean())


def evaluate(
    model: Any,
    test_samples: Sequence[Sample],
    input_size: int | None = None,
    threshold: float = 0.5,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Metrics:
    """Predict ``test_samples`` with ``model`` and compute :class:`Metrics`.

    ``input_size`` defaults to the model's input size.
    """
    if input_size is None:
        input_size = int(model.input_shape[1])
    scores, boxes = predict_samples(model, test_samples, input_size, batch_size)
    return compute_metrics(test_samples, scores, boxes, threshold)


def evaluate_run(
    run_dir: Path,
    test_samples: Sequence[Sample],
    threshold: float = 0.5,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Metrics:
    """Evaluate a run's Keras model on ``test_samples``.

    Writes the run's metrics (numbers, threshold, time) and per-image results
    (worst first) with :func:`facetrack.runs.write_metrics`. Raises
    :class:`facetrack.runs.RunError` when the run's settings contradict its model's input size.
    """
    from facetrack.model import load_model
    from facetrack.runs import KERAS_FILE, check_input_size, write_metrics

    run_dir = Path(run_dir)
    model = load_model(run_dir / KERAS_FILE)
    input_size = check_input_size(run_dir, int(model.input_shape[1]))
    t0 = time.time()
    metrics = evaluate(model, test_samples, input_size, threshold, batch_size)
    doc = metrics.to_dict()
    doc["seconds"] = round(time.time() - t0, 3)
    doc["evaluated"] = time.time()
    write_metrics(run_dir, doc, metrics.per_image_dicts(worst_first=True))
    return metrics


# --------------------------------------------------------------------------- against a reference detector


@dataclass
class ReferenceResult:
    """What a reference detector (MTCNN) found on one test photo, against its true box."""

    box: Any = None  # facetrack.labels.Box of its best face, or None (no face)
    score: float | None = None
    iou: float | None = None  # with the true box; 0.0 when it missed a face; None for a no-face photo

    @property
    def found(self) -> bool:
        return self.box is not None


def reference_result(true_box: Any, suggestions: Sequence[Any]) -> ReferenceResult:
    """Score a reference detector's ``suggestions`` (``.box``, ``.score``) on one photo with ``true_box``.

    Its best-scored box is its answer; the IoU is against ``true_box`` (None
    when the photo has no face; 0.0 when it has one and nothing was found).
    """
    best = max(suggestions, key=lambda s: float(s.score), default=None)
    if best is None:
        return ReferenceResult(iou=0.0 if true_box is not None else None)
    overlap = None
    if true_box is not None:
        overlap = float(box_iou(np.array([true_box.to_list()]), np.array([best.box.to_list()]))[0])
    return ReferenceResult(best.box, float(best.score), overlap)


def compare_with_reference(ours: Sequence[float], theirs: Sequence[float], margin: float = 0.02) -> str:
    """Who wins on mean IoU over the same face photos: ``"model"``, ``"reference"`` or ``"tie"`` (within ``margin``)."""
    a, b = float(np.mean(ours)), float(np.mean(theirs))
    if a > b + margin:
        return "model"
    if b > a + margin:
        return "reference"
    return "tie"

"""Evaluation of a trained detector on labelled images: every face counts.

A model returns, per image, raw outputs: per-cell scores and boxes (the dense
head) or one score and one box (runs trained before it). They become
detections through :func:`facetrack.decode.decode`, the one decoding (with a
low threshold, :data:`AP_THRESHOLD`, so that AP sees every detection), and
are scored by :func:`facetrack.metrics.face_metrics` against every true face
(boxes normalized ``[x1, y1, x2, y2]``, see :mod:`facetrack.labels`):

- ``ap50``: AP at IoU 0.5 over every face (each true face matched at most
  once, greedy by score; all-point interpolated precision).
- ``recall``, ``precision``, ``f1``: of faces at the threshold (a duplicate
  detection of a face is a false alarm).
- ``mean_iou``: mean IoU of the faces matched at the threshold.
- ``hit_rate``: share of faces found at any score (the recall AP can reach).
- ``presence_accuracy``: share of photos where "a detection at the
  threshold" agrees with "has a face"; ``fp_rate``: share of no-face photos
  with a detection.
- ``faces``: number of true faces; ``n_images``, ``n_faces`` (photos with a
  face), ``n_no_face``.

A metric that is undefined (e.g. recall with no face, precision with no
detection) is ``None`` and ``notes`` says why.
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
from facetrack.decode import DecodeSettings, decode
from facetrack.metrics import FaceMetrics, face_metrics, iou_matrix, match_image
from facetrack.metrics import average_precision as _average_precision

log = logging.getLogger(__name__)

AP_THRESHOLD = 0.05  # decode with this low threshold for AP (every detection worth ranking)

# --------------------------------------------------------------------------- prediction


def predict_samples(
    model: Any,
    samples: Sequence[Sample],
    input_size: int | Sequence[int],
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``model`` over the images of ``samples``, streaming in batches.

    Returns the raw ``(class, bbox)`` outputs: per cell ``(N, Gh, Gw, 1)`` and
    ``(N, Gh, Gw, 4)`` for the dense head, ``(N, 1)`` and ``(N, 4)`` for the
    one-box head; float32, boxes normalized ``[x1, y1, x2, y2]``.
    """
    if len(samples) == 0:
        return np.zeros((0, 1), np.float32), np.zeros((0, 4), np.float32)
    ds = image_dataset(samples, input_size, batch_size)
    out = model.predict(ds, verbose=0)
    return unpack_predictions(out)


def unpack_predictions(out: Any) -> tuple[np.ndarray, np.ndarray]:
    """A model's ``{"class", "bbox"}`` (or ``[class, bbox]``) outputs as two float32 arrays."""
    if isinstance(out, dict):
        scores, boxes = out["class"], out["bbox"]
    else:
        scores, boxes = out[0], out[1]
    return np.asarray(scores, np.float32), np.asarray(boxes, np.float32)


def detections_of(
    scores: np.ndarray, boxes: np.ndarray, settings: DecodeSettings | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every image's decoded detections ``(scores (M,), boxes (M, 4))``, best first.

    ``scores``/``boxes``: raw outputs of N images (see :func:`predict_samples`;
    a flat ``(N,)`` / ``(N, 4)`` means one box per image). ``settings``
    default to :data:`AP_THRESHOLD` and the default NMS.
    """
    s = settings or DecodeSettings(threshold=AP_THRESHOLD)
    sc = np.asarray(scores, np.float32)
    bx = np.asarray(boxes, np.float32)
    n = sc.shape[0]
    if bx.shape[0] != n:
        raise ValueError(f"{n} images of scores but {bx.shape[0]} of boxes")
    if n == 0:
        return []
    sc = np.nan_to_num(sc.reshape(n, -1), nan=0.0)
    bx = np.nan_to_num(bx.reshape(n, -1, 4), nan=0.0)
    return [decode(sc[i], bx[i], s) for i in range(n)]


def truths_of(samples: Sequence[Sample]) -> list[np.ndarray]:
    """Every sample's true face boxes ``(K, 4)``."""
    return [s.box_array() for s in samples]


# --------------------------------------------------------------------------- metrics


@dataclass
class ImageResult:
    """One evaluated image. Boxes are normalized ``[x1, y1, x2, y2]``.

    ``true_boxes``: every face; ``pred_boxes``/``pred_scores``: every decoded
    detection (down to :data:`AP_THRESHOLD`), best first; ``found``,
    ``missed``, ``false_alarms``: at the threshold. ``correct``: no face
    missed and no false alarm. ``badness`` (higher is worse, for a worst-first
    gallery): ``missed + false_alarms``, plus half of ``1 - IoU`` of the found
    faces on average. ``true_box``, ``pred_box``, ``score``, ``iou``: the first
    true face, the best detection, its score and its IoU with the face it
    matched (None without a face), as one-face results had.
    """

    path: str
    source_id: str
    true_boxes: list[list[float]]
    pred_boxes: list[list[float]]
    pred_scores: list[float]
    faces: int
    found: int
    missed: int
    false_alarms: int
    correct: bool
    badness: float
    true_box: list[float] | None = None
    pred_box: list[float] | None = None
    score: float = 0.0
    iou: float | None = None

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
    faces: int = 0
    n_images: int = 0
    n_faces: int = 0
    n_no_face: int = 0
    notes: list[str] = field(default_factory=list)
    per_image: list[ImageResult] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict of the numbers (``per_image`` left out; see :meth:`per_image_dicts`)."""
        d = asdict(self)
        d.pop("per_image")
        d["counts"] = {
            "n_images": self.n_images,
            "n_faces": self.n_faces,
            "n_no_face": self.n_no_face,
            "faces": self.faces,
        }
        return d

    def per_image_dicts(self, worst_first: bool = True) -> list[dict[str, Any]]:
        """Per-image results as dicts, worst first by default."""
        items = sorted(self.per_image, key=lambda r: -r.badness) if worst_first else self.per_image
        return [r.to_dict() for r in items]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise IoU of two ``(N, 4)`` arrays of ``[x1, y1, x2, y2]`` boxes -> ``(N,)``."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    return np.array([iou_matrix(a[i], b[i])[0, 0] for i in range(len(a))], np.float64)


def average_precision(scores: np.ndarray, is_tp: np.ndarray, n_positives: int) -> float | None:
    """All-points interpolated AP of detections ranked by ``scores`` (None when no positives)."""
    return _average_precision(scores, is_tp, n_positives)


def is_face(score: Any, threshold: float) -> Any:
    """The one rule from a presence score to a detection: ``score >= threshold`` (works on arrays too)."""
    return score >= threshold


def _image_result(
    sample: Sample, dets: tuple[np.ndarray, np.ndarray], counts: Any, threshold: float
) -> ImageResult:
    scores, boxes = dets
    truth = sample.box_array()
    above = is_face(scores, threshold)
    is_tp, ious = match_image(scores[above], boxes[above], truth)
    matched = ious[is_tp]
    best_iou = None
    if truth.shape[0] and scores.size:
        best_iou = float(iou_matrix(boxes[:1], truth).max())
    badness = (
        counts.missed + counts.false_alarms + (0.5 * float(np.mean(1.0 - matched)) if matched.size else 0.0)
    )
    return ImageResult(
        path=str(sample.path),
        source_id=sample.source_id,
        true_boxes=truth.round(6).tolist(),
        pred_boxes=np.asarray(boxes, np.float64).round(6).tolist(),
        pred_scores=[round(float(v), 6) for v in scores],
        faces=counts.faces,
        found=counts.found,
        missed=counts.missed,
        false_alarms=counts.false_alarms,
        correct=counts.missed == 0 and counts.false_alarms == 0,
        badness=float(badness),
        true_box=truth[0].tolist() if truth.shape[0] else None,
        pred_box=[float(v) for v in boxes[0]] if scores.size else None,
        score=float(scores[0]) if scores.size else 0.0,
        iou=best_iou,
    )


def _notes(m: Metrics) -> None:
    if m.n_images == 0:
        m.notes.append("no images to evaluate")
        return
    if m.precision is None:
        m.notes.append("precision undefined: no face was detected at the threshold")
    if m.faces == 0:
        m.notes.append("no face images: recall, mean IoU, hit rate and AP50 are undefined")
    if m.n_no_face == 0:
        m.notes.append("no images without a face: false-positive rate is undefined")


def metrics_from_detections(
    samples: Sequence[Sample], detections: Sequence[tuple[np.ndarray, np.ndarray]], threshold: float = 0.5
) -> Metrics:
    """:class:`Metrics` of decoded ``detections`` (one ``(scores, boxes)`` per sample, all scores)."""
    if len(detections) != len(samples):
        raise ValueError(f"{len(samples)} samples but {len(detections)} images of detections")
    fm: FaceMetrics = face_metrics(detections, truths_of(samples), threshold=threshold)
    m = Metrics(threshold=float(threshold), n_images=len(samples), faces=fm.faces)
    m.n_faces = fm.images_with_faces
    m.n_no_face = m.n_images - m.n_faces
    m.presence_accuracy, m.precision, m.recall = fm.presence_accuracy, fm.precision, fm.recall
    m.mean_iou, m.ap50, m.f1 = fm.mean_iou, fm.ap50, fm.f1
    if m.n_no_face:
        m.fp_rate = sum(p.faces == 0 and p.false_alarms > 0 for p in fm.per_image) / m.n_no_face
    if m.faces:
        m.hit_rate = sum(int(match_image(sc, bx, t)[0].sum()) for (sc, bx), t in
                         zip(detections, truths_of(samples), strict=True)) / m.faces  # fmt: skip
    m.per_image = [
        _image_result(s, d, c, threshold) for s, d, c in zip(samples, detections, fm.per_image, strict=True)
    ]
    _notes(m)
    return m


def compute_metrics(
    samples: Sequence[Sample], scores: np.ndarray, boxes: np.ndarray, threshold: float = 0.5
) -> Metrics:
    """Metrics from raw predictions of ``samples`` (see :func:`detections_of`; ``(N,)``/``(N, 4)``: one box each)."""
    n = len(samples)
    scores = np.asarray(scores, np.float32)
    boxes = np.asarray(boxes, np.float32)
    if scores.shape[0] != n or boxes.shape[0] != n:
        raise ValueError(f"{n} samples but {scores.shape[0]} scores and {boxes.shape[0]} boxes")
    return metrics_from_detections(samples, detections_of(scores, boxes), threshold)


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
    input_size: int | Sequence[int] | None = None,
    threshold: float = 0.5,
    batch_size: int = DEFAULT_BATCH_SIZE,
    decode_settings: DecodeSettings | None = None,
) -> Metrics:
    """Predict ``test_samples`` with ``model``, decode every image and compute :class:`Metrics`.

    ``input_size`` defaults to the model's ``(h, w)``; ``decode_settings``
    (NMS overlap, maximum count) to the defaults; AP is computed from every
    detection down to :data:`AP_THRESHOLD`, the rest at ``threshold``.
    """
    if input_size is None:
        input_size = (int(model.input_shape[1]), int(model.input_shape[2]))
    scores, boxes = predict_samples(model, test_samples, input_size, batch_size)
    low = (decode_settings or DecodeSettings()).replace(threshold=min(AP_THRESHOLD, float(threshold)))
    return metrics_from_detections(test_samples, detections_of(scores, boxes, low), threshold)


def evaluate_run(
    run_dir: Path,
    test_samples: Sequence[Sample],
    threshold: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Metrics:
    """Evaluate a run's Keras model on ``test_samples``.

    ``threshold`` None: the run's (``decode.json``, picked on validation; 0.5
    when absent). Writes the run's metrics (numbers, threshold, time) and
    per-image results (worst first) with :func:`facetrack.runs.write_metrics`.
    Raises :class:`facetrack.runs.RunError` when the run's settings contradict
    its model's input size.
    """
    from facetrack.decode import load_decode_settings
    from facetrack.model import load_model
    from facetrack.runs import KERAS_FILE, check_input_size, write_metrics

    run_dir = Path(run_dir)
    model = load_model(run_dir / KERAS_FILE)
    hw = check_input_size(run_dir, (int(model.input_shape[1]), int(model.input_shape[2])))
    settings = load_decode_settings(run_dir)
    thr = settings.threshold if threshold is None else float(threshold)
    t0 = time.time()
    metrics = evaluate(model, test_samples, hw, thr, batch_size, settings)
    doc = metrics.to_dict()
    doc["seconds"] = round(time.time() - t0, 3)
    doc["evaluated"] = time.time()
    write_metrics(run_dir, doc, metrics.per_image_dicts(worst_first=True))
    return metrics


# --------------------------------------------------------------------------- against a reference detector


def suggestions_as_detections(suggestions: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """A reference detector's faces (objects with ``.box`` and ``.score``) as ``(scores, boxes)``, best first."""
    ordered = sorted(suggestions, key=lambda f: -float(f.score))
    scores = np.asarray([float(f.score) for f in ordered], np.float64)
    boxes = np.asarray([f.box.to_list() for f in ordered], np.float64).reshape(-1, 4)
    return scores, boxes


def reference_metrics(
    samples: Sequence[Sample], found: Sequence[Sequence[Any]], threshold: float = 0.5
) -> Metrics:
    """A reference detector (MTCNN) scored exactly as a run is: ``found[i]`` are its faces on ``samples[i]``."""
    return metrics_from_detections(samples, [suggestions_as_detections(f) for f in found], threshold)


def compare_with_reference(ours: Sequence[float], theirs: Sequence[float], margin: float = 0.02) -> str:
    """Who wins on the mean of a figure (AP, IoU) over the same photos: ``"model"``, ``"reference"`` or ``"tie"`` (within ``margin``)."""
    a, b = float(np.mean(ours)), float(np.mean(theirs))
    if a > b + margin:
        return "model"
    if b > a + margin:
        return "reference"
    return "tie"

"""Tests of facetrack.evaluate: metrics on hand-computed examples, streaming prediction, run files."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from facetrack.data import Sample
from facetrack.evaluate import (
    average_precision,
    box_iou,
    compute_metrics,
    evaluate,
    evaluate_run,
    predict_samples,
    validation_score,
)
from facetrack.labels import Box

A_BOX = [0.1, 0.1, 0.5, 0.5]
B_BOX = [0.4, 0.4, 0.8, 0.8]


def _samples() -> list[Sample]:
    return [
        Sample(Path("a.jpg"), Box(*A_BOX), "a"),
        Sample(Path("b.jpg"), Box(*B_BOX), "b"),
        Sample(Path("c.jpg"), None, "c"),
        Sample(Path("d.jpg"), None, "d"),
    ]


def test_box_iou_hand_values():
    # half-overlapping boxes of equal size: inter 0.2*0.4=0.08, union 0.16+0.16-0.08 = 0.24 -> 1/3
    assert box_iou(np.array([B_BOX]), np.array([[0.6, 0.4, 1.0, 0.8]]))[0] == pytest.approx(1 / 3)
    assert box_iou(np.array([A_BOX]), np.array([A_BOX]))[0] == pytest.approx(1.0)
    assert box_iou(np.array([A_BOX]), np.array([B_BOX]))[0] == pytest.approx(0.01 / 0.31)
    assert box_iou(np.array([[0, 0, 0, 0]]), np.array([A_BOX]))[0] == 0.0


def test_metrics_hand_example_box_miss():
    # A: face, score .9, exact box. B: face, score .3, box IoU 1/3. C: no face, score .8. D: no face, .1
    scores = np.array([0.9, 0.3, 0.8, 0.1])
    boxes = np.array([A_BOX, [0.6, 0.4, 1.0, 0.8], [0, 0, 1, 1], [0, 0, 1, 1]])
    m = compute_metrics(_samples(), scores, boxes, 0.5)
    assert m.presence_accuracy == pytest.approx(0.5)  # A and D right
    assert m.precision == pytest.approx(0.5)  # A of {A, C}
    assert m.recall == pytest.approx(0.5)
    assert m.f1 == pytest.approx(0.5)
    assert m.fp_rate == pytest.approx(0.5)
    assert m.mean_iou == pytest.approx(1.0)  # of the faces found at the threshold (A)
    assert m.hit_rate == pytest.approx(0.5)  # B's box misses at any score
    # ranked: A TP, C FP, B FP (IoU<0.5), D FP -> recall reaches 0.5 at precision 1
    assert m.ap50 == pytest.approx(0.5)
    assert (m.n_images, m.n_faces, m.n_no_face) == (4, 2, 2)
    assert [r.correct for r in m.per_image] == [True, False, False, True]
    d = m.to_dict()
    assert "per_image" not in d and d["counts"] == {"n_images": 4, "n_faces": 2, "n_no_face": 2, "faces": 2}
    json.dumps(d)


def test_worst_first_order():
    scores = np.array([0.9, 0.3, 0.8, 0.1])
    boxes = np.array([A_BOX, [0.6, 0.4, 1.0, 0.8], [0, 0, 1, 1], [0, 0, 1, 1]])
    m = compute_metrics(_samples(), scores, boxes, 0.5)
    order = [r["path"] for r in m.per_image_dicts()]
    # C: a false alarm, B: a missed face (1 error each; C first, the stable order); A, D: right
    assert order == ["b.jpg", "c.jpg", "a.jpg", "d.jpg"]


def test_ap50_with_late_hit():
    # B's box now IoU 1 but low score: ranked A TP, C FP, B TP, D FP
    scores = np.array([0.9, 0.3, 0.8, 0.1])
    boxes = np.array([A_BOX, B_BOX, [0, 0, 1, 1], [0, 0, 1, 1]])
    m = compute_metrics(_samples(), scores, boxes, 0.5)
    # recall 0.5 @ precision 1, recall 1 @ precision 2/3
    assert m.ap50 == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert average_precision(np.array([0.5]), np.array([True]), 1) == pytest.approx(1.0)
    assert average_precision(np.array([0.5]), np.array([True]), 2) == pytest.approx(0.5)
    assert average_precision(np.array([]), np.array([], bool), 0) is None


def test_validation_score_hand_value():
    scores = np.array([0.9, 0.3, 0.8, 0.1])
    boxes = np.array([A_BOX, B_BOX, [0, 0, 1, 1], [0, 0, 1, 1]])
    # A: 1*1, B: 0 (missed), C: 0 (false positive), D: 1
    assert validation_score(_samples(), scores, boxes) == pytest.approx(0.5)
    assert validation_score([], np.zeros(0), np.zeros((0, 4))) == 0.0


def test_empty_and_no_face_inputs():
    m = compute_metrics([], np.zeros(0), np.zeros((0, 4)))
    assert m.n_images == 0 and m.presence_accuracy is None and m.notes
    json.dumps(m.to_dict())
    no_face = _samples()[2:]
    m = compute_metrics(no_face, np.array([0.7, 0.2]), np.zeros((2, 4)))
    assert m.mean_iou is None and m.ap50 is None and m.recall is None
    assert m.fp_rate == pytest.approx(0.5) and m.presence_accuracy == pytest.approx(0.5)
    assert any("no face images" in n for n in m.notes)
    m = compute_metrics(_samples()[:2], np.array([0.1, 0.2]), np.array([A_BOX, B_BOX]))
    assert m.precision is None and m.fp_rate is None and m.mean_iou is None  # none found at the threshold
    assert m.hit_rate == pytest.approx(1.0)  # both boxes are right, at low scores


def test_length_mismatch():
    with pytest.raises(ValueError):
        compute_metrics(_samples(), np.zeros(3), np.zeros((3, 4)))


def _write_images(folder: Path, n: int) -> list[Sample]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        h, w = (40, 60) if i % 2 else (50, 50)
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        path = folder / f"{i}.jpg"
        cv2.imwrite(str(path), img)
        out.append(Sample(path, Box(0.2, 0.2, 0.7, 0.8) if i % 2 else None, f"id{i}"))
    return out


def test_predict_and_evaluate_run(tmp_path):
    from facetrack.model import build_model

    samples = _write_images(tmp_path / "img", 5)
    model = build_model("compact", None, 32)
    scores, boxes = predict_samples(model, samples, 32, batch_size=2)
    assert scores.shape == (5, 1) and boxes.shape == (5, 4)  # a one-box (older) model
    direct = evaluate(model, samples, 32)
    assert direct.n_images == 5 and direct.n_faces == 2
    run = tmp_path / "run"
    run.mkdir()
    model.save(run / "model.keras")
    m = evaluate_run(run, samples)
    doc = json.loads((run / "metrics.json").read_text())
    per = json.loads((run / "per_image.json").read_text())
    assert doc["n_images"] == 5 and doc["counts"]["n_faces"] == 2
    assert len(per) == 5 and per[0]["badness"] >= per[-1]["badness"]
    assert m.mean_iou == pytest.approx(direct.mean_iou, abs=1e-5)
    assert predict_samples(model, [], 32)[0].shape == (0, 1)
    # one rule for a run's input size (as Detector.from_run): settings.json may not contradict the model
    from facetrack.runs import RunError

    (run / "settings.json").write_text(json.dumps({"settings": {"input_size": 64}}))
    with pytest.raises(RunError, match="input_size 64"):
        evaluate_run(run, samples)


def test_reference_detector_scoring():
    """The ready-made detector is scored exactly as a run: AP over every face."""
    from types import SimpleNamespace

    from facetrack.evaluate import compare_with_reference, is_face, reference_metrics

    two = Sample(Path("g.jpg"), source_id="g", boxes=(Box(*A_BOX), Box(0.6, 0.1, 0.9, 0.5)))
    empty = Sample(Path("e.jpg"), None, "e")
    found = [
        [
            SimpleNamespace(box=Box(0.0, 0.6, 0.1, 0.7), score=0.5),
            SimpleNamespace(box=Box(*A_BOX), score=0.9),
        ],
        [SimpleNamespace(box=Box(0.2, 0.2, 0.4, 0.4), score=0.95)],
    ]
    m = reference_metrics([two, empty], found)
    # ranked: A (TP .9), the no-face photo's box (FP .95 ranks first), the corner box (FP .5)
    assert m.faces == 2 and m.recall == pytest.approx(0.5) and m.precision == pytest.approx(1 / 3)
    assert m.ap50 == pytest.approx(0.5 * 0.5)  # recall 0.5 reached at precision 1/2
    assert m.presence_accuracy == pytest.approx(0.5) and m.fp_rate == pytest.approx(1.0)
    assert compare_with_reference([0.8, 0.7], [0.5, 0.6]) == "model"
    assert compare_with_reference([0.5], [0.51]) == "tie"
    assert compare_with_reference([0.2], [0.9]) == "reference"
    assert is_face(0.5, 0.5) and not is_face(0.49, 0.5)


def test_every_face_counts_with_several_faces_per_photo():
    """Two photos of two faces: a duplicate is a false alarm, a face found twice counts once."""
    from facetrack.evaluate import metrics_from_detections

    left, right = [0.05, 0.2, 0.35, 0.6], [0.6, 0.2, 0.9, 0.6]
    samples = [
        Sample(Path("p1.jpg"), source_id="p1", boxes=(Box(*left), Box(*right))),
        Sample(Path("p2.jpg"), source_id="p2", boxes=(Box(*left), Box(*right))),
        Sample(Path("p3.jpg"), None, "p3"),
    ]
    dets = [
        (np.array([0.9, 0.8]), np.array([left, right])),  # both found
        (
            np.array([0.9, 0.7, 0.2]),
            np.array([left, [0.06, 0.2, 0.36, 0.6], right]),
        ),  # a duplicate; right low
        (np.array([0.3]), np.array([[0.1, 0.1, 0.2, 0.2]])),  # below the threshold: no alarm
    ]
    m = metrics_from_detections(samples, dets, threshold=0.5)
    assert m.faces == 4 and m.n_faces == 2 and m.n_no_face == 1
    assert m.recall == pytest.approx(3 / 4)  # the right face of p2 is only found below the threshold
    assert m.precision == pytest.approx(3 / 4)  # the duplicate on p2 is a false alarm
    assert m.presence_accuracy == pytest.approx(1.0) and m.fp_rate == pytest.approx(0.0)
    assert m.hit_rate == pytest.approx(1.0)  # every face has a box at some score
    # ranked .9 TP, .9 TP, .8 TP, .7 FP, .3 FP, .2 TP: precision 1 up to recall 3/4, then 4/6
    assert m.ap50 == pytest.approx(0.75 + 0.25 * 4 / 6)
    p2 = m.per_image[1]
    assert (p2.faces, p2.found, p2.missed, p2.false_alarms, p2.correct) == (2, 1, 1, 1, False)
    assert len(p2.true_boxes) == 2 and len(p2.pred_boxes) == 3 and p2.pred_scores[0] == 0.9
    assert [r["source_id"] for r in m.per_image_dicts()][0] == "p2"  # worst first


def test_dense_outputs_are_decoded_per_image():
    """Per-cell outputs: each image decoded (threshold, NMS) before matching."""
    scores = np.full((2, 2, 3, 1), 0.01, np.float32)
    boxes = np.zeros((2, 2, 3, 4), np.float32)
    face = [0.1, 0.1, 0.4, 0.5]
    scores[0, 0, 0, 0], boxes[0, 0, 0] = 0.9, face
    scores[0, 0, 1, 0], boxes[0, 0, 1] = 0.6, [0.11, 0.1, 0.41, 0.5]  # NMS removes this duplicate
    samples = [Sample(Path("a.jpg"), Box(*face), "a"), Sample(Path("b.jpg"), None, "b")]
    m = compute_metrics(samples, scores, boxes, 0.5)
    assert m.ap50 == pytest.approx(1.0) and m.precision == pytest.approx(1.0)
    assert m.presence_accuracy == pytest.approx(1.0) and m.per_image[0].pred_scores == [0.9]

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
    assert m.mean_iou == pytest.approx((1 + 1 / 3) / 2)
    assert m.hit_rate == pytest.approx(0.5)
    # ranked: A TP, C FP, B FP (IoU<0.5), D FP -> recall reaches 0.5 at precision 1
    assert m.ap50 == pytest.approx(0.5)
    assert (m.n_images, m.n_faces, m.n_no_face) == (4, 2, 2)
    assert [r.correct for r in m.per_image] == [True, False, False, True]
    d = m.to_dict()
    assert "per_image" not in d and d["counts"] == {"n_images": 4, "n_faces": 2, "n_no_face": 2}
    json.dumps(d)


def test_worst_first_order():
    scores = np.array([0.9, 0.3, 0.8, 0.1])
    boxes = np.array([A_BOX, [0.6, 0.4, 1.0, 0.8], [0, 0, 1, 1], [0, 0, 1, 1]])
    m = compute_metrics(_samples(), scores, boxes, 0.5)
    order = [r["path"] for r in m.per_image_dicts()]
    assert order == ["c.jpg", "b.jpg", "d.jpg", "a.jpg"]  # badness 1.6, 1.37, 0.2, 0.1


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
    assert m.precision is None and m.fp_rate is None and m.mean_iou == pytest.approx(1.0)


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
    assert scores.shape == (5,) and boxes.shape == (5, 4)
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
    assert predict_samples(model, [], 32)[0].shape == (0,)
    # one rule for a run's input size (as Detector.from_run): settings.json may not contradict the model
    from facetrack.runs import RunError

    (run / "settings.json").write_text(json.dumps({"settings": {"input_size": 64}}))
    with pytest.raises(RunError, match="input_size 64"):
        evaluate_run(run, samples)


def test_reference_detector_scoring():
    from types import SimpleNamespace

    from facetrack.evaluate import compare_with_reference, is_face, reference_result

    truth = Box(0.2, 0.2, 0.6, 0.6)
    found = [SimpleNamespace(box=Box(0.0, 0.0, 0.1, 0.1), score=0.5), SimpleNamespace(box=truth, score=0.9)]
    best = reference_result(truth, found)
    assert best.found and best.score == 0.9 and best.iou == pytest.approx(1.0)  # its best-scored box
    missed = reference_result(truth, [])
    assert not missed.found and missed.iou == 0.0  # a missed face counts as IoU 0
    no_face = reference_result(None, found)
    assert no_face.found and no_face.iou is None  # a photo without a face has no IoU
    assert compare_with_reference([0.8, 0.7], [0.5, 0.6]) == "model"
    assert compare_with_reference([0.5], [0.51]) == "tie"
    assert compare_with_reference([0.2], [0.9]) == "reference"
    assert is_face(0.5, 0.5) and not is_face(0.49, 0.5)

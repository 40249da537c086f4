"""Tests of facetrack.decode: threshold, greedy NMS, maximum count, decode.json."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from facetrack.decode import (
    DECODE_FILE,
    DecodeSettings,
    decode,
    decode_batch,
    load_decode_settings,
    nms,
    save_decode_settings,
)


def _grid(gh: int = 15, gw: int = 20) -> tuple[np.ndarray, np.ndarray]:
    scores = np.zeros((gh, gw, 1), np.float32)
    boxes = np.tile(np.array([0.0, 0.0, 0.01, 0.01], np.float32), (gh, gw, 1))
    return scores, boxes


def test_two_faces_each_found_once_best_first():
    scores, boxes = _grid()
    # face A proposed by three neighbouring cells, face B by two
    a = [0.10, 0.20, 0.30, 0.45]
    b = [0.60, 0.25, 0.75, 0.45]
    for (i, j), s, box in [
        ((5, 4), 0.9, a),
        ((5, 5), 0.8, [0.11, 0.21, 0.31, 0.46]),
        ((6, 4), 0.7, [0.09, 0.19, 0.29, 0.44]),
        ((5, 13), 0.95, b),
        ((5, 14), 0.6, [0.61, 0.25, 0.76, 0.46]),
    ]:
        scores[i, j, 0] = s
        boxes[i, j] = box
    kept_scores, kept_boxes = decode(scores, boxes, DecodeSettings(threshold=0.5, nms_iou=0.4))
    np.testing.assert_allclose(kept_scores, [0.95, 0.9])
    np.testing.assert_allclose(kept_boxes, [b, a], atol=1e-6)


def test_threshold_drops_low_cells_and_nothing_gives_empty_arrays():
    scores, boxes = _grid()
    scores[3, 3, 0] = 0.49
    s, b = decode(scores, boxes, DecodeSettings(threshold=0.5))
    assert s.shape == (0,) and b.shape == (0, 4)
    s, b = decode(scores, boxes, DecodeSettings(threshold=0.4))
    assert s.shape == (1,) and b.shape == (1, 4)


def test_max_faces_keeps_the_best():
    scores, boxes = _grid(4, 4)
    for k in range(16):
        i, j = divmod(k, 4)
        scores[i, j, 0] = 0.5 + k / 40
        boxes[i, j] = [j / 4, i / 4, (j + 1) / 4, (i + 1) / 4]  # no overlaps
    s, _ = decode(scores, boxes, DecodeSettings(threshold=0.1, max_faces=3))
    np.testing.assert_allclose(s, [0.5 + 15 / 40, 0.5 + 14 / 40, 0.5 + 13 / 40])


def test_overlap_below_nms_iou_keeps_both():
    boxes = np.array([[0.0, 0.0, 0.2, 0.2], [0.1, 0.0, 0.3, 0.2]], np.float32)  # IoU 1/3
    scores = np.array([0.9, 0.8], np.float32)
    assert nms(boxes, scores, 0.4, 10).tolist() == [0, 1]
    assert nms(boxes, scores, 0.3, 10).tolist() == [0]


def test_boxes_are_clipped_and_sorted():
    s, b = decode(np.array([0.9]), np.array([[0.5, 0.6, -0.2, 1.3]]))
    np.testing.assert_allclose(b, [[0.0, 0.6, 0.5, 1.0]])


def test_mismatched_shapes_raise():
    with pytest.raises(ValueError, match="cell scores"):
        decode(np.zeros((3, 4)), np.zeros((3, 3, 4)))


def test_decode_batch():
    scores = np.zeros((2, 3, 3, 1), np.float32)
    boxes = np.zeros((2, 3, 3, 4), np.float32)
    scores[1, 1, 1, 0] = 0.9
    boxes[1, 1, 1] = [0.3, 0.3, 0.6, 0.6]
    out = decode_batch(scores, boxes)
    assert [len(s) for s, _ in out] == [0, 1]


def test_decode_is_fast_on_a_webcam_grid():
    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 0.3, (15, 20, 1)).astype(np.float32)
    scores[rng.integers(0, 15, 12), rng.integers(0, 20, 12), 0] = 0.9  # a dozen faces' worth of cells
    cx, cy = np.meshgrid((np.arange(20) + 0.5) / 20, (np.arange(15) + 0.5) / 15)
    boxes = np.stack([cx - 0.05, cy - 0.07, cx + 0.05, cy + 0.07], -1).astype(np.float32)
    decode(scores, boxes)
    best = min(_timed(lambda: decode(scores, boxes)) for _ in range(200))
    assert best < 0.5e-3


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def test_settings_round_trip_and_default_when_absent(tmp_path):
    assert load_decode_settings(tmp_path) == DecodeSettings()
    s = DecodeSettings(threshold=0.35, nms_iou=0.5, max_faces=7)
    save_decode_settings(tmp_path, s)
    assert json.loads((tmp_path / DECODE_FILE).read_text()) == {
        "threshold": 0.35,
        "nms_iou": 0.5,
        "max_faces": 7,
    }
    assert load_decode_settings(tmp_path) == s


def test_unreadable_settings_fall_back_to_defaults(tmp_path):
    (tmp_path / DECODE_FILE).write_text("{not json")
    assert load_decode_settings(tmp_path) == DecodeSettings()


@pytest.mark.parametrize("bad", [{"threshold": 1.5}, {"nms_iou": 0.0}, {"max_faces": 0}])
def test_invalid_settings_raise(bad):
    with pytest.raises(ValueError):
        DecodeSettings(**bad)

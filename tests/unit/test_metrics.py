"""Tests of facetrack.metrics: AP@0.5 over every face on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest

from facetrack.metrics import average_precision, face_metrics, iou_matrix, match_image

A = [0.1, 0.1, 0.3, 0.3]
B = [0.6, 0.1, 0.8, 0.3]
NEAR_A = [0.11, 0.1, 0.31, 0.3]
FAR = [0.4, 0.6, 0.5, 0.7]


def det(*pairs):
    scores = np.array([s for s, _ in pairs], np.float32)
    boxes = np.array([b for _, b in pairs], np.float32).reshape(-1, 4)
    return scores, boxes


def test_perfect_two_faces():
    m = face_metrics([det((0.9, A), (0.8, B))], [[A, B]])
    assert m.ap50 == pytest.approx(1.0)
    assert (m.recall, m.precision, m.presence_accuracy, m.faces) == (1.0, 1.0, 1.0, 2)
    assert m.mean_iou == pytest.approx(1.0)


def test_duplicate_detection_is_a_false_alarm():
    m = face_metrics([det((0.9, A), (0.8, NEAR_A))], [[A]])
    assert m.true_positives == 1 and m.detections == 2
    assert m.precision == pytest.approx(0.5)
    assert m.per_image[0].false_alarms == 1
    # ranked: TP then FP -> AP stays 1 (all faces found before the false alarm)
    assert m.ap50 == pytest.approx(1.0)
    # the duplicate ranked first among two faces: TP(A), FP(dup), TP(B) -> 0.5 + 0.5 * 2/3
    m2 = face_metrics([det((0.9, A), (0.8, NEAR_A), (0.7, B))], [[A, B]])
    assert m2.ap50 == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_face_found_twice_counts_once():
    is_tp, ious = match_image(np.array([0.9, 0.95]), np.array([NEAR_A, A]), np.array([A]))
    assert is_tp.tolist() == [False, True]  # the better score takes the face
    assert ious[1] == pytest.approx(1.0)
    m = face_metrics([det((0.9, NEAR_A), (0.95, A))], [[A, B]])
    assert m.true_positives == 1 and m.recall == pytest.approx(0.5)


def test_one_detection_between_two_faces_matches_at_most_one():
    m = face_metrics([det((0.9, [0.1, 0.1, 0.8, 0.3]))], [[A, B]])
    assert m.true_positives == 0 and m.ap50 == 0.0 and m.presence_accuracy == 1.0


def test_no_faces_at_all():
    m = face_metrics([det(), det((0.9, FAR))], [[], []])
    assert m.faces == 0 and m.ap50 is None and m.recall is None and m.mean_iou is None
    assert m.presence_accuracy == pytest.approx(0.5)
    assert m.precision == 0.0


def test_no_detections_at_all():
    m = face_metrics([det(), det()], [[A], []])
    assert m.ap50 == 0.0 and m.recall == 0.0 and m.precision is None
    assert m.presence_accuracy == pytest.approx(0.5)


def test_low_scores_count_for_ap_but_not_at_the_threshold():
    m = face_metrics([det((0.3, A))], [[A]], threshold=0.5)
    assert m.ap50 == pytest.approx(1.0)
    assert m.recall == 0.0 and m.presence_accuracy == 0.0 and m.per_image[0].missed == 1


def test_ap_pools_images_by_score():
    # image 1: FP at 0.95; image 2: TP at 0.9; image 3: missed face
    m = face_metrics([det((0.95, FAR)), det((0.9, B)), det()], [[A], [B], [A]])
    # ranked: FP, TP -> precision 0.5 at recall 1/3
    assert m.ap50 == pytest.approx(0.5 / 3)
    assert m.faces == 3 and m.images_with_faces == 3


def test_iou_below_half_is_a_miss():
    half_off = [0.2, 0.1, 0.4, 0.3]  # IoU with A = 1/3
    assert iou_matrix(np.array([half_off]), np.array([A]))[0, 0] == pytest.approx(1 / 3)
    m = face_metrics([det((0.9, half_off))], [[A]])
    assert m.true_positives == 0


def test_average_precision_all_point_interpolation():
    # TP, FP, TP over 2 positives: 0.5 * 1 + 0.5 * 2/3
    assert average_precision(np.array([0.9, 0.8, 0.7]), np.array([1, 0, 1], bool), 2) == pytest.approx(
        0.5 + 1 / 3
    )
    assert average_precision(np.array([]), np.array([], bool), 0) is None


def test_lengths_must_agree():
    with pytest.raises(ValueError):
        face_metrics([det()], [[], []])


def test_best_threshold_sits_between_true_faces_and_false_alarms():
    from facetrack.metrics import best_threshold

    dets = [det((0.7, A)), det((0.65, B)), det((0.4, FAR)), det((0.35, FAR))]
    truths = [[A], [B], [], []]
    thr = best_threshold(dets, truths, candidates=(0.3, 0.5, 0.8))
    assert thr == 0.5


def test_best_threshold_prefers_a_broad_high_range_to_a_lone_peak():
    """Validation's figure peaks at exactly 0.40 (three faces scored 0.40, three no-face photos 0.395)
    and is lower but steady from 0.46 on: one photo either way ends the peak, so it is noise."""
    from facetrack.metrics import best_threshold

    faces = [det((0.40, A))] * 3 + [det((0.9, A))] * 6
    no_faces = [det((0.395, FAR))] * 3 + [det((0.45, FAR))]
    dets, truths = faces + no_faces, [[A]] * 9 + [[]] * 4
    assert best_threshold(dets, truths) >= 0.46
    assert best_threshold(dets, truths, window=0.0) == pytest.approx(0.40)  # the peak itself


@pytest.mark.parametrize("kwargs", [{"candidates": ()}, {"window": -0.01}, {"window": float("nan")}])
def test_best_threshold_rejects_no_candidates_and_a_negative_window(kwargs):
    from facetrack.metrics import best_threshold

    with pytest.raises(ValueError):
        best_threshold([det((0.9, A))], [[A]], **kwargs)

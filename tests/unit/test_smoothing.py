"""Tests for facetrack.smoothing: one smoothed track per face, matched frame to frame by overlap."""

from __future__ import annotations

import numpy as np
import pytest

from facetrack.detect import Detection, to_box
from facetrack.labels import Box, iou
from facetrack.smoothing import BoxSmoother, match_by_iou

W, H = 640, 480


def det(box, score: float = 0.9) -> Detection:
    return Detection.from_box(score, to_box(box), W, H)


def noisy(truth, rng, noise: float = 0.01) -> Detection:
    return det(
        np.asarray(truth, float) + rng.normal(0, noise, 4), float(np.clip(0.8 + rng.normal(0, 0.1), 0, 1))
    )


def moving(start, step, n: int) -> np.ndarray:
    """``n`` true boxes: ``start`` moved by ``step`` (normalized, per frame) each frame."""
    return np.asarray(start, float)[None, :] + np.arange(n)[:, None] * np.asarray(step, float)[None, :]


def by_id(faces) -> dict[int, np.ndarray]:
    return {f.track_id: np.array(f.detection.box.to_list()) for f in faces}


def run_alone(truths: np.ndarray, seed: int, **kw) -> list[np.ndarray]:
    """The smoothed boxes of one face seen alone (the reference a second face must not change)."""
    rng = np.random.default_rng(seed)
    sm = BoxSmoother(**kw)
    out = []
    for t in truths:
        faces = sm.track([noisy(t, rng)])
        out.append(np.array(faces[0].detection.box.to_list()) if faces else None)
    return out


# -- one face -------------------------------------------------------------------------


def test_smoother_reduces_jitter():
    rng = np.random.default_rng(0)
    truth = np.array([0.3, 0.3, 0.6, 0.7])
    dets = [noisy(truth, rng, 0.02) for _ in range(200)]
    sm = BoxSmoother(alpha=0.4)
    smoothed = [sm.update([d]) for d in dets]
    assert smoothed[0] == []  # a new face is shown from its second frame
    smoothed = [s[0] for s in smoothed[1:]]
    raw = np.array([d.box.to_list() for d in dets[1:]])
    out = np.array([d.box.to_list() for d in smoothed])
    assert np.diff(out, axis=0).std() < 0.6 * np.diff(raw, axis=0).std()
    assert np.abs(out[20:] - truth).mean() < np.abs(raw[20:] - truth).mean()
    assert np.std([d.score for d in smoothed]) < np.std([d.score for d in dets])
    assert smoothed[-1].frame_size == (W, H) and isinstance(smoothed[-1].x1, int)


def test_moving_face_is_followed_without_lag():
    truths = moving([0.1, 0.3, 0.3, 0.6], [0.01, 0.0, 0.01, 0.0], 50)
    boxes = run_alone(truths, seed=1)
    err = np.abs(np.array(boxes[20:]) - truths[20:]).mean(axis=0)
    assert err[0] < 0.01 and err[2] < 0.01, err  # the velocity catches up with the motion


def test_dropout_is_held_then_the_face_vanishes():
    sm = BoxSmoother(alpha=0.5, hold=2, max_missing=4)
    a = det([0.3, 0.3, 0.6, 0.7])
    sm.update([a])
    (last,) = sm.update([a])
    assert sm.update([]) == [last]  # missed frames: the face stays where it was
    assert sm.update([]) == [last]
    assert sm.update([]) == []  # after `hold` misses it is no longer drawn
    assert sm.update([a]) == [last]  # ... but still known: back at once, same place
    for _ in range(5):
        sm.update([])
    assert sm.update([a]) == []  # forgotten after max_missing: a new face, shown from its second frame
    assert len(sm.update([a])) == 1


def test_one_frame_false_alarm_is_never_drawn():
    sm = BoxSmoother()
    face = det([0.3, 0.3, 0.6, 0.7])
    blip = det([0.8, 0.1, 0.9, 0.2], score=0.6)
    sm.update([face])
    assert len(sm.update([face, blip])) == 1
    assert len(sm.update([face])) == 1
    assert len(sm.update([face, blip])) == 1  # a blip is forgotten at its first miss: never 2 frames running


def test_jump_starts_a_new_face_without_dragging_the_old_box():
    sm = BoxSmoother(hold=0)
    a, b = det([0.1, 0.1, 0.3, 0.4]), det([0.6, 0.5, 0.8, 0.8])
    sm.update([a])
    sm.update([a])
    assert sm.update([b]) == []  # b is new (no overlap): not a moved a, and a is not drawn on a miss
    (out,) = sm.update([b])
    assert out.box == b.box  # no blending with a


# -- several faces --------------------------------------------------------------------


def test_two_faces_moving_side_by_side_keep_their_identities():
    n = 60
    left = moving([0.10, 0.30, 0.30, 0.65], [0.004, 0.001, 0.004, 0.001], n)
    right = moving([0.35, 0.30, 0.55, 0.65], [0.004, 0.001, 0.004, 0.001], n)
    rng = np.random.default_rng(3)
    sm = BoxSmoother()
    ids = None
    for k in range(n):
        dets = [noisy(left[k], rng), noisy(right[k], rng)]
        if k % 2:
            dets.reverse()  # the detector's order (by score) changes from frame to frame
        faces = by_id(sm.track(dets))
        if k == 0:
            assert faces == {}
            continue
        assert len(faces) == 2
        if ids is None:
            ids = sorted(faces, key=lambda i: faces[i][0])  # [left id, right id]
        assert sorted(faces) == sorted(ids)
        lbox, rbox = faces[ids[0]], faces[ids[1]]
        assert iou(lbox, left[k]) > 0.7 and iou(rbox, right[k]) > 0.7, k
        assert iou(lbox, rbox) < 0.05  # never merged


def test_one_face_disappearing_does_not_pull_the_other():
    n = 40
    a = moving([0.10, 0.30, 0.30, 0.65], [0.0, 0.0, 0.0, 0.0], n)
    b = moving([0.40, 0.30, 0.60, 0.65], [0.003, 0.0, 0.003, 0.0], n)
    alone = run_alone(b, seed=5)
    rng = np.random.default_rng(5)
    other = np.random.default_rng(6)
    sm = BoxSmoother(hold=2, max_missing=4)
    counts = []
    for k in range(n):
        dets = [noisy(b[k], rng)]
        if k < 20:
            dets.append(noisy(a[k], other))  # a leaves the frame at k = 20
        faces = sm.track(dets)
        counts.append(len(faces))
        b_faces = [f for f in faces if iou(f.detection.box.to_list(), b[k]) > 0.5]
        if k >= 1:
            assert len(b_faces) == 1
            # b's box is exactly what it is without a: a's coming and going never moves it
            assert np.allclose(b_faces[0].detection.box.to_list(), alone[k]), k
    assert counts[1:20] == [2] * 19
    assert counts[20:22] == [2, 2]  # a is held for `hold` frames, where it was
    assert counts[22:] == [1] * (n - 22)


def test_a_new_face_appears_with_its_own_track():
    n = 30
    a = moving([0.10, 0.30, 0.30, 0.65], [0.002, 0.0, 0.002, 0.0], n)
    b = np.array([0.55, 0.25, 0.80, 0.70])
    alone = run_alone(a, seed=7)
    rng = np.random.default_rng(7)
    other = np.random.default_rng(8)
    sm = BoxSmoother(min_hits=2)
    a_id = None
    for k in range(n):
        dets = [noisy(a[k], rng)] + ([noisy(b, other)] if k >= 10 else [])
        faces = by_id(sm.track(dets))
        if k == 1:
            (a_id,) = faces
        if k >= 1:
            assert np.allclose(faces[a_id], alone[k])  # the newcomer never moves a's box
        if 1 <= k <= 10:
            assert list(faces) == [a_id]
        if k >= 11:  # b is shown from its second frame, under a new id
            assert len(faces) == 2
            (b_id,) = set(faces) - {a_id}
            assert iou(faces[b_id], b) > 0.8


def test_crossing_faces_never_merge_or_swap():
    n = 50
    # a moves right, b moves left, a little lower: they cross at k = 25
    a = moving([0.10, 0.30, 0.30, 0.60], [0.012, 0.0, 0.012, 0.0], n)
    b = moving([0.70, 0.35, 0.90, 0.65], [-0.012, 0.0, -0.012, 0.0], n)
    rng = np.random.default_rng(9)
    sm = BoxSmoother()
    ids = None
    for k in range(n):
        dets = [noisy(a[k], rng, 0.003), noisy(b[k], rng, 0.003)]
        if k % 3 == 0:
            dets.reverse()
        faces = by_id(sm.track(dets))
        if k == 0:
            continue
        assert len(faces) == 2, k  # two faces, two boxes, even when they overlap
        if ids is None:
            ids = sorted(faces, key=lambda i: faces[i][0])  # [a's id, b's id]
        assert sorted(faces) == sorted(ids), k
        fa, fb = faces[ids[0]], faces[ids[1]]
        assert iou(fa, a[k]) > iou(fa, b[k]) or iou(a[k], b[k]) > 0.8, k  # a's track stays on a
        assert iou(fb, b[k]) > iou(fb, a[k]) or iou(a[k], b[k]) > 0.8, k
        assert iou(fa, a[k]) > 0.6 and iou(fb, b[k]) > 0.6, k
    assert faces[ids[0]][0] > faces[ids[1]][0]  # after crossing, a's box is on the right


def test_match_by_iou_is_one_to_one_best_first():
    tracks = [[0.0, 0.0, 0.4, 0.4], [0.3, 0.0, 0.7, 0.4]]
    boxes = [[0.25, 0.0, 0.65, 0.4], [0.0, 0.0, 0.38, 0.4], [0.9, 0.9, 1.0, 1.0]]
    assert sorted(match_by_iou(tracks, boxes, 0.25)) == [(0, 1), (1, 0)]
    # one box between two tracks goes to one of them only
    assert match_by_iou(tracks, [[0.1, 0.0, 0.5, 0.4]], 0.25) == [(0, 0)]
    assert match_by_iou(tracks, boxes[2:], 0.25) == [] and match_by_iou([], boxes, 0.3) == []


def test_settings_are_checked_and_reset_forgets():
    for bad in (
        {"alpha": 0},
        {"beta": -0.1},
        {"match_iou": 0},
        {"min_hits": 0},
        {"hold": 3, "max_missing": 2},
    ):
        with pytest.raises(ValueError):
            BoxSmoother(**bad)
    sm = BoxSmoother(min_hits=1)
    assert len(sm.update([Detection.from_box(0.9, Box(0.2, 0.2, 0.4, 0.4), 100, 100)])) == 1
    sm.reset()
    assert sm.update([]) == []

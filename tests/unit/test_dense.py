"""Tests of facetrack.dense and the dense model builders: targets, losses, shapes, saving."""

from __future__ import annotations

import numpy as np
import pytest

from facetrack import model as M
from facetrack.dense import (
    CellBoxes,
    CellBoxLoss,
    CellScoreLoss,
    TargetSettings,
    dense_targets,
    image_targets,
    is_dense,
    output_grid,
)
from facetrack.layers import giou_loss


def test_one_small_face_is_positive_in_its_centre_cell_only():
    # grid 10 x 10; face centred in cell (row 2, col 7), one cell wide
    box = [0.7, 0.2, 0.8, 0.3]
    score, target = image_targets([box], (10, 10))
    assert np.argwhere(score[..., 0] == 1).tolist() == [[2, 7]]
    np.testing.assert_allclose(target[2, 7], box)
    assert (score[..., 0] == -1).sum() == 0  # nothing left to ignore around a one-cell face
    assert np.all(target[score[..., 0] != 1] == 0)


def test_a_large_face_has_3x3_positives_and_an_ignored_ring():
    box = [0.2, 0.2, 0.8, 0.8]  # 6 cells wide on a 10 x 10 grid, centre on a cell corner (5, 5)
    score, target = image_targets([box], (10, 10), TargetSettings(radius=1.0))
    pos = np.argwhere(score[..., 0] == 1)
    assert sorted({r for r, _ in pos}) == [4, 5] and sorted({c for _, c in pos}) == [4, 5]
    ignored = score[..., 0] == -1
    assert ignored.sum() > 0 and not ignored[0, 0] and ignored[3, 3]
    np.testing.assert_allclose(target[4, 4], box)


def test_two_faces_in_one_cell_the_smaller_wins():
    big = [0.0, 0.0, 1.0, 1.0]
    small = [0.45, 0.45, 0.55, 0.55]
    score, target = image_targets([big, small], (5, 5))
    np.testing.assert_allclose(target[2, 2], small)
    assert score[2, 2, 0] == 1
    # and the order of the list does not matter
    _, target2 = image_targets([small, big], (5, 5))
    np.testing.assert_allclose(target2, target)


def test_two_faces_far_apart_both_get_cells():
    a, b = [0.05, 0.1, 0.15, 0.3], [0.8, 0.5, 0.9, 0.7]
    score, target = image_targets([a, b], (15, 20))
    boxes = {tuple(np.round(t, 4)) for t in target[score[..., 0] == 1]}
    assert boxes == {tuple(np.round(np.float32(a), 4)), tuple(np.round(np.float32(b), 4))}


def test_no_face_gives_all_background():
    score, target = image_targets([], (6, 8))
    assert score.shape == (6, 8, 1) and target.shape == (6, 8, 4)
    assert np.all(score == 0) and np.all(target == 0)


def test_batch_targets_accept_lists_of_any_length():
    score, target = dense_targets([[], [[0.1, 0.1, 0.3, 0.3]], np.zeros((0, 4))], (4, 6))
    assert score.shape == (3, 4, 6, 1) and target.shape == (3, 4, 6, 4)
    assert score[1].max() == 1 and score[0].max() == 0 and score[2].max() == 0


def test_face_on_the_image_edge_stays_on_the_grid():
    score, _ = image_targets([[0.9, 0.9, 1.0, 1.0]], (4, 4))
    assert score[3, 3, 0] == 1


def test_cell_boxes_start_at_the_cell_centre():
    raw = np.zeros((1, 2, 4, 4), np.float32)
    out = np.asarray(CellBoxes(reach=2.0)(raw))
    # zero raw: centre of the cell, half the image wide and tall (sigmoid(0) = 0.5)
    np.testing.assert_allclose(out[0, 0, 0], [0.0, 0.0, 0.375, 0.5], atol=1e-6)
    np.testing.assert_allclose(out[0, 1, 2], [0.375, 0.5, 0.875, 1.0], atol=1e-6)


def test_giou_loss_values():
    t = np.array([[0.0, 0.0, 0.5, 0.5]], np.float32)
    assert float(np.asarray(giou_loss(t, t))[0]) == pytest.approx(0.0, abs=1e-6)
    far = np.array([[0.5, 0.5, 1.0, 1.0]], np.float32)  # no overlap, hull = 1, union = 0.5
    assert float(np.asarray(giou_loss(t, far))[0]) == pytest.approx(1.5, abs=1e-5)


def test_box_loss_averages_over_positive_cells_not_images():
    t = np.zeros((2, 2, 2, 4), np.float32)
    p = np.zeros((2, 2, 2, 4), np.float32)
    t[0, 0, 0] = [0.0, 0.0, 0.5, 0.5]
    p[0, 0, 0] = [0.5, 0.5, 1.0, 1.0]  # loss 1.5 on the only positive cell
    assert float(CellBoxLoss()(t, p)) == pytest.approx(1.5, abs=1e-5)
    t[1, 1, 1] = [0.0, 0.0, 0.5, 0.5]
    p[1, 1, 1] = [0.0, 0.0, 0.5, 0.5]  # a perfect second positive halves the mean
    assert float(CellBoxLoss()(t, p)) == pytest.approx(0.75, abs=1e-5)
    assert float(CellBoxLoss()(np.zeros_like(t), p)) == 0.0  # no face in the batch


def test_score_loss_skips_ignored_cells_and_averages_over_cells():
    y = np.zeros((1, 2, 2, 1), np.float32)
    p = np.full((1, 2, 2, 1), 0.5, np.float32)
    plain = float(CellScoreLoss(gamma=0.0, pos_weight=1.0)(y, p))
    assert plain == pytest.approx(np.log(2), rel=1e-4)  # mean over cells, not a sum
    y[0, 0, 0, 0] = -1
    p[0, 0, 0, 0] = 0.999  # would cost a lot if counted
    assert float(CellScoreLoss(gamma=0.0, pos_weight=1.0)(y, p)) == pytest.approx(np.log(2), rel=1e-4)
    # same mean whatever the batch size
    y2, p2 = np.concatenate([y, y]), np.concatenate([p, p])
    assert float(CellScoreLoss(gamma=0.0, pos_weight=1.0)(y2, p2)) == pytest.approx(np.log(2), rel=1e-4)


def test_score_loss_weights_positives_and_focuses_on_hard_cells():
    y = np.array([[[[1.0], [0.0]]]], np.float32)
    p = np.array([[[[0.5], [0.5]]]], np.float32)
    w1 = float(CellScoreLoss(gamma=0.0, pos_weight=1.0)(y, p))
    w3 = float(CellScoreLoss(gamma=0.0, pos_weight=3.0)(y, p))
    assert w3 == pytest.approx(2 * w1)  # (3 + 1) / 2 vs (1 + 1) / 2
    easy = np.array([[[[0.9], [0.1]]]], np.float32)
    assert float(CellScoreLoss(gamma=2.0)(y, easy)) < 0.02 * float(CellScoreLoss(gamma=0.0)(y, easy))


def test_photo_term_charges_the_cell_that_decides_a_photo():
    """``photo_weight``: each photo's best cell answers "a face?"; one hot cell on a no-face photo costs."""
    y = np.zeros((1, 4, 4, 1), np.float32)
    p = np.full((1, 4, 4, 1), 0.01, np.float32)
    p[0, 2, 3, 0] = 0.9  # a false alarm on a photo with no face
    off = float(CellScoreLoss(gamma=0.0, pos_weight=1.0)(y, p))
    on = float(CellScoreLoss(gamma=0.0, pos_weight=1.0, photo_weight=0.5)(y, p))
    assert on - off == pytest.approx(0.5 * -np.log(0.1), rel=1e-3)
    assert float(CellScoreLoss(gamma=0.0, pos_weight=1.0, photo_weight=0.0)(y, p)) == off
    # a face photo is judged by its best face cell, not by a background cell
    y[0, 0, 0, 0] = 1.0
    p[0, 0, 0, 0] = 0.2
    off = float(CellScoreLoss(gamma=0.0, pos_weight=1.0)(y, p))
    on = float(CellScoreLoss(gamma=0.0, pos_weight=1.0, photo_weight=1.0)(y, p))
    assert on - off == pytest.approx(-np.log(0.2), rel=1e-3)
    config = CellScoreLoss(photo_weight=0.25).get_config()
    assert CellScoreLoss.from_config(config).photo_weight == 0.25


def test_dense_mirror_average_is_symmetric_cell_by_cell_and_reloads(tmp_path):
    m = M.build_model("compact", None, (48, 64), head="dense")
    tta = M.with_mirror_average(m)
    assert is_dense(tta) and output_grid(tta) == output_grid(m)
    assert tta.count_params() == m.count_params()
    x = np.random.default_rng(3).uniform(0, 255, (2, 48, 64, 3)).astype("float32")
    a, b = tta(x, training=False), tta(x[:, :, ::-1], training=False)
    # the mirror image gets the mirrored score map and the mirrored boxes
    np.testing.assert_allclose(np.asarray(a["class"]), np.asarray(b["class"])[:, :, ::-1], atol=1e-5)
    bb = np.asarray(b["bbox"])[:, :, ::-1]
    mirrored = np.stack([1 - bb[..., 2], bb[..., 1], 1 - bb[..., 0], bb[..., 3]], -1)
    np.testing.assert_allclose(np.asarray(a["bbox"]), mirrored, atol=1e-5)
    p, q = m(x, training=False), m(x[:, :, ::-1], training=False)
    expected = (np.asarray(p["class"]) + np.asarray(q["class"])[:, :, ::-1]) / 2
    np.testing.assert_allclose(np.asarray(a["class"]), expected, atol=1e-5)
    tta.save(tmp_path / "m.keras")
    again = M.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(np.asarray(again(x, training=False)["bbox"]), np.asarray(a["bbox"]), atol=1e-5)


@pytest.mark.parametrize(("backbone", "grid"), [("compact", (6, 8)), ("vgg16", (3, 4))])
def test_dense_models_take_a_4_by_3_input(backbone, grid):
    m = M.build_model(backbone, None, (48, 64), head="dense")
    assert m.input_shape == (None, 48, 64, 3)
    assert is_dense(m) and output_grid(m) == grid
    out = m(np.random.default_rng(0).uniform(0, 255, (2, 48, 64, 3)).astype("float32"), training=False)
    cls, box = np.asarray(out["class"]), np.asarray(out["bbox"])
    assert cls.shape == (2, *grid, 1) and box.shape == (2, *grid, 4)
    assert np.all((cls > 0) & (cls < 0.05))  # starts at the prior: no face anywhere
    assert np.all(box[..., 2] >= box[..., 0]) and np.all(box[..., 3] >= box[..., 1])


def test_the_one_box_head_still_needs_a_square_and_is_not_dense():
    with pytest.raises(ValueError, match="square"):
        M.build_model("compact", None, (48, 64))
    assert not is_dense(M.build_model("compact", None, 48))
    with pytest.raises(ValueError, match="head"):
        M.build_model("compact", None, 48, head="sparse")


def test_dense_model_trains_and_reloads(tmp_path):
    import keras

    from facetrack.dense import compile_dense

    keras.utils.set_random_seed(0)
    m = M.build_model("compact", None, (48, 64), head="dense")
    compile_dense(m, keras.optimizers.Adam(3e-3))
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (8, 48, 64, 3)).astype("float32")
    boxes = [[[0.1, 0.2, 0.3, 0.5], [0.6, 0.2, 0.8, 0.5]] if i % 2 else [] for i in range(8)]
    cls, box = dense_targets(boxes, output_grid(m))
    first = m.evaluate(x, {"class": cls, "bbox": box}, verbose=0)[0]
    # 20 epochs: enough steps for the BatchNorm statistics (momentum 0.9) that evaluate uses
    m.fit(x, {"class": cls, "bbox": box}, epochs=20, batch_size=4, verbose=0)
    assert m.evaluate(x, {"class": cls, "bbox": box}, verbose=0)[0] < first
    path = tmp_path / "dense.keras"
    m.save(path)
    again = M.load_model(path, compile=True)
    np.testing.assert_allclose(np.asarray(again(x[:2])["bbox"]), np.asarray(m(x[:2])["bbox"]), atol=1e-5)


def test_flip_boxes_mirrors_left_right():
    from facetrack.dense import flip_boxes

    np.testing.assert_allclose(flip_boxes([[0.1, 0.2, 0.3, 0.4]]), [[0.7, 0.2, 0.9, 0.4]], atol=1e-6)
    assert flip_boxes(np.zeros((0, 4))).shape == (0, 4)


def test_dense_batches_targets_follow_the_mirrored_image():
    from facetrack.data import dense_batches

    images = np.zeros((6, 16, 24, 3), np.uint8)
    images[:, :, :4] = 255  # a bright band on the left edge, where the face is
    boxes = [np.array([[0.0, 0.25, 1 / 6, 0.75]], np.float32)] * 4 + [np.zeros((0, 4), np.float32)] * 2
    seen_flipped = seen_plain = False
    for x, y in dense_batches(images, boxes, 3, (4, 6), seed=1, drop_remainder=True).repeat(4):
        x, cls, box = x.numpy(), y["class"].numpy(), y["bbox"].numpy()
        assert x.shape == (3, 16, 24, 3) and cls.shape == (3, 4, 6, 1) and box.shape == (3, 4, 6, 4)
        for i in range(3):
            if cls[i].max() < 1:
                continue
            left_bright = x[i, :, 0].mean() > 128
            face_left = box[i][cls[i][..., 0] == 1][0, 0] < 0.5
            assert left_bright == face_left
            seen_flipped |= not left_bright
            seen_plain |= left_bright
    assert seen_flipped and seen_plain


def test_every_target_box_sits_on_its_face_in_plain_mirrored_and_mosaic_images():
    from facetrack.data import dense_batches

    rng = np.random.default_rng(2)
    images = np.zeros((8, 32, 48, 3), np.uint8)
    boxes = []
    for i in range(8):  # each face a bright rectangle somewhere, 0 to 2 per image
        faces = []
        for _ in range(i % 3):
            x1, y1 = rng.uniform(0, 0.6), rng.uniform(0, 0.5)
            b = np.array([x1, y1, x1 + 0.3, y1 + 0.4], np.float32)
            images[i, round(b[1] * 32) : round(b[3] * 32), round(b[0] * 48) : round(b[2] * 48)] = 255
            faces.append(b)
        boxes.append(np.array(faces, np.float32).reshape(-1, 4))
    checked = 0
    for x, y in dense_batches(images, boxes, 4, (4, 6), seed=3, mosaic=1.0).repeat(3):
        assert x.dtype == "float32"
        x, cls, box = x.numpy(), y["class"].numpy(), y["bbox"].numpy()
        for i in range(len(x)):
            for b in box[i][cls[i][..., 0] == 1]:
                cx, cy = (b[0] + b[2]) / 2 * 48, (b[1] + b[3]) / 2 * 32
                assert x[i, int(cy), int(cx)].mean() > 128, (i, b)  # the target's centre is on a face
                checked += 1
    assert checked > 50


def test_a_4_by_3_dense_model_exports_to_tflite_and_decodes_the_same(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    from facetrack.decode import DecodeSettings, decode
    from facetrack.export import export_tflite

    m = M.build_model("compact", None, (48, 64), head="dense")
    path = export_tflite(m, tmp_path / "dense.tflite", quantize="none")
    it = Interpreter(model_path=str(path), num_threads=1)
    runner = it.get_signature_runner("serving_default")
    x = np.random.default_rng(1).uniform(0, 255, (1, 48, 64, 3)).astype("float32")
    out = runner(image=x)
    assert out["class"].shape == (1, 6, 8, 1) and out["bbox"].shape == (1, 6, 8, 4)
    ref = m(x, training=False)
    np.testing.assert_allclose(out["bbox"], np.asarray(ref["bbox"]), atol=1e-4)
    low = DecodeSettings(threshold=0.0, max_faces=5)
    np.testing.assert_allclose(
        decode(out["class"][0], out["bbox"][0], low)[1],
        decode(np.asarray(ref["class"])[0], np.asarray(ref["bbox"])[0], low)[1],
        atol=1e-4,
    )


def test_mosaic_puts_four_images_at_half_size_and_moves_their_boxes():
    from facetrack.dense import mosaic

    images = np.stack([np.full((8, 12, 3), v, np.uint8) for v in (10, 20, 30)])
    boxes = [
        np.array([[0.0, 0.0, 0.5, 0.5]], np.float32),
        np.zeros((0, 4), np.float32),
        np.zeros((0, 4), np.float32),
    ]
    out, out_boxes = mosaic(images, boxes, 20, seed=3)
    assert out.shape == (20, 8, 12, 3) and len(out_boxes) == 20
    for img, b in zip(out, out_boxes, strict=True):
        quads = [img[:4, :6], img[:4, 6:], img[4:, :6], img[4:, 6:]]
        ones = [q for q in range(4) if quads[q].mean() == 10]  # quadrants holding image 0 (with its face)
        assert len(b) == len(ones)
        expected = sorted(((q % 2) / 2, (q // 2) / 2, (q % 2) / 2 + 0.25, (q // 2) / 2 + 0.25) for q in ones)
        np.testing.assert_allclose(sorted(map(tuple, b)), expected, atol=1e-6)

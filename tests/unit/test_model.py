"""Tests of facetrack.model: shapes, preprocessing, losses, loading, offline weights."""

from __future__ import annotations

import time

import keras
import numpy as np
import pytest

from facetrack import model as M


@pytest.fixture(scope="module")
def compact32():
    return M.build_model("compact", None, 32)


@pytest.mark.parametrize("backbone", M.BACKBONES)
def test_build_model_outputs(backbone):
    m = M.build_model(backbone, None, 64)
    assert m.input_shape == (None, 64, 64, 3)
    assert set(m.output.keys()) == {"class", "bbox"}
    x = np.random.default_rng(0).uniform(0, 255, (3, 64, 64, 3)).astype("float32")
    out = m(x, training=False)
    cls, box = np.asarray(out["class"]), np.asarray(out["bbox"])
    assert cls.shape == (3, 1) and box.shape == (3, 4)
    assert np.all((cls >= 0) & (cls <= 1)) and np.all((box >= 0) & (box <= 1))
    # boxes come out as sorted corners
    assert np.all(box[:, 2] >= box[:, 0]) and np.all(box[:, 3] >= box[:, 1])


def test_compact_is_small():
    assert 50_000 < M.build_model("compact", None, 120).count_params() < 400_000


@pytest.mark.parametrize(("size", "grid"), [(120, 15), (64, 8), (160, 20)])
def test_compact_ends_on_the_stride_8_grid(size, grid):
    features, _ = M.build_parts("compact", None, size)
    assert features.output.shape[1:3] == (grid, grid)


def test_preprocess_matches_keras_vgg16():
    x = np.random.default_rng(1).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    ours = np.asarray(M.Preprocess("vgg16")(x))
    ref = keras.applications.vgg16.preprocess_input(x.copy())
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    scaled = np.asarray(M.Preprocess("scale")(x))
    np.testing.assert_allclose(scaled, x / 127.5 - 1, atol=1e-5)


def test_parts_compose_to_the_same_function():
    f, h = M.build_parts("vgg16", None, 32)
    assert f.output.shape[1:] == (1, 1, 512)
    assert not f.trainable
    full = M.compose(f, h)
    x = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    direct = h(f(x, training=False), training=False)
    composed = full(x, training=False)
    np.testing.assert_allclose(np.asarray(direct["bbox"]), np.asarray(composed["bbox"]), atol=1e-5)
    np.testing.assert_allclose(np.asarray(direct["class"]), np.asarray(composed["class"]), atol=1e-5)


def test_mirror_average_is_symmetric_and_reloads(tmp_path, compact32):
    tta = M.with_mirror_average(compact32)
    assert tta.count_params() == compact32.count_params()  # shared weights, nothing new
    x = np.random.default_rng(5).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    a, b = tta(x, training=False), tta(x[:, :, ::-1], training=False)
    # the mirror image gets the same score and the mirrored box
    np.testing.assert_allclose(np.asarray(a["class"]), np.asarray(b["class"]), atol=1e-5)
    box_a, box_b = np.asarray(a["bbox"]), np.asarray(b["bbox"])
    np.testing.assert_allclose(
        box_a, np.stack([1 - box_b[:, 2], box_b[:, 1], 1 - box_b[:, 0], box_b[:, 3]], 1), atol=1e-5
    )
    # it is the mean of the plain model on both images
    p, q = compact32(x, training=False), compact32(x[:, :, ::-1], training=False)
    np.testing.assert_allclose(
        np.asarray(a["class"]), (np.asarray(p["class"]) + np.asarray(q["class"])) / 2, atol=1e-5
    )
    tta.save(tmp_path / "m.keras")
    again = M.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(np.asarray(again(x, training=False)["bbox"]), box_a, atol=1e-5)


def _loc(y_true, y_pred):
    return float(M.LocalizationLoss()(np.array(y_true, "float32"), np.array(y_pred, "float32")))


def test_localization_loss_counts_only_faces_and_averages():
    # face: true [0.1,0.2,0.5,0.6] -> corner (0.1,0.2), size (0.4,0.4)
    # pred [0.2,0.2,0.5,0.8] -> corner (0.2,0.2), size (0.3,0.6): 0.01 + 0 + 0.01 + 0.04 = 0.06
    face_t, face_p = [0.1, 0.2, 0.5, 0.6], [0.2, 0.2, 0.5, 0.8]
    assert _loc([face_t], [face_p]) == pytest.approx(0.06, abs=1e-6)
    # a no-face image (target all zeros) adds nothing, whatever its prediction
    assert _loc([face_t, [0, 0, 0, 0]], [face_p, [0.9, 0.9, 1, 1]]) == pytest.approx(0.06, abs=1e-6)
    # two faces: mean, not sum (second has zero error)
    assert _loc([face_t, face_t], [face_p, face_t]) == pytest.approx(0.03, abs=1e-6)
    # no face in the batch: 0
    assert _loc([[0, 0, 0, 0]] * 3, [[0.1, 0.1, 0.5, 0.5]] * 3) == 0.0


def test_compiled_total_loss_uses_weights(compact32):
    m = M.build_model("compact", None, 32)
    M.compile_model(m, loss_weights={"class": 0.5, "bbox": 1.0})
    x = np.random.default_rng(3).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    y = {
        "class": np.array([[1], [0], [1], [0]], "float32"),
        "bbox": np.array([[0.1, 0.1, 0.6, 0.6], [0, 0, 0, 0], [0.3, 0.2, 0.9, 0.7], [0, 0, 0, 0]], "float32"),
    }
    res = m.evaluate(x, y, verbose=0, return_dict=True)
    assert res["loss"] == pytest.approx(res["bbox_loss"] + 0.5 * res["class_loss"], rel=1e-4)


def test_save_and_load_safe_mode(tmp_path, compact32):
    path = tmp_path / "m.keras"
    M.compile_model(compact32)
    compact32.save(path)
    loaded = M.load_model(path)
    x = np.random.default_rng(4).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(loaded(x)["bbox"]), np.asarray(compact32(x)["bbox"]), atol=1e-6)
    assert M.load_model(path, compile=True).loss is not None


def test_vgg16_save_and_load(tmp_path):
    m = M.build_model("vgg16", None, 32)
    m.save(tmp_path / "v.keras")
    loaded = M.load_model(tmp_path / "v.keras")
    assert set(loaded.output.keys()) == {"class", "bbox"}


def test_lambda_model_refused(tmp_path):
    inp = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Lambda(lambda t: t * 2.0)(inp)
    x = keras.layers.Flatten()(x)
    m = keras.Model(
        inp,
        {
            "class": keras.layers.Dense(1, activation="sigmoid", name="class")(x),
            "bbox": keras.layers.Dense(4, activation="sigmoid", name="bbox")(x),
        },
    )
    m.save(tmp_path / "lambda.keras")
    with pytest.raises(M.ModelLoadError, match="Lambda"):
        M.load_model(tmp_path / "lambda.keras")


def test_corrupt_missing_and_wrong_models(tmp_path):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip file at all")
    with pytest.raises(M.ModelLoadError, match="damaged"):
        M.load_model(bad)
    with pytest.raises(M.ModelLoadError, match="does not exist"):
        M.load_model(tmp_path / "nope.keras")
    inp = keras.Input((4,))
    other = keras.Model(inp, keras.layers.Dense(2, name="logits")(inp))
    other.save(tmp_path / "other.keras")
    with pytest.raises(M.ModelLoadError, match="'class' and 'bbox'"):
        M.load_model(tmp_path / "other.keras")


def test_imagenet_offline_message(tmp_path, monkeypatch):
    home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    # Nothing listens on port 9 of localhost: the download fails at once, as offline.
    monkeypatch.setattr(M, "VGG16_NOTOP_URL", "http://127.0.0.1:9/vgg16_notop.h5")
    t0 = time.time()
    with pytest.raises(M.WeightsUnavailable) as info:
        M.build_model("vgg16", "imagenet", 32)
    assert time.time() - t0 < 30
    msg = str(info.value)
    assert M.VGG16_NOTOP_FILE in msg
    assert str(home / "models") in msg
    assert "58 MB" in msg and "one-time" in msg
    assert "compact" in msg
    assert "Traceback" not in msg and "127.0.0.1" not in msg
    assert info.value.__cause__ is None


def test_weights_from_local_file(tmp_path):
    src = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path / "vgg.weights.h5"
    src.save_weights(path)
    f, _ = M.build_parts("vgg16", str(path), 32)
    base = [layer for layer in f.layers if isinstance(layer, keras.Model)][0]
    np.testing.assert_array_equal(
        base.get_layer("block1_conv1").get_weights()[0], src.get_layer("block1_conv1").get_weights()[0]
    )
    with pytest.raises(M.WeightsUnavailable, match="does not exist"):
        M.build_parts("vgg16", str(tmp_path / "missing.h5"), 32)


def test_unknown_backbone():
    with pytest.raises(ValueError, match="unknown backbone"):
        M.build_model("resnet", None, 64)


def test_grid_decoder_weights_cells():
    # One cell dominating: the box is that cell's box.
    p = np.zeros((1, 2, 2, 5), "float32")
    p[0, :, :, 0] = -50.0
    p[0, 1, 0, 0] = 50.0  # row 1, column 0: centre (0.25, 0.75)
    box = np.asarray(M.GridBoxDecoder(reach=1.0)(p))[0]  # tanh(0)=0 offset, size sigmoid(0)=0.5
    np.testing.assert_allclose(box, [0.0, 0.5, 0.5, 1.0], atol=1e-5)

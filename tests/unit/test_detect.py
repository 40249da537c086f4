"""Tests for facetrack.detect: preprocessing, backends, pixel mapping, drawing (smoothing: test_smoothing.py)."""

from __future__ import annotations

import json
import threading

import cv2
import keras
import numpy as np
import pytest

from facetrack.detect import (
    Detection,
    Detector,
    DetectorError,
    draw_detections,
    frame_to_rgb_input,
    to_box,
)
from facetrack.export import export_tflite
from facetrack.labels import Box
from tests.standin import standin_model as make_standin

SIZE = 48


def standin_model(size: int = SIZE, seed: int = 2) -> keras.Model:
    """A tiny model whose box starts near [.25, .3, .7, .8] (see tests.standin)."""
    return make_standin(size, seed, box=(0.25, 0.3, 0.7, 0.8))


class FakeRunner:
    """A model stand-in returning a fixed score and raw box; records its input."""

    def __init__(self, score: float, box: list[float]) -> None:
        self.score, self.box, self.inputs = score, np.array(box, np.float32), []

    def __call__(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        self.inputs.append(x.copy())
        return self.score, self.box


def fake_detector(score=0.9, box=(0.6, 0.1, 0.2, 0.5), size=32, **kw) -> Detector:
    return Detector(FakeRunner(score, list(box)), size, "fake", **kw)


def _frames(n: int, h: int = 480, w: int = 640, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        f = np.full((h, w, 3), rng.integers(0, 255, 3), np.uint8)
        cv2.circle(
            f, (int(rng.integers(w)), int(rng.integers(h))), h // 4, rng.integers(0, 255, 3).tolist(), -1
        )
        out.append(cv2.GaussianBlur(f, (0, 0), 3))
    return out


@pytest.fixture(scope="module")
def model() -> keras.Model:
    return standin_model()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, model):
    run = tmp_path_factory.mktemp("runs") / "20250101-000000-test"
    run.mkdir()
    model.save(run / "model.keras")
    (run / "settings.json").write_text(json.dumps({"backbone": "compact", "input_size": SIZE}))
    export_tflite(model, run / "model.tflite", quantize="none")
    return run


# -- boxes and detections ---------------------------------------------------------


def test_to_box_sorts_clips_and_survives_degenerate_output():
    assert to_box([0.6, 0.5, 0.2, 0.1]).to_list() == pytest.approx([0.2, 0.1, 0.6, 0.5])
    assert to_box([-0.2, 0.3, 1.5, 0.4]).to_list() == pytest.approx([0.0, 0.3, 1.0, 0.4])
    b = to_box([1.0, 1.0, 1.0, 1.0])  # saturated sigmoid
    assert 0 <= b.x1 < b.x2 <= 1 and 0 <= b.y1 < b.y2 <= 1
    b = to_box([float("nan"), 0.2, 0.5, 0.6])
    assert b.x1 == 0.0 and b.x2 == pytest.approx(0.5)


@pytest.mark.parametrize(("w", "h"), [(640, 480), (480, 640), (1920, 1080), (33, 17)])
def test_detect_maps_box_to_frame_pixels(w, h):
    det = fake_detector(box=(0.6, 0.1, 0.2, 0.5))  # corners in the wrong order
    (d,) = det.detect(np.zeros((h, w, 3), np.uint8))
    assert (d.x1, d.y1, d.x2, d.y2) == (round(0.2 * w), round(0.1 * h), round(0.6 * w), round(0.5 * h))
    assert d.frame_size == (w, h) and d.label == "face"
    assert d.box.to_list() == pytest.approx([0.2, 0.1, 0.6, 0.5])
    assert d.to_dict() == {"score": 0.9, "box": [d.x1, d.y1, d.x2, d.y2]}
    assert json.loads(json.dumps(d.to_dict())) == d.to_dict()


def test_detect_clips_boxes_outside_the_frame():
    det = fake_detector(box=(1.3, -0.2, 0.5, 0.9))
    (d,) = det.detect(np.zeros((480, 640, 3), np.uint8))
    assert (d.x1, d.y1, d.x2, d.y2) == (320, 0, 640, 432)


def test_threshold_filters_and_is_settable():
    det = fake_detector(score=0.4)
    frame = np.zeros((48, 64, 3), np.uint8)
    assert det.detect(frame) == []
    score, box = det.predict_raw(frame)
    assert score == pytest.approx(0.4) and isinstance(box, Box)
    det.threshold = 0.3
    assert len(det.detect(frame)) == 1
    det.threshold = 0.4  # score >= threshold counts
    assert len(det.detect(frame)) == 1
    with pytest.raises(ValueError):
        det.threshold = 1.5
    assert fake_detector(score=0.95, threshold=0.96).detect(frame) == []


def test_nan_score_is_no_face():
    assert fake_detector(score=float("nan")).detect(np.zeros((8, 8, 3), np.uint8)) == []


# -- preprocessing -----------------------------------------------------------------


@pytest.mark.parametrize("resize", ["fast", "area", "linear"])
@pytest.mark.parametrize(("h", "w"), [(480, 640), (640, 480), (20, 30)])
def test_whole_frame_is_resized_without_crop_and_turned_to_rgb(h, w, resize):
    frame = np.zeros((h, w, 3), np.uint8)
    frame[:, : w // 2] = (0, 0, 255)  # left half red in BGR
    frame[:, w // 2 :] = (255, 0, 0)  # right half blue in BGR
    frame[: h // 4, :] = (0, 255, 0)  # top quarter green
    x = frame_to_rgb_input(frame, 32, "bgr", resize=resize)
    assert x.shape == (1, 32, 32, 3) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, 20, 2], [255, 0, 0], atol=1)  # red, left
    np.testing.assert_allclose(x[0, 20, 29], [0, 0, 255], atol=1)  # blue, right
    np.testing.assert_allclose(x[0, 2, 16], [0, 255, 0], atol=1)  # green, top (no crop)
    rgb = frame_to_rgb_input(np.ascontiguousarray(frame[:, :, ::-1]), 32, "rgb", resize=resize)
    np.testing.assert_array_equal(rgb, x)


def test_fast_resize_is_close_to_area():
    (frame,) = _frames(1)
    fast = frame_to_rgb_input(frame, 120, resize="fast")
    area = frame_to_rgb_input(frame, 120, resize="area")
    assert np.abs(fast - area).mean() < 2.0


def test_grayscale_and_bgra_inputs():
    (frame,) = _frames(1, 120, 160)
    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    x_gray = frame_to_rgb_input(gray, 32)
    np.testing.assert_allclose(x_gray, frame_to_rgb_input(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), 32), atol=1)
    np.testing.assert_array_equal(frame_to_rgb_input(gray[:, :, None], 32), x_gray)
    bgra = cv2.cvtColor(frame, cv2.COLOR_BGR2BGRA)
    bgra[:, :, 3] = 7
    np.testing.assert_array_equal(frame_to_rgb_input(bgra, 32), frame_to_rgb_input(frame, 32))
    rgba = cv2.cvtColor(frame, cv2.COLOR_BGR2RGBA)
    np.testing.assert_array_equal(frame_to_rgb_input(rgba, 32, "rgb"), frame_to_rgb_input(frame, 32))
    det = fake_detector()
    for f in (gray, bgra, frame[:, ::-1]):  # also a non-contiguous view
        (d,) = det.detect(f)
        assert d.frame_size == (160, 120)


def test_float_frames_and_bad_frames():
    f = np.random.default_rng(0).uniform(0, 1, (40, 60, 3))
    np.testing.assert_allclose(
        frame_to_rgb_input(f, 16), frame_to_rgb_input((f * 255).astype(np.uint8), 16), atol=1.5
    )
    for bad in (np.zeros((10, 10, 2), np.uint8), np.zeros((10,), np.uint8), np.zeros((0, 10, 3), np.uint8)):
        with pytest.raises(ValueError):
            frame_to_rgb_input(bad, 16)
    with pytest.raises(ValueError, match="color"):
        frame_to_rgb_input(np.zeros((10, 10, 3), np.uint8), 16, color="hsv")


# -- real models: Keras and LiteRT agree -------------------------------------------


def _reference(model, frame_bgr):
    """The slow obvious way: cvtColor, INTER_AREA resize, model call."""
    rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
    small = cv2.resize(rgb, (SIZE, SIZE), interpolation=cv2.INTER_AREA).astype(np.float32)
    out = model(small[None], training=False)
    return float(out["class"][0, 0]), out["bbox"].numpy()[0]


def test_keras_backend_matches_reference_pipeline(model):
    det = Detector.from_keras_model(model, threshold=0.0, resize="area")
    assert det.backend == "keras" and det.input_size == SIZE
    model_predict = model.predict
    model.predict = None  # the live path must not use model.predict
    try:
        for frame in _frames(3, seed=1):
            score, box = det.predict_raw(frame)
            ref_score, ref_box = _reference(model, frame)
            assert score == pytest.approx(ref_score, abs=1e-5)
            assert box.to_list() == pytest.approx(list(ref_box), abs=1e-5)
    finally:
        model.predict = model_predict


def test_litert_and_keras_give_the_same_detections(run_dir):
    lite = Detector.from_run(run_dir, threshold=0.0)
    assert lite.backend == "litert" and lite.input_size == SIZE
    keras_det = Detector.from_run(run_dir, backend="keras", threshold=0.0)
    assert keras_det.backend == "keras"
    scores = []
    for shape in ((480, 640), (640, 480)):
        for frame in _frames(4, *shape, seed=2):
            (a,), (b,) = lite.detect(frame), keras_det.detect(frame)
            assert abs(a.score - b.score) < 0.05
            assert a.box.iou(b.box) > 0.9
            assert abs(a.x1 - b.x1) <= 2 and abs(a.y2 - b.y2) <= 2
            scores.append(a.score)
    assert np.ptp(scores) > 1e-3, "stand-in model should react to its input"


def test_dynamic_quantized_litert_is_close(model, tmp_path):
    path = export_tflite(model, tmp_path / "d.tflite", quantize="dynamic")
    lite = Detector.from_tflite(path, threshold=0.0)
    ref = Detector.from_keras_model(model, threshold=0.0)
    for frame in _frames(4, seed=3):
        (a,), (b,) = lite.detect(frame), ref.detect(frame)
        assert abs(a.score - b.score) < 0.05
        assert a.box.iou(b.box) > 0.8


def test_from_run_backend_choice_and_errors(run_dir, tmp_path, model):
    only_keras = tmp_path / "only-keras"
    only_keras.mkdir()
    model.save(only_keras / "model.keras")
    assert Detector.from_run(only_keras).backend == "keras"
    with pytest.raises(DetectorError, match="model.tflite"):
        Detector.from_run(only_keras, backend="litert")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DetectorError, match="model.keras"):
        Detector.from_run(empty)
    with pytest.raises(ValueError):
        Detector.from_run(run_dir, backend="onnx")
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "model.tflite").write_bytes((run_dir / "model.tflite").read_bytes())
    (wrong / "settings.json").write_text(json.dumps({"backbone": "vgg16", "input_size": 120}))
    with pytest.raises(DetectorError, match="input_size"):
        Detector.from_run(wrong)
    (wrong / "settings.json").write_text(json.dumps({"settings": {"backbone": "vgg16", "input_size": 120}}))
    with pytest.raises(DetectorError, match="input_size"):
        Detector.from_run(wrong)
    (wrong / "settings.json").write_text(json.dumps({"settings": {"input_size": SIZE}}))
    assert Detector.from_run(wrong).input_size == SIZE
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.tflite").write_bytes(b"not a model")
    with pytest.raises(DetectorError):
        Detector.from_run(broken)
    # auto falls back to the Keras model when the .tflite is broken; forcing litert does not
    model.save(broken / "model.keras")
    det = Detector.from_run(broken)
    assert det.backend == "keras" and "model.tflite" in det.fallback_reason
    with pytest.raises(DetectorError):
        Detector.from_run(broken, backend="litert")
    assert Detector.from_run(run_dir).fallback_reason == ""


def test_detector_is_thread_safe(run_dir):
    det = Detector.from_run(run_dir, threshold=0.0)
    frames = _frames(8, seed=4)
    expected = [det.predict_raw(f)[0] for f in frames]
    results: dict[int, list[float]] = {}

    def work(k: int) -> None:
        results[k] = [det.predict_raw(f)[0] for f in frames for _ in range(3)][::3]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(4):
        assert results[k] == pytest.approx(expected, abs=1e-6)


# -- drawing -----------------------------------------------------------------------


def _det(box, w, h, score=0.87):
    return Detection.from_box(score, Box(*box), w, h)


def test_draw_changes_pixels_inside_the_frame_in_place():
    frame = np.zeros((480, 640, 3), np.uint8)
    d = _det((0.25, 0.25, 0.75, 0.75), 640, 480)
    out = draw_detections(frame, [d])
    assert out is frame
    assert frame[d.y1 + 40 : d.y2 - 40, d.x1 : d.x1 + 3].any()  # left edge drawn
    assert frame[d.y1 - 5, d.x1 + 10].any()  # label above the box
    assert not frame[d.y1 + 40 : d.y2 - 40, d.x1 + 40 : d.x2 - 40].any()  # box inside untouched
    assert not frame[400:, :100].any()
    # BGR: the box is green
    edge = frame[240, d.x1]
    assert edge[1] > edge[0] and edge[1] > edge[2]
    rgb = draw_detections(np.zeros((480, 640, 3), np.uint8), [d], color="rgb")
    np.testing.assert_array_equal(rgb[240, d.x1], edge[[2, 1, 0]])


def test_draw_copy_and_read_only():
    frame = np.zeros((120, 160, 3), np.uint8)
    d = _det((0.2, 0.2, 0.8, 0.8), 160, 120)
    out = draw_detections(frame, [d], copy=True)
    assert out is not frame and out.any() and not frame.any()
    frame.flags.writeable = False
    out = draw_detections(frame, [d])
    assert out is not frame and out.any()


def test_draw_fps_and_scaling():
    small = draw_detections(np.zeros((240, 320, 3), np.uint8), [], fps=27.34)
    big = draw_detections(np.zeros((1080, 1920, 3), np.uint8), [], fps=27.34)
    assert small[:10, :10].any() and not small[200:, 200:].any()
    assert (big.any(axis=2).sum() / big[:, :, 0].size) > 0.5 * (small.any(axis=2).sum() / small[:, :, 0].size)
    assert big.any(axis=2).sum() > 4 * small.any(axis=2).sum()  # text grows with the frame
    assert not draw_detections(np.zeros((50, 50, 3), np.uint8), [], fps=float("nan")).any()


@pytest.mark.parametrize(("h", "w"), [(1, 1), (2, 3), (5, 5), (10, 3), (480, 640)])
@pytest.mark.parametrize("box", [(0.0, 0.0, 1.0, 1.0), (0.9, 0.9, 1.0, 1.0), (0.0, 0.0, 0.01, 0.01)])
def test_draw_tiny_frames_and_border_boxes(h, w, box):
    frame = np.zeros((h, w, 3), np.uint8)
    out = draw_detections(frame, [_det(box, w, h)], fps=9.0)
    assert out.shape == (h, w, 3) and out.any()


def test_draw_gray_bgra_and_other_size_detection():
    d = _det((0.2, 0.2, 0.8, 0.8), 640, 480)  # made on a 640x480 frame
    gray = draw_detections(np.zeros((240, 320), np.uint8), [d])
    assert gray.shape == (240, 320) and gray[120, 64] > 0  # rescaled to this frame: x1 = 64
    bgra = draw_detections(np.zeros((240, 320, 4), np.uint8), [d])
    assert bgra[120, 64, 3] == 255 and bgra[120, 64, 1] > 0


# -- live loop ---------------------------------------------------------------------


# -- every face (dense head) ---------------------------------------------------------

TWO_FACES = [(0.95, [0.1, 0.2, 0.3, 0.6]), (0.7, [0.6, 0.25, 0.85, 0.7])]


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory):
    from tests.standin import dense_standin_model

    run = tmp_path_factory.mktemp("runs") / "20250101-000000-dense"
    run.mkdir()
    model = dense_standin_model((36, 48), (6, 8), TWO_FACES)
    model.save(run / "model.keras")
    (run / "settings.json").write_text(json.dumps({"settings": {"input_size": [36, 48]}}))
    export_tflite(model, run / "model.tflite", quantize="none")
    return run


@pytest.mark.parametrize("backend", ["keras", "litert"])
def test_detect_returns_every_face_highest_first(dense_run, backend):
    det = Detector.from_run(dense_run, backend=backend)
    assert det.input_hw == (36, 48)
    found = det.detect(np.zeros((480, 640, 3), np.uint8))
    # two faces, each once (its weaker duplicate in the next cell is suppressed), best first
    assert [round(d.score, 3) for d in found] == [0.95, 0.7]
    assert found[0].box.to_list() == pytest.approx(TWO_FACES[0][1], abs=1e-5)
    assert found[1].box.to_list() == pytest.approx(TWO_FACES[1][1], abs=1e-5)
    assert (found[1].x1, found[1].y1, found[1].x2, found[1].y2) == (384, 120, 544, 336)
    assert [round(d.score, 3) for d in det.detect(np.zeros((48, 64, 3), np.uint8), threshold=0.8)] == [0.95]


def test_run_threshold_and_decode_settings_come_from_decode_json(dense_run, tmp_path):
    import shutil

    from facetrack.decode import DecodeSettings, save_decode_settings

    run = tmp_path / "20250101-000000-copy"
    shutil.copytree(dense_run, run)
    save_decode_settings(run, DecodeSettings(threshold=0.75, nms_iou=0.4, max_faces=1))
    det = Detector.from_run(run, backend="keras")
    assert det.threshold == 0.75 and det.decode_settings.max_faces == 1
    frame = np.zeros((48, 64, 3), np.uint8)
    assert [round(d.score, 2) for d in det.detect(frame, threshold=0.1)] == [0.95]  # at most one face
    assert Detector.from_run(run, backend="keras", threshold=0.5).threshold == 0.5


def test_exported_tflite_is_usable_on_its_own_with_decode_json(dense_run, tmp_path):
    from facetrack.decode import DecodeSettings, save_decode_settings
    from facetrack.export import export_run

    save_decode_settings(dense_run, DecodeSettings(threshold=0.6))
    try:
        out = export_run(dense_run, "tflite", tmp_path / "mine.tflite")
    finally:
        (dense_run / "decode.json").unlink()
    assert (tmp_path / "decode.json").is_file()
    det = Detector.from_tflite(out)
    assert det.threshold == 0.5 and det.decode_settings.threshold == 0.6
    assert len(det.detect(np.zeros((48, 64, 3), np.uint8))) == 2


def test_old_one_box_run_still_loads_and_gives_one_face(run_dir):
    """A run trained before the dense head (class (N, 1), bbox (N, 4)) gives at most one detection."""
    for backend in ("keras", "litert"):
        det = Detector.from_run(run_dir, backend=backend, threshold=0.0)
        found = det.detect(np.zeros((480, 640, 3), np.uint8))
        assert len(found) == 1 and found[0].box.to_list() == pytest.approx([0.25, 0.3, 0.7, 0.8], abs=0.1)

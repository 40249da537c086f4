"""Tests for facetrack.export: .tflite conversion and run exports."""

from __future__ import annotations

import os
import time

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter
from keras import layers

from facetrack.export import ExportError, export_run, export_tflite, tflite_bytes
from facetrack.labels import iou
from tests.standin import standin_model

SIZE = 40


@pytest.fixture(scope="module")
def model() -> keras.Model:
    return standin_model(SIZE)


def _images(n: int, size: int = SIZE, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # smooth-ish images so outputs vary between samples
    base = rng.uniform(0, 255, (n, 1, 1, 3))
    ramp = np.linspace(-60, 60, size)[None, :, None, None] * rng.uniform(-1, 1, (n, 1, 1, 3))
    return np.clip(base + ramp + rng.normal(0, 10, (n, size, size, 3)), 0, 255).astype(np.float32)


def _run_tflite(path, images):
    it = Interpreter(model_path=str(path), num_threads=1)
    runner = it.get_signature_runner("serving_default")
    outs = [runner(image=img[None]) for img in images]
    return [(float(o["class"][0, 0]), o["bbox"][0].copy()) for o in outs]


def _keras(model, images):
    out = model(images, training=False)
    return out["class"].numpy()[:, 0], out["bbox"].numpy()


def test_float_export_matches_keras_and_has_named_outputs(model, tmp_path):
    path = export_tflite(model, tmp_path / "m.tflite", quantize="none")
    assert path == tmp_path / "m.tflite" and path.is_file()
    it = Interpreter(model_path=str(path))
    sig = it.get_signature_list()["serving_default"]
    assert sig["inputs"] == ["image"] and sorted(sig["outputs"]) == ["bbox", "class"]
    inp = it.get_input_details()[0]
    assert list(inp["shape"]) == [1, SIZE, SIZE, 3] and inp["dtype"] == np.float32
    images = _images(6)
    scores, boxes = _keras(model, images)
    assert np.ptp(boxes[:, 0]) > 0.01, "stand-in model should react to its input"
    for (s, b), ks, kb in zip(_run_tflite(path, images), scores, boxes, strict=True):
        assert abs(s - ks) < 1e-4
        np.testing.assert_allclose(b, kb, atol=1e-4)
        if kb[0] < kb[2] and kb[1] < kb[3]:  # a proper box: IoU as the user sees it
            assert iou(b, kb) > 0.99
    # no temporary files left behind
    assert [p.name for p in tmp_path.iterdir()] == ["m.tflite"]


def test_dynamic_quantization_is_close_and_smaller(model, tmp_path):
    f32 = export_tflite(model, tmp_path / "f.tflite", quantize="none")
    dyn = export_tflite(model, tmp_path / "d.tflite", quantize="dynamic")
    assert dyn.stat().st_size < f32.stat().st_size
    images = _images(6, seed=3)
    scores, boxes = _keras(model, images)
    for (s, b), ks, kb in zip(_run_tflite(dyn, images), scores, boxes, strict=True):
        assert abs(s - ks) < 0.05
        # random-weight boxes are thin slivers, so compare corners, not IoU
        assert np.abs(b - kb).max() < 0.03


def test_int8_export_with_representative_images(model, tmp_path):
    path = export_tflite(
        model, tmp_path / "q.tflite", quantize="int8", representative_images=list(_images(8))
    )
    images = _images(4, seed=5)
    scores, _ = _keras(model, images)
    for (s, _b), ks in zip(_run_tflite(path, images), scores, strict=True):
        assert abs(s - ks) < 0.1


def test_export_overwrites_atomically(model, tmp_path):
    target = tmp_path / "m.tflite"
    target.write_bytes(b"old")
    export_tflite(model, target, quantize="none")
    assert target.read_bytes()[4:8] == b"TFL3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tflite"]


def test_bad_quantize_mode(model, tmp_path):
    with pytest.raises(ExportError, match="quantize"):
        export_tflite(model, tmp_path / "m.tflite", quantize="fp8")
    assert not (tmp_path / "m.tflite").exists()


def test_model_without_named_outputs_is_refused(tmp_path):
    inp = keras.Input((16, 16, 3))
    out = layers.Dense(4, name="boxes")(layers.GlobalAveragePooling2D()(inp))
    with pytest.raises(ExportError, match="class"):
        tflite_bytes(keras.Model(inp, {"boxes": out}), quantize="none")


def test_non_square_input_exports_and_unsized_input_is_refused():
    inp = keras.Input((16, 24, 3))
    x = layers.GlobalAveragePooling2D()(inp)
    m = keras.Model(inp, {"class": layers.Dense(1, name="class")(x), "bbox": layers.Dense(4, name="bbox")(x)})
    assert len(tflite_bytes(m, quantize="none")) > 0  # 4:3 webcam-shaped inputs (the dense head)
    inp = keras.Input((None, None, 3))
    x = layers.GlobalAveragePooling2D()(inp)
    m = keras.Model(inp, {"class": layers.Dense(1, name="class")(x), "bbox": layers.Dense(4, name="bbox")(x)})
    with pytest.raises(ExportError, match="fixed H and W"):
        tflite_bytes(m, quantize="none")


# -- export_run ----------------------------------------------------------------


def test_export_run_missing_folder_and_model(tmp_path):
    with pytest.raises(ExportError, match="does not exist"):
        export_run(tmp_path / "nope", "tflite")
    run = tmp_path / "run1"
    run.mkdir()
    (run / "settings.json").write_text('{"backbone": "compact", "input_size": 40}')
    for fmt in ("keras", "tflite"):
        with pytest.raises(ExportError, match=r"run1 has no model\.keras"):
            export_run(run, fmt)
    with pytest.raises(ExportError, match="format"):
        export_run(run, "onnx")


def test_export_run_keras_and_tflite(model, tmp_path):
    run = tmp_path / "20250101-120000-test"
    run.mkdir()
    model.save(run / "model.keras")
    assert export_run(run, "keras") == run / "model.keras"
    out = tmp_path / "out"
    out.mkdir()
    copied = export_run(run, "keras", dest=out)
    assert copied == out / "20250101-120000-test.keras" and copied.stat().st_size > 0

    tfl = export_run(run, "tflite", quantize="none")
    assert tfl == run / "model.tflite" and tfl.is_file()
    images = _images(2)
    scores, _ = _keras(model, images)
    assert abs(_run_tflite(tfl, images)[0][0] - scores[0]) < 1e-4

    # an up-to-date file is reused, force rebuilds it
    mtime = tfl.stat().st_mtime_ns
    time.sleep(0.01)
    export_run(run, "tflite")
    assert tfl.stat().st_mtime_ns == mtime
    export_run(run, "tflite", force=True)
    assert tfl.stat().st_mtime_ns != mtime

    # a .keras newer than the .tflite triggers a rebuild
    old = time.time() - 100
    os.utime(tfl, (old, old))
    export_run(run, "tflite")
    assert tfl.stat().st_mtime > old + 50

    dest = export_run(run, "tflite", dest=tmp_path / "phone.tflite")
    assert dest == tmp_path / "phone.tflite" and dest.read_bytes() == tfl.read_bytes()


def test_export_run_tflite_only(tmp_path, model):
    """A run holding only model.tflite can still hand it out."""
    run = tmp_path / "r"
    run.mkdir()
    export_tflite(model, run / "model.tflite", quantize="none")
    assert export_run(run, "tflite") == run / "model.tflite"
    with pytest.raises(ExportError, match="model.keras"):
        export_run(run, "keras")


def test_labelme_zip_has_every_photo_and_its_label(workspace):
    import io
    import json
    import zipfile

    from facetrack.export import labelme_zip
    from facetrack.labels import Box
    from facetrack.workspace import create_project
    from tests.conftest import synthetic_face

    p = create_project("zipme")
    labelled = p.add_image(synthetic_face(seed=1)).id
    p.set_boxes(labelled, [Box(0.2, 0.2, 0.6, 0.7)])
    unlabelled = p.add_image(synthetic_face(seed=2)).id
    zf = zipfile.ZipFile(io.BytesIO(labelme_zip(p)))
    assert sorted(zf.namelist()) == sorted(
        [f"zipme/images/{labelled}.jpg", f"zipme/images/{unlabelled}.jpg", f"zipme/labels/{labelled}.json"]
    )
    assert zf.read(f"zipme/images/{labelled}.jpg") == p.image_path(labelled).read_bytes()
    assert json.loads(zf.read(f"zipme/labels/{labelled}.json"))["imagePath"] == f"../images/{labelled}.jpg"

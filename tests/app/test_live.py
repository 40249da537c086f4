"""Live page: no model, a Keras and a LiteRT model, the photo fallback, bad models; the frame processor."""

from __future__ import annotations

import re
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from facetrack.detect import Detection
from facetrack.labels import Box
from facetrack.workspace import create_project
from tests.app.conftest import jpeg_bytes, make_photo, no_exception
from tests.app.helpers_runs import tiny_model_file, write_run
from ui.live import FPS_WINDOW, STREAM_GAP, LiveProcessor

LIVE = "pages/live.py"


def _links(at) -> list[str]:
    return [str(link.proto.page) for link in at.get("page_link")]


def _captions(at) -> str:
    return "\n".join(c.value for c in at.caption)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return tiny_model_file(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def tflite_file(model_file: Path, tmp_path_factory) -> Path:
    from facetrack.export import export_run

    run = tmp_path_factory.mktemp("export")
    shutil.copy(model_file, run / "model.keras")
    return export_run(run, "tflite")


# -- the page -----------------------------------------------------------------------


def test_no_model_explains_and_links_to_train(app, workspace: Path) -> None:
    project = create_project("empty", workspace)
    write_run(project, "20260101-100000-failed", "failed", metrics=False)  # a run without a model
    at = app(LIVE, project="empty")
    no_exception(at)
    assert at.title[0].value.endswith("Live")
    assert any("no trained model" in i.value for i in at.info)
    assert _links(at) == ["train"]


def test_keras_model_runs_and_photo_fallback_detects(app, workspace: Path, model_file: Path) -> None:
    project = create_project("cam", workspace)
    write_run(project, model_from=model_file)
    at = app(LIVE, project="cam")
    no_exception(at)
    assert "Keras" in _captions(at)
    assert at.slider(key="live_threshold").value == 0.5
    assert at.toggle(key="live_smoothing").value is True
    assert [m.label for m in at.metric][:5] == [
        "Frames per second", "Model time per frame", "Frame size", "Faces in frame", "Frames with a face",
    ]  # fmt: skip
    # threshold 0: any score counts as a face
    at.slider(key="live_threshold").set_value(0.0).run()
    at.camera_input(key="live_camera_photo").set_value(
        ("photo.jpg", jpeg_bytes(make_photo(3, (200, 150))), "image/jpeg")
    ).run()
    no_exception(at)
    assert any(re.match(r"Found \d+ faces? \(scores? [\d., ]+\)\.", s.value) for s in at.success)
    assert at.get("image")
    # threshold 1: nothing passes
    at.slider(key="live_threshold").set_value(1.0).run()
    no_exception(at)
    assert any(
        re.match(r"No face above the threshold \(the best score was [\d.]+\)", i.value) for i in at.info
    )


def test_threshold_starts_at_the_runs_own(app, workspace: Path, model_file: Path) -> None:
    from facetrack.decode import DecodeSettings, save_decode_settings

    project = create_project("own", workspace)
    run = write_run(project, model_from=model_file)
    save_decode_settings(run, DecodeSettings(threshold=0.35))
    at = app(LIVE, project="own")
    no_exception(at)
    assert at.slider(key="live_threshold").value == pytest.approx(0.35)
    at.slider(key="live_threshold").set_value(0.6).run()  # the user's choice stays on reruns
    no_exception(at)
    assert at.slider(key="live_threshold").value == pytest.approx(0.6)


@pytest.fixture(scope="module")
def dense_model_file(tmp_path_factory) -> Path:
    """A multi-face (dense head) compact model, random weights, 96x128 (4:3)."""
    from facetrack.model import build_model

    path = tmp_path_factory.mktemp("dense") / "dense.keras"
    build_model("compact", weights="none", input_size=(96, 128), head="dense").save(path)
    return path


def test_photo_with_a_multi_face_model_lists_every_face(app, workspace: Path, dense_model_file: Path) -> None:
    project = create_project("many", workspace)
    write_run(project, model_from=dense_model_file, input_size=[96, 128])
    at = app(LIVE, project="many")
    no_exception(at)
    assert "input 128×96 pixels" in _captions(at)
    at.slider(key="live_threshold").set_value(0.0).run()  # every cell is a face; NMS keeps the distinct ones
    at.camera_input(key="live_camera_photo").set_value(
        ("group.jpg", jpeg_bytes(make_photo(5, (320, 240))), "image/jpeg")
    ).run()
    no_exception(at)
    (found,) = [s.value for s in at.success]
    n = int(re.match(r"Found (\d+) faces \(scores ", found).group(1))
    assert n > 1 and found.count(",") == n - 1, found  # one score per face


def test_litert_model_is_used_when_present(app, workspace: Path, model_file: Path, tflite_file: Path) -> None:
    project = create_project("fast", workspace)
    run = write_run(project, model_from=model_file)
    shutil.copy(tflite_file, run / "model.tflite")
    at = app(LIVE, project="fast")
    no_exception(at)
    assert "LiteRT" in _captions(at)
    at.selectbox(key="live_engine").set_value("keras").run()
    no_exception(at)
    assert "Keras (the .keras model)" in _captions(at)


def test_damaged_model_and_bad_photo_are_messages(app, workspace: Path, model_file: Path) -> None:
    project = create_project("broken", workspace)
    run = write_run(project, "20260101-100000-broken", metrics=False)
    (run / "model.keras").write_bytes(b"garbage")
    at = app(LIVE, project="broken")
    no_exception(at)
    assert any("cannot be loaded" in e.value for e in at.error)
    assert "train" in _links(at)

    good = create_project("good", workspace)
    write_run(good, model_from=model_file)
    at = app(LIVE, project="good")
    at.camera_input(key="live_camera_photo").set_value(("x.jpg", b"not an image", "image/jpeg")).run()
    no_exception(at)
    assert any("cannot be read" in e.value for e in at.error)


def test_litert_engine_without_tflite_is_a_message(app, workspace: Path, model_file: Path) -> None:
    project = create_project("notflite", workspace)
    write_run(project, model_from=model_file)
    at = app(LIVE, project="notflite")
    at.selectbox(key="live_engine").set_value("litert").run()
    no_exception(at)
    assert any("no model.tflite" in e.value for e in at.error)


# -- the frame processor (what the callback thread runs) --------------------------------


class FakeDetector:
    """Stands in for the model only: fixed faces (``boxes``), all with ``score``; the processor is real."""

    backend = "litert"

    def __init__(self, score: float = 0.9, box: Box | None = None, boxes: list[Box] | None = None) -> None:
        self.score = score
        self.boxes = boxes or [box or Box(0.25, 0.25, 0.75, 0.75)]
        self.calls = 0

    def detect(self, frame, color="bgr", threshold=None):
        self.calls += 1
        h, w = frame.shape[:2]
        if self.score < threshold:
            return []
        return [Detection.from_box(self.score, b, w, h) for b in self.boxes]


def _frame(w: int = 640, h: int = 480) -> np.ndarray:
    return np.zeros((h, w, 3), np.uint8)


def test_processor_draws_box_and_measures_fps() -> None:
    proc = LiveProcessor()
    det = FakeDetector()
    proc.configure(det, 0.5, smoothing=False)
    out = None
    for i in range(FPS_WINDOW + 5):
        out = proc.process(_frame(), now=100.0 + i / 20)  # 20 frames per second
    stats = proc.snapshot()
    assert stats.fps == pytest.approx(20.0)
    assert stats.frames == FPS_WINDOW + 5 and stats.faces == stats.frames
    assert stats.frame_size == (640, 480) and stats.backend == "litert"
    assert det.calls == stats.frames
    # the box is drawn in the frame's own pixels: green (BGR 80, 220, 60) on its left edge at x=160
    assert out is not None and tuple(out[240, 160]) == (80, 220, 60)
    assert out[5:20, 5:40].any()  # the FPS label in the corner


def test_processor_threshold_and_native_size() -> None:
    proc = LiveProcessor()
    det = FakeDetector(score=0.4)
    proc.configure(det, 0.5, smoothing=False)
    out = proc.process(_frame(1920, 1080), now=1.0)
    assert out.shape == (1080, 1920, 3)  # never cropped or resized
    assert proc.snapshot().faces == 0 and proc.snapshot().last_score is None
    proc.configure(det, 0.3, smoothing=False)
    proc.process(_frame(1920, 1080), now=1.05)
    assert proc.snapshot().faces == 1 and proc.snapshot().last_score == pytest.approx(0.4)
    with pytest.raises(ValueError):
        proc.configure(det, 1.5, smoothing=False)


def test_processor_smoothing_holds_a_dropout_and_new_stream_resets() -> None:
    proc = LiveProcessor()
    det = FakeDetector()
    proc.configure(det, 0.5, smoothing=True)
    proc.process(_frame(), now=0.0)
    assert proc.snapshot().faces == 0  # a new face is drawn once seen in two frames running
    proc.process(_frame(), now=0.03)
    det.score = 0.1  # one missed frame: the smoothed box is still shown
    proc.process(_frame(), now=0.05)
    assert proc.snapshot().faces == 2
    proc.configure(det, 0.5, smoothing=False)
    proc.process(_frame(), now=0.1)
    assert proc.snapshot().faces == 2  # without smoothing a miss is a miss
    proc.process(_frame(), now=0.1 + STREAM_GAP + 1)  # a pause: a new stream, FPS starts again
    assert proc.snapshot().fps is None


def test_processor_survives_detector_errors_and_threads() -> None:
    class Broken(FakeDetector):
        def detect(self, frame, color="bgr", threshold=None):
            raise ValueError("bad frame")

    proc = LiveProcessor()
    proc.configure(Broken(), 0.5, smoothing=True)
    out = proc.process(_frame(), now=0.0)
    assert out.shape == (480, 640, 3)
    assert "bad frame" in proc.snapshot().error
    # the page reconfigures while the callback runs: no error, counts add up
    proc.configure(FakeDetector(), 0.5, smoothing=True)
    stop = threading.Event()

    def page() -> None:
        t = 0.0
        while not stop.is_set():
            proc.configure(FakeDetector(), t % 1.0, smoothing=t % 2 < 1)
            proc.snapshot()
            t += 0.1

    thread = threading.Thread(target=page)
    thread.start()
    try:
        for i in range(200):
            proc.process(_frame(64, 48), now=10.0 + i / 30)
    finally:
        stop.set()
        thread.join()
    assert proc.snapshot().frames == 201


def test_processor_draws_every_face_and_counts_them() -> None:
    left, right = Box(0.05, 0.2, 0.35, 0.7), Box(0.6, 0.25, 0.9, 0.75)
    det = FakeDetector(boxes=[left, right])
    for smoothing in (False, True):
        proc = LiveProcessor()
        proc.configure(det, 0.5, smoothing=smoothing)
        for i in range(3):
            out = proc.process(_frame(), now=i / 30)
        stats = proc.snapshot()
        assert stats.faces_in_frame == 2 and stats.most_faces == 2, smoothing
        # both boxes drawn where they are (green left edges at x = 32 and x = 384), never one merged box
        assert tuple(out[300, 32]) == (80, 220, 60) and tuple(out[300, 384]) == (80, 220, 60)
        assert not (out[100:400, 240:370] == (80, 220, 60)).all(axis=2).any()  # nothing drawn between them
    det.boxes = [right]  # one face leaves: the other stays where it is
    for i in range(3, 10):
        out = proc.process(_frame(), now=i / 30)
    assert proc.snapshot().faces_in_frame == 1 and proc.snapshot().most_faces == 2
    assert tuple(out[300, 384]) == (80, 220, 60) and tuple(out[300, 32]) != (80, 220, 60)

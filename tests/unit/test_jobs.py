"""Background jobs: training and augmentation in child processes, stop requests, crash detection."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from facetrack.augment import AugmentSettings, generate
from facetrack.jobs import JobError, start_augment, start_training
from facetrack.labels import Box
from facetrack.runs import (
    KERAS_FILE,
    active_training,
    pid_alive,
    read_active_training,
    request_stop,
    run_state,
)
from facetrack.tasks import augment_state
from facetrack.train import TrainSettings
from facetrack.workspace import create_project
from tests.conftest import synthetic_face


def _labelled_project(n: int = 24):
    p = create_project("p")
    for i in range(n):
        face = i % 4 != 0
        info = p.add_image(synthetic_face(96, 80, box=(0.3, 0.2, 0.65, 0.75) if face else None, seed=i))
        p.set_boxes(info.id, [Box(0.3, 0.2, 0.65, 0.75)] if face else [])
    return p


def _wait(predicate, timeout: float, what: str) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_training_without_a_training_set_is_refused(workspace):
    p = _labelled_project(4)
    with pytest.raises(JobError, match="no training set"):
        start_training(p, TrainSettings(backbone="compact", weights="none"))
    assert p.runs() == []


@pytest.mark.timeout(180)
def test_background_training_stops_on_request_and_refuses_a_second(workspace):
    p = _labelled_project()
    generate(p, AugmentSettings(copies_per_image=20, output_size=48), workers=0)
    settings = TrainSettings(backbone="compact", weights="none", input_size=48, epochs=50, batch_size=8)
    run = start_training(p, settings)
    try:
        assert active_training(p.path) == run
        with pytest.raises(JobError, match="already running"):
            start_training(p, settings)
        _wait(lambda: len(run_state(run).history) >= 1, 120, "the first epoch")
        state = run_state(run)
        assert state.state == "running" and 0 < state.fraction < 1
        request_stop(run)
        _wait(lambda: run_state(run).state == "stopped", 60, "the stop")
    finally:
        request_stop(run)
    state = run_state(run)
    assert state.has_model and state.epoch < 50
    assert active_training(p.path) is None


@pytest.mark.timeout(180)
def test_killed_training_shows_as_interrupted_with_usable_weights(workspace):
    from facetrack.detect import Detector, to_box

    p = _labelled_project()
    generate(p, AugmentSettings(copies_per_image=20, output_size=48), workers=0)
    run = start_training(
        p, TrainSettings(backbone="compact", weights="none", input_size=48, epochs=50, batch_size=8)
    )
    _wait(lambda: (run / KERAS_FILE).exists() and len(run_state(run).history) >= 1, 120, "a checkpoint")
    pid = read_active_training(p.path)["pid"]
    os.kill(pid, signal.SIGKILL)
    _wait(lambda: not pid_alive(pid), 20, "the process to die")
    state = run_state(run)
    assert state.state == "interrupted"
    assert "best model so far is saved" in state.message
    from facetrack.model import load_model

    detector = Detector.from_run(run, backend="keras")
    frame = synthetic_face(96, 80, box=(0.3, 0.2, 0.65, 0.75))
    score, box = detector.predict_raw(frame, color="rgb")
    out = load_model(run / KERAS_FILE).predict(detector.preprocess(frame, color="rgb"), verbose=0)
    assert detector.input_size == 48  # the checkpoint is the trained model, of the requested size
    best = int(np.argmax(out["class"][0].reshape(-1)))  # the best cell of the dense head
    assert score == pytest.approx(float(out["class"][0].reshape(-1)[best]), abs=1e-5)
    assert box.to_list() == pytest.approx(to_box(out["bbox"][0].reshape(-1, 4)[best]).to_list(), abs=1e-5)
    assert active_training(p.path) is None  # a new training may start


@pytest.mark.timeout(120)
def test_augment_job_runs_in_background_and_survives_a_kill(workspace):
    p = _labelled_project(40)
    start_augment(p, AugmentSettings(copies_per_image=40, output_size=64).to_dict())
    _wait(
        lambda: augment_state(p).get("done", 0) > 0 or augment_state(p)["state"] != "running", 60, "progress"
    )
    pid = augment_state(p)["pid"]
    if augment_state(p)["state"] == "running":
        os.killpg(pid, signal.SIGKILL)  # the job and its worker processes
        _wait(lambda: augment_state(p)["state"] == "interrupted", 20, "interrupted state")
    # restart: resumes, finishes, and every generated file is whole
    report = generate(p, AugmentSettings(copies_per_image=40, output_size=64), workers=0)
    assert report.failed == []
    import cv2

    for path in (p.augmented_dir / "train").glob("*.jpg"):
        assert cv2.imread(str(path)) is not None, path
    assert not list(p.augmented_dir.rglob("*.tmp"))

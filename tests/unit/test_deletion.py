"""Deleting a project (or all its photos) stops its jobs first; a job never re-creates a deleted project;
a job is its process id AND its start time (a reused id is not the job)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from facetrack import jobs
from facetrack.augment import AugmentSettings
from facetrack.fileio import atomic_write_json, read_json
from facetrack.labels import Box
from facetrack.runs import job_identity, pid_alive, run_state
from facetrack.tasks import FileCallbacks, ProjectGone, augment_state, generate_training_set
from facetrack.train import TrainSettings
from facetrack.workspace import Project, WorkspaceError, create_project
from tests.conftest import synthetic_face


def _photos(project: Project, n: int, size: tuple[int, int] = (320, 240)) -> None:
    for i in range(n):
        box = (0.2 + 0.01 * (i % 30), 0.2, 0.6, 0.8) if i % 5 else None
        image_id = project.add_image(synthetic_face(*size, box=box, seed=i), burst=f"b{i}").id
        project.set_boxes(image_id, [Box(*box)] if box else [])


def _wait(condition, seconds: float) -> bool:
    deadline = time.time() + seconds
    while not condition() and time.time() < deadline:
        time.sleep(0.2)
    return condition()


def _stays_gone(path: Path, seconds: float = 5.0) -> None:
    """``path`` does not exist now nor during the next ``seconds`` (when a job would have written)."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        assert not path.exists(), sorted(str(p.relative_to(path)) for p in path.rglob("*"))
        time.sleep(0.2)


def _end(pid: int) -> None:
    """Kill a job left running by a failed test, with its worker processes (its own process group)."""
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, 0)


# -- a job is its pid and its start time ---------------------------------------------


def test_a_reused_pid_is_not_the_job(tmp_path: Path) -> None:
    """Was: a status.json naming a pid that a new, unrelated process got made "Training now" last forever."""
    project = create_project("p", tmp_path)
    run = project.runs_dir / "20260101-000000-compact"
    run.mkdir(parents=True)
    me = job_identity()  # a living process: this test's own
    stranger = {"pid": me["pid"], "pid_started": me["pid_started"] - 1000}  # same id, another start
    atomic_write_json(run / "status.json", {"state": "running", "updated": time.time(), **stranger})
    atomic_write_json(
        project.path / "training.json", {**stranger, "run_dir": str(run), "started": time.time()}
    )
    atomic_write_json(project.path / "augment-progress.json", {"state": "running", **stranger})
    assert run_state(run).state == "interrupted"
    assert jobs.active_training(project.path) is None
    assert augment_state(project)["state"] == "interrupted"
    assert jobs.project_jobs(project) == []  # so deleting the project never signals it

    atomic_write_json(run / "status.json", {"state": "running", "updated": time.time(), **me})
    assert run_state(run).state == "running"  # the real identity still counts


def test_a_file_older_than_the_process_was_not_written_by_it(tmp_path: Path) -> None:
    """Files from before pid_started existed: a process started after the file was written is not its job."""
    me = psutil.Process().create_time()
    assert pid_alive(os.getpid(), written=me + 5)
    assert not pid_alive(os.getpid(), written=me - 3600)
    run = tmp_path / "p" / "runs" / "r"
    run.mkdir(parents=True)
    atomic_write_json(run / "status.json", {"state": "running", "pid": os.getpid(), "updated": me - 3600})
    assert run_state(run).state == "interrupted"


# -- jobs never re-create a deleted project -------------------------------------------


def test_jobs_on_a_deleted_project_end_without_writing(tmp_path: Path) -> None:
    project = create_project("p", tmp_path)
    _photos(project, 3, (96, 80))
    run = project.runs_dir / "r"
    run.mkdir(parents=True)
    callbacks = FileCallbacks(run)
    assert not callbacks.should_stop()
    project.delete()
    assert callbacks.should_stop()  # a training stops at its next batch
    with pytest.raises(ProjectGone):
        generate_training_set(
            project, AugmentSettings(copies_per_image=2), progress_file=project.path / "x.json"
        )
    assert not project.path.exists()


def test_another_tab_cannot_re_create_a_deleted_project(tmp_path: Path) -> None:
    """Was: a burst capture in another tab wrote its frames into a re-created project folder."""
    project = create_project("p", tmp_path)
    _photos(project, 2, (96, 80))
    other_tab = Project(project.path)
    image_id = project.image_ids()[0]
    project.delete()
    with pytest.raises(WorkspaceError, match="deleted"):
        other_tab.add_image(synthetic_face(96, 80), color="rgb", burst="b9")
    with pytest.raises(OSError):
        other_tab.set_boxes(image_id, [])
    assert not project.path.exists()


# -- deleting stops the jobs --------------------------------------------------------------


@pytest.mark.timeout(300)
def test_deleting_a_project_during_augmentation_stops_it_and_nothing_comes_back(tmp_path: Path) -> None:
    project = create_project("p", tmp_path)
    _photos(project, 24)
    jobs.start_augment(project, AugmentSettings(copies_per_image=150, output_size=160).to_dict())
    pid = augment_state(project)["pid"]
    try:
        assert _wait(lambda: any(project.augmented_dir.glob("train/*.jpg")), 120), augment_state(project)
        assert augment_state(project)["state"] == "running"
        jobs.delete_project(project)
        assert not project.path.exists()
        assert not pid_alive(pid)  # stopped and waited for (workers too)
        _stays_gone(project.path)
    finally:
        _end(pid)


@pytest.mark.timeout(300)
def test_deleting_all_photos_during_augmentation_leaves_no_copy(tmp_path: Path) -> None:
    project = create_project("p", tmp_path)
    _photos(project, 24)
    jobs.start_augment(project, AugmentSettings(copies_per_image=150, output_size=160).to_dict())
    pid = augment_state(project)["pid"]
    try:
        assert _wait(lambda: any(project.augmented_dir.glob("train/*.jpg")), 120), augment_state(project)
        assert jobs.delete_all_photos(project) == 24
        assert not pid_alive(pid)
        deadline = time.time() + 5
        while time.time() < deadline:
            assert not project.augmented_dir.exists() and project.image_ids() == []
            time.sleep(0.2)
        assert project.exists()  # the project itself stays
    finally:
        _end(pid)


@pytest.mark.timeout(400)
def test_deleting_a_project_during_training_stops_it_and_nothing_comes_back(tmp_path: Path) -> None:
    project = create_project("p", tmp_path)
    _photos(project, 12, (96, 80))
    generate_training_set(project, AugmentSettings(copies_per_image=4, output_size=64), workers=0)
    run = jobs.start_training(
        project, TrainSettings(backbone="compact", weights="none", epochs=200, input_size=48)
    )
    pid = read_json(project.path / "training.json")["pid"]
    try:
        assert _wait(lambda: (run / "history.csv").exists(), 300), run_state(run)  # it is training
        jobs.delete_project(project)
        assert not project.path.exists()
        assert not pid_alive(pid)
        _stays_gone(project.path)
    finally:
        _end(pid)

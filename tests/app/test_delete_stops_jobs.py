"""Home page deletes through the library that stops the project's jobs, and forgets the photos' thumbnails."""

from __future__ import annotations

import contextlib
import os
import signal
import time

import pytest

from facetrack import jobs
from facetrack.augment import AugmentSettings
from facetrack.runs import pid_alive
from facetrack.tasks import augment_state
from tests.app.conftest import no_exception
from tests.app.helpers_runs import add_photos
from ui.images import _thumbnail

HOME = "pages/home.py"


@pytest.mark.parametrize("what", ["project", "photos"])
def test_delete_stops_the_augmentation_and_drops_thumbnails(app, workspace, what) -> None:
    from facetrack.workspace import create_project

    project = create_project("busy", workspace)
    add_photos(project, n_face=16, n_no_face=4)
    path = project.image_path(project.image_ids()[0])
    mtime = path.stat().st_mtime
    assert _thumbnail(str(path), mtime, 320) is not None  # a thumbnail the pages showed, now cached
    jobs.start_augment(project, AugmentSettings(copies_per_image=200, output_size=256).to_dict())
    pid = augment_state(project)["pid"]
    try:
        deadline = time.time() + 120
        while not any(project.augmented_dir.glob("train/*.jpg")) and time.time() < deadline:
            time.sleep(0.2)
        assert augment_state(project)["state"] == "running"
        at = app(HOME, project="busy")
        at.checkbox(key=f"confirm_delete_{what}").check().run()
        at.button(key=f"delete_{what}").click().run()
        no_exception(at)
        assert not pid_alive(pid)  # the job was stopped before the files went
        time.sleep(2)
        assert not project.augmented_dir.exists()
        assert (not project.path.exists()) if what == "project" else project.image_ids() == []
        assert _thumbnail(str(path), mtime, 320) is None  # recomputed from a deleted file: not served
    finally:
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0)

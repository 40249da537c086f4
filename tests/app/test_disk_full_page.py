"""On a full disk the pages say "the disk is full": the real background jobs fail with that message.

The workspace is a real small tmpfs (tests.smalldisk); the jobs' own free-space
checks refuse to start the work, and the pages show the job's message.
"""

from __future__ import annotations

import time
from pathlib import Path

from facetrack import runs, tasks
from facetrack.workspace import create_project
from tests.app.conftest import no_exception
from tests.app.helpers_runs import add_photos, make_training_set, stop_training_processes
from tests.smalldisk import small_disk


def _wait(done, seconds: float = 180) -> None:
    deadline = time.time() + seconds
    while not done() and time.time() < deadline:
        time.sleep(0.5)
    assert done(), "the job did not end"


def test_augment_and_train_pages_say_the_disk_is_full(app, workspace: Path) -> None:
    with small_disk(workspace, 3072):
        project = create_project("tiny", workspace)
        add_photos(project, n_face=6, n_no_face=2)
        at = app("pages/augment.py", project="tiny")
        at.slider(key="aug_copies_per_image").set_value(200).run()
        at.button(key="aug_go").click().run()  # 200 copies a photo: more than the disk holds
        no_exception(at)
        _wait(lambda: tasks.augment_state(project)["state"] != "running")
        at.run()
        no_exception(at)
        assert any("the disk is full" in e.value for e in at.error), [e.value for e in at.error]

        make_training_set(project, copies=1)  # small enough to fit
        at = app("pages/train.py", project="tiny")
        at.radio(key="train_backbone").set_value("compact").run()
        try:
            at.button(key="start_training").click().run()
            no_exception(at)
            (run,) = project.runs()
            _wait(lambda: not runs.run_state(run).active)
        finally:
            stop_training_processes(project, timeout=0)
        assert runs.run_state(run).message.startswith("the disk is full: training needs about")
        at = app("pages/train.py", project="tiny")
        no_exception(at)
        assert any("the disk is full" in e.value for e in at.error), [e.value for e in at.error]

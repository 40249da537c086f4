"""Start and stop background jobs: training and generating the training set.

The app starts ``python -m facetrack.worker train RUN_DIR`` or
``python -m facetrack.worker augment PROJECT_DIR`` as a detached child
process, so leaving the page, reloading the browser or closing the tab does
not stop it, and a crash of the job cannot take the app down. The job reports
to files that any page (or tab) reads: a training through its run folder
(:mod:`facetrack.runs`), an augmentation through its progress file
(:mod:`facetrack.tasks`). Stopping a job is a file too.

One training per project at a time: ``training.json`` names the run in
progress (:func:`facetrack.runs.active_training`); a second start is refused
while that process lives.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from facetrack.data import sample_counts
from facetrack.fileio import atomic_write_json, file_lock
from facetrack.runs import (
    STDOUT_FILE,
    active_training,
    new_run_dir,
    request_stop,
    write_active_training,
    write_request,
)
from facetrack.tasks import (
    AUGMENT_LOCK,
    AUGMENT_LOG_FILE,
    AUGMENT_REQUEST_FILE,
    AUGMENT_STOP_FILE,
    TRAINING_LOCK,
    augment_progress_path,
    augment_state,
    request_augment_stop,
)
from facetrack.train import TrainSettings
from facetrack.workspace import Project

log = logging.getLogger(__name__)
WORKER_MODULE = "facetrack.worker"

__all__ = [
    "JobError",
    "request_augment_stop",
    "request_stop",
    "start_augment",
    "start_training",
]


class JobError(RuntimeError):
    """A job that cannot start; the message says why."""


def _spawn(args: list[str], log_path: Path) -> subprocess.Popen:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in [str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH", "")] if p
    )
    out = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            [sys.executable, "-m", WORKER_MODULE, *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
    finally:
        out.close()


def start_training(project: Project, settings: TrainSettings) -> Path:
    """Start a training of ``project`` in a child process; returns its run folder.

    Raises :class:`JobError` when one is running already or when there is
    nothing to train on.
    """
    with file_lock(project.path / TRAINING_LOCK):
        running = active_training(project.path)
        if running is not None:
            raise JobError(f"a training is already running in this project ({running.name}); stop it first")
        n = sample_counts(project.augmented_dir, project.stored_split())
        if n["train"] == 0:
            raise JobError("there is no training set yet: label some photos, then generate the training set")
        if n["train_faces"] == 0:
            raise JobError("the training set has no face in it: label some photos with a face box")
        run_dir = new_run_dir(project.runs_dir, settings.name.strip() or settings.backbone)
        run_dir.mkdir(parents=True)
        write_request(run_dir, settings.to_dict())
        proc = _spawn(["train", str(run_dir)], run_dir / STDOUT_FILE)
        write_active_training(project.path, proc.pid, run_dir)
    log.info("started training %s (pid %d)", run_dir.name, proc.pid)
    return run_dir


def start_augment(project: Project, settings_doc: dict[str, Any]) -> None:
    """Generate the augmented set in a child process (progress: :func:`facetrack.tasks.augment_state`)."""
    with file_lock(project.path / AUGMENT_LOCK):
        if augment_state(project).get("state") == "running":
            raise JobError("the training set is being generated already")
        (project.path / AUGMENT_STOP_FILE).unlink(missing_ok=True)
        atomic_write_json(project.path / AUGMENT_REQUEST_FILE, settings_doc)
        progress = augment_progress_path(project)
        atomic_write_json(progress, {"state": "running", "done": 0, "total": 0, "pid": None})
        proc = _spawn(["augment", str(project.path)], project.path / AUGMENT_LOG_FILE)
        atomic_write_json(
            progress, {"state": "running", "done": 0, "total": 0, "pid": proc.pid, "updated": time.time()}
        )

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

import contextlib
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from facetrack.data import sample_counts
from facetrack.fileio import atomic_write_json, file_lock, read_json
from facetrack.runs import (
    STDOUT_FILE,
    active_training,
    job_identity,
    new_run_dir,
    pid_alive,
    read_active_training,
    read_status,
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
    "delete_all_photos",
    "delete_project",
    "project_jobs",
    "stop_project_jobs",
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
            progress,
            {"state": "running", "done": 0, "total": 0, **job_identity(proc.pid), "updated": time.time()},
        )


# -- deleting a project with its jobs -------------------------------------------------


def project_jobs(project: Project) -> list[Any]:
    """The living processes (``psutil.Process``) of the project's jobs: its augmentation and trainings.

    Each is identified by its process id and start time, so a process that
    merely reuses a finished job's id is never taken for it (see
    :func:`facetrack.runs.pid_alive`).
    """
    import psutil

    docs = [_read_doc(augment_progress_path(project)), read_active_training(project.path)]
    runs_dir = project.runs_dir
    if runs_dir.is_dir():
        docs += [read_status(run) for run in runs_dir.iterdir() if run.is_dir()]
    pids = {
        int(d["pid"])
        for d in docs
        if d.get("pid") and pid_alive(d["pid"], d.get("pid_started"), d.get("updated") or d.get("started"))
    }
    pids.discard(os.getpid())
    procs = []
    for pid in sorted(pids):
        try:
            procs.append(psutil.Process(pid))
        except psutil.Error:
            continue
    return procs


def _read_doc(path: Path) -> dict[str, Any]:
    try:
        doc = read_json(path)
    except (FileNotFoundError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def stop_project_jobs(project: Project, timeout: float = 20.0) -> int:
    """End every job of ``project`` (and its worker processes) and wait until they have ended.

    Asks politely (SIGTERM), then, after ``timeout`` seconds, forcefully
    (SIGKILL). Returns how many job processes there were.
    """
    import psutil

    jobs = project_jobs(project)
    family = []
    for proc in jobs:
        with contextlib.suppress(psutil.Error):
            family += [proc, *proc.children(recursive=True)]
    for proc in family:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(family, timeout=timeout)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=10)
    if jobs:
        log.info("stopped %d job(s) of project %s", len(jobs), project.name)
    return len(jobs)


def delete_project(project: Project) -> None:
    """Stop the project's jobs, wait for them, then delete the whole project folder.

    Raises ``OSError`` when files remain (e.g. held open by another program).
    """
    stop_project_jobs(project)
    project.delete()
    if project.path.exists():  # a file written while deleting: once more, now that nothing runs
        project.delete()
    if project.path.exists():
        raise OSError(f"some files of {project.path} could not be deleted")


def delete_all_photos(project: Project) -> int:
    """Stop the project's jobs (they read the photos), then delete every photo and what was made from them."""
    stop_project_jobs(project)
    return project.delete_all_images()

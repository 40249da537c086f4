"""Whole tasks on a project, shared by the command line and the background worker.

- :func:`generate_training_set`: assign the split and generate the augmented
  set, reporting to an :class:`AugmentProgress` file when one is given.
- :func:`train_project`: assign the split, train on the train/val sides and
  evaluate the best model on the test side.

The background-job protocol lives here too: a training job reports through
:class:`FileCallbacks` (the run folder's ``progress.json``; ``STOP`` asks it
to stop, see :mod:`facetrack.runs`); an augmentation job writes
``<project>/augment-progress.json`` and stops when ``<project>/augment-STOP``
exists. Only these tasks assign the split (page views read it).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facetrack.cluster import writes_run
from facetrack.data import list_samples
from facetrack.fileio import read_json, write_status_json
from facetrack.runs import (
    has_model,
    job_identity,
    new_run_dir,
    project_of,
    stop_requested,
    write_active_training,
    write_progress,
)
from facetrack.train import BatchProgress, EpochRecord, TrainCallbacks, TrainResult, TrainSettings
from facetrack.workspace import Project

log = logging.getLogger(__name__)

AUGMENT_PROGRESS_FILE = "augment-progress.json"
AUGMENT_STOP_FILE = "augment-STOP"
AUGMENT_REQUEST_FILE = "augment-request.json"
AUGMENT_LOG_FILE = "augment.log"
TRAINING_LOCK = ".training.lock"
AUGMENT_LOCK = ".augment.lock"


class ProjectGone(RuntimeError):
    """The project was deleted while a job worked on it; the job ends without writing anything."""


class FileCallbacks(TrainCallbacks):
    """Training callbacks that write ``progress.json`` (at most every ``interval`` s) and honour ``STOP``."""

    def __init__(self, run_dir: Path, interval: float = 0.5) -> None:
        self.run_dir = Path(run_dir)
        self.interval = interval
        self._last = 0.0
        project_file = project_of(self.run_dir) / "project.json"  # a run inside a project: stop if it goes
        self._project_file = project_file if project_file.is_file() else None

    def _write(self, doc: dict[str, Any], force: bool = False) -> None:
        now = time.time()
        if force or now - self._last >= self.interval:
            self._last = now
            write_progress(self.run_dir, doc)

    def on_stage(self, name: str, done: int, total: int) -> None:
        self._write({"stage": name, "done": done, "total": total}, force=done >= total)

    def on_batch(self, progress: BatchProgress) -> None:
        self._write(
            {
                "stage": progress.phase,
                "epoch": progress.epoch,
                "epochs": progress.epochs,
                "batch": progress.batch,
                "batches": progress.batches,
                "loss": progress.loss,
                "eta_seconds": progress.eta_seconds,
            }
        )

    def on_epoch(self, record: EpochRecord) -> None:
        self._write({"stage": "epoch", "epoch": record.epoch, "val_score": record.val_score}, force=True)

    def should_stop(self) -> bool:
        gone = self._project_file is not None and not self._project_file.is_file()
        return gone or stop_requested(self.run_dir)


# -- training -----------------------------------------------------------------------


def load_samples(project: Project, side: str) -> list[Any]:
    """The generated samples of one side, assigning the split first (for training code, never for views)."""
    return list_samples(project.augmented_dir, side, project.split())


@dataclass
class TrainOutcome:
    """What :func:`train_project` did: the training's result and the test-split metrics (or None)."""

    result: TrainResult
    metrics: Any = None  # facetrack.evaluate.Metrics


def train_project(
    project: Project,
    settings: TrainSettings,
    run_dir: Path | None = None,
    callbacks: Callable[[Path], TrainCallbacks] = FileCallbacks,
) -> TrainOutcome:
    """Assign the split, train on the generated set and evaluate the best model on the test side.

    ``run_dir``: the run folder (the app's job made it); None: a new one is
    made and named in the project's ``training.json`` as this process's. A
    non-chief worker of a multi-worker training (:mod:`facetrack.cluster`)
    trains in a scratch folder instead and writes nothing in the project but
    the shared caches.
    ``callbacks(run_dir)`` makes the training's callbacks. Raises
    ``ValueError`` when there is no training set, before any folder is made.
    """
    from facetrack.train import train

    if not project.exists():
        raise ProjectGone(f"the project {project.path.name} was deleted")
    split = project.split()  # with generation, the only place the split is assigned
    train_samples = list_samples(project.augmented_dir, "train", split)
    if not train_samples:
        raise ValueError("no training set: label photos, then generate the training set (augment)")
    val_samples = list_samples(project.augmented_dir, "val", split)
    if not writes_run(settings):  # another worker of a multi-worker training: the chief writes the run
        with tempfile.TemporaryDirectory(prefix="facetrack-worker-") as scratch:
            own = TrainSettings.from_dict({**settings.to_dict(), "export_tflite": False})
            run = Path(scratch) / "run"
            cache = project.cache_dir / "features"
            return TrainOutcome(train(train_samples, val_samples, own, run, callbacks(run), cache_dir=cache))
    project.cache_dir.mkdir(exist_ok=True)  # one level: fails if the project was deleted
    if run_dir is None:
        run_dir = new_run_dir(project.runs_dir, settings.name.strip() or settings.backbone)
        run_dir.mkdir(parents=True)
        write_active_training(project.path, os.getpid(), run_dir)
    try:
        result = train(
            train_samples,
            val_samples,
            settings,
            run_dir,
            callbacks(run_dir),
            cache_dir=project.cache_dir / "features",
        )
    except Exception as exc:
        if not project.exists():
            raise ProjectGone(f"the project {project.path.name} was deleted") from exc
        raise
    if not project.exists():
        raise ProjectGone(f"the project {project.path.name} was deleted")
    test_samples = list_samples(project.augmented_dir, "test", split)
    metrics = None
    if has_model(run_dir) and test_samples:
        from facetrack.evaluate import evaluate_run

        metrics = evaluate_run(run_dir, test_samples)
    return TrainOutcome(result, metrics)


# -- augmentation ---------------------------------------------------------------------


def augment_progress_path(project: Project) -> Path:
    return project.path / AUGMENT_PROGRESS_FILE


def augment_state(project: Project) -> dict[str, Any]:
    """``{"state": "idle"|"running"|"finished"|"stopped"|"failed"|"interrupted", "done", "total", ...}``."""
    from facetrack.runs import pid_alive

    try:
        doc = read_json(augment_progress_path(project))
    except (FileNotFoundError, ValueError):
        return {"state": "idle", "done": 0, "total": 0}
    if (
        doc.get("state") == "running"
        and doc.get("pid")
        and not pid_alive(doc["pid"], doc.get("pid_started"), doc.get("updated"))
    ):
        doc["state"] = "interrupted"
    return doc


def request_augment_stop(project: Project) -> None:
    (project.path / AUGMENT_STOP_FILE).touch()


class AugmentProgress:
    """Writes an augmentation job's progress file (``None`` path: writes nothing)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.started = time.time()
        self.identity = job_identity()  # pid and start time: a reused pid is not this job

    def write(self, doc: dict[str, Any]) -> None:
        if self.path is not None:  # in place when the disk is full: the page must read why it failed
            write_status_json(self.path, {**doc, **self.identity, "updated": time.time()})

    def running(self, done: int, total: int) -> None:
        if self.path is not None and not self.path.parent.is_dir():
            return  # the project was deleted: the job is ending
        self.write({"state": "running", "done": done, "total": total, "started": self.started})


def generate_training_set(
    project: Project,
    settings: Any,
    progress_file: Path | None = None,
    workers: int | None = None,
    on_progress: Any = None,
) -> Any:
    """Generate the augmented set (``settings``: an :class:`~facetrack.augment.AugmentSettings`).

    ``progress_file``: where to write the job's progress (see the module doc);
    ``on_progress(done, total)`` is called too. Stops early when the
    project's stop file appears (removed at the end). Returns the
    :class:`~facetrack.augment.GenerateReport`.
    """
    from facetrack.augment import generate

    if not project.exists():
        raise ProjectGone(f"the project {project.path.name} was deleted")
    out = AugmentProgress(progress_file)
    stop_file = project.path / AUGMENT_STOP_FILE

    def progress(done: int, total: int) -> None:
        if on_progress is not None:
            on_progress(done, total)
        out.running(done, total)

    def should_stop() -> bool:
        return stop_file.exists() or not project.exists()

    try:
        report = generate(project, settings, progress=progress, should_stop=should_stop, workers=workers)
    except Exception as exc:
        if not project.exists():
            raise ProjectGone(f"the project {project.path.name} was deleted") from exc
        log.exception("generating the training set failed")
        out.write({"state": "failed", "message": str(exc)})
        raise
    if not project.exists():  # deleted while generating: nothing more to write
        raise ProjectGone(f"the project {project.path.name} was deleted")
    total = report.done + report.skipped
    out.write(
        {"state": "stopped" if report.stopped else "finished", "done": total, "total": total,
         "counts": report.counts, "failed": report.failed[:50],
         "seconds": round(time.time() - out.started, 1)}
    )  # fmt: skip
    stop_file.unlink(missing_ok=True)
    return report

"""Long work in the background: training and augmentation as child processes.

The app starts ``python -m facetrack train|augment`` as a detached child
process, so leaving the page, reloading the browser or closing the tab does
not stop it, and a crash of the job cannot take the app down. Progress is
written to files that any page (or tab) polls:

* training: the run folder's ``status.json``, ``history.csv`` and
  ``progress.json`` (per batch, see :class:`FileCallbacks`); a ``STOP`` file in
  the run folder asks the trainer to stop after the current batch.
* augmentation: ``<project>/augmented/progress.json``; a ``STOP`` file there.

One training per project at a time: ``<project>/training.json`` names the run
in progress; a second start is refused while that process lives.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facetrack.fileio import atomic_write_json, file_lock, read_json
from facetrack.train import BatchProgress, EpochRecord, TrainCallbacks, TrainSettings
from facetrack.workspace import Project, project_slug

STOP_FILE = "STOP"


class JobError(RuntimeError):
    """A job that cannot start; the message says why."""


def pid_alive(pid: int | None) -> bool:
    """True when a process with this id exists (and is not a zombie)."""
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, OverflowError):
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{int(pid)}/stat", encoding="ascii") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


class FileCallbacks(TrainCallbacks):
    """Training callbacks that write ``progress.json`` (at most every ``interval`` s) and honour ``STOP``."""

    def __init__(self, run_dir: Path, interval: float = 0.5) -> None:
        self.run_dir = Path(run_dir)
        self.interval = interval
        self._last = 0.0

    def _write(self, doc: dict[str, Any], force: bool = False) -> None:
        now = time.time()
        if force or now - self._last >= self.interval:
            self._last = now
            atomic_write_json(self.run_dir / "progress.json", {**doc, "updated": now})

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
        return (self.run_dir / STOP_FILE).exists()


# -- training -------------------------------------------------------------------


def new_run_dir(project: Project, settings: TrainSettings) -> Path:
    """A fresh ``runs/<time>-<name>`` folder (not created)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = project_slug(settings.name) if settings.name.strip() else settings.backbone
    path = project.runs_dir / f"{stamp}-{name}"
    n = 2
    while path.exists():
        path = project.runs_dir / f"{stamp}-{name}-{n}"
        n += 1
    return path


def active_training(project: Project) -> Path | None:
    """The run folder of the training in progress in this project, or None."""
    try:
        doc = read_json(project.path / "training.json")
    except (FileNotFoundError, ValueError):
        return None
    if pid_alive(doc.get("pid")):
        run = Path(doc.get("run_dir", ""))
        state = run_state(run).state if run.is_dir() else "starting"
        if state in ("running", "starting"):
            return run
    return None


def start_training(project: Project, settings: TrainSettings) -> Path:
    """Start a training of ``project`` in a child process; returns its run folder.

    Raises :class:`JobError` when one is running already or when there is
    nothing to train on.
    """
    from facetrack.augment import counts

    with file_lock(project.path / ".training.lock"):
        running = active_training(project)
        if running is not None:
            raise JobError(f"a training is already running in this project ({running.name}); stop it first")
        n = counts(project)
        if n["train"] == 0:
            raise JobError("there is no training set yet: label some photos, then generate the training set")
        if n["train_faces"] == 0:
            raise JobError("the training set has no face in it: label some photos with a face box")
        run_dir = new_run_dir(project, settings)
        run_dir.mkdir(parents=True)
        atomic_write_json(run_dir / "request.json", settings.to_dict())
        cmd = [
            sys.executable,
            "-m",
            "facetrack",
            "train",
            "--project",
            str(project.path),
            "--run-dir",
            str(run_dir),
        ]
        proc = _spawn(cmd, run_dir / "stdout.log")
        atomic_write_json(
            project.path / "training.json", {"pid": proc.pid, "run_dir": str(run_dir), "started": time.time()}
        )
    return run_dir


def _spawn(cmd: list[str], log_path: Path) -> subprocess.Popen:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in [str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH", "")] if p
    )
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
    finally:
        log.close()


def request_stop(run_dir: Path) -> None:
    """Ask a training to stop after its current batch (it keeps the best weights)."""
    (Path(run_dir) / STOP_FILE).touch()


@dataclass
class RunState:
    """A run folder as a page shows it."""

    run_dir: Path
    state: str  # starting | running | finished | stopped | failed | interrupted
    message: str = ""
    epoch: int = 0
    epochs: int = 0
    best_epoch: int | None = None
    best_val_score: float | None = None
    progress: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] | None = None
    has_model: bool = False

    @property
    def active(self) -> bool:
        return self.state in ("starting", "running")

    @property
    def fraction(self) -> float:
        """Share of the run done, 0..1, for a progress bar."""
        p = self.progress
        if self.state in ("finished", "stopped"):
            return 1.0
        if p.get("stage") == "features" and p.get("total"):
            return 0.0
        epochs = p.get("epochs") or self.epochs or 0
        if not epochs:
            return 0.0
        by_history = len(self.history) / epochs
        if p.get("stage") == "epoch" or not p.get("batches"):
            done = by_history
        else:
            done = max(
                by_history, (max(int(p.get("epoch", 1)) - 1, 0) + p.get("batch", 0) / p["batches"]) / epochs
            )
        return float(min(max(done, 0.0), 1.0))


def read_history(run_dir: Path) -> list[dict[str, float]]:
    """``history.csv`` as a list of rows with numbers."""
    try:
        text = (Path(run_dir) / "history.csv").read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    rows = []
    for row in csv.DictReader(text.splitlines()):
        parsed: dict[str, Any] = {}
        for k, v in row.items():
            try:
                parsed[k] = float(v)
            except (TypeError, ValueError):
                parsed[k] = v
        rows.append(parsed)
    return rows


def run_state(run_dir: Path) -> RunState:
    """Read a run folder; a "running" run whose process is gone is "interrupted"."""
    run_dir = Path(run_dir)

    def load(name: str) -> Any:
        try:
            return read_json(run_dir / name)
        except (FileNotFoundError, ValueError):
            return None

    status = load("status.json") or {}
    settings_doc = load("settings.json") or {}
    settings = settings_doc.get("settings") or load("request.json") or {}
    state = status.get("state", "starting")
    if state in ("running", "starting"):
        pid = status.get("pid")
        if pid is None:
            training = load("../../training.json") or {}
            pid = training.get("pid") if Path(training.get("run_dir", "")) == run_dir else None
            started = (run_dir / "request.json").stat().st_mtime if (run_dir / "request.json").exists() else 0
            if pid is None and time.time() - started > 120:
                state = "interrupted"
        if pid is not None and not pid_alive(pid):
            state = "interrupted"
    message = status.get("message", "")
    if state == "interrupted":
        message = "the training process ended unexpectedly" + (
            "; the best model so far is saved and usable" if (run_dir / "model.keras").exists() else ""
        )
    return RunState(
        run_dir=run_dir,
        state=state,
        message=message,
        epoch=int(status.get("epoch") or 0),
        epochs=int(status.get("epochs") or settings.get("epochs") or 0),
        best_epoch=status.get("best_epoch"),
        best_val_score=status.get("best_val_score"),
        progress=load("progress.json") or {},
        history=read_history(run_dir),
        settings=settings,
        metrics=load("metrics.json"),
        has_model=(run_dir / "model.keras").exists(),
    )


# -- augmentation ---------------------------------------------------------------


def augment_progress_path(project: Project) -> Path:
    return project.path / "augment-progress.json"


def start_augment(project: Project, settings_doc: dict[str, Any]) -> None:
    """Generate the augmented set in a child process (progress in ``augment-progress.json``)."""
    with file_lock(project.path / ".augment.lock"):
        doc = augment_state(project)
        if doc.get("state") == "running":
            raise JobError("the training set is being generated already")
        (project.path / "augment-STOP").unlink(missing_ok=True)
        settings_path = project.path / "augment-request.json"
        atomic_write_json(settings_path, settings_doc)
        cmd = [
            sys.executable, "-m", "facetrack", "augment", "--project", str(project.path),
            "--settings", str(settings_path), "--progress-file", str(augment_progress_path(project)),
        ]  # fmt: skip
        atomic_write_json(
            augment_progress_path(project), {"state": "running", "done": 0, "total": 0, "pid": None}
        )
        proc = _spawn(cmd, project.path / "augment.log")
        atomic_write_json(
            augment_progress_path(project),
            {"state": "running", "done": 0, "total": 0, "pid": proc.pid, "updated": time.time()},
        )


def augment_state(project: Project) -> dict[str, Any]:
    """``{"state": "idle"|"running"|"finished"|"stopped"|"failed"|"interrupted", "done", "total", ...}``."""
    try:
        doc = read_json(augment_progress_path(project))
    except (FileNotFoundError, ValueError):
        return {"state": "idle", "done": 0, "total": 0}
    if doc.get("state") == "running" and doc.get("pid") and not pid_alive(doc["pid"]):
        doc["state"] = "interrupted"
    return doc


def request_augment_stop(project: Project) -> None:
    (project.path / "augment-STOP").touch()


def augment_stop_requested(project: Project) -> bool:
    return (project.path / "augment-STOP").exists()

"""The run folder: its file names, the writer the trainer uses and the reader pages use.

A run folder is ``<project>/runs/<time>-<name>/``::

    request.json    the settings the app asked for (written before the job starts)
    settings.json   {"settings": TrainSettings, "counts": {...}, "created"}
    history.csv     one row per epoch (rewritten atomically after every epoch)
    status.json     {"state", "epoch", "epochs", "best_epoch", "best_val_score", "message", "updated", "pid"}
    progress.json   the latest batch or stage (written by the job, at most twice a second)
    model.keras     the best model so far, saved atomically
    model.tflite    its LiteRT export
    decode.json     how outputs become faces: threshold (picked on validation), NMS, maximum count
    metrics.json    test-split figures (facetrack.evaluate.evaluate_run)
    per_image.json  test-split results per image, worst first
    train.log       human-readable log lines
    STOP            present: the training stops after its current batch

``<project>/training.json`` names the training in progress (``pid``, ``run_dir``).
No other module spells these names. This module imports no TensorFlow or Keras.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facetrack.fileio import atomic_write_json, atomic_write_text, read_json

log = logging.getLogger(__name__)

KERAS_FILE = "model.keras"
TFLITE_FILE = "model.tflite"
DECODE_FILE = "decode.json"  # facetrack.decode.DecodeSettings, beside the model
SETTINGS_FILE = "settings.json"
REQUEST_FILE = "request.json"
HISTORY_FILE = "history.csv"
STATUS_FILE = "status.json"
PROGRESS_FILE = "progress.json"
METRICS_FILE = "metrics.json"
PER_IMAGE_FILE = "per_image.json"
LOG_FILE = "train.log"
STDOUT_FILE = "stdout.log"
STOP_FILE = "STOP"
TRAINING_FILE = "training.json"  # in the project folder: the training in progress

ACTIVE_STATES = ("starting", "running")
_STARTING_GRACE_S = 120.0  # a run with a request but no process after this long is "interrupted"


class RunError(ValueError):
    """A run folder that contradicts itself (e.g. its settings and its model disagree)."""


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


def _read(path: Path) -> Any:
    try:
        return read_json(path)
    except (FileNotFoundError, ValueError):
        return None


# -- layout -----------------------------------------------------------------------


def new_run_dir(runs_dir: Path, label: str) -> Path:
    """A fresh ``runs_dir/<time>-<label>`` folder path (not created); ``label`` is slugged."""
    from facetrack.workspace import project_slug

    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = project_slug(label)
    path = Path(runs_dir) / f"{stamp}-{name}"
    n = 2
    while path.exists():
        path = Path(runs_dir) / f"{stamp}-{name}-{n}"
        n += 1
    return path


def project_of(run_dir: Path) -> Path:
    """The project folder a run folder belongs to (``<project>/runs/<run>``)."""
    return Path(run_dir).resolve().parent.parent


def has_model(run_dir: Path) -> bool:
    return (Path(run_dir) / KERAS_FILE).is_file()


def has_tflite(run_dir: Path) -> bool:
    return (Path(run_dir) / TFLITE_FILE).is_file()


def request_stop(run_dir: Path) -> None:
    """Ask a training to stop after its current batch (it keeps the best weights)."""
    (Path(run_dir) / STOP_FILE).touch()


def stop_requested(run_dir: Path) -> bool:
    return (Path(run_dir) / STOP_FILE).exists()


def write_request(run_dir: Path, settings: dict[str, Any]) -> None:
    atomic_write_json(Path(run_dir) / REQUEST_FILE, settings)


def read_request(run_dir: Path) -> dict[str, Any]:
    return _read(Path(run_dir) / REQUEST_FILE) or {}


def write_active_training(project_dir: Path, pid: int, run_dir: Path) -> None:
    """Name the training in progress in ``<project>/training.json``."""
    atomic_write_json(
        Path(project_dir) / TRAINING_FILE, {"pid": pid, "run_dir": str(run_dir), "started": time.time()}
    )


def read_active_training(project_dir: Path) -> dict[str, Any]:
    return _read(Path(project_dir) / TRAINING_FILE) or {}


def write_progress(run_dir: Path, doc: dict[str, Any]) -> None:
    atomic_write_json(Path(run_dir) / PROGRESS_FILE, {**doc, "updated": time.time()})


# -- writer -----------------------------------------------------------------------


def save_model_atomic(model: Any, path: Path) -> None:
    """Save a Keras model to ``path`` (``.keras``) via a temporary file in the same folder + ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp.keras")
    os.close(fd)
    try:
        model.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class RunWriter:
    """Writes a run folder's settings, status, log, history and model (the trainer's side)."""

    def __init__(self, run_dir: Path, total_epochs: int) -> None:
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.epochs = total_epochs
        self.epoch = 0
        self.best_epoch: int | None = None
        self.best_score: float | None = None
        self.history: list[dict[str, Any]] = []

    def log(self, message: str, exc_text: str = "") -> None:
        """Append a line (and an optional traceback) to ``train.log``."""
        log.info("%s: %s", self.dir.name, message)
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')}  {message}\n"
        with open(self.dir / LOG_FILE, "a", encoding="utf-8") as fh:
            fh.write(line + exc_text)

    def settings(self, settings: dict[str, Any], counts: dict[str, int]) -> None:
        atomic_write_json(
            self.dir / SETTINGS_FILE, {"settings": settings, "counts": counts, "created": time.time()}
        )

    def status(self, state: str, message: str = "") -> None:
        atomic_write_json(
            self.dir / STATUS_FILE,
            {
                "state": state,
                "epoch": self.epoch,
                "epochs": self.epochs,
                "best_epoch": self.best_epoch,
                "best_val_score": self.best_score,
                "message": message,
                "updated": time.time(),
                "pid": os.getpid(),
            },
        )

    def add_epoch(self, row: dict[str, Any], columns: Sequence[str]) -> None:
        """Append one epoch's row and rewrite ``history.csv`` atomically."""
        self.history.append(row)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        for r in self.history:
            writer.writerow({k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()})
        atomic_write_text(self.dir / HISTORY_FILE, buf.getvalue())

    def save_model(self, model: Any) -> None:
        save_model_atomic(model, self.dir / KERAS_FILE)


def write_metrics(run_dir: Path, metrics: dict[str, Any], per_image: list[dict[str, Any]]) -> None:
    """``metrics.json`` (figures on the test split, naming the model file) and ``per_image.json``."""
    atomic_write_json(Path(run_dir) / METRICS_FILE, {**metrics, "model": KERAS_FILE})
    atomic_write_json(Path(run_dir) / PER_IMAGE_FILE, per_image)


# -- reader -----------------------------------------------------------------------


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
        return self.state in ACTIVE_STATES

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


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """``history.csv`` as a list of rows, numbers as floats."""
    try:
        text = (Path(run_dir) / HISTORY_FILE).read_text(encoding="utf-8")
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


def read_settings(run_dir: Path) -> dict[str, Any]:
    """The run's training settings (``settings.json``, else the request), ``{}`` if neither exists."""
    doc = _read(Path(run_dir) / SETTINGS_FILE) or {}
    return doc.get("settings") or read_request(run_dir)


def read_metrics(run_dir: Path) -> dict[str, Any] | None:
    return _read(Path(run_dir) / METRICS_FILE)


def read_per_image(run_dir: Path) -> list[dict[str, Any]] | None:
    return _read(Path(run_dir) / PER_IMAGE_FILE)


def input_hw(size: int | Sequence[int]) -> tuple[int, int]:
    """``(height, width)`` of a model input: ``S`` means ``S x S``; ``(H, W)`` is kept."""
    if isinstance(size, str):
        raise ValueError(f"input size {size!r} must be a number or (height, width)")
    if isinstance(size, Sequence):
        if len(size) != 2:
            raise ValueError(f"input shape {list(size)} must be (height, width)")
        return int(size[0]), int(size[1])
    return int(size), int(size)


def settings_input_size(run_dir: Path) -> tuple[int, int] | None:
    """``input_size`` from ``settings.json`` as ``(h, w)`` (under ``"settings"``, or top level in older files)."""
    doc = _read(Path(run_dir) / SETTINGS_FILE)
    for d in (doc, (doc or {}).get("settings") if isinstance(doc, dict) else None):
        if isinstance(d, dict) and d.get("input_size") is not None:
            try:
                return input_hw(d["input_size"])
            except (TypeError, ValueError):
                return None
    return None


def check_input_size(run_dir: Path, model_size: int | Sequence[int]) -> tuple[int, int]:
    """The one rule for a run's input size: the model's ``(h, w)``, which ``settings.json`` must not contradict.

    ``model_size``: ``S`` (square) or ``(h, w)``. Raises :class:`RunError` when they differ.
    """
    expected = settings_input_size(run_dir)
    actual = input_hw(model_size)
    if expected is not None and expected != actual:
        raise RunError(
            f"run {Path(run_dir).name}: {SETTINGS_FILE} says input_size {_size_text(expected)}, "
            f"the model takes {_size_text(actual)}"
        )
    return actual


def _size_text(hw: tuple[int, int]) -> str:
    return str(hw[0]) if hw[0] == hw[1] else f"{hw[0]}x{hw[1]}"


def _run_pid_gone(run_dir: Path, status: dict[str, Any]) -> bool:
    """True when a run that says it is starting/running has no living process."""
    pid = status.get("pid")
    if pid is None:
        training = read_active_training(project_of(run_dir))
        same = Path(training.get("run_dir", "")).resolve() == run_dir.resolve()
        pid = training.get("pid") if same else None
        request = run_dir / REQUEST_FILE
        started = request.stat().st_mtime if request.exists() else 0
        if pid is None:
            return time.time() - started > _STARTING_GRACE_S
    return not pid_alive(pid)


def run_state(run_dir: Path) -> RunState:
    """Read a run folder; a "running" run whose process is gone is "interrupted"."""
    run_dir = Path(run_dir)
    status = _read(run_dir / STATUS_FILE) or {}
    settings = read_settings(run_dir)
    state = status.get("state", "starting")
    if state in ACTIVE_STATES and _run_pid_gone(run_dir, status):
        state = "interrupted"
    message = status.get("message", "")
    model = has_model(run_dir)
    if state == "interrupted":
        message = "the training process ended unexpectedly" + (
            "; the best model so far is saved and usable" if model else ""
        )
    return RunState(
        run_dir=run_dir,
        state=state,
        message=message,
        epoch=int(status.get("epoch") or 0),
        epochs=int(status.get("epochs") or settings.get("epochs") or 0),
        best_epoch=status.get("best_epoch"),
        best_val_score=status.get("best_val_score"),
        progress=_read(run_dir / PROGRESS_FILE) or {},
        history=read_history(run_dir),
        settings=settings,
        metrics=read_metrics(run_dir),
        has_model=model,
    )


def active_training(project_dir: Path) -> Path | None:
    """The run folder of the training in progress in this project, or None."""
    doc = read_active_training(project_dir)
    if pid_alive(doc.get("pid")):
        run = Path(doc.get("run_dir", ""))
        state = run_state(run).state if run.is_dir() else "starting"
        if state in ACTIVE_STATES:
            return run
    return None

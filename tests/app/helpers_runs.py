"""Fixtures for page tests: projects with photos and a training set, and fake run folders.

Everything is written to a temporary workspace; run folders are made by hand
(``history.csv``, ``status.json``, ``settings.json``, ``metrics.json``,
``per_image.json``) with a real tiny ``model.keras`` (the compact backbone,
random weights) so that pages can load it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np

# Load WebRTC's native libraries before anything loads TensorFlow (a SIGSEGV otherwise).
import streamlit_webrtc  # noqa: F401 - before TensorFlow (see above)

from facetrack.labels import Box
from facetrack.workspace import Project, create_project

HISTORY_COLUMNS = [
    "epoch", "loss", "class_loss", "bbox_loss", "val_loss", "val_class_loss", "val_bbox_loss",
    "val_presence_accuracy", "val_mean_iou", "val_score", "seconds", "phase",
]  # fmt: skip
MODEL_SIZE = 32
_MODEL_CACHE: dict[int, Path] = {}
APP = str(Path(__file__).resolve().parents[2] / "app.py")


def make_project(root: Path, name: str = "demo") -> Project:
    return create_project(name, root)


def synthetic_photo(rng: np.random.Generator, box: Box | list[Box] | None, size: int = 96) -> np.ndarray:
    """An RGB photo: noise, and a bright patch where each face box is."""
    img = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)
    for b in [box] if isinstance(box, Box) else box or []:
        x1, y1, x2, y2 = (int(v * size) for v in b.to_list())
        img[y1:y2, x1:x2] = (230, 190, 160)
    return img


def add_photos(
    project: Project, n_face: int = 8, n_no_face: int = 4, seed: int = 0, faces_per_photo: int = 1
) -> list[str]:
    """Labelled synthetic photos (every image its own burst) -> their ids.

    ``faces_per_photo`` 2: two faces side by side (left and right halves).
    """
    rng = np.random.default_rng(seed)
    ids = []
    for i in range(n_face + n_no_face):
        boxes: list[Box] = []
        if i < n_face and faces_per_photo == 1:
            x, y = rng.uniform(0.05, 0.5, 2)
            boxes = [Box(float(x), float(y), float(x) + 0.4, float(y) + 0.4)]
        elif i < n_face:
            y = float(rng.uniform(0.05, 0.6))
            boxes = [Box(0.05 + 0.5 * k, y, 0.35 + 0.5 * k, y + 0.3) for k in range(2)]
        info = project.add_image(synthetic_photo(rng, boxes), color="rgb", captured_at=1.7e9 + i)
        project.set_boxes(info.id, boxes)
        ids.append(info.id)
    return ids


def make_training_set(project: Project, copies: int = 2) -> dict[str, int]:
    """Generate the augmented set in this process (small, fast)."""
    from facetrack.augment import AugmentSettings, generate
    from facetrack.data import sample_counts

    generate(project, AugmentSettings(copies_per_image=copies, output_size=64, output_height=48), workers=0)
    return sample_counts(project.augmented_dir, project.stored_split())


def tiny_model_file(tmp_root: Path, size: int = MODEL_SIZE) -> Path:
    """A real ``.keras`` detector (compact, random weights), built once per test session."""
    cached = _MODEL_CACHE.get(size)
    if cached is not None and cached.is_file():
        return cached
    from facetrack.model import build_model

    model = build_model("compact", weights="none", input_size=size)
    path = Path(tmp_root) / f"tiny-{size}.keras"
    model.save(path)
    _MODEL_CACHE[size] = path
    return path


def history_text(epochs: int = 3) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    w.writeheader()
    for e in range(1, epochs + 1):
        w.writerow(
            {
                "epoch": e, "loss": 1.0 / e, "class_loss": 0.6 / e, "bbox_loss": 0.4 / e,
                "val_loss": 1.2 / e, "val_class_loss": 0.7 / e, "val_bbox_loss": 0.5 / e,
                "val_presence_accuracy": 0.5 + 0.1 * e, "val_mean_iou": 0.2 * e, "val_score": 0.15 * e,
                "seconds": 1.5, "phase": "train",
            }
        )  # fmt: skip
    return buf.getvalue()


METRICS = {
    "threshold": 0.5, "presence_accuracy": 0.9, "precision": 0.875, "recall": 0.95, "f1": 0.911,
    "fp_rate": 0.1, "mean_iou": 0.61, "hit_rate": 0.7, "ap50": 0.66, "n_images": 20, "n_faces": 14,
    "n_no_face": 6, "notes": [],
}  # fmt: skip


def write_run(
    project: Project,
    name: str = "20260101-120000-compact",
    state: str = "finished",
    *,
    model_from: Path | None = None,
    metrics: bool = True,
    pid: int | None = None,
    epochs: int = 3,
    input_size: int | list[int] = MODEL_SIZE,
    message: str | None = None,
) -> Path:
    """A run folder as a training leaves it. ``pid``: written into status.json (running runs)."""
    run = project.runs_dir / name
    run.mkdir(parents=True, exist_ok=True)
    settings = {
        "backbone": "compact", "weights": "none", "input_size": input_size, "epochs": epochs,
        "batch_size": 8, "learning_rate": 0.003, "fine_tune": False, "name": name.split("-", 2)[-1],
    }  # fmt: skip
    (run / "request.json").write_text(json.dumps(settings))
    (run / "settings.json").write_text(json.dumps({"settings": settings, "counts": {"train": 10}}))
    (run / "history.csv").write_text(history_text(epochs))
    status = {
        "state": state,
        "epoch": epochs,
        "epochs": epochs,
        "best_epoch": epochs,
        "best_val_score": 0.45,
        "message": message if message is not None else f"{state}: best epoch {epochs}",
        "updated": time.time(),
        "pid": pid,
    }
    (run / "status.json").write_text(json.dumps(status))
    if model_from is not None:
        shutil.copy(model_from, run / "model.keras")
    if metrics:
        (run / "metrics.json").write_text(json.dumps(METRICS))
    return run


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def stop_training_processes(project: Project, timeout: float = 30.0) -> None:
    """Ask the project's training to stop, wait for its process to exit, kill it if it does not."""
    from facetrack.runs import pid_alive, request_stop

    try:
        doc = json.loads((project.path / "training.json").read_text())
    except (FileNotFoundError, ValueError):
        return
    pid = doc.get("pid")
    if doc.get("run_dir"):
        request_stop(Path(doc["run_dir"]))
    deadline = time.time() + timeout
    while pid and pid_alive(pid) and time.time() < deadline:
        time.sleep(0.2)
    if pid and pid_alive(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # started with start_new_session: its own group
    if pid:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)

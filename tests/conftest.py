"""Shared fixtures: an isolated workspace, synthetic photos, and the shared data folder."""

from __future__ import annotations

import os
from pathlib import Path

# aiortc (streamlit-webrtc) must be imported before TensorFlow, or importing it later
# crashes the process (see ui/__init__.py); the page tests import it after the library tests.
import aiortc  # noqa: F401, I001
import cv2
import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty workspace folder set as $FACETRACK_HOME."""
    root = tmp_path / "workspace"
    monkeypatch.setenv("FACETRACK_HOME", str(root))
    return root


@pytest.fixture
def shared_faces() -> Path:
    """``../shared/data/faces``; tests using it skip, naming the folder, when it is absent."""
    folder = SHARED_DATA / "faces"
    if not (folder / "images").is_dir():
        pytest.skip(f"shared face data not found at {folder} (these tests need ../shared/data/faces)")
    return folder


def synthetic_face(
    width: int = 160,
    height: int = 120,
    box: tuple[float, float, float, float] | None = (0.3, 0.25, 0.6, 0.75),
    seed: int = 0,
) -> np.ndarray:
    """An RGB image of noise with a bright 'face' ellipse filling ``box`` (normalized), or none."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 90, size=(height, width, 3), dtype=np.uint8)
    if box is not None:
        x1, y1, x2, y2 = box
        center = (int((x1 + x2) / 2 * width), int((y1 + y2) / 2 * height))
        axes = (max(1, int((x2 - x1) / 2 * width)), max(1, int((y2 - y1) / 2 * height)))
        cv2.ellipse(img, center, axes, 0, 0, 360, (230, 190, 160), -1)
        cv2.circle(
            img, (center[0] - axes[0] // 3, center[1] - axes[1] // 4), max(1, axes[0] // 8), (30, 30, 30), -1
        )
        cv2.circle(
            img, (center[0] + axes[0] // 3, center[1] - axes[1] // 4), max(1, axes[0] // 8), (30, 30, 30), -1
        )
    return img


def jpeg_bytes(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


def png_bytes(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()

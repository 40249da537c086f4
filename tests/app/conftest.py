"""Fixtures for AppTest page tests: a temporary workspace and projects with photos.

Pages run through the app's router (``app.py`` + ``st.navigation``) so that
``st.page_link`` targets resolve exactly as in the browser.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from facetrack.labels import Box
from facetrack.workspace import Project, create_project

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 60


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty workspace folder; the app reads it through $FACETRACK_HOME."""
    root = tmp_path / "ws"
    root.mkdir()
    monkeypatch.setenv("FACETRACK_HOME", str(root))
    monkeypatch.delenv("FACETRACK_PASSWORD", raising=False)
    monkeypatch.chdir(REPO)
    return root


def make_photo(seed: int = 0, size: tuple[int, int] = (160, 120)) -> np.ndarray:
    """An RGB test photo with a bright 'face' disc on a noisy background."""
    w, h = size
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 90, (h, w, 3), dtype=np.uint8)
    cv2.circle(img, (w // 2, h // 2), min(w, h) // 4, (230, 190, 160), -1)
    return img


def jpeg_bytes(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


@pytest.fixture
def empty_project(workspace: Path) -> Project:
    return create_project("empty", workspace)


@pytest.fixture
def populated_project(workspace: Path) -> Project:
    """6 photos: 2 with a face box, 1 "no face", 3 not labelled."""
    project = create_project("populated", workspace)
    ids = [project.add_image(make_photo(i), origin="camera", burst="burst-1").id for i in range(6)]
    project.set_boxes(ids[0], [Box(0.25, 0.2, 0.75, 0.8)])
    project.set_boxes(ids[1], [Box(0.3, 0.3, 0.7, 0.7)])
    project.set_boxes(ids[2], [])
    return project


@pytest.fixture
def app() -> Callable[..., AppTest]:
    """``app(page, project=None, **session_state)``: an AppTest of the router, switched to ``page`` and run."""

    def _make(page: str, project: str | None = None, **state) -> AppTest:
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
        if project:
            at.session_state["project"] = project
        for key, value in state.items():
            at.session_state[key] = value
        at.switch_page(page)
        at.run()
        assert os.environ.get("FACETRACK_HOME")
        return at

    return _make


def no_exception(at: AppTest) -> None:
    """Fail with the traceback text when the page raised."""
    assert not at.exception, [e.value for e in at.exception]


FACES = Path("/work/shared/data/faces")


@pytest.fixture(scope="session")
def mtcnn_face_photo() -> dict:
    """A real labelled face photo (bytes and true box); skipped when the data folder is absent."""
    from facetrack.labels import read_labelme

    name = "wf_pic06940"
    image, label = FACES / "images" / f"{name}.jpg", FACES / "labels" / f"{name}.json"
    if not image.is_file() or not label.is_file():
        pytest.skip(f"face photos not found: put the labelled set in {FACES}/images and {FACES}/labels")
    return {"bytes": image.read_bytes(), "box": read_labelme(label).boxes[0]}

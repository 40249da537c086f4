"""Box suggestions: MTCNN converted to brow-to-chin squares, the user's run, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from facetrack.images import read_rgb
from facetrack.labels import Box, read_labelme
from facetrack.suggest import (
    MtcnnSuggester,
    RunSuggester,
    SuggestError,
    Suggestion,
    mtcnn_to_square,
    suggest_boxes,
)

DATA = Path("/work/shared/data/faces")
FACE_PHOTOS = ["wf_pic07039", "wf_pic06940", "wf_pic01226", "wf_pic14104"]
NO_FACE_PHOTOS = ["c101_Leopards_image_0001", "gray_neg-0025"]


def _needs_data() -> None:
    if not (DATA / "images").is_dir() or not (DATA / "labels").is_dir():
        pytest.skip(f"face photos not found: put the labelled set in {DATA}/images and {DATA}/labels")


@pytest.fixture(scope="module")
def mtcnn() -> MtcnnSuggester:
    return MtcnnSuggester()


def test_square_conversion_is_square_and_lower() -> None:
    box = mtcnn_to_square(100, 100, 80, 100, 400, 400)
    assert box is not None
    x1, y1, x2, y2 = box.to_pixels(400, 400)
    assert abs((x2 - x1) - (y2 - y1)) < 1e-6  # a square
    assert abs((x2 - x1) - (0.6 * 80 + 0.5 * 100)) < 1e-6
    assert (y1 + y2) / 2 > 100 + 50  # centred below MTCNN's centre
    assert mtcnn_to_square(-500, -500, 10, 10, 100, 100) is None  # wholly outside


@pytest.mark.parametrize("name", FACE_PHOTOS)
def test_mtcnn_finds_the_labelled_face(mtcnn: MtcnnSuggester, name: str) -> None:
    _needs_data()
    rgb = read_rgb(DATA / "images" / f"{name}.jpg")
    truth = read_labelme(DATA / "labels" / f"{name}.json").boxes
    assert truth, "test photo should have a face"
    found = mtcnn(rgb)
    assert found and all(isinstance(s, Suggestion) for s in found)
    assert found[0].source == "mtcnn" and 0.9 <= found[0].score <= 1.0
    assert max(found[0].box.iou(t) for t in truth) > 0.5


def test_conversion_beats_raw_mtcnn_boxes(mtcnn: MtcnnSuggester) -> None:
    """The square convention fits the labels better than MTCNN's own boxes, on several photos."""
    _needs_data()
    from mtcnn import MTCNN  # noqa: F401 - mtcnn is installed if the fixture loaded

    raw_total = conv_total = 0.0
    for name in FACE_PHOTOS:
        rgb = read_rgb(DATA / "images" / f"{name}.jpg")
        h, w = rgb.shape[:2]
        truth = read_labelme(DATA / "labels" / f"{name}.json").boxes[0]
        face = max(mtcnn._load().detect_faces(rgb), key=lambda f: f["confidence"])
        x, y, bw, bh = face["box"]
        raw_total += Box.from_pixels([x, y, x + bw, y + bh], w, h).iou(truth)
        conv_total += mtcnn_to_square(x, y, bw, bh, w, h).iou(truth)
    assert conv_total > raw_total


@pytest.mark.parametrize("name", NO_FACE_PHOTOS)
def test_mtcnn_no_face_photo(mtcnn: MtcnnSuggester, name: str) -> None:
    _needs_data()
    doc = json.loads((DATA / "labels" / f"{name}.json").read_text())
    assert doc["shapes"] == []
    assert mtcnn(read_rgb(DATA / "images" / f"{name}.jpg")) == []


def test_big_photo_is_downscaled_and_mapped_back(mtcnn: MtcnnSuggester) -> None:
    _needs_data()
    rgb = read_rgb(DATA / "images" / "wf_pic06940.jpg")
    truth = read_labelme(DATA / "labels" / "wf_pic06940.json").boxes[0]
    big = np.kron(rgb, np.ones((4, 4, 1), np.uint8))  # 4x larger, same normalized face
    found = mtcnn(big)
    assert found and found[0].box.iou(truth) > 0.5


def test_blank_and_grey_images(mtcnn: MtcnnSuggester) -> None:
    assert mtcnn(np.zeros((120, 160, 3), np.uint8)) == []
    assert mtcnn(np.full((120, 160), 128, np.uint8)) == []  # greyscale accepted


def test_bad_shape_is_refused(mtcnn: MtcnnSuggester) -> None:
    with pytest.raises(SuggestError):
        mtcnn(np.zeros((10, 10, 5), np.uint8))


def test_run_without_model_is_a_clear_error(tmp_path: Path) -> None:
    run = tmp_path / "20260101-000000-compact"
    run.mkdir()
    with pytest.raises(SuggestError, match="cannot be loaded"):
        RunSuggester(run)
    with pytest.raises(SuggestError):
        suggest_boxes(np.zeros((32, 32, 3), np.uint8), run)


def test_suggest_boxes_default_is_mtcnn() -> None:
    _needs_data()
    rgb = read_rgb(DATA / "images" / "wf_pic06676.jpg")
    found = suggest_boxes(rgb)
    assert found and found[0].source == "mtcnn"


def test_run_suggester_returns_every_face(tmp_path: Path) -> None:
    from tests.standin import dense_standin_model

    run = tmp_path / "20260101-000000-dense"
    run.mkdir()
    faces = [(0.9, [0.1, 0.2, 0.3, 0.6]), (0.8, [0.6, 0.25, 0.85, 0.7]), (0.3, [0.4, 0.7, 0.5, 0.9])]
    dense_standin_model((36, 48), (6, 8), faces).save(run / "model.keras")
    found = RunSuggester(run)(np.zeros((90, 120, 3), np.uint8))
    assert [round(s.score, 2) for s in found] == [0.9, 0.8]  # the 0.3 face is below min_score
    assert found[1].box.to_list() == pytest.approx(faces[1][1], abs=1e-5)

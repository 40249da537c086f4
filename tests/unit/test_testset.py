"""The test-set summary (how many photos, faces, moments; where the boxes came from) and box sources."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facetrack.box_sources import box_sources, record_box_source
from facetrack.data import Sample
from facetrack.labels import Box
from facetrack.testset import MIN_TEST_FACES, MIN_TEST_MOMENTS, summarize_test_set
from facetrack.workspace import create_project

FACE = Box(0.2, 0.2, 0.6, 0.7)


def _project(tmp_path: Path, bursts: list[str | None]):
    project = create_project("p", tmp_path)
    rgb = np.full((40, 40, 3), 120, np.uint8)
    ids = [project.add_image(rgb, burst=b, captured_at=1000.0 + i).id for i, b in enumerate(bursts)]
    return project, ids


def test_counts_photos_faces_and_moments(tmp_path: Path) -> None:
    project, ids = _project(tmp_path, ["b1", "b1", "b1", None, None])
    samples = [Sample(Path(f"{i}.jpg"), FACE if k != 4 else None, i) for k, i in enumerate(ids)]
    s = summarize_test_set(project, samples)
    assert (s.photos, s.faces, s.no_face, s.moments) == (5, 4, 1, 3)  # one burst + two single photos
    assert s.too_few  # 4 faces < MIN_TEST_FACES


def test_enough_faces_from_enough_moments_is_trusted(tmp_path: Path) -> None:
    bursts = [f"b{k % MIN_TEST_MOMENTS}" for k in range(MIN_TEST_FACES)]
    project, ids = _project(tmp_path, bursts)
    s = summarize_test_set(project, [Sample(Path(f"{i}.jpg"), FACE, i) for i in ids])
    assert s.faces == MIN_TEST_FACES and s.moments == MIN_TEST_MOMENTS and not s.too_few
    one_burst, ids1 = _project(tmp_path / "one", ["same"] * MIN_TEST_FACES)
    assert summarize_test_set(one_burst, [Sample(Path(f"{i}.jpg"), FACE, i) for i in ids1]).too_few


def test_box_sources_recorded_and_counted(tmp_path: Path) -> None:
    project, ids = _project(tmp_path, [None, None, None])
    assert box_sources(project) == {}
    record_box_source(project, ids[0], "mtcnn")
    record_box_source(project, ids[1], "hand")
    record_box_source(project, ids[2], "mtcnn")
    record_box_source(project, ids[2], None)  # then marked "no face": forgotten
    assert box_sources(project) == {ids[0]: "mtcnn", ids[1]: "hand"}
    s = summarize_test_set(project, [Sample(Path(f"{i}.jpg"), FACE, i) for i in ids])
    assert (s.suggested_faces, s.hand_faces, s.unknown_faces) == (1, 1, 1)

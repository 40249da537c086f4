"""Evaluate page: no model, no test photos, evaluate a real tiny model, the gallery, the comparison, downloads."""

from __future__ import annotations

import io
import json
import sys
import types
import zipfile
from pathlib import Path

import pytest

from facetrack.labels import Box
from facetrack.workspace import create_project
from tests.app.conftest import no_exception
from tests.app.helpers_runs import add_photos, make_training_set, tiny_model_file, write_run

EVALUATE = "pages/evaluate.py"


def _links(at) -> list[str]:
    return [str(link.proto.page) for link in at.get("page_link")]


@pytest.fixture
def deferred(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Records download buttons' deferred callables by file id (the runtime is gone after a run)."""
    from streamlit.runtime.media_file_manager import MediaFileManager

    seen: dict = {}
    original = MediaFileManager.add_deferred

    def add_deferred(self, data_callable, *args, **kwargs):
        file_id = original(self, data_callable, *args, **kwargs)
        seen[file_id] = data_callable
        return file_id

    monkeypatch.setattr(MediaFileManager, "add_deferred", add_deferred)
    return seen


def _deferred_bytes(deferred: dict, button) -> bytes:
    """Run a download button's deferred callable (what a click in the browser does)."""
    file_id = button.proto.deferred_file_id
    assert file_id, "the download is not deferred"
    return deferred[file_id]()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return tiny_model_file(tmp_path_factory.mktemp("model"))


@pytest.fixture
def project_with_test(workspace: Path):
    project = create_project("evalme", workspace)
    add_photos(project, n_face=16, n_no_face=8)
    n = make_training_set(project, copies=1)
    assert n["test"] > 0
    return project


def test_no_model_explains_and_links_to_train(app, workspace: Path) -> None:
    create_project("empty", workspace)
    at = app(EVALUATE, project="empty")
    no_exception(at)
    assert at.title[0].value.endswith("Evaluate")
    assert any("no trained model" in i.value for i in at.info)
    assert _links(at) == ["train"]


def test_model_but_no_test_photos(app, workspace: Path, model_file: Path) -> None:
    project = create_project("notest", workspace)
    write_run(project, model_from=model_file, metrics=False)
    at = app(EVALUATE, project="notest")
    no_exception(at)
    assert any("no test photos" in w.value for w in at.warning)
    assert "augment" in _links(at)
    assert not [b for b in at.button if b.key == "evaluate"]


def test_evaluate_button_writes_metrics_and_shows_gallery(
    app, project_with_test, model_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = project_with_test
    run = write_run(project, model_from=model_file, metrics=False)
    at = app(EVALUATE, project="evalme")
    no_exception(at)
    assert not at.metric
    at.button(key="evaluate").click().run()
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    doc = json.loads((run / "metrics.json").read_text())
    assert doc["n_images"] == len(json.loads((run / "per_image.json").read_text()))
    labels = [m.label for m in at.metric]
    assert labels == [
        "Face / no face right", "AP@0.5", "Faces found", "Boxes right",
        "F1", "False alarms", "Mean box overlap (IoU)", "Faces found at any score",
    ]  # fmt: skip
    assert at.metric[0].value == f"{doc['presence_accuracy']:.3f}"
    images = at.get("image")
    assert 0 < len(images) <= 12
    assert "live" in _links(at)

    # The comparison with the ready-made detector (a stand-in with a fixed box).
    fake = types.ModuleType("facetrack.suggest")
    fake.suggest_boxes = lambda rgb: [types.SimpleNamespace(box=Box(0.1, 0.1, 0.6, 0.6), score=0.99)]
    monkeypatch.setitem(sys.modules, "facetrack.suggest", fake)
    at.toggle(key="eval_compare").set_value(True).run()
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    assert any("ready-made" in i.value and "AP@0.5" in i.value for i in at.info)


def test_every_face_is_counted_and_drawn(app, workspace: Path) -> None:
    """Photos with two faces: the metrics count every face; captions say how many were found."""
    from facetrack.model import build_model
    from tests.app.helpers_runs import add_photos

    project = create_project("groups", workspace)
    add_photos(project, n_face=16, n_no_face=6, faces_per_photo=2)
    assert make_training_set(project, copies=1)["test"] > 0
    model = build_model("compact", None, (48, 64), head="dense")
    run = write_run(project, metrics=False, input_size=[48, 64])
    model.save(run / "model.keras")
    at = app(EVALUATE, project="groups")
    at.button(key="evaluate").click().run()
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    doc = json.loads((run / "metrics.json").read_text())
    assert doc["faces"] == 2 * doc["n_faces"] and doc["counts"]["faces"] == doc["faces"]
    per_image = json.loads((run / "per_image.json").read_text())
    assert max(len(p["true_boxes"]) for p in per_image) == 2
    errors = [p["missed"] + p["false_alarms"] for p in per_image]
    assert errors == sorted(errors, reverse=True)  # worst first: missed faces and false alarms
    assert any(f"{doc['faces']} faces in {doc['n_faces']} photos" in m.value for m in at.markdown)
    assert at.get("image")


def test_comparison_error_is_a_message(
    app, project_with_test, model_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_run(project_with_test, model_from=model_file, metrics=False)
    at = app(EVALUATE, project="evalme")
    at.button(key="evaluate").click().run()

    def broken(rgb):
        raise RuntimeError("weights missing")

    fake = types.ModuleType("facetrack.suggest")
    fake.suggest_boxes = broken
    monkeypatch.setitem(sys.modules, "facetrack.suggest", fake)
    at.toggle(key="eval_compare").set_value(True).run()
    no_exception(at)
    assert any("weights missing" in e.value for e in at.error), (at.error, at.info, at.toggle)


def test_damaged_model_is_a_message(app, project_with_test) -> None:
    run = write_run(project_with_test, metrics=False)
    (run / "model.keras").write_bytes(b"not a model")
    at = app(EVALUATE, project="evalme")
    at.button(key="evaluate").click().run()
    no_exception(at)
    assert any("Could not evaluate" in e.value and "damaged" in e.value for e in at.error)
    assert not (run / "metrics.json").exists()


def test_labelme_zip_download(app, project_with_test, model_file: Path, deferred: dict) -> None:
    project = project_with_test
    write_run(project, model_from=model_file)
    at = app(EVALUATE, project="evalme")
    no_exception(at)
    buttons = {b.proto.label: b for b in at.get("download_button")}
    assert "Model (.keras)" in buttons
    data = _deferred_bytes(deferred, buttons["Labelled photos (labelme .zip)"])
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    ids = project.image_ids()
    assert sorted(n for n in names if n.startswith("evalme/images/")) == [
        f"evalme/images/{i}.jpg" for i in ids
    ]
    label = json.loads(zipfile.ZipFile(io.BytesIO(data)).read(f"evalme/labels/{ids[0]}.json"))
    assert label["imagePath"] == f"../images/{ids[0]}.jpg"
    assert _deferred_bytes(deferred, buttons["Model (.keras)"]) == model_file.read_bytes()

"""Train page defaults (issue 11 item 7): a backbone that works here and now, the user's last choice
remembered (in the session and from the project's last run), every setting explained on the page."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from facetrack.train import TrainSettings
from facetrack.weights import VGG16_NOTOP_FILE
from facetrack.workspace import create_project
from tests.app.conftest import no_exception
from tests.app.helpers_runs import add_photos, make_training_set, write_run

TRAIN = "pages/train.py"


@pytest.fixture
def keras_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "keras"
    (home / "models").mkdir(parents=True)
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


@pytest.fixture
def weights_present(keras_home: Path) -> Path:
    """The VGG16 weights file in the Keras cache (its content is not read by the page)."""
    path = keras_home / "models" / VGG16_NOTOP_FILE
    path.write_bytes(b"\0" * 1_100_000)
    return path


@pytest.fixture
def offline(keras_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACETRACK_OFFLINE", "1")


@pytest.fixture
def ready(workspace: Path):
    project = create_project("ready", workspace)
    add_photos(project, n_face=6, n_no_face=2)
    make_training_set(project, copies=1)
    return project


def _all_text(at) -> str:
    return "\n".join(
        str(e.value) for kind in ("markdown", "caption", "info", "warning") for e in getattr(at, kind)
    )


def test_offline_without_weights_defaults_to_compact_and_warns_on_vgg16(app, ready, offline) -> None:
    at = app(TRAIN, project=ready.name)
    no_exception(at)
    assert at.radio(key="train_backbone").value == "compact"
    assert at.number_input(key="train_epochs_compact").value == TrainSettings(backbone="compact").epochs
    at.radio(key="train_backbone").set_value("vgg16").run()
    no_exception(at)
    assert any("internet cannot be reached" in w.value for w in at.warning)
    assert at.button(key="start_training").disabled  # a VGG16 run would fail at once
    at.radio(key="train_backbone").set_value("compact").run()
    assert not at.button(key="start_training").disabled


def test_weights_present_defaults_to_vgg16(app, ready, weights_present, offline) -> None:
    at = app(TRAIN, project=ready.name)
    no_exception(at)
    assert at.radio(key="train_backbone").value == "vgg16"
    assert "downloaded already" in _all_text(at)


def test_last_run_settings_are_the_defaults(app, ready, weights_present) -> None:
    write_run(ready, "20260101-120000-compact", "finished", epochs=5)  # compact, batch 8, lr 0.003
    at = app(TRAIN, project=ready.name)
    no_exception(at)
    assert at.radio(key="train_backbone").value == "compact"
    assert at.number_input(key="train_epochs_compact").value == 5
    assert at.selectbox(key="train_batch_compact").value == 8
    assert at.select_slider(key="train_lr_compact").value == pytest.approx(0.003)


def test_choice_survives_a_training_that_hides_the_form(app, ready, weights_present) -> None:
    at = app(TRAIN, project=ready.name)
    assert at.radio(key="train_backbone").value == "vgg16"
    at.radio(key="train_backbone").set_value("compact").run()
    at.number_input(key="train_epochs_compact").set_value(12).run()
    # a training runs (this process stands for it): the form is not drawn, Streamlit drops its widgets
    run = write_run(ready, "20260101-130000-compact", "running", epochs=3, metrics=False, pid=os.getpid())
    (ready.path / "training.json").write_text(json.dumps({"pid": os.getpid(), "run_dir": str(run)}))
    at.run()
    no_exception(at)
    assert not [b for b in at.button if b.key == "start_training"]
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "state": "finished"}))
    at.run()
    no_exception(at)
    assert at.radio(key="train_backbone").value == "compact"
    assert at.number_input(key="train_epochs_compact").value == 12  # the session's, not the run's 3


def test_every_setting_is_explained_on_the_page(app, ready, offline) -> None:
    at = app(TRAIN, project=ready.name)
    no_exception(at)
    text = _all_text(at)
    for word in ("**Backbone**", "**Epochs**", "**Batch size**", "**Learning rate**", "**Fine-tune**"):
        assert word in text, word

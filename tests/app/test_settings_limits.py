"""One table of limits (facetrack.limits) for the command line, the settings and the sliders."""

from __future__ import annotations

from dataclasses import fields

import pytest

from facetrack.__main__ import main
from facetrack.augment import AugmentSettings
from facetrack.fileio import atomic_write_json
from facetrack.limits import AUGMENT_LIMITS, TRAIN_LIMITS
from facetrack.train import TrainSettings
from facetrack.workspace import create_project
from tests.app.conftest import no_exception
from tests.app.helpers_runs import add_photos, make_training_set

AUGMENT = "pages/augment.py"
TRAIN = "pages/train.py"
NUMERIC = [f.name for f in fields(AugmentSettings) if f.type in ("int", "float")]


def test_every_numeric_setting_has_limits() -> None:
    assert set(NUMERIC) == set(AUGMENT_LIMITS)
    for name in ("epochs", "batch_size", "learning_rate", "input_size"):
        assert name in TRAIN_LIMITS


@pytest.mark.parametrize("end", [0, 1])
def test_the_page_shows_every_setting_at_either_end_of_its_range(app, populated_project, end) -> None:
    doc = {name: AUGMENT_LIMITS[name][end] for name in NUMERIC}
    settings = AugmentSettings.from_dict(doc)  # the library accepts both ends...
    atomic_write_json(populated_project.augmented_dir / "settings.json", {"key": "x", "settings": doc})
    at = app(AUGMENT, project=populated_project.name)
    no_exception(at)  # ...and so do the sliders
    for name in NUMERIC:
        if name == "output_height":
            continue  # no widget: the page keeps 4:3 from the output width
        if name == "output_size":
            assert at.select_slider(key=f"aug_{name}").value == settings.output_size
        elif name == "seed":
            assert at.number_input(key=f"aug_{name}").value == settings.seed
        else:
            assert at.slider(key=f"aug_{name}").value == pytest.approx(getattr(settings, name)), name


def test_copies_the_cli_accepts_show_on_the_page(app, populated_project) -> None:
    """The reported case: ``augment --copies 120`` made the page raise StreamlitValueAboveMaxError."""
    atomic_write_json(
        populated_project.augmented_dir / "settings.json", {"key": "x", "settings": {"copies_per_image": 120}}
    )
    at = app(AUGMENT, project=populated_project.name)
    no_exception(at)
    assert at.slider(key="aug_copies_per_image").value == 120


@pytest.mark.parametrize(
    ("name", "value"), [(n, v) for n, (lo, hi) in AUGMENT_LIMITS.items() for v in (lo - 1, hi + 1)]
)
def test_settings_outside_the_table_are_refused(name, value) -> None:
    with pytest.raises(ValueError, match=name.replace("_", " ")):
        AugmentSettings.from_dict({name: value})


def test_cli_refuses_copies_above_the_slider_with_one_line(populated_project, capsys) -> None:
    code = main(["augment", "--project", str(populated_project.path), "--copies", "201", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err == [
        "error: augmentation settings: copies per image must be between 1 and 200 (got 201)"
    ]


def test_train_settings_and_epochs_field_use_the_same_range(app, workspace) -> None:
    low, high = TRAIN_LIMITS["epochs"]
    for bad in (low - 1, high + 1):
        with pytest.raises(ValueError, match="epochs must be between"):
            TrainSettings(backbone="compact", epochs=bad)
    project = create_project("tiny", workspace)
    add_photos(project, n_face=4, n_no_face=2)
    make_training_set(project, copies=1)
    at = app(TRAIN, project="tiny")
    no_exception(at)
    (epochs,) = [w for w in at.number_input if w.label.startswith("Epochs")]
    assert (epochs.min, epochs.max) == (low, high)

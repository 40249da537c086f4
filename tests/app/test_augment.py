"""Augment page: sliders from remembered settings, preview, generating in the background, counts."""

from __future__ import annotations

import time

from facetrack.fileio import atomic_write_json
from facetrack.tasks import augment_state
from tests.app.conftest import no_exception

AUGMENT = "pages/augment.py"


def test_no_labels_points_to_label(app, empty_project) -> None:
    at = app(AUGMENT, project=empty_project.name)
    no_exception(at)
    assert any("Label some photos first" in i.value for i in at.info)


def test_every_setting_has_a_widget_and_preview_shows(app, populated_project) -> None:
    at = app(AUGMENT, project=populated_project.name)
    no_exception(at)
    keys = {w.key for w in (*at.slider, *at.toggle, *at.number_input, *at.select_slider)}
    from dataclasses import fields

    from facetrack.augment import AugmentSettings

    # the output height follows the width (4:3, as webcam frames)
    assert {f"aug_{f.name}" for f in fields(AugmentSettings) if f.name != "output_height"} <= keys
    images = at.get("image")
    assert len(images) == 8  # the preview grid
    assert any("Nothing generated yet" in i.value for i in at.info)


def test_remembered_settings_fill_the_sliders(app, populated_project) -> None:
    atomic_write_json(
        populated_project.augmented_dir / "settings.json",
        {"key": "x", "settings": {"copies_per_image": 7, "rotation": 33, "output_size": 150}},
    )
    at = app(AUGMENT, project=populated_project.name)
    no_exception(at)
    assert at.slider(key="aug_copies_per_image").value == 7
    assert at.slider(key="aug_rotation").value == 33
    assert at.select_slider(key="aug_output_size").value == 150


def test_slider_change_refreshes_preview(app, populated_project) -> None:
    at = app(AUGMENT, project=populated_project.name)
    before = [i.proto.imgs[0].url for i in at.get("image")]
    at.slider(key="aug_rotation").set_value(45).run()
    no_exception(at)
    after = [i.proto.imgs[0].url for i in at.get("image")]
    assert len(after) == 8 and before != after


def test_generate_runs_in_background_and_counts(app, populated_project) -> None:
    at = app(AUGMENT, project=populated_project.name)
    at.slider(key="aug_copies_per_image").set_value(2).run()
    at.button(key="aug_go").click().run()
    no_exception(at)
    deadline = time.time() + 90
    while augment_state(populated_project)["state"] == "running" and time.time() < deadline:
        time.sleep(0.5)
    state = augment_state(populated_project)
    assert state["state"] == "finished", state
    at.run()
    no_exception(at)
    metrics = {m.label: m.value for m in at.metric}
    assert int(metrics["Training images"]) > 0
    assert any("up to date" in s.value for s in at.success)
    assert at.slider(key="aug_copies_per_image").value == 2


def test_reset_to_defaults_restores_every_slider(app, populated_project) -> None:
    """Issue 11 item 3: "Reset to defaults" used to raise StreamlitWidgetAlreadyInstantiatedError."""
    from facetrack.augment import AugmentSettings

    at = app(AUGMENT, project=populated_project.name)
    at.slider(key="aug_copies_per_image").set_value(7).run()
    at.slider(key="aug_rotation").set_value(40).run()
    at.number_input(key="aug_seed").set_value(1234).run()
    [b for b in at.button if b.label == "Reset to defaults"][0].click().run()
    no_exception(at)
    defaults = AugmentSettings()
    assert at.slider(key="aug_copies_per_image").value == defaults.copies_per_image
    assert at.slider(key="aug_rotation").value == defaults.rotation
    assert at.number_input(key="aug_seed").value == defaults.seed
    at.run()  # and the page keeps working on the next run
    no_exception(at)
    assert at.slider(key="aug_copies_per_image").value == defaults.copies_per_image


def test_jargon_comes_second_with_a_plain_explanation(app, populated_project) -> None:
    """Issue 11 item 12: Gamma, RGB shift and Random seed are named in plain words first."""
    at = app(AUGMENT, project=populated_project.name)
    no_exception(at)
    widgets = {w.key: w for w in (*at.slider, *at.number_input)}
    for key, jargon in (("aug_gamma", "gamma"), ("aug_rgb_shift", "RGB shift"), ("aug_seed", "random seed")):
        label = widgets[key].label
        assert jargon.lower() in label.lower() and not label.lower().startswith(jargon.lower()), label
        assert widgets[key].help and len(widgets[key].help) > 40, key

"""Augment page in a real browser: "Reset to defaults" puts the sliders back (issue 11 item 3).

It used to stop the page with StreamlitWidgetAlreadyInstantiatedError every time.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import open_page, wait_idle, wait_until
from playwright.sync_api import expect

from facetrack.augment import AugmentSettings, generate
from facetrack.labels import Box
from facetrack.workspace import create_project

PROJECT = "e2e-augment-reset"


@pytest.mark.e2e
@pytest.mark.timeout(150)
def test_reset_to_defaults_restores_the_sliders(page, app_server, e2e_workspace):
    project = create_project(PROJECT, e2e_workspace)
    img = np.full((240, 320, 3), 120, np.uint8)
    cv2.circle(img, (160, 120), 60, (200, 170, 150), -1)
    info = project.add_image(img, origin="camera")
    project.set_boxes(info.id, [Box(0.3, 0.2, 0.7, 0.8)])
    defaults = AugmentSettings()
    generate(project, defaults, workers=0)  # a set made with the defaults: the page says when sliders differ

    open_page(page, app_server, "augment", PROJECT, timeout=120)
    expect(page.get_by_text("The training set is up to date.")).to_be_visible()
    copies = page.locator(
        'input[type="range"][aria-label="Copies per photo"]'
    )  # not "... with several faces"
    expect(copies).to_have_value(str(defaults.copies_per_image))
    copies.focus()
    for _ in range(3):
        copies.press("ArrowRight")
    expect(copies).to_have_value(str(defaults.copies_per_image + 3))
    # wait until the server has the new value (the slider sends it a moment after the last key)
    differ = page.get_by_text("The sliders differ from the settings of the current set").first
    wait_until(differ.is_visible, 60, message="the server to get the slider's new value")
    wait_idle(page)

    page.get_by_text("Advanced", exact=True).click()
    page.get_by_role("button", name="Reset to defaults").click()
    up_to_date = page.get_by_text("The training set is up to date.").first
    wait_until(up_to_date.is_visible, 60, message="the page to be drawn again after Reset")
    wait_idle(page)
    expect(page.get_by_test_id("stException")).to_have_count(0)
    expect(page.get_by_text("cannot be modified after the widget")).to_have_count(0)
    expect(copies).to_have_value(str(defaults.copies_per_image))

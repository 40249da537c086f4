"""Label page in a real browser: a rectangle dragged on the canvas is saved as a labelme file.

One photo in the project; the mouse drags a box on the drawing canvas
(streamlit-drawable-canvas, in the page itself); the test reads
``<project>/labels/<id>.json`` and checks it is labelme JSON with one
rectangle whose pixel corners match the drag, scaled from canvas to photo.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from conftest import SHARED_DATA, open_page, screenshot, wait_idle, wait_until
from playwright.sync_api import expect

from facetrack.workspace import create_project

PROJECT = "e2e-label"


def photo_bytes() -> tuple[bytes, str]:
    """A real face photo from the shared data when present, else a drawn stand-in (480x360)."""
    photo = SHARED_DATA / "faces" / "images" / "wf_pic07039.jpg"
    if photo.is_file():
        return photo.read_bytes(), photo.name
    img = np.zeros((360, 480, 3), np.uint8)
    img[:] = (90, 140, 200)
    cv2.circle(img, (240, 170), 90, (150, 190, 230), -1)
    ok, data = cv2.imencode(".jpg", img)
    assert ok
    return data.tobytes(), "drawn.jpg"


@pytest.mark.e2e
@pytest.mark.timeout(150)
def test_dragged_rectangle_is_saved_as_labelme(page, app_server, e2e_workspace):
    project = create_project(PROJECT, e2e_workspace)
    data, name = photo_bytes()
    info = project.add_image(data, original_name=name, origin="import")
    label_path = project.label_path(info.id)

    open_page(page, app_server, "label", PROJECT, timeout=120)  # first visit loads the face finder
    expect(page.get_by_role("heading", name="2. Label")).to_be_visible()
    expect(page.get_by_text("Not labelled yet")).to_be_visible()
    # the pretrained face finder may show a suggestion; the user draws their own box instead
    page.wait_for_timeout(1000)
    wait_idle(page)
    assert not label_path.exists(), "a label was saved before anything was drawn or accepted"

    canvas = page.locator("canvas.upper-canvas").first
    canvas.scroll_into_view_if_needed()
    expect(canvas).to_be_visible()
    bb = canvas.bounding_box()
    cw = int(canvas.evaluate("c => c.width / (window.devicePixelRatio || 1)"))
    ch = int(canvas.evaluate("c => c.height / (window.devicePixelRatio || 1)"))
    assert bb and cw > 50 and ch > 50, (bb, cw, ch)
    # CSS size equals the canvas size (no CSS scaling): mouse offsets are canvas coordinates
    assert abs(bb["width"] - cw) < 2 and abs(bb["height"] - ch) < 2, (bb, cw, ch)

    # drag from 25%/20% to 70%/75% of the canvas
    x0, y0 = round(cw * 0.25), round(ch * 0.20)
    x1, y1 = round(cw * 0.70), round(ch * 0.75)
    page.mouse.move(bb["x"] + x0, bb["y"] + y0)
    page.mouse.down()
    page.mouse.move(bb["x"] + (x0 + x1) / 2, bb["y"] + (y0 + y1) / 2, steps=5)
    page.mouse.move(bb["x"] + x1, bb["y"] + y1, steps=10)
    page.mouse.up()

    wait_until(label_path.exists, 30, message=f"{label_path} to be written")
    wait_idle(page)
    doc = json.loads(label_path.read_text())
    assert doc["imageWidth"] == info.width and doc["imageHeight"] == info.height, doc
    assert doc["imagePath"].endswith(f"{info.id}.jpg"), doc["imagePath"]
    assert "imageData" in doc and "version" in doc and "flags" in doc  # labelme's own keys
    assert len(doc["shapes"]) == 1, doc["shapes"]
    shape = doc["shapes"][0]
    assert shape["shape_type"] == "rectangle" and shape["label"] == "face", shape
    xs = sorted(p[0] for p in shape["points"])
    ys = sorted(p[1] for p in shape["points"])
    sx, sy = info.width / cw, info.height / ch
    expected = [x0 * sx, y0 * sy, x1 * sx, y1 * sy]
    got = [xs[0], ys[0], xs[1], ys[1]]
    tolerance = 4 * max(sx, sy)  # a few canvas pixels (stroke width, rounding)
    assert np.allclose(got, expected, atol=tolerance), (got, expected, tolerance)

    # .first: while Streamlit reruns, the previous run's copy can linger a moment (stale)
    expect(page.get_by_text("Saved: 1 face box").first).to_be_visible()
    expect(page.get_by_text("1 of 1 labelled")).to_be_visible()
    # the saved box is drawn back on the canvas in the "saved" green (#2ecc71)
    # (the canvases sit in the component's shadow DOM: Playwright's locators reach them)
    green_pixels = """cs => Math.max(0, ...cs.map(c => {
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4)
            if (Math.abs(d[i] - 46) < 30 && Math.abs(d[i + 1] - 204) < 30 && Math.abs(d[i + 2] - 113) < 30) n++;
        return n;
    }))"""
    lower = page.locator("canvas.dc-canvas.lower-canvas")  # the drawing layer, not the photo
    wait_until(
        lambda: lower.evaluate_all(green_pixels) > 500, 20, message="the saved box drawn on the canvas"
    )
    wait_idle(page)
    screenshot(page, "label", docs_name="label")

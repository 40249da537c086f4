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


# the largest count, over the canvases, of pixels in the "saved" green (#2ecc71)
GREEN_PIXELS = """cs => Math.max(0, ...cs.map(c => {
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4)
        if (Math.abs(d[i] - 46) < 30 && Math.abs(d[i + 1] - 204) < 30 && Math.abs(d[i + 2] - 113) < 30) n++;
    return n;
}))"""


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
    green_pixels = GREEN_PIXELS
    lower = page.locator("canvas.dc-canvas.lower-canvas")  # the drawing layer, not the photo
    wait_until(
        lambda: lower.evaluate_all(green_pixels) > 500, 20, message="the saved box drawn on the canvas"
    )
    wait_idle(page)
    screenshot(page, "label", docs_name="label")


# -- issue 11 items 5-6 and issue 10: the canvas fits, several boxes, keys ----------------------


def plain_photo(seed: int, size: tuple[int, int] = (640, 480)) -> bytes:
    """A 640x480 webcam-sized photo with no face in it (the face finder suggests nothing)."""
    rng = np.random.default_rng(seed)
    img = np.zeros((size[1], size[0], 3), np.uint8)
    img[:] = rng.integers(40, 200, 3)
    cv2.rectangle(img, (60, 60), (200, 180), tuple(int(v) for v in rng.integers(0, 255, 3)), -1)
    ok, data = cv2.imencode(".jpg", img)
    assert ok
    return data.tobytes()


def inside(inner: dict, outer: dict, slack: float = 1.0) -> bool:
    return (
        inner["x"] >= outer["x"] - slack
        and inner["y"] >= outer["y"] - slack
        and inner["x"] + inner["width"] <= outer["x"] + outer["width"] + slack
        and inner["y"] + inner["height"] <= outer["y"] + outer["height"] + slack
    )


def overlaps(a: dict, b: dict) -> bool:
    return not (
        a["x"] + a["width"] <= b["x"]
        or b["x"] + b["width"] <= a["x"]
        or a["y"] + a["height"] <= b["y"]
        or b["y"] + b["height"] <= a["y"]
    )


def drag(page, bb: dict, start: tuple[float, float], end: tuple[float, float]) -> None:
    page.mouse.move(bb["x"] + start[0], bb["y"] + start[1])
    page.mouse.down()
    page.mouse.move(bb["x"] + (start[0] + end[0]) / 2, bb["y"] + (start[1] + end[1]) / 2, steps=5)
    page.mouse.move(bb["x"] + end[0], bb["y"] + end[1], steps=10)
    page.mouse.up()


@pytest.mark.e2e
@pytest.mark.timeout(150)
def test_canvas_fits_a_1400_window_and_its_toolbar_covers_no_button(page, app_server, e2e_workspace):
    """Issue 11 item 5: at 1400x1000 a 640x480 photo is drawn whole, in view, inside its column."""
    project = create_project("e2e-label-fit", e2e_workspace)
    project.add_image(plain_photo(1), original_name="webcam.jpg", origin="camera")
    open_page(page, app_server, "label", project.name, timeout=120)
    assert page.viewport_size == {"width": 1400, "height": 1000}
    canvas = page.locator("canvas.upper-canvas").first
    expect(canvas).to_be_visible()
    bb = canvas.bounding_box()
    assert bb and round(bb["width"]) == 640 and round(bb["height"]) == 480, bb
    # whole canvas inside the window, without scrolling
    assert inside(bb, {"x": 0, "y": 0, "width": 1400, "height": 1000}), bb
    column = page.locator(".st-key-label_canvas").bounding_box()
    assert column and inside(bb, column), (bb, column)
    side = page.locator(".st-key-label_side").bounding_box()
    assert side and not overlaps(bb, side), (bb, side)
    # the canvas toolbar shows on hover, above the photo, over no button
    canvas.hover()
    toolbar = page.locator(".dc-toolbar").first
    expect(toolbar).to_have_css("opacity", "1")
    page.wait_for_timeout(400)  # its slide-in transition
    tb = page.locator(".dc-toolbar-card").first.bounding_box()  # the visible card, not its padding
    assert tb and tb["y"] + tb["height"] <= bb["y"] + 2, (tb, bb)
    for button in page.locator('[data-testid="stButton"], [data-testid="stNumberInput"]').all():
        box = button.bounding_box()
        assert box is None or not overlaps(tb, box), (tb, box, button.inner_text())


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_two_boxes_drawn_are_two_labelme_rectangles(page, app_server, e2e_workspace):
    """Issue 10, Label page: two faces boxed on one photo are saved as two `face` rectangles."""
    project = create_project("e2e-label-two", e2e_workspace)
    info = project.add_image(plain_photo(2), original_name="two.jpg", origin="camera")
    label_path = project.label_path(info.id)
    open_page(page, app_server, "label", project.name, timeout=120)
    expect(page.get_by_text("Not labelled yet")).to_be_visible()
    canvas = page.locator("canvas.upper-canvas").first
    bb = canvas.bounding_box()
    drag(page, bb, (60, 80), (220, 260))
    wait_until(label_path.exists, 30, message="the first box to be saved")
    wait_idle(page)
    expect(page.get_by_text("Saved: 1 face box").first).to_be_visible()
    # the same canvas stays (drawn afresh it could swallow the next box): one canvas, the box on it
    expect(page.locator("canvas.upper-canvas")).to_have_count(1)
    lower = page.locator("canvas.dc-canvas.lower-canvas")
    wait_until(lambda: lower.evaluate_all(GREEN_PIXELS) > 300, 20, message="the saved box on the canvas")
    canvas = page.locator("canvas.upper-canvas").first
    bb = canvas.bounding_box()
    drag(page, bb, (380, 100), (560, 300))
    wait_until(
        lambda: len(json.loads(label_path.read_text())["shapes"]) == 2,
        30,
        message="the second box to be saved",
    )
    wait_idle(page)
    doc = json.loads(label_path.read_text())
    assert [(s["label"], s["shape_type"]) for s in doc["shapes"]] == [("face", "rectangle")] * 2
    left, right = sorted(doc["shapes"], key=lambda s: s["points"][0][0])
    assert max(p[0] for p in left["points"]) < min(p[0] for p in right["points"])  # two separate boxes
    expect(page.get_by_text("Saved: 2 face boxes").first).to_be_visible()
    expect(page.get_by_role("button", name="Boxes are right: next photo")).to_be_visible()
    screenshot(page, "label-two-boxes")


@pytest.mark.e2e
@pytest.mark.timeout(150)
def test_keys_and_photo_number_move_between_photos(page, app_server, e2e_workspace):
    """Issue 11 item 6: the → and ← keys, and typing a photo number, change the photo."""
    project = create_project("e2e-label-keys", e2e_workspace)
    for seed in range(5):
        project.add_image(plain_photo(10 + seed), original_name=f"p{seed}.jpg", origin="camera")
    open_page(page, app_server, "label", project.name, timeout=120)
    number = page.get_by_role("spinbutton", name="Photo number (of 5)")

    def shown(n: int) -> None:
        """Wait until the server has drawn photo ``n`` (its strip button is the primary one) and is idle."""
        strip = page.get_by_role("button", name=str(n), exact=True)
        wait_until(lambda: strip.get_attribute("kind") == "primary", 60, message=f"photo {n} shown")
        wait_idle(page)
        expect(number).to_have_value(str(n))

    shown(1)
    page.get_by_role("heading", name="2. Label").click()  # focus on the page, not in a field
    page.keyboard.press("ArrowRight")
    shown(2)
    page.keyboard.press("ArrowRight")
    shown(3)
    page.keyboard.press("ArrowLeft")
    shown(2)
    number.fill("5")
    number.press("Enter")
    shown(5)
    # quick clicks on the number's − button all count (its value changes in the browser, no click is lost)
    step_down = page.get_by_test_id("stNumberInputStepDown")
    for _ in range(3):
        step_down.click()
    expect(number).to_have_value("2")
    shown(2)
    number.fill("5")
    number.press("Enter")
    shown(5)
    page.get_by_role("heading", name="2. Label").click()  # out of the number box: keys are shortcuts again
    page.keyboard.press("n")  # no face in photo 5
    wait_until(lambda: project.boxes(project.image_ids()[4]) == [], 30, message="photo 5 saved as no face")
    assert all(project.boxes(i) is None for i in project.image_ids()[:4])  # and only photo 5

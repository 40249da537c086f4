"""The current project, import feedback and privacy in a real browser (issue 11: a new user's first hour).

- A project created on Home becomes the current one everywhere (sidebar,
  pages), and an upload then lands in it.
- The current project is in the URL: a reload, a page change followed by a
  reload, and a deep link with ``?project=`` all open it.
- The import report stays on screen (seconds later, after the camera's own
  reruns), in the Upload tab, with a running camera left running; file names
  show literally (``:red[x].jpg`` is not turned into red text).
- No page asks any host but the app's own for anything (the favicon was
  fetched from fonts.gstatic.com).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlparse

import cv2
import numpy as np
import pytest
from conftest import click_start, open_page, wait_idle, wait_until, webrtc_frame
from playwright.sync_api import expect

from facetrack.workspace import create_project

STOP_RE = re.compile(r"^\s*stop", re.I)


def photo_files(tmp_path, n: int, prefix: str = "photo") -> list:
    """``n`` small JPEG files on disk (for the browser's file chooser)."""
    paths = []
    for i in range(n):
        rng = np.random.default_rng(i)
        img = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
        path = tmp_path / f"{prefix}{i}.jpg"
        assert cv2.imwrite(str(path), img)
        paths.append(path)
    return paths


def sidebar_project(page) -> str:
    """The project the sidebar's picker shows (the value of its input box)."""
    box = page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox")
    return box.inner_text() + " " + box.locator("input").input_value()


def url_project(page) -> str | None:
    """``?project=`` of the address bar (read in the page: ``page.url`` is only refreshed by Playwright calls)."""
    values = parse_qs(urlparse(page.evaluate("location.href")).query).get("project")
    return values[0] if values else None


def create_in_home(page, name: str) -> None:
    page.get_by_label("Project name").fill(name)
    page.get_by_role("button", name="Create project").click()
    wait_idle(page)
    expect(page.get_by_text(f"Project {name} is ready.")).to_be_visible()


def show_upload_tab(page) -> None:
    """Open the Upload tab and let its uploader finish mounting.

    Streamlit draws a tab's content only once the tab is opened; files given to
    the uploader's input in the very frames it mounts in are dropped by its
    first effects (a person cannot pick files that fast). Two animation
    frames after it shows, the uploader is ready.
    """
    page.get_by_role("tab", name="Upload photos").click()
    expect(page.get_by_role("tab", name="Upload photos")).to_have_attribute("aria-selected", "true")
    expect(page.get_by_test_id("stFileUploaderDropzone")).to_be_visible()
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def go_to(page, title: str) -> None:
    """Click a page in the sidebar's navigation (Streamlit drops the URL's query string on the way)."""
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()
    heading = "FaceTrack" if title == "Home" else title
    expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
    wait_idle(page)


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_a_new_second_project_is_current_and_gets_the_upload(page, app_server, e2e_workspace, tmp_path):
    open_page(page, app_server, "")
    create_in_home(page, "e2e-first")
    create_in_home(page, "e2e-second")
    page.wait_for_timeout(1500)  # a later rerun must not switch back
    wait_idle(page)
    expect(page.get_by_role("heading", name="Project: e2e-second")).to_be_visible()
    assert "e2e-second" in sidebar_project(page)
    assert url_project(page) == "e2e-second"

    go_to(page, "1. Capture")
    assert "e2e-second" in sidebar_project(page)
    show_upload_tab(page)
    failed = []  # said when the files do not arrive: a refused upload, a page error
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.on("console", lambda m: failed.append(m.text) if m.type == "error" else None)
    page.locator('input[type="file"]').set_input_files([str(p) for p in photo_files(tmp_path, 2)])
    try:
        expect(page.get_by_test_id("stFileChip")).to_have_count(2, timeout=10_000)
    except AssertionError:
        pytest.fail(f"the chosen files did not reach the uploader; page errors: {failed}")
    page.get_by_role("button", name="Import").click()
    expect(page.get_by_text("2 photo(s) added")).to_be_visible(timeout=30_000)
    assert len(list((e2e_workspace / "e2e-second" / "images").glob("*.jpg"))) == 2
    assert not list((e2e_workspace / "e2e-first" / "images").glob("*.jpg"))


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_reload_and_deep_links_keep_the_project(page, browser, app_server, e2e_workspace):
    create_project("e2e-url-a", e2e_workspace)
    create_project("e2e-url-b", e2e_workspace)
    open_page(page, app_server, "", "e2e-url-b")
    expect(page.get_by_role("heading", name="Project: e2e-url-b")).to_be_visible()

    go_to(page, "4. Train")  # the navigation drops ?project=; the app puts it back
    wait_until(lambda: url_project(page) == "e2e-url-b", 10, message=f"?project= back in {page.url}")
    page.reload()
    wait_idle(page)
    expect(page.get_by_role("heading", name="4. Train")).to_be_visible()
    expect(page.get_by_text("Pick or create a project first")).not_to_be_visible()
    assert "e2e-url-b" in sidebar_project(page)

    # the sidebar picker changes the project, and the URL with it
    page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox").click()
    page.get_by_role("option", name="e2e-url-a").click()
    wait_idle(page)
    wait_until(lambda: url_project(page) == "e2e-url-a", 10, message=f"?project=e2e-url-a in {page.url}")
    page.reload()
    wait_idle(page)
    assert "e2e-url-a" in sidebar_project(page)

    # a deep link, in a new browser session
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        other = context.new_page()
        open_page(other, app_server, "capture", "e2e-url-b")
        expect(other.get_by_role("heading", name="1. Capture")).to_be_visible()
        expect(other.get_by_text("Pick or create a project first")).not_to_be_visible()
        assert "e2e-url-b" in sidebar_project(other)
    finally:
        context.close()


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_import_report_stays_and_the_camera_keeps_running(page, app_server, e2e_workspace, tmp_path):
    project = create_project("e2e-feedback", e2e_workspace)
    open_page(page, app_server, "capture", project.name)
    click_start(page)  # a running camera: the import must not stop it
    show_upload_tab(page)
    bad = tmp_path / ":red[x].jpg"
    bad.write_bytes(b"not a photo")
    files = [*photo_files(tmp_path, 3), bad]
    page.locator('input[type="file"]').set_input_files([str(p) for p in files])
    expect(page.get_by_test_id("stFileChip")).to_have_count(4)
    page.get_by_role("button", name="Import").click()
    message = page.get_by_text("3 photo(s) added")
    expect(message).to_be_visible(timeout=30_000)
    page.wait_for_timeout(5000)
    expect(message).to_be_visible()  # not gone after the camera's and the gallery's reruns
    expect(page.get_by_role("tab", name="Upload photos")).to_have_attribute("aria-selected", "true")
    # the name, as it is (a word joiner after ":" keeps it from being read as markup; it shows as nothing)
    expect(page.get_by_text(re.compile(r":\u2060?red\[x\]\.jpg"))).to_be_visible()
    expect(page.get_by_text("Your photos (3)")).to_be_visible()
    assert len(project.image_ids()) == 3
    # the uploader is empty again
    expect(page.get_by_test_id("stFileChip")).to_have_count(0)

    page.get_by_role("button", name="Dismiss").click()
    wait_idle(page)
    expect(message).not_to_be_visible()

    page.get_by_role("tab", name="Webcam").click()
    expect(webrtc_frame(page).get_by_role("button", name=STOP_RE)).to_be_visible()
    expect(page.get_by_role("button", name="Take photo")).to_be_enabled()

    # a burst of 10, one a second: the gallery's count follows it, not only at the end
    slider = page.locator('[data-testid="stSlider"]', has_text="Photos in the burst")
    slider.get_by_role("slider").focus()
    slider.get_by_role("slider").press("Home")
    slider.get_by_role("slider").press("ArrowRight")
    wait_idle(page)
    expect(slider).to_contain_text("10")
    page.get_by_role("button", name="Start burst").click()
    title = page.get_by_role("heading", name=re.compile(r"Your photos \(\d+\)"))
    finished = page.get_by_text("Burst finished: 10 photo(s) saved.")
    counts = set()
    for _ in range(300):
        counts.add(int(re.search(r"\((\d+)\)", title.inner_text()).group(1)))
        if finished.is_visible():
            break
        page.wait_for_timeout(100)
    expect(finished).to_be_visible()
    expect(page.get_by_role("heading", name="Your photos (13)")).to_be_visible()
    # Seen while the burst ran: the gallery refreshes every second and the burst takes a photo a
    # second, but each refresh is a rerun of the page, and with the camera streaming on a busy
    # 2-core machine a rerun takes two or three seconds (seen: 4, 6, 8, 11 and 4, 7). Two
    # different counts between the first and the last photo show that the gallery follows the
    # burst while it runs (before the fix it stayed at 3 until the end).
    assert len(counts & set(range(4, 13))) >= 2, counts


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_no_page_asks_another_host(page, app_server, e2e_workspace, tmp_path):
    project = create_project("e2e-privacy", e2e_workspace)
    for path in photo_files(tmp_path, 2):
        project.add_image(path.read_bytes(), original_name=path.name, origin="import")
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    open_page(page, app_server, "", project.name)
    for title in ["1. Capture", "2. Label", "3. Augment", "4. Train", "5. Evaluate", "6. Live", "Home"]:
        go_to(page, title)
        page.wait_for_timeout(1000)
    page.reload()
    wait_idle(page)
    page.wait_for_timeout(1000)
    assert requests
    foreign = sorted(
        {u for u in requests if urlparse(u).scheme in ("http", "https", "ws", "wss")}
        - {u for u in requests if urlparse(u).hostname in ("127.0.0.1", "localhost")}
    )
    assert not foreign, foreign

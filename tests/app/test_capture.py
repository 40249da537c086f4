"""Capture page: gallery, delete, uploads (good, corrupt, zip, labelme), the photo-camera fallback, bursts."""

from __future__ import annotations

import io
import json
import time
import zipfile

import numpy as np

from facetrack.labels import Box, Label, labelme_dict
from facetrack.textsafe import markdown_safe
from tests.app.conftest import jpeg_bytes, make_photo, no_exception

CAPTURE = "pages/capture.py"


def test_empty_project_shows_how_to_start(app, empty_project) -> None:
    at = app(CAPTURE, project=empty_project.name)
    no_exception(at)
    assert at.title[0].value == "1. Capture"
    assert any("No photos yet" in i.value for i in at.info)
    # the live camera can't play in AppTest: its buttons wait for it
    take = [b for b in at.button if b.label == "Take photo"]
    assert take and take[0].disabled


def test_no_project_sends_home(app, workspace) -> None:
    at = app(CAPTURE)
    no_exception(at)
    assert any("Pick or create a project" in i.value for i in at.info)


def test_gallery_lists_newest_first_and_deletes(app, populated_project) -> None:
    at = app(CAPTURE, project=populated_project.name)
    no_exception(at)
    assert any("Your photos (6)" in s.value for s in at.subheader)
    newest = populated_project.image_ids()[-1]
    at.button(key=f"del_{newest}").click().run()
    no_exception(at)
    assert newest not in populated_project.image_ids()
    assert len(populated_project.image_ids()) == 5
    assert any("Your photos (5)" in s.value for s in at.subheader)


def test_upload_images_and_report(app, empty_project) -> None:
    at = app(CAPTURE, project=empty_project.name)
    at.file_uploader[0].set_value(
        [
            ("a.jpg", jpeg_bytes(make_photo(1)), "image/jpeg"),
            ("b.jpg", jpeg_bytes(make_photo(2)), "image/jpeg"),
        ]
    ).run()
    [b for b in at.button if b.label == "Import"][0].click().run()
    no_exception(at)
    assert len(empty_project.image_ids()) == 2
    assert any("2 photo(s) added" in s.value for s in at.success)


def test_uploading_the_same_photos_again_adds_nothing_and_says_so(app, empty_project) -> None:
    files = [
        ("a.jpg", jpeg_bytes(make_photo(1)), "image/jpeg"),
        ("b.jpg", jpeg_bytes(make_photo(2)), "image/jpeg"),
    ]
    at = app(CAPTURE, project=empty_project.name)
    at.file_uploader[0].set_value(files).run()
    [b for b in at.button if b.label == "Import"][0].click().run()
    assert len(empty_project.image_ids()) == 2
    at.file_uploader[0].set_value([files[0], ("b again.jpg", files[1][1], "image/jpeg")]).run()
    [b for b in at.button if b.label == "Import"][0].click().run()
    no_exception(at)
    assert len(empty_project.image_ids()) == 2  # not 4
    assert any("Nothing new was added" in i.value and "2 already in the project" in i.value for i in at.info)
    assert "b again.jpg: already in the project" in "\n".join(m.value for m in at.markdown)


def test_corrupt_upload_is_refused_and_nothing_added(app, empty_project) -> None:
    at = app(CAPTURE, project=empty_project.name)
    at.file_uploader[0].set_value(("broken.jpg", b"\xff\xd8\xff not really a jpeg", "image/jpeg")).run()
    [b for b in at.button if b.label == "Import"][0].click().run()
    no_exception(at)
    assert empty_project.image_ids() == []
    assert any("Nothing was added" in e.value for e in at.error)
    assert "broken.jpg" in "\n".join(m.value for m in at.markdown)  # the bad file is named in the report


def test_mixed_upload_keeps_good_files(app, empty_project) -> None:
    at = app(CAPTURE, project=empty_project.name)
    at.file_uploader[0].set_value(
        [
            ("good.png", jpeg_bytes(make_photo(3)), "image/jpeg"),
            ("empty.jpg", b"", "image/jpeg"),
            ("junk.zip", b"PK not a zip", "application/zip"),
        ]
    ).run()
    [b for b in at.button if b.label == "Import"][0].click().run()
    no_exception(at)
    assert len(empty_project.image_ids()) == 1
    assert any("1 photo(s) added" in w.value for w in at.warning)


def test_zip_with_labelme_labels(app, empty_project) -> None:
    rgb = make_photo(4, (200, 150))
    label = Label(image_path="face.jpg", width=200, height=150, boxes=(Box(0.2, 0.1, 0.6, 0.7),))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("set/images/face.jpg", jpeg_bytes(rgb))
        zf.writestr("set/labels/face.json", json.dumps(labelme_dict(label)))
    at = app(CAPTURE, project=empty_project.name)
    at.file_uploader[0].set_value(("set.zip", buf.getvalue(), "application/zip")).run()
    [b for b in at.button if b.label == "Import"][0].click().run()
    no_exception(at)
    (image_id,) = empty_project.image_ids()
    boxes = empty_project.boxes(image_id)
    assert boxes is not None and len(boxes) == 1
    assert boxes[0].iou(Box(0.2, 0.1, 0.6, 0.7)) > 0.95


def test_camera_input_fallback_saves_once(app, empty_project) -> None:
    at = app(CAPTURE, project=empty_project.name)
    at.toggle(key="use_camera_input").set_value(True).run()
    no_exception(at)
    at.camera_input[0].set_value(("photo.jpg", jpeg_bytes(make_photo(5)), "image/jpeg")).run()
    no_exception(at)
    assert len(empty_project.image_ids()) == 1
    at.run()  # a rerun must not save the same photo again
    assert len(empty_project.image_ids()) == 1
    info = empty_project.info(empty_project.image_ids()[0])
    assert info.source == "camera"


def test_burst_logic_saves_frames_with_one_burst_id(empty_project) -> None:
    """The burst helpers, driven directly (AppTest cannot stream a camera)."""
    import ui.webrtc as ns

    grabber = ns.FrameGrabber()
    burst = ns.new_burst(3, 0.01)
    assert not ns.burst_tick(empty_project, burst, grabber)  # no frame yet: nothing saved
    assert burst.missed == 1
    frame = np.zeros((720, 1280, 3), np.uint8)
    frame[:, :, 0] = 255  # blue in BGR
    for _ in range(10):
        grabber.put(frame)
        ns.burst_tick(empty_project, burst, grabber)
        time.sleep(0.02)
    assert burst.done and burst.taken == 3
    ids = empty_project.image_ids()
    assert len(ids) == 3
    infos = [empty_project.info(i) for i in ids]
    assert {i.burst for i in infos} == {burst.burst_id}
    assert (infos[0].width, infos[0].height) == (1280, 720)  # the camera's resolution
    from facetrack.images import read_rgb

    rgb = read_rgb(empty_project.image_path(ids[0]))
    assert rgb[..., 2].mean() > 200 and rgb[..., 0].mean() < 50  # BGR saved as RGB correctly


def test_stale_frame_is_not_used() -> None:
    import ui.webrtc as ns

    grabber = ns.FrameGrabber()
    grabber.put(np.zeros((4, 4, 3), np.uint8))
    assert grabber.latest() is not None
    grabber.at -= 10
    assert grabber.latest() is None


def _import(at, files) -> None:
    at.file_uploader[0].set_value(files).run()
    [b for b in at.button if b.label == "Import"][0].click().run()


def test_import_report_stays_until_dismissed(app, empty_project) -> None:
    """The report is drawn on every run (the camera's own reruns must not wipe it) until dismissed."""
    at = app(CAPTURE, project=empty_project.name)
    _import(at, [("a.jpg", jpeg_bytes(make_photo(1)), "image/jpeg")])
    no_exception(at)
    for _ in range(3):  # reruns from the camera, a slider, a fragment...
        at.run()
        assert any("1 photo(s) added" in s.value for s in at.success)
    at.button(key="dismiss_upload").click().run()
    no_exception(at)
    assert not any("photo(s) added" in s.value for s in at.success)


def test_import_report_is_in_the_upload_tab_and_nothing_moves_above_the_tabs(app, empty_project) -> None:
    """A message above the tabs would shift them: the browser re-creates tabs and camera (tab jumps, stream stops)."""
    at = app(CAPTURE, project=empty_project.name)
    before = [type(e).__name__ for e in at.main.children.values()]
    _import(at, [("a.jpg", jpeg_bytes(make_photo(1)), "image/jpeg")])
    no_exception(at)
    assert any("1 photo(s) added" in s.value for s in at.tabs[1].success)
    after = [type(e).__name__ for e in at.main.children.values()]
    assert after == before


def test_bad_upload_shows_a_plain_message_and_empties_the_uploader(app, empty_project, workspace) -> None:
    """A file that makes the importer raise (a JSON nested 100,000 deep): no traceback, no server path."""
    at = app(CAPTURE, project=empty_project.name)
    uploader_key = at.file_uploader[0].key
    _import(at, [("deep.json", b"[" * 100_000 + b"]" * 100_000, "application/json")])
    no_exception(at)
    shown = " ".join(e.value for e in [*at.error, *at.warning, *at.markdown, *at.exception])
    assert "Nothing was" in shown or "skipped" in shown
    assert "Traceback" not in shown and str(workspace) not in shown and "/facetrack/" not in shown
    # a new, empty uploader: the bad file does not stay to fail the next import
    assert at.file_uploader[0].key != uploader_key
    assert not at.file_uploader[0].value
    _import(at, [("good.jpg", jpeg_bytes(make_photo(2)), "image/jpeg")])
    no_exception(at)
    assert len(empty_project.image_ids()) == 1
    assert any("1 photo(s) added" in s.value for s in at.success)


def test_file_names_in_the_report_are_escaped(app, empty_project) -> None:
    at = app(CAPTURE, project=empty_project.name)
    _import(at, [(":red[x].jpg", b"not a photo", "image/jpeg"), ("*b*.jpg", b"nope", "image/jpeg")])
    no_exception(at)
    text = "\n".join(m.value for m in at.markdown)
    assert markdown_safe(":red[x].jpg") in text and markdown_safe("*b*.jpg") in text
    assert ":red[x]" not in text and "*b*.jpg" not in text


def test_upload_help_says_it_in_plain_words_first(app, empty_project) -> None:
    """Issue 11, item 12: "labelme .json" meant nothing to a new user; plain words come first."""
    at = app(CAPTURE, project=empty_project.name)
    text = next(m.value for m in at.markdown if "labelme" in m.value)
    assert "label files" in text and text.index("label files") < text.index("labelme")
    assert "labelme" not in at.file_uploader[0].label

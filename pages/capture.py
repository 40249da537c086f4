"""Capture: photos from the webcam (single, burst), the simple photo camera, or uploads; the gallery.

Results and errors (an import report, a photo that could not be saved) are
kept in session state and drawn on every run, next to what the user did, until
they dismiss them or do the next thing. Nothing above the tabs changes from
run to run, so a message never moves the tabs or the camera: the browser would
re-create them, showing the first tab again and stopping the stream.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import streamlit as st

from facetrack.images import ImageError
from facetrack.importer import ImportError_, import_files
from facetrack.labels import LabelError
from facetrack.textsafe import markdown_safe
from facetrack.workspace import Project, WorkspaceError
from ui.common import error_text, header, page_link, require_project
from ui.images import page_count, page_slice, thumbnail
from ui.webrtc import (
    Burst,
    burst_tick,
    connection_hint,
    grabber_for,
    keep_stream_alive,
    new_burst,
    rtc_configuration,
    save_frame,
)

log = logging.getLogger("facetrack.pages.capture")

GALLERY_PER_PAGE = 24
GALLERY_COLUMNS = 6
UPLOAD_TYPES = ["jpg", "jpeg", "png", "bmp", "webp", "tif", "tiff", "gif", "zip", "json"]
WEBCAM_TAB = ":material/videocam: Webcam"
UPLOAD_TAB = ":material/upload: Upload photos"
NOTICE_KEY = "capture_notice"
MAX_ROWS = 500
EXPECTED_ERRORS = (ImportError_, ImageError, LabelError, WorkspaceError, OSError)


# -- results and errors that stay until the user moves on ------------------------------
@dataclass
class Notice:
    """A result or error shown in one place of the page (``place``) until dismissed or replaced."""

    project: str
    place: str  # "camera", "upload" or "gallery"
    kind: str  # "success", "warning", "error" or "info"
    text: str  # markdown, user data already escaped
    rows: list[str] = field(default_factory=list)  # file by file, markdown, user data already escaped


def set_notice(project: Project, place: str, kind: str, text: str, rows: list[str] | None = None) -> None:
    st.session_state[NOTICE_KEY] = Notice(project.name, place, kind, text, rows or [])


def clear_notice() -> None:
    st.session_state.pop(NOTICE_KEY, None)


def show_notice(project: Project, place: str) -> None:
    """Draw the kept notice if it belongs here, with the file-by-file table and a Dismiss button."""
    notice: Notice | None = st.session_state.get(NOTICE_KEY)
    if notice is None or notice.project != project.name or notice.place != place:
        return
    with st.container(key=f"capture_notice_{place}"):
        getattr(st, notice.kind)(notice.text)
        if notice.rows:
            with st.expander("File by file", expanded=notice.kind != "success"):
                st.markdown("\n".join(f"- {row}" for row in notice.rows[:MAX_ROWS]))
                if len(notice.rows) > MAX_ROWS:
                    st.caption(f"... and {len(notice.rows) - MAX_ROWS} more.")
        st.button(
            "Dismiss", key=f"dismiss_{place}", icon=":material/close:", type="tertiary", on_click=clear_notice
        )


# -- uploads and the simple camera -----------------------------------------------------
def import_uploads(project: Project, files: list[tuple[str, bytes]]) -> None:
    """Import uploaded files; the report (or the reason nothing came in) becomes the upload notice."""
    try:
        with st.spinner(f"Importing {len(files)} file(s)..."):
            report = import_files(project, files)
    except EXPECTED_ERRORS as exc:
        set_notice(project, "upload", "error", f"Nothing was imported: {error_text(exc)}")
        return
    except Exception as exc:  # noqa: BLE001 - logged; the page shows a plain sentence, never a traceback
        log.exception("importing %d uploaded file(s) into %s failed", len(files), project.name)
        set_notice(
            project,
            "upload",
            "error",
            "Nothing was imported: FaceTrack could not read these files "
            f"({markdown_safe(type(exc).__name__)}). Check them, or import fewer at a time; "
            "the terminal running FaceTrack has the details.",
        )
        return
    # file names are data: escaped, so that a file called ":red[x].jpg" shows as just that
    rows = [f":green[:material/check:] {markdown_safe(name)}" for name, _ in report.added]
    rows += [
        f":red[:material/close:] {markdown_safe(name)}: {markdown_safe(why)}" for name, why in report.skipped
    ]
    rows += [
        f":blue[:material/info:] {markdown_safe(name)}: {markdown_safe(note)}" for name, note in report.notes
    ]
    rows += [
        f":gray[:material/content_copy:] {markdown_safe(name)}: already in the project"
        for name, _ in report.already
    ]
    if report.skipped:
        kind = "warning" if report.added or report.already else "error"
    else:
        kind = "success" if report.added or report.labels_added else "info"
    text = report.summary() + "."
    if not report.added:
        text = (
            "Nothing new was added. " if report.already and not report.skipped else "Nothing was added. "
        ) + text
    set_notice(project, "upload", kind, text, rows)


def add_snapshot(project: Project, name: str, data: bytes) -> str | None:
    """Store a photo from ``st.camera_input``; keeps the error as a notice and returns None when unusable."""
    try:
        return project.add_image(data, origin="camera", original_name=name).id
    except EXPECTED_ERRORS as exc:
        set_notice(project, "camera", "error", f"That photo could not be saved: {error_text(exc)}")
        return None


def delete_photo(project: Project, image_id: str) -> None:
    clear_notice()
    try:
        project.delete_image(image_id)
    except (WorkspaceError, OSError) as exc:
        set_notice(project, "gallery", "error", f"Could not delete the photo: {error_text(exc)}")


def take_photo(project: Project, grabber) -> None:  # noqa: ANN001 - ui.webrtc.FrameGrabber
    clear_notice()
    frame = grabber.latest()
    if frame is None:
        set_notice(
            project, "camera", "warning", "No picture from the camera yet: wait a second and try again."
        )
        return
    try:
        save_frame(project, frame)
    except EXPECTED_ERRORS as exc:
        set_notice(project, "camera", "error", f"The photo could not be saved: {error_text(exc)}")
    else:
        st.toast(f"Saved a {frame.shape[1]}x{frame.shape[0]} photo.", icon=":material/check:")


# -- the page --------------------------------------------------------------------------
project = require_project()
header("1. Capture", "Collect photos of your face (and some without it): from the webcam, or upload them.")

# Nothing above the tabs changes between runs (messages are drawn inside them), so the browser
# keeps the open tab and the camera in it across every rerun; switching tabs costs no rerun.
live_tab, upload_tab = st.tabs([WEBCAM_TAB, UPLOAD_TAB])
burst: Burst | None = st.session_state.get("burst")
burst_running = burst is not None and not burst.done

with live_tab:
    grabber = grabber_for(project)
    preview_col, controls_col = st.columns([3, 2], gap="large")
    with preview_col:
        playing = False
        try:
            from streamlit_webrtc import WebRtcMode, webrtc_streamer

            def video_frame_callback(frame):  # runs on streamlit-webrtc's worker thread: no st.* here
                grabber.put(frame.to_ndarray(format="bgr24"))
                return frame

            stream_key = f"capture-{project.name}"
            keep_stream_alive(stream_key)
            ctx = webrtc_streamer(
                key=stream_key,
                mode=WebRtcMode.SENDRECV,
                rtc_configuration=rtc_configuration(),
                media_stream_constraints={
                    "video": {"width": {"ideal": 1280}, "height": {"ideal": 720}},
                    "audio": False,
                },
                video_frame_callback=video_frame_callback,
                translations={"start": "Start camera", "stop": "Stop camera"},
            )
            playing = bool(ctx.state.playing)
        except Exception as exc:  # noqa: BLE001 - the component must never take the page down
            log.warning("the live camera is not available: %s", exc)
            st.warning(
                f"The live camera is not available here ({error_text(exc)}). Use the photo camera below."
            )
        connection_hint()

    with controls_col:
        st.markdown("**Take photos**")
        if not playing:
            st.caption("Press **Start camera** on the left and allow the camera, then take photos here.")
        if st.button("Take photo", type="primary", icon=":material/photo_camera:", disabled=not playing):
            take_photo(project, grabber)
        show_notice(project, "camera")

        st.markdown(
            "**Several photos in a row** (a *burst*): move your head, change expression, step out of view."
        )
        n = st.slider("Photos in the burst", 5, 100, 30, step=5, key="burst_n")
        t = st.slider("Seconds between photos", 0.5, 5.0, 1.0, step=0.5, key="burst_t")
        if not burst_running:
            if st.button("Start burst", icon=":material/burst_mode:", disabled=not playing):
                clear_notice()
                st.session_state["burst"] = new_burst(n, t)
                st.rerun()
        elif st.button("Stop burst", icon=":material/stop_circle:"):
            burst.total = burst.taken
            st.rerun()

        @st.fragment(run_every=0.25 if burst_running else None)
        def burst_panel() -> None:
            b: Burst | None = st.session_state.get("burst")
            if b is None:
                return
            if not b.done:
                try:
                    burst_tick(project, b, grabber)
                except EXPECTED_ERRORS as exc:
                    b.total = b.taken
                    set_notice(project, "camera", "error", f"The burst stopped: {error_text(exc)}")
            st.progress(b.taken / max(1, b.total), text=f"Burst: {b.taken} of {b.total} photos")
            if not b.done and b.missed and grabber.latest() is None:
                st.warning("The camera sends no picture: is it started?")
            if b.done:
                st.success(f"Burst finished: {b.taken} photo(s) saved.")
                if st.session_state.get("burst_rendered_done") != b.burst_id:
                    st.session_state["burst_rendered_done"] = b.burst_id
                    st.rerun()  # once: the page without the burst's timers

        burst_panel()

    st.divider()
    if st.toggle("Camera not connecting? Take a photo here", key="use_camera_input"):
        shot = st.camera_input("Take a photo", key=f"camera_input_{project.name}")
        if shot is not None and st.session_state.get("camera_input_last") != shot.file_id:
            st.session_state["camera_input_last"] = shot.file_id
            clear_notice()
            if add_snapshot(project, shot.name or "camera.jpg", shot.getvalue()):
                st.toast("Photo saved.", icon=":material/check:")

with upload_tab:
    st.write(
        "Upload photos (JPEG, PNG, ...), a **.zip** of photos, or photos you labelled before together with "
        "their label files (the *labelme* **.json** format; zipped, or all selected together). "
        "Labels come in with the photos."
    )
    upload_key = f"uploader_{st.session_state.get('uploader_n', 0)}"
    files = st.file_uploader(
        "Photos, zips or label files (.json)", type=UPLOAD_TYPES, accept_multiple_files=True, key=upload_key
    )
    if st.button("Import", type="primary", icon=":material/upload:", disabled=not files):
        try:
            import_uploads(project, [(f.name, f.getvalue()) for f in files or []])
        finally:  # a new uploader, empty: a bad file must not stay to fail the next import too
            st.session_state["uploader_n"] = st.session_state.get("uploader_n", 0) + 1
        st.rerun()
    show_notice(project, "upload")


# -- gallery: refreshed every second while a burst adds photos -------------------------
@st.fragment(run_every=1.0 if burst_running else None)
def gallery() -> None:
    ids = list(reversed(project.image_ids()))  # newest first, read afresh on every run
    gallery_title, gallery_next = st.columns([3, 1], vertical_alignment="bottom")
    with gallery_title:
        st.subheader(f"Your photos ({len(ids)})", anchor=False)
    with gallery_next:
        if ids:
            page_link("pages/label.py", label="Next: label them", icon=":material/arrow_forward:")
    show_notice(project, "gallery")
    if not ids:
        st.info(
            "No photos yet. Take some with the webcam or upload them above.", icon=":material/photo_library:"
        )
        return
    pages = page_count(len(ids), GALLERY_PER_PAGE)
    page = 1
    if pages > 1:
        page = st.number_input(f"Page (of {pages})", 1, pages, 1, key="gallery_page")
    shown = page_slice(ids, int(page), GALLERY_PER_PAGE)
    cols = st.columns(GALLERY_COLUMNS)
    for i, image_id in enumerate(shown):
        with cols[i % GALLERY_COLUMNS]:
            thumb = thumbnail(project.image_path(image_id), 320)
            if thumb is None:
                st.caption("(photo gone)")
                continue
            st.image(thumb, width="stretch")
            boxes = project.boxes(image_id)
            state = "not labelled" if boxes is None else (f"{len(boxes)} face" if boxes else "no face")
            c1, c2 = st.columns([3, 1], vertical_alignment="center")
            c1.caption(state)
            c2.button(
                "",
                icon=":material/delete:",
                key=f"del_{image_id}",
                help="Delete this photo",
                on_click=delete_photo,
                args=(project, image_id),
            )


st.divider()
gallery()

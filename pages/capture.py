"""Capture: photos from the webcam (single, burst), the simple photo camera, or uploads; the gallery."""

from __future__ import annotations

import streamlit as st

from facetrack.images import ImageError
from facetrack.importer import ImportError_, import_files
from facetrack.labels import LabelError
from facetrack.textsafe import markdown_safe
from facetrack.workspace import Project, WorkspaceError
from ui.common import header, require_project
from ui.images import page_count, page_slice, thumbnail
from ui.webrtc import (
    Burst,
    burst_tick,
    connection_hint,
    grabber_for,
    new_burst,
    rtc_configuration,
    save_frame,
)

GALLERY_PER_PAGE = 24
GALLERY_COLUMNS = 6
UPLOAD_TYPES = ["jpg", "jpeg", "png", "bmp", "webp", "tif", "tiff", "gif", "zip", "json"]


# -- uploads and the simple camera -----------------------------------------------------
def import_uploads(project: Project, files: list[tuple[str, bytes]]) -> None:
    """Import uploaded files and report, file by file, what was added or skipped."""
    try:
        with st.spinner(f"Importing {len(files)} file(s)..."):
            report = import_files(project, files)
    except (ImportError_, ImageError, LabelError, WorkspaceError, OSError) as exc:
        st.session_state["capture_flash"] = ("error", f"Nothing imported: {markdown_safe(str(exc))}", [])
        return
    md = markdown_safe  # file names (and reasons quoting them) are data, not markup
    details = [f":green[:material/check:] {md(name)}" for name, _ in report.added]
    details += [f":red[:material/close:] {md(name)}: {md(why)}" for name, why in report.skipped]
    details += [f":blue[:material/info:] {md(name)}: {md(note)}" for name, note in report.notes]
    kind = "success" if report.added and not report.skipped else ("warning" if report.added else "error")
    text = report.summary() + "."
    if not report.added:
        text = "Nothing was added. " + text
    st.session_state["capture_flash"] = (kind, text, details)


def add_snapshot(project: Project, name: str, data: bytes) -> str | None:
    """Store a photo from ``st.camera_input``; shows the error and returns None when it is unusable."""
    try:
        return project.add_image(data, origin="camera", original_name=name).id
    except (ImageError, WorkspaceError, OSError) as exc:
        st.error(f"That photo could not be saved: {exc}")
        return None


def delete_photo(project: Project, image_id: str) -> None:
    try:
        project.delete_image(image_id)
    except (WorkspaceError, OSError) as exc:
        st.session_state["capture_flash"] = ("error", f"Could not delete the photo: {exc}", [])


def show_flash() -> None:
    flash = st.session_state.pop("capture_flash", None)
    if not flash:
        return
    kind, text, details = flash
    getattr(st, kind)(text)
    if details:
        with st.expander("Details, file by file", expanded=kind != "success"):
            st.markdown("\n".join(f"- {d}" for d in details[:500]))


# -- the page --------------------------------------------------------------------------
project = require_project()
header("1. Capture", "Collect photos of your face (and some without it): from the webcam, or upload them.")
show_flash()

live_tab, upload_tab = st.tabs([":material/videocam: Webcam", ":material/upload: Upload photos"])

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

            ctx = webrtc_streamer(
                key=f"capture-{project.name}",
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
            st.warning(f"The live camera is not available here ({exc}). Use the photo camera below.")
        connection_hint()

    with controls_col:
        st.markdown("**Take photos**")
        if not playing:
            st.caption("Press **Start camera** on the left and allow the camera, then take photos here.")
        if st.button("Take photo", type="primary", icon=":material/photo_camera:", disabled=not playing):
            frame = grabber.latest()
            if frame is None:
                st.warning("No picture from the camera yet: wait a second and try again.")
            else:
                try:
                    save_frame(project, frame)
                    st.toast(f"Saved a {frame.shape[1]}x{frame.shape[0]} photo.", icon=":material/check:")
                except (ImageError, WorkspaceError, OSError) as exc:
                    st.error(f"The photo could not be saved: {exc}")

        st.markdown("**Burst**: many photos in a row. Move your head, change expression, step out of view.")
        n = st.slider("Photos in the burst", 5, 100, 30, step=5, key="burst_n")
        t = st.slider("Seconds between photos", 0.5, 5.0, 1.0, step=0.5, key="burst_t")
        burst: Burst | None = st.session_state.get("burst")
        if burst is None or burst.done:
            if st.button("Start burst", icon=":material/burst_mode:", disabled=not playing):
                st.session_state["burst"] = new_burst(n, t)
                st.rerun()
        else:
            if st.button("Stop burst", icon=":material/stop_circle:"):
                burst.total = burst.taken
                st.rerun()

        burst = st.session_state.get("burst")

        @st.fragment(run_every=0.25 if burst is not None and not burst.done else None)
        def burst_panel() -> None:
            b: Burst | None = st.session_state.get("burst")
            if b is None:
                return
            if not b.done:
                try:
                    burst_tick(project, b, grabber)
                except (ImageError, WorkspaceError, OSError) as exc:
                    b.total = b.taken
                    st.error(f"The burst stopped: {exc}")
            st.progress(b.taken / max(1, b.total), text=f"Burst: {b.taken} of {b.total} photos")
            if not b.done and b.missed and grabber.latest() is None:
                st.warning("The camera sends no picture: is it started?")
            if b.done:
                st.success(f"Burst finished: {b.taken} photo(s) saved.")
                if st.session_state.get("burst_rendered_done") != b.burst_id:
                    st.session_state["burst_rendered_done"] = b.burst_id
                    st.rerun()  # refresh the gallery once

        burst_panel()

    st.divider()
    if st.toggle("Camera not connecting? Take a photo here", key="use_camera_input"):
        shot = st.camera_input("Take a photo", key=f"camera_input_{project.name}")
        if shot is not None and st.session_state.get("camera_input_last") != shot.file_id:
            st.session_state["camera_input_last"] = shot.file_id
            if add_snapshot(project, shot.name or "camera.jpg", shot.getvalue()):
                st.toast("Photo saved.", icon=":material/check:")

with upload_tab:
    st.write(
        "Upload photos (JPEG, PNG, ...), a **.zip** of photos, or a labelled folder: photos with their "
        "**labelme .json** files (zipped, or all selected together). Labels come in with the photos."
    )
    upload_key = f"uploader_{st.session_state.get('uploader_n', 0)}"
    files = st.file_uploader(
        "Photos, zips or labelme JSON", type=UPLOAD_TYPES, accept_multiple_files=True, key=upload_key
    )
    if st.button("Import", type="primary", icon=":material/upload:", disabled=not files):
        import_uploads(project, [(f.name, f.getvalue()) for f in files or []])
        st.session_state["uploader_n"] = st.session_state.get("uploader_n", 0) + 1  # empty the uploader
        st.rerun()

# -- gallery -------------------------------------------------------------------------
st.divider()
ids = list(reversed(project.image_ids()))  # newest first, read afresh on every rerun
gallery_title, gallery_next = st.columns([3, 1], vertical_alignment="bottom")
with gallery_title:
    st.subheader(f"Your photos ({len(ids)})", anchor=False)
with gallery_next:
    if ids:
        st.page_link("pages/label.py", label="Next: label them", icon=":material/arrow_forward:")

if not ids:
    st.info("No photos yet. Take some with the webcam or upload them above.", icon=":material/photo_library:")
else:
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

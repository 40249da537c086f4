"""Label: draw one box around the face in each photo (or say there is none); saved at once."""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from PIL import Image

from facetrack import runs as run_files
from facetrack import suggest
from facetrack.images import ImageError, read_rgb
from facetrack.labels import Box, LabelError
from facetrack.suggest import MTCNN_SOURCE, MtcnnSuggester, RunSuggester, SuggestError, Suggestion
from facetrack.workspace import Project, WorkspaceError
from ui.common import header, require_project, run_label
from ui.images import boxes_from_canvas, canvas_size, rect_object, same_boxes

SAVED_COLOR = "#2ecc71"
SUGGESTION_COLOR = "#ff9800"


# -- suggestions -----------------------------------------------------------------------
@st.cache_resource(show_spinner="Loading the face finder (a few seconds, once)...")
def mtcnn_suggester() -> MtcnnSuggester:
    return suggest.mtcnn_suggester()  # the process-wide one (the Evaluate page's comparison shares it)


@st.cache_resource(show_spinner="Loading your model...", max_entries=3)
def run_suggester(run_dir: str, mtime: float) -> RunSuggester:
    del mtime  # in the key only: a retrained run reloads
    return RunSuggester(run_dir)


def suggestions_for(project: Project, image_id: str, source: str) -> list[Suggestion]:
    """Suggestions for one photo, remembered for this session (per photo and source)."""
    cache: dict = st.session_state.setdefault("label_suggestions", {})
    key = (project.name, image_id, source)
    if key not in cache:
        rgb = read_rgb(project.image_path(image_id))
        if source == MTCNN_SOURCE:
            suggester = mtcnn_suggester()
        else:
            model = Path(source) / run_files.KERAS_FILE
            suggester = run_suggester(source, model.stat().st_mtime if model.exists() else 0.0)
        with st.spinner("Looking for a face..."):
            cache[key] = suggester(rgb)
        if len(cache) > 500:
            cache.pop(next(iter(cache)))
    return cache[key]


# -- actions (all saved at once) -------------------------------------------------------------
def go_to(image_id: str | None) -> None:
    if image_id:
        st.session_state["label_id"] = image_id


def save(project: Project, image_id: str, boxes: list[Box], message: str, advance: bool = False) -> None:
    try:
        project.set_boxes(image_id, boxes)
    except (WorkspaceError, LabelError, OSError) as exc:
        st.session_state["label_flash"] = ("error", f"Not saved: {exc}")
        return
    st.session_state["label_flash"] = ("success", message)
    st.session_state["label_nonce"] = st.session_state.get("label_nonce", 0) + 1
    if advance:
        go_to(project.first_unlabelled())


def clear(project: Project, image_id: str) -> None:
    try:
        project.clear_label(image_id)
    except (WorkspaceError, OSError) as exc:
        st.session_state["label_flash"] = ("error", f"Not cleared: {exc}")
        return
    st.session_state["label_flash"] = ("info", "Label cleared: this photo is not labelled any more.")
    st.session_state["label_nonce"] = st.session_state.get("label_nonce", 0) + 1


# -- the page --------------------------------------------------------------------------------
project = require_project()
header(
    "2. Label",
    "Draw a box from eyebrows to chin around your face in each photo, or mark it as having no face.",
)

ids = project.image_ids()  # read afresh every run: another tab may add or delete photos
if not ids:
    st.info("No photos to label yet.", icon=":material/photo_library:")
    st.page_link("pages/capture.py", label="Take or upload photos first", icon=":material/photo_camera:")
    st.stop()

status = project.status()
st.progress(status.labelled / len(ids), text=f"**{status.labelled} of {len(ids)} labelled**")

current = st.session_state.get("label_id")
if current not in ids:  # first visit, or deleted in another tab
    current = project.first_unlabelled() or ids[0]
    st.session_state["label_id"] = current
index = ids.index(current)

nav = st.columns([1, 1, 1.4, 3], vertical_alignment="center")
nav[0].button(
    "Previous", icon=":material/chevron_left:", disabled=index == 0, on_click=go_to, args=(ids[index - 1],)
)
nav[1].button(
    "Next",
    icon=":material/chevron_right:",
    disabled=index == len(ids) - 1,
    on_click=go_to,
    args=(ids[min(index + 1, len(ids) - 1)],),
)
first_open = project.first_unlabelled()
nav[2].button(
    "First unlabelled",
    icon=":material/skip_next:",
    disabled=first_open is None or first_open == current,
    on_click=go_to,
    args=(first_open,),
)
nav[3].caption(f"Photo {index + 1} of {len(ids)}")

flash = st.session_state.pop("label_flash", None)
if flash:
    getattr(st, flash[0])(flash[1])

try:
    info = project.info(current)
    rgb = read_rgb(project.image_path(current))
except (ImageError, WorkspaceError, OSError) as exc:
    st.error(f"This photo cannot be shown ({exc}). It may have been deleted in another tab.")
    st.stop()

saved = project.boxes(current)  # None: not labelled, []: no face
if saved is None and project.label_path(current).exists():
    st.warning("This photo's label file is damaged: draw the box again to replace it.")

canvas_col, side_col = st.columns([3, 2], gap="large")

with side_col:
    if saved is None:
        st.markdown("**Not labelled yet**")
    elif saved:
        st.markdown(f"**Saved:** {len(saved)} face box" + ("es" if len(saved) > 1 else ""))
    else:
        st.markdown("**Saved:** no face in this photo")

    latest = project.latest_run()
    sources = {"Pretrained face finder (works offline)": MTCNN_SOURCE}
    if latest is not None:
        sources[f"My model ({run_label(latest)})"] = str(latest)
    sources["No suggestions"] = ""
    choice = st.selectbox("Suggest boxes with", list(sources), key="label_source")
    source = sources[choice]

    suggestion: Suggestion | None = None
    if source and saved is None:
        try:
            found = suggestions_for(project, current, source)
        except (SuggestError, ImageError, OSError) as exc:
            st.warning(f"No suggestion: {exc}")
        else:
            if found:
                suggestion = found[0]
                st.markdown(
                    f":orange[**Suggested box**] (orange, {suggestion.score:.0%} sure). "
                    "Accept it, or adjust it on the photo."
                )
            else:
                st.caption("The suggestion found no face here. Draw a box, or mark *No face*.")

    advance = st.toggle("After saving, go to the next unlabelled photo", value=True, key="label_advance")
    if suggestion is not None:
        st.button(
            "Accept suggestion",
            type="primary",
            icon=":material/check:",
            width="stretch",
            on_click=save,
            args=(project, current, [suggestion.box], "Suggested box saved.", advance),
        )
    st.button(
        "No face in this photo",
        icon=":material/hide_image:",
        width="stretch",
        on_click=save,
        args=(project, current, [], "Saved as *no face*.", advance),
        type="secondary" if suggestion is not None else "primary",
    )
    st.button(
        "Clear label",
        icon=":material/backspace:",
        width="stretch",
        disabled=saved is None,
        on_click=clear,
        args=(project, current),
    )
    with st.expander("How to draw", icon=":material/help:"):
        st.markdown(
            "- **Drag** on the photo to draw a box from the eyebrows to the chin, about as wide as tall.\n"
            "- To **move or resize** it, turn on the toolbar's **edit** toggle (the arrow) and drag the "
            "box or its corners.\n"
            "- One face per photo: a new box replaces the old one.\n"
            "- Every change is **saved at once** as a labelme file; there is nothing else to click.\n"
            "- Photos without your face are useful too: mark them *No face*."
        )


def _boxes_key(boxes: list[Box]) -> str:
    return "|".join(",".join(f"{v:.4f}" for v in b.to_list()) for b in boxes) or "none"


with canvas_col:
    cw, ch = canvas_size(info.width, info.height)
    shown = saved if saved else ([suggestion.box] if suggestion is not None else [])
    color = SAVED_COLOR if saved else SUGGESTION_COLOR
    background = Image.fromarray(rgb).resize((cw, ch), Image.Resampling.LANCZOS)
    try:
        from streamlit_drawable_canvas import st_canvas

        result = st_canvas(
            fill_color="rgba(46, 204, 113, 0.08)",
            stroke_width=3,
            stroke_color=SAVED_COLOR,
            background_image=background,
            width=cw,
            height=ch,
            drawing_mode="rect",
            initial_drawing={"objects": [rect_object(b, cw, ch, color) for b in shown]},
            update_streamlit=True,
            # The starting boxes are part of the key: when they change (another suggestion source,
            # a save), the canvas starts afresh instead of returning its old drawing.
            key=f"canvas-{project.name}-{current}-{st.session_state.get('label_nonce', 0)}-{_boxes_key(shown)}",
        )
        drawn = boxes_from_canvas(result.json_data, cw, ch)
    except Exception as exc:  # noqa: BLE001 - the component must never take the page down
        st.image(background)
        st.warning(f"The drawing canvas is not available ({exc}): use the buttons on the right.")
        drawn = None
    st.caption(f"{info.width} x {info.height} pixels" + (f" · burst {info.burst}" if info.burst else ""))

# A drawing different from what the canvas started with is the user's: save it now.
if drawn is not None and not same_boxes(drawn, shown):
    if drawn:
        newest = drawn[-1]  # one face per photo: the newest box wins
        if not same_boxes([newest], saved):
            save(project, current, [newest], "Box saved.")
            st.rerun()
    elif saved:
        clear(project, current)
        st.rerun()

st.divider()
if status.labelled == len(ids):
    st.success("Every photo is labelled.", icon=":material/task_alt:")
    st.page_link("pages/augment.py", label="Next: augment your photos", icon=":material/arrow_forward:")
else:
    st.page_link("pages/augment.py", label="When you are done: augment", icon=":material/arrow_forward:")

"""Label: draw a box around every face in each photo (or say there is none); saved at once."""

from __future__ import annotations

import functools
import logging

import streamlit as st

from facetrack.box_sources import HAND, record_box_source
from facetrack.images import ImageError
from facetrack.labels import Box, LabelError
from facetrack.suggest import MTCNN_SOURCE, SuggestError, Suggestion
from facetrack.workspace import Project, WorkspaceError
from ui.common import header, page_link, require_project, run_label
from ui.images import (
    boxes_from_canvas,
    canvas_background,
    canvas_size,
    merge_drawn,
    rect_object,
    same_boxes,
    thumbnail,
)
from ui.labeling import neighbours, prefetch, suggestions_for

logger = logging.getLogger(__name__)

SAVED_COLOR = "#2ecc71"
SUGGESTION_COLOR = "#ff9800"
STRIP_SIZE = 9  # photos in the strip under the navigation
STRIP_THUMB = 88  # pixels
SIDE_MIN_WIDTH = 260  # the panel beside the canvas; narrower windows put it under the photo
POS_KEY = "label_pos"  # the photo number box's key is POS_KEY-<generation>, see pos_key()


# -- actions (callbacks: they run before the next run draws the page) -------------------------
def go_to(image_id: str | None, from_box: bool = False) -> None:
    if not image_id:
        return
    if not from_box and image_id != st.session_state.get("label_id"):
        # A new number box: the browser may still send the old box's number in a message written
        # before it drew this move (the canvas loading, a second quick click); under the old key
        # that number would read as the user typing it, and undo the move.
        st.session_state["label_pos_gen"] = st.session_state.get("label_pos_gen", 0) + 1
    st.session_state["label_id"] = image_id


def pos_key() -> str:
    """The photo number box's key: it changes whenever the photo changes other than by the box."""
    return f"{POS_KEY}-{st.session_state.get('label_pos_gen', 0)}"


def go_step(project: Project, step: int) -> None:
    """Move ``step`` photos from the current one *now* (two quick clicks move two photos)."""
    ids = project.image_ids()
    if not ids:
        return
    current = st.session_state.get("label_id")
    index = ids.index(current) if current in ids else 0
    go_to(ids[min(max(0, index + step), len(ids) - 1)])


def go_to_position(project: Project) -> None:
    ids = project.image_ids()
    position = st.session_state.get(pos_key())
    if ids and isinstance(position, int | float):
        # the same box stays: quick clicks on its − and + all add up
        go_to(ids[min(max(1, int(position)), len(ids)) - 1], from_box=True)


def go_on(project: Project, advance: bool) -> None:
    """After a photo is done: the first unlabelled photo (when ``advance``), else the next one."""
    following = project.first_unlabelled() if advance else None
    if following:
        go_to(following)
    else:
        go_step(project, +1)


def save(
    project: Project,
    image_id: str,
    boxes: list[Box],
    message: str,
    advance: bool = False,
    source: str | None = HAND,
    restart_canvas: bool = True,
) -> None:
    """Save ``boxes`` for the photo; ``restart_canvas`` (every change not made on the canvas itself)
    draws the canvas afresh with the saved boxes."""
    try:
        project.set_boxes(image_id, boxes)
        record_box_source(project, image_id, source if boxes else None)
    except (WorkspaceError, LabelError, OSError) as exc:
        st.session_state["label_flash"] = ("error", f"Not saved: {exc}")
        return
    st.session_state["label_flash"] = ("success", message)
    if restart_canvas:
        restart_the_canvas()
    if advance:
        go_on(project, True)


def confirm(project: Project, advance: bool) -> None:
    st.session_state["label_flash"] = ("success", "Boxes kept.")
    go_on(project, advance)


def clear(project: Project, image_id: str, restart_canvas: bool = True) -> None:
    try:
        project.clear_label(image_id)
        record_box_source(project, image_id, None)
    except (WorkspaceError, OSError) as exc:
        st.session_state["label_flash"] = ("error", f"Not cleared: {exc}")
        return
    st.session_state["label_flash"] = ("info", "Label cleared: this photo is not labelled any more.")
    if restart_canvas:
        restart_the_canvas()


def restart_the_canvas() -> None:
    """The next run draws a new canvas (a new key) starting from the saved boxes or the suggestions."""
    st.session_state["label_canvas_gen"] = st.session_state.get("label_canvas_gen", 0) + 1


def plural(n: int, word: str, words: str | None = None) -> str:
    return f"{n} {word if n == 1 else (words or word + 's')}"


# -- page parts --------------------------------------------------------------------------------
def navigation(project: Project, ids: list[str], index: int, first_open: str | None) -> None:
    """Previous / Next / First unlabelled, the photo number, and a strip of the neighbouring photos."""
    current = ids[index]
    key = pos_key()
    if st.session_state.get(key) != index + 1:
        st.session_state[key] = index + 1  # allowed: the number box is not drawn yet in this run
    with st.container(horizontal=True, vertical_alignment="bottom", gap="small"):
        st.button(
            "Previous",
            icon=":material/chevron_left:",
            disabled=index == 0,
            on_click=go_step,
            args=(project, -1),
            key="label_prev",
            shortcut="Left",
            help="Previous photo (← key)",
        )
        st.button(
            "Next",
            icon=":material/chevron_right:",
            disabled=index == len(ids) - 1,
            on_click=go_step,
            args=(project, +1),
            key="label_next",
            shortcut="Right",
            help="Next photo (→ key)",
        )
        st.button(
            "First unlabelled",
            icon=":material/skip_next:",
            disabled=first_open is None or first_open == current,
            on_click=go_to,
            args=(first_open,),
            key="label_first_open",
        )
        st.number_input(
            f"Photo number (of {len(ids)})",
            min_value=1,
            max_value=len(ids),
            step=1,
            key=key,
            on_change=go_to_position,
            args=(project,),
            width=170,
            help="Type a number and press Enter to jump to that photo. The − and + buttons step one "
            "photo per click, and quick clicks all count.",
        )


def photo_strip(project: Project, ids: list[str], index: int) -> None:
    """The neighbouring photos, each a click away, with what is saved for each."""
    with st.container(horizontal=True, gap="small", key="label_strip"):
        for k in neighbours(ids, index, STRIP_SIZE):
            image_id = ids[k]
            boxes = project.boxes(image_id)
            icon = (
                ":material/crop_free:"
                if boxes is None
                else (":material/face:" if boxes else ":material/hide_image:")
            )
            with st.container(width=STRIP_THUMB, gap=None):
                data = thumbnail(project.image_path(image_id), side=STRIP_THUMB * 2)
                if data is not None:
                    st.image(data, width=STRIP_THUMB)
                st.button(
                    str(k + 1),
                    icon=icon,
                    key=f"label_strip_{image_id}",
                    type="primary" if k == index else "secondary",
                    on_click=go_to,
                    args=(image_id,),
                    width="stretch",
                    help="Not labelled yet"
                    if boxes is None
                    else (plural(len(boxes), "face box", "face boxes") if boxes else "No face"),
                )


def suggestion_panel(project: Project, current: str, saved: list[Box] | None) -> tuple[str, list[Suggestion]]:
    """The suggestion source picker and, for a photo not labelled yet, its suggestions."""
    latest = project.latest_run()
    sources = {"Ready-made face finder (MTCNN, works offline)": MTCNN_SOURCE}
    if latest is not None:
        sources[f"My model ({run_label(latest)})"] = str(latest)
    sources["No suggestions"] = ""
    choice = st.selectbox("Suggest boxes with", list(sources), key="label_source")
    source = sources[choice]
    if not source or saved is not None:
        return source, []
    try:
        found = suggestions_for(project, current, source)
    except (SuggestError, ImageError, OSError) as exc:
        st.warning(f"No suggestion: {exc}")
        return source, []
    if found:
        st.markdown(
            f":orange[**Suggested: {plural(len(found), 'face')}**] (orange boxes, "
            + ", ".join(f"{s.score:.0%}" for s in found)
            + " sure). Accept, or change them on the photo."
        )
    else:
        st.caption("The suggestion found no face here. Draw a box, or mark *No face*.")
    return source, found


def action_buttons(
    project: Project,
    current: str,
    saved: list[Box] | None,
    found: list[Suggestion],
    source: str,
    advance: bool,
) -> None:
    if found and saved is None:
        st.button(
            "Accept the suggested box" if len(found) == 1 else f"Accept all {len(found)} suggested boxes",
            type="primary",
            icon=":material/check:",
            width="stretch",
            on_click=save,
            args=(project, current, [s.box for s in found], "Suggested boxes saved.", advance, source),
            key="label_accept",
            shortcut="A",
            help="Save every orange box as a face (A key)",
        )
    if saved:
        st.button(
            "Boxes are right: next photo",
            type="primary",
            icon=":material/done_all:",
            width="stretch",
            on_click=confirm,
            args=(project, advance),
            key="label_confirm",
            shortcut="A",
            help="The saved boxes stay; go on (A key)",
        )
        with st.popover("No face in this photo…", icon=":material/hide_image:", width="stretch"):
            st.caption(f"This removes the {plural(len(saved), 'saved box', 'saved boxes')}.")
            st.button(
                "Yes: remove the boxes, no face here",
                icon=":material/hide_image:",
                on_click=save,
                args=(project, current, [], "Saved as *no face*.", advance),
                key="label_no_face_confirm",
            )
    else:
        st.button(
            "No face in this photo",
            icon=":material/hide_image:",
            width="stretch",
            on_click=save,
            args=(project, current, [], "Saved as *no face*.", advance),
            key="label_no_face",
            shortcut="N",
            help="Save this photo as having no face (N key)",
        )
    st.button(
        "Clear label",
        icon=":material/backspace:",
        width="stretch",
        disabled=saved is None,
        on_click=clear,
        args=(project, current),
        key="label_clear",
    )


HOW_TO_DRAW = """\
- **Draw**: press the mouse on one corner of a face and drag to the opposite corner: a box
  from the eyebrows to the chin, about as wide as tall. The rectangle tool is always on.
- **Several faces**: draw one box per face; every box is saved. A box drawn over an existing one
  replaces it.
- **Move, resize or delete a box**: point at the photo; a small toolbar appears above its top
  right corner. Click the **pencil** (Edit), click a box, then drag it, drag its corners, or
  click **×** (Delete selected). Click the pencil again to draw new boxes.
- The curved arrows undo and redo; the bin empties the photo.
- Every change is **saved at once**; there is nothing else to click.
- Photos without a face are useful too: mark them *No face*.
- Keys: **←** / **→** previous / next photo, **A** accept the boxes, **N** no face.
"""


def canvas_start(key: str, shown: list[Box], color: str) -> tuple[list[Box], str]:
    """The boxes (and their colour) the canvas ``key`` started with: ``shown`` when it is new.

    A drawing saved from the canvas keeps the canvas as it is (same key, same start): redrawing it
    would swallow a box the user is already drawing next.
    """
    start = st.session_state.get("label_canvas_start")
    if not start or start[0] != key:
        start = (key, list(shown), color)
        st.session_state["label_canvas_start"] = start
    return start[1], start[2]


def show_canvas(
    project: Project, current: str, size: tuple[int, int], shown: list[Box], color: str, source: str
) -> tuple[list[Box] | None, list[Box]]:
    """The photo on the drawing canvas; returns the canvas's boxes (None: nothing) and its starting boxes."""
    cw, ch = size
    key = f"canvas-{project.name}-{current}-{source or 'none'}-{st.session_state.get('label_canvas_gen', 0)}"
    start, start_color = canvas_start(key, shown, color)
    background = canvas_background(project.image_path(current), cw, ch)
    if background is None:
        st.error("This photo cannot be shown. It may have been deleted in another tab.")
        return None, start
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
            initial_drawing={"objects": [rect_object(b, cw, ch, start_color) for b in start]},
            update_streamlit=True,
            on_change=functools.partial(on_canvas_change, project, current, key, cw, ch, start),
            key=key,
        )
        return boxes_from_canvas(result.json_data, cw, ch), start
    except Exception as exc:  # noqa: BLE001 - the component must never take the page down
        st.image(background)
        st.warning(f"The drawing canvas is not available ({exc}): use the buttons beside it.")
        return None, start


def apply_drawing(
    project: Project, current: str, drawn: list[Box] | None, start: list[Box], saved: list[Box] | None
) -> bool:
    """Save what the canvas holds when it differs from what it started with; True when something changed.

    Every box is saved; a box drawn over a starting box replaces it (see ``merge_drawn``), and
    then the canvas is drawn afresh so that it shows what is saved.
    """
    if drawn is None or same_boxes(drawn, start):
        return False
    boxes = merge_drawn(drawn, start)
    if boxes:
        if same_boxes(boxes, saved):
            return False
        message = f"Saved: {plural(len(boxes), 'face box', 'face boxes')}."
        # drawn afresh when a box was dropped, or when orange suggestions on it are now saved (green)
        restart = len(boxes) != len(drawn) or (saved is None and bool(start))
        save(project, current, boxes, message, restart_canvas=restart)
        return True
    if saved:
        clear(project, current, restart_canvas=False)
        return True
    return False


def on_canvas_change(project: Project, current: str, key: str, cw: int, ch: int, start: list[Box]) -> None:
    """The canvas sent a new drawing: save it before the page is drawn again (one run, not two)."""
    try:
        raw = st.session_state[key]["drawing"]["raw"]
    except (KeyError, TypeError):
        logger.info("the canvas %s sent no drawing", key)
        return
    # the saved boxes afresh: the canvas may send the same drawing twice (save it once)
    apply_drawing(project, current, boxes_from_canvas(raw, cw, ch), start, project.boxes(current))


# -- the page --------------------------------------------------------------------------------
project = require_project()
header(
    "2. Label",
    "Draw a box from eyebrows to chin around every face in each photo, or mark it as having no face.",
)

ids = project.image_ids()  # read afresh every run: another tab may add or delete photos
if not ids:
    st.info("No photos to label yet.", icon=":material/photo_library:")
    page_link("pages/capture.py", label="Take or upload photos first", icon=":material/photo_camera:")
    st.stop()

labelled = sum(1 for i in ids if project.label_path(i).exists())
first_open = next((i for i in ids if not project.label_path(i).exists()), None)
st.progress(labelled / len(ids), text=f"**{labelled} of {len(ids)} labelled**")

current = st.session_state.get("label_id")
if current not in ids:  # first visit, or deleted in another tab
    current = first_open or ids[0]
    go_to(current)  # a new number box too
index = ids.index(current)
navigation(project, ids, index, first_open)

# Messages go in a slot that is always there: an element appearing above the canvas would move it
# in the page's element tree, and the browser would rebuild it, losing a box being drawn.
messages = st.container()
flash = st.session_state.pop("label_flash", None)
if flash:
    getattr(messages, flash[0])(flash[1])

try:
    info = project.info(current)
except (ImageError, WorkspaceError, OSError) as exc:
    st.error(f"This photo cannot be shown ({exc}). It may have been deleted in another tab.")
    st.stop()

saved = project.boxes(current)  # None: not labelled, []: no face
if saved is None and project.label_path(current).exists():
    messages.warning("This photo's label file is damaged: draw the boxes again to replace it.")

cw, ch = canvas_size(info.width, info.height)
# The canvas gets exactly its own width; the panel takes the rest, or goes under the photo.
with st.container(horizontal=True, gap="large", key="label_work"):
    canvas_box = st.container(width=cw, key="label_canvas")
    side = st.container(width="stretch", key="label_side")

with side:
    if saved is None:
        st.markdown("**Not labelled yet**")
    elif saved:
        st.markdown(f"**Saved: {plural(len(saved), 'face box', 'face boxes')}**")
    else:
        st.markdown("**Saved:** no face in this photo")
    source, found = suggestion_panel(project, current, saved)
    advance = st.toggle("After saving, go to the next unlabelled photo", value=True, key="label_advance")
    action_buttons(project, current, saved, found, source, advance)
    with st.expander("How to draw", icon=":material/help:"):
        st.markdown(HOW_TO_DRAW)

shown = saved if saved else [s.box for s in found]
with canvas_box:
    # Room above the photo: the canvas toolbar (undo, pencil, delete) appears there, over nothing else.
    st.caption("Drag on the photo to draw a box around each face.", width=max(160, cw - 170))
    drawn, start = show_canvas(
        project, current, (cw, ch), shown, SAVED_COLOR if saved else SUGGESTION_COLOR, source
    )
    st.caption(
        f"{info.width} x {info.height} pixels · {plural(len(drawn if drawn is not None else shown), 'box', 'boxes')}"
        " on the photo" + (f" · part of a burst (photos taken in a row): {info.burst}" if info.burst else "")
    )

photo_strip(project, ids, index)

# Fetch the suggestions of the next photos not labelled yet while the user looks at this one.
upcoming = [ids[k] for k in range(index + 1, min(index + 3, len(ids)))]
prefetch(project, [i for i in upcoming if not project.label_path(i).exists()], source)

# Normally saved by the canvas's callback already; this catches a drawing that arrived otherwise.
if apply_drawing(project, current, drawn, start, saved):
    st.rerun()

st.divider()
if labelled == len(ids):
    st.success("Every photo is labelled.", icon=":material/task_alt:")
    page_link("pages/augment.py", label="Next: augment your photos", icon=":material/arrow_forward:")
else:
    page_link("pages/augment.py", label="When you are done: augment", icon=":material/arrow_forward:")

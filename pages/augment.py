"""Augment: turn each labelled photo into many varied training images (crops, flips, light, blur)."""

from __future__ import annotations

from dataclasses import fields

import streamlit as st

from facetrack.augment import AugmentSettings, preview
from facetrack.data import AUGMENTED_SETTINGS_FILE
from facetrack.fileio import read_json
from facetrack.images import ImageError, read_rgb
from facetrack.jobs import JobError, start_augment
from facetrack.limits import AUGMENT_LIMITS as LIMITS
from facetrack.progress import RateEstimate, format_time_left
from facetrack.tasks import augment_state, request_augment_stop
from facetrack.workspace import Project, WorkspaceError
from ui.common import header, page_link, require_project, training_set_counts, training_set_stale
from ui.images import BOX_RGB, draw_boxes

PREVIEW_COUNT = 8
DEFAULTS = AugmentSettings()


def remembered_settings(project: Project) -> AugmentSettings:
    """The settings of the last generation (``augmented/settings.json``), else the defaults."""
    try:
        doc = read_json(project.augmented_dir / AUGMENTED_SETTINGS_FILE).get("settings") or {}
        return AugmentSettings.from_dict(doc)
    except (FileNotFoundError, ValueError, TypeError, AttributeError):
        return AugmentSettings()


def widget_key(name: str) -> str:
    return f"aug_{name}"


def load_into_widgets(settings: AugmentSettings) -> None:
    for f in fields(AugmentSettings):
        st.session_state[widget_key(f.name)] = getattr(settings, f.name)


def settings_from_widgets() -> AugmentSettings:
    """The settings the sliders show. Raises ValueError with the reason when they do not fit."""
    doc = {f.name: st.session_state[widget_key(f.name)] for f in fields(AugmentSettings)}
    doc["output_height"] = round(doc["output_size"] * 3 / 4)  # 4:3, as webcam frames
    return AugmentSettings.from_dict(doc)


def preview_caption(kept: int, labelled: int) -> str:
    """What a preview copy holds: its faces, or why it has none."""
    if not kept:
        return "no face (cropped out)" if labelled else "no face"
    text = "1 face" if kept == 1 else f"{kept} faces"
    return text + (f" ({labelled - kept} cropped out)" if kept < labelled else "")


# -- the page ----------------------------------------------------------------------------
project = require_project()
header(
    "3. Augment",
    "Make many varied copies of each labelled photo (crops, mirror images, light changes, blur) "
    "so the model learns your face, not one picture.",
)

labelled = project.labelled_ids()
faces = [i for i in labelled if project.boxes(i)]
if not labelled:
    st.info("Label some photos first: augmentation works on labelled photos.", icon=":material/crop_free:")
    page_link("pages/label.py", label="Go to Label", icon=":material/arrow_forward:")
    st.stop()

# Load the remembered settings into the sliders once per project (and on "Reset").
if st.session_state.get("aug_loaded_for") != project.name:
    load_into_widgets(remembered_settings(project))
    st.session_state["aug_loaded_for"] = project.name

controls, previews = st.columns([2, 3], gap="large")

with controls:
    st.subheader("Settings", anchor=False)
    with st.container(border=True):
        st.slider(
            "Copies per photo",
            *LIMITS["copies_per_image"],
            key=widget_key("copies_per_image"),
            help="How many augmented images each training photo becomes (the tutorial used 60).",
        )
        st.slider(
            "Copies per photo with several faces (0: the same)",
            *LIMITS["multi_face_copies"],
            key=widget_key("multi_face_copies"),
            help="Group photos are few but hold many faces: more copies of them teach several faces per image.",
        )
        st.select_slider(
            "Output size (pixels)",
            options=sorted(
                {96, 120, 128, 160, 192, 224, 256, 320, st.session_state[widget_key("output_size")]}
            ),
            key=widget_key("output_size"),
            help="Width of the images written (their height is 3/4 of it, as a webcam frame). "
            "Keep it at least the model's input width (160).",
        )
    with st.expander("Crop and rotate", expanded=True, icon=":material/crop:"):
        st.slider(
            "Crop probability", *LIMITS["crop_probability"], step=0.05, key=widget_key("crop_probability")
        )
        st.slider(
            "Smallest crop (share of the photo)",
            *LIMITS["crop_scale_min"],
            step=0.05,
            key=widget_key("crop_scale_min"),
            help="Small crops zoom in; a crop that cuts most of the face off becomes a 'no face' example.",
        )
        st.slider(
            "Zoom out (share)",
            *LIMITS["zoom_out"],
            step=0.05,
            key=widget_key("zoom_out"),
            help="Shrinks the photo on a grey border, so the model also learns small, far-away faces.",
        )
        st.slider(
            "Zoom-out probability",
            *LIMITS["zoom_out_probability"],
            step=0.05,
            key=widget_key("zoom_out_probability"),
        )
        st.slider("Rotation (± degrees)", *LIMITS["rotation"], key=widget_key("rotation"))
        st.slider(
            "Rotation probability",
            *LIMITS["rotation_probability"],
            step=0.05,
            key=widget_key("rotation_probability"),
        )
        st.slider(
            "Minimum visible face",
            *LIMITS["min_visibility"],
            step=0.05,
            key=widget_key("min_visibility"),
            help="A face box keeping less than this share of its area inside a crop is dropped.",
        )
    with st.expander("Flip", icon=":material/flip:"):
        st.toggle("Mirror left-right", key=widget_key("horizontal_flip"))
        st.toggle(
            "Upside down",
            key=widget_key("vertical_flip"),
            help="Faces are rarely upside down: off by default.",
        )
    with st.expander("Light and colour", icon=":material/palette:"):
        st.slider(
            "Colour change probability",
            *LIMITS["color_probability"],
            step=0.05,
            key=widget_key("color_probability"),
        )
        st.slider("Brightness (±)", *LIMITS["brightness"], step=0.05, key=widget_key("brightness"))
        st.slider("Contrast (±)", *LIMITS["contrast"], step=0.05, key=widget_key("contrast"))
        st.slider(
            "Mid-tone lightness (gamma, ± percent)",
            *LIMITS["gamma"],
            step=5,
            key=widget_key("gamma"),
            help="Makes the middle greys lighter or darker while pure black and white stay: "
            "like a face in a dim or a bright room. Photographers call it gamma.",
        )
        st.slider(
            "Colour tint (RGB shift, ± levels)",
            *LIMITS["rgb_shift"],
            step=5,
            key=widget_key("rgb_shift"),
            help="Adds a little red, green or blue to the whole picture, like warm lamp light "
            "or a cool window. Each colour moves by up to this many of its 255 levels.",
        )
        st.slider(
            "Blur probability", *LIMITS["blur_probability"], step=0.05, key=widget_key("blur_probability")
        )
        st.slider(
            "Grayscale probability",
            *LIMITS["grayscale_probability"],
            step=0.05,
            key=widget_key("grayscale_probability"),
            help="Some copies in black and white, so the model cannot use colour alone to decide "
            "(photos without a face are sometimes grayscale, faces too).",
        )
    with st.expander("Advanced", icon=":material/tune:"):
        st.number_input(
            "Dice number (random seed)",
            *LIMITS["seed"],
            step=1,
            key=widget_key("seed"),
            help="The copies are made by chance; the same number gives the same copies again, "
            "a different number gives different ones. Programmers call it the random seed.",
        )
        # A callback runs before the next run draws the widgets: only then may their values change.
        st.button(
            "Reset to defaults",
            icon=":material/restart_alt:",
            key="aug_reset",
            on_click=load_into_widgets,
            args=(AugmentSettings(),),
        )

try:
    settings = settings_from_widgets()
except (ValueError, TypeError) as exc:
    settings = None
    with controls:
        st.error(f"These settings cannot be used: {exc}")

with previews:
    st.subheader("Preview", anchor=False)
    choices = faces or labelled
    pick_col, shuffle_col = st.columns([3, 1], vertical_alignment="bottom")
    with pick_col:
        photo = st.selectbox(
            "Photo",
            choices,
            format_func=lambda i: f"Photo {labelled.index(i) + 1}" + ("" if i in faces else " (no face)"),
            key="aug_preview_photo",
        )
    with shuffle_col:
        if st.button("Shuffle", icon=":material/shuffle:", width="stretch"):
            st.session_state["aug_preview_seed"] = st.session_state.get("aug_preview_seed", 0) + 1
    if settings is not None and photo is not None:
        try:
            rgb = read_rgb(project.image_path(photo))
            boxes = project.boxes(photo) or []
            copies = preview(
                rgb,
                boxes,
                settings,
                PREVIEW_COUNT,
                seed=settings.seed + st.session_state.get("aug_preview_seed", 0),
            )
        except (ImageError, WorkspaceError, OSError, ValueError) as exc:
            st.error(f"No preview for this photo: {exc}")
        else:
            grid = st.columns(4)
            for k, (img, kept) in enumerate(copies):
                with grid[k % 4]:
                    st.image(draw_boxes(img, kept, BOX_RGB), width="stretch")
                    st.caption(preview_caption(len(kept), len(boxes)))


# -- generate ----------------------------------------------------------------------
@st.fragment(run_every=1)
def generation_panel() -> None:
    state = augment_state(project)
    running = state.get("state") == "running"
    done, total = int(state.get("done") or 0), int(state.get("total") or 0)
    previous = st.session_state.get("aug_prev_state")
    st.session_state["aug_prev_state"] = state.get("state")
    if running:
        left = st.session_state.setdefault("aug_eta", RateEstimate()).update(done, total)
        eta = f" · {format_time_left(left)}" if total > done else ""
        st.progress(done / total if total else 0.0, text=f"Generating: {done} of {total} photos{eta}")
        if st.button("Stop", icon=":material/stop_circle:", key="aug_stop"):
            request_augment_stop(project)
            st.toast("Stopping after the current photos...")
        return
    st.session_state.pop("aug_eta", None)
    if previous == "running":
        st.rerun()  # finished: refresh the counts below
    kind = state.get("state")
    if kind == "finished":
        st.success(f"Done: {total} photo(s) augmented.", icon=":material/check_circle:")
        if state.get("failed"):
            with st.expander(f"{len(state['failed'])} photo(s) could not be augmented"):
                st.markdown("\n".join(f"- {i}: {why}" for i, why in state["failed"]))
    elif kind == "stopped":
        st.warning(f"Stopped after {done} of {total} photos. Press Generate to continue where it stopped.")
    elif kind in ("failed", "interrupted"):
        message = state.get("message") or state.get("error") or "the generator stopped unexpectedly"
        st.error(f"Generation {kind}: {message}. Press Generate to try again (finished photos are kept).")
    if st.button(
        "Generate", type="primary", icon=":material/auto_awesome:", disabled=settings is None, key="aug_go"
    ):
        try:
            start_augment(project, settings.to_dict())
        except (JobError, OSError, ValueError) as exc:
            st.error(f"Could not start: {exc}")
        else:
            st.session_state["aug_prev_state"] = "running"
            st.rerun()


with previews:
    st.divider()
    st.subheader("Generate the training set", anchor=False)
    generation_panel()

    try:
        n = training_set_counts(project)
        stale = training_set_stale(project)
    except (OSError, ValueError) as exc:
        st.error(f"Could not read the generated set: {exc}")
        n, stale = {}, False

    c1, c2, c3 = st.columns(3)
    c1.metric("Training images", n.get("train", 0), help="augmented copies of the train split")
    c1.caption(f"{n.get('train_faces', 0)} with a face")
    c2.metric("Validation images", n.get("val", 0))
    c2.caption(f"{n.get('val_faces', 0)} with a face")
    c3.metric("Test images", n.get("test", 0))
    c3.caption(f"{n.get('test_faces', 0)} with a face")

    current = remembered_settings(project)
    if n.get("train", 0) == 0:
        st.info("Nothing generated yet: press **Generate**.", icon=":material/info:")
    elif stale:
        st.warning("Some labelled photos are not in the generated set yet: press **Generate** again.")
    elif settings is not None and settings.key() != current.key():
        st.info("The sliders differ from the settings of the current set: press **Generate** to apply them.")
    else:
        st.success("The training set is up to date.", icon=":material/task_alt:")
        page_link("pages/train.py", label="Next: train your model", icon=":material/arrow_forward:")
    if n.get("train", 0) and stale:
        page_link("pages/train.py", label="Train anyway", icon=":material/arrow_forward:")

"""Home: create or open a project, see where you are, and go to the next step."""

from __future__ import annotations

import streamlit as st

from facetrack import jobs
from facetrack.workspace import WorkspaceError, create_project, list_projects, workspace_root
from ui.common import current_project, header, page_link, select_project, training_set_stale

header(
    "FaceTrack",
    "Build your own face detector in six steps: take photos, draw a box around your face, "
    "augment, train, check, and watch it find you live.",
)

# -- project: create or open ---------------------------------------------------
project = current_project()
names = list_projects(workspace_root())

new_col, open_col = st.columns(2, gap="large")
with new_col, st.form("create_project", clear_on_submit=True, border=True):
    st.subheader("New project", anchor=False)
    new_name = st.text_input("Project name", placeholder="e.g. my-face", max_chars=60)
    if st.form_submit_button("Create project", type="primary", icon=":material/add:"):
        if not new_name.strip():
            st.error("Give the project a name first.")
        else:
            try:
                created = create_project(new_name, workspace_root())
            except (WorkspaceError, OSError) as exc:
                st.error(f"Could not create the project: {exc}")
            else:
                select_project(created.name)
                st.session_state["home_flash"] = f"Project **{created.name}** is ready."
                st.rerun()
with open_col, st.container(border=True):
    st.subheader("Open a project", anchor=False)
    if names:
        index = names.index(project.name) if project and project.name in names else None
        # no key: the widget follows the current project when the sidebar changes it
        picked = st.selectbox("Your projects", names, index=index, placeholder="Pick a project")
        if picked and (project is None or picked != project.name):
            select_project(picked)
            st.rerun()
    else:
        st.caption("No project yet: create your first one on the left.")

flash = st.session_state.pop("home_flash", None)
if flash:
    st.success(flash, icon=":material/check_circle:")

if project is None:
    st.info("Create or open a project to start.", icon=":material/arrow_upward:")
    st.stop()

# -- checklist -------------------------------------------------------------------
try:
    status = project.status()
except OSError as exc:
    st.error(f"Could not read the project: {exc}")
    st.stop()

stale = False
if status.augmented:
    try:
        stale = training_set_stale(project)
    except (OSError, ValueError):  # a status hint must never break the home page
        stale = True

RECOMMENDED_PHOTOS = 60
steps = [
    (
        "pages/capture.py",
        "1. Capture",
        status.images >= 1,
        f"{status.images} photo(s)"
        + (
            ""
            if status.images >= RECOMMENDED_PHOTOS
            else f" (aim for about {RECOMMENDED_PHOTOS}, some without your face)"
        ),
    ),
    (
        "pages/label.py",
        "2. Label",
        status.images > 0 and status.unlabelled == 0,
        f"{status.labelled} of {status.images} labelled: {status.faces} with a face, {status.no_face} with no face",
    ),
    (
        "pages/augment.py",
        "3. Augment",
        status.augmented > 0 and not stale,
        f"{status.augmented} training image(s) generated"
        + (" (out of date: generate again)" if stale else ""),
    ),
    ("pages/train.py", "4. Train", status.runs > 0, f"{status.runs} training run(s)"),
    ("pages/evaluate.py", "5. Evaluate", status.runs > 0, "check the model on photos it never saw"),
    ("pages/live.py", "6. Live", False, "watch your detector on the webcam"),
]


def next_step() -> tuple[str, str, str]:
    """(page, label, why) of the step to do now."""
    if status.images == 0:
        return "pages/capture.py", "Take your first photos", "Start by taking or uploading photos."
    if status.unlabelled:
        return "pages/label.py", "Label your photos", f"{status.unlabelled} photo(s) still need a label."
    if status.faces == 0:
        return "pages/capture.py", "Add photos with your face", "No labelled photo has a face yet."
    if status.augmented == 0 or stale:
        return (
            "pages/augment.py",
            "Generate the training set",
            "Make many varied copies of your labelled photos.",
        )
    if status.runs == 0:
        return "pages/train.py", "Train your model", "Everything is ready for a first training."
    return (
        "pages/live.py",
        "Try it live",
        "Your model is trained: see it on the webcam (or evaluate it first).",
    )


st.subheader(f"Project: {project.name}", anchor=False)
with st.container(border=True):
    for page, label, done, detail in steps:
        icon = ":material/check_circle:" if done else ":material/radio_button_unchecked:"
        c1, c2 = st.columns([1, 2], vertical_alignment="center")
        with c1:
            page_link(page, label=label, icon=icon)
        with c2:
            st.markdown(f"**{detail}**" if done else detail)

page, label, why = next_step()
with st.container(horizontal=True, vertical_alignment="center"):
    if st.button(label, type="primary", icon=":material/arrow_forward:", key="next_step"):
        st.switch_page(page)
    st.markdown(f"**Next:** {why}")

# -- privacy and deleting ----------------------------------------------------------
st.divider()
st.caption(
    ":material/lock: **Privacy:** your photos, labels and models stay in the folder "
    f"`{project.path}` on this computer. FaceTrack sends nothing anywhere; the only download "
    "is a one-time download of a ready-made image model, if you choose it on the Train page "
    "(the ImageNet weights of the VGG16 backbone, about 58 MB), and to pick its default the Train "
    "page checks whether that download site can be reached (nothing is sent; "
    "`FACETRACK_OFFLINE=1` turns this off). The compact model needs none."
)

with st.expander("Delete photos or the project", icon=":material/delete:"):
    st.write(
        f"**Delete all my photos** removes the {status.images} photo(s), their labels and the "
        "generated training set, and keeps the project and its trained models."
    )
    sure_photos = st.checkbox("Yes, delete all my photos for good", key="confirm_delete_photos")
    if st.button(
        "Delete all my photos",
        disabled=not sure_photos or status.images == 0,
        icon=":material/delete_sweep:",
        key="delete_photos",
    ):
        try:
            n = jobs.delete_all_photos(project)  # stops the jobs first
        except OSError as exc:
            st.error(f"Could not delete the photos: {exc}")
        else:
            st.cache_data.clear()  # no thumbnail of a deleted photo stays in memory
            st.session_state.pop("confirm_delete_photos", None)
            st.session_state["home_flash"] = f"Deleted {n} photo(s) and their labels."
            st.rerun()
    st.divider()
    st.write(f"**Delete project** removes the whole folder of **{project.name}**: photos, labels and models.")
    sure_project = st.checkbox(
        f"Yes, delete the project {project.name} for good", key="confirm_delete_project"
    )
    if st.button(
        "Delete project", disabled=not sure_project, icon=":material/delete_forever:", key="delete_project"
    ):
        try:
            jobs.delete_project(project)  # stops the jobs first
        except OSError as exc:
            st.error(f"Could not delete the project: {exc}")
        else:
            st.cache_data.clear()  # no thumbnail of a deleted photo stays in memory
            if project.path.exists():
                st.error("Some files could not be deleted (are they open in another program?).")
            else:
                select_project(None)
                st.session_state.pop("confirm_delete_project", None)
                st.session_state["home_flash"] = f"Deleted the project {project.name}."
                st.rerun()

"""FaceTrack: build your own face detector in the browser.

Run with ``streamlit run app.py``. This file is only the router: page config,
the optional password, the sidebar project picker and the navigation.
"""

import ui  # noqa: F401, I001  (first: imports aiortc before anything loads TensorFlow)
import streamlit as st

from ui.common import password_ok, require_password, sidebar_project_picker
from ui.webrtc import count_full_run

# An emoji icon is drawn by the browser itself: a ":material/...:" icon would be
# fetched from fonts.gstatic.com, and FaceTrack asks no other host for anything.
st.set_page_config(page_title="FaceTrack", page_icon="🙂", layout="wide")

pages = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/capture.py", title="1. Capture", icon=":material/photo_camera:"),
    st.Page("pages/label.py", title="2. Label", icon=":material/crop_free:"),
    st.Page("pages/augment.py", title="3. Augment", icon=":material/auto_awesome:"),
    st.Page("pages/train.py", title="4. Train", icon=":material/model_training:"),
    st.Page("pages/evaluate.py", title="5. Evaluate", icon=":material/fact_check:"),
    st.Page("pages/live.py", title="6. Live", icon=":material/videocam:"),
]
# The navigation is declared on every run (so deep links resolve), hidden until the password is given.
nav = st.navigation(pages, position="sidebar" if password_ok() else "hidden")
count_full_run(nav.url_path)  # which page this run draws: a camera survives reruns of its own page
require_password()
sidebar_project_picker()  # also puts the current project back in the URL after a page change
nav.run()

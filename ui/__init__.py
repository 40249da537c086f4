"""Streamlit helpers shared by the pages (the only place besides pages/ and app.py that imports streamlit).

Import order matters: aiortc (under streamlit-webrtc) must be imported before
TensorFlow. With TensorFlow 2.21 loaded first, importing pylibsrtp 1.0 (an
aiortc dependency) after av/cryptography crashes the process with a
segmentation fault (reproduced here: ``import tensorflow; import aiortc``).
Importing it first is harmless, so every page gets it through this package.
"""

import sys
from pathlib import Path

import aiortc  # noqa: F401  (must come before tensorflow; see above)


def use_app_navigation() -> None:
    """Make every visit go through ``app.py`` (router, password, project picker).

    Streamlit 1.67 runs a file of the ``pages/`` folder directly, in its old
    multipage mode, when a browser's first visit to a fresh server is a deep
    link such as ``/train``: ``app.py`` (and so the password) would be skipped
    until some session has called ``st.navigation``. The flag that selects that
    mode is switched off here and the run restarted, so the page is then run
    through ``app.py``'s navigation (the URL, hence the page, is kept).
    """
    import streamlit as st
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx

    ctx = get_script_run_ctx(suppress_warning=True)
    if ctx is None or Path(ctx.main_script_path).name != "app.py" or "streamlit.testing.v1" in sys.modules:
        # Not served by `streamlit run app.py`: AppTest resets that flag before every run and
        # runs the page it is switched to on its own, by design.
        return
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


use_app_navigation()

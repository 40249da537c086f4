"""Shared page pieces: the current project, the password gate, headers and friendly errors.

The current project lives in the ``?project=`` query parameter of the URL and
in ``st.session_state["project"]``. The URL wins (a reload, a bookmark or a
deep link such as ``/train?project=my-face`` opens that project); the session
copy fills the URL in again after a page change, since Streamlit's navigation
drops query parameters. Pages call :func:`current_project` and stop with a
hint when there is none.
"""

from __future__ import annotations

import errno
import functools
import hmac
import os
import re
from pathlib import Path

import streamlit as st

from facetrack.data import is_stale, sample_counts
from facetrack.runs import RunState, run_state
from facetrack.textsafe import markdown_safe
from facetrack.workspace import Project, WorkspaceError, list_projects, open_project, workspace_root
from ui import use_app_navigation

PASSWORD_ENV = "FACETRACK_PASSWORD"
PROJECT_PARAM = "project"  # the query parameter (and session_state key) of the current project
SIDEBAR_PICKER_KEY = "sidebar_project"


def training_set_counts(project: Project) -> dict[str, int]:
    """Generated samples per split side (reads only: the split is assigned by generation and training)."""
    return sample_counts(project.augmented_dir, project.stored_split())


def training_set_stale(project: Project) -> bool:
    """True when labelled photos are missing from the generated set (reads only)."""
    return is_stale(project.augmented_dir, project.stored_split(), project.labelled_ids())


def configured_password() -> str | None:
    """The demo password from ``$FACETRACK_PASSWORD`` or ``secrets.toml`` (``password = "..."``), if any."""
    value = os.environ.get(PASSWORD_ENV)
    if value:
        return value
    try:
        value = st.secrets.get("password")
    except Exception:  # no secrets.toml: no password
        value = None
    return str(value) if value else None


def password_ok() -> bool:
    """True when no password is set, or this browser session has given it."""
    return configured_password() is None or bool(st.session_state.get("authenticated"))


def require_password() -> None:
    """Stop the page until the visitor gives the configured password (no-op without one)."""
    if password_ok():
        return
    password = configured_password()
    st.title("FaceTrack")
    st.write("This FaceTrack is protected by a password. Ask the person running the demo.")
    with st.form("login"):
        given = st.text_input("Password", type="password")
        ok = st.form_submit_button("Enter")
    if ok:
        if hmac.compare_digest(given.encode(), password.encode()):
            st.session_state["authenticated"] = True
            st.rerun()
        st.error("That password is not right.")
    st.stop()


def current_project() -> Project | None:
    """The project named in the URL (or, after a page change, in this session), or None.

    Also the pages' own guard: the router (``app.py``) asks for the password,
    and so does every page that reaches its project, should it ever run
    without the router. Keeps the URL and the session in step, so that a
    reload or a copied link opens the same project.
    """
    use_app_navigation()
    require_password()
    name = st.query_params.get(PROJECT_PARAM) or st.session_state.get(PROJECT_PARAM)
    if not name:
        return None
    try:
        project = open_project(name, workspace_root())
    except WorkspaceError:
        select_project(None)  # deleted (in another tab?) or a mistyped link
        return None
    if (
        st.session_state.get(PROJECT_PARAM) != project.name
        or st.query_params.get(PROJECT_PARAM) != project.name
    ):
        select_project(project.name)
    return project


def select_project(name: str | None) -> None:
    """Make ``name`` the current project, in the URL and the session (None: no project)."""
    if name:
        st.session_state[PROJECT_PARAM] = name
        st.query_params[PROJECT_PARAM] = name
    else:
        st.session_state.pop(PROJECT_PARAM, None)
        st.query_params.pop(PROJECT_PARAM, None)


def page_link(page: str, *, label: str, icon: str | None = None) -> None:
    """A link to another page of the app that keeps the current project in its URL.

    A click switches pages in this tab (the session knows the project); a
    link opened in a new tab starts a new session, which finds the project
    only in the URL.
    """
    name = st.session_state.get(PROJECT_PARAM)
    st.page_link(page, label=label, icon=icon, query_params={PROJECT_PARAM: name} if name else None)


def require_project() -> Project:
    """The current project, or a hint to create one and ``st.stop()``."""
    project = current_project()
    if project is None:
        st.info("Pick or create a project first, on the Home page or in the sidebar.")
        page_link("pages/home.py", label="Go to Home", icon=":material/home:")
        st.stop()
    return project


def _picked_in_sidebar(key: str) -> None:
    select_project(st.session_state.get(key))


def sidebar_project_picker() -> None:
    """The project picker in the sidebar, on every page.

    The picker is a new widget whenever the current project changes (its key
    names the project), so it always starts from the current project: one
    created on Home or opened by a link is never switched back to the
    previous choice by the picker's remembered value.
    """
    names = list_projects(workspace_root())
    current = current_project()
    with st.sidebar:
        if not names:
            st.caption("No project yet: create one on the Home page.")
            return
        name = current.name if current and current.name in names else None
        key = f"{SIDEBAR_PICKER_KEY}:{name or ''}"
        st.selectbox(
            "Project",
            names,
            index=names.index(name) if name else None,
            placeholder="Pick a project",
            key=key,
            on_change=_picked_in_sidebar,
            args=(key,),
        )


def header(title: str, explanation: str) -> None:
    """Page title and the one sentence that says what the page is for (after the password, if any)."""
    use_app_navigation()
    require_password()
    st.title(title)
    st.caption(explanation)


_ABSOLUTE_PATH = re.compile(r"(?<![\w.])(?:[A-Za-z]:)?[/\\](?:[^\s/\\'\"()]+[/\\])+([^\s/\\'\"()]*)")


def error_text(exc: BaseException) -> str:
    """What went wrong, in one markdown-safe line for the page: no traceback, no server paths.

    A full disk says so; other system errors give their plain reason and the
    file's name (not its folder); anything else its message with folders
    removed from any path in it.
    """
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        text = "the disk is full"
    elif isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
        if exc.filename:
            text += f" ({Path(os.fsdecode(exc.filename)).name})"
    else:
        text = str(exc).strip() or type(exc).__name__
    return markdown_safe(_ABSOLUTE_PATH.sub(r"\1", text))


def run_label(run_dir: Path) -> str:
    """A readable name for a run folder (``20261128-141500-vgg16`` -> ``2026-11-28 14:15 vgg16``)."""
    name = run_dir.name
    parts = name.split("-", 2)
    if len(parts) >= 2 and len(parts[0]) == 8 and len(parts[1]) == 6:
        d, t = parts[0], parts[1]
        rest = parts[2] if len(parts) > 2 else ""
        return f"{d[:4]}-{d[4:6]}-{d[6:]} {t[:2]}:{t[2:4]} {rest}".strip()
    return name


def model_download(container, path: Path, label: str, key: str) -> None:  # noqa: ANN001 - a Streamlit container
    """A download button for a run's model file (read only when clicked), named after the run."""
    container.download_button(
        label,
        data=functools.partial(path.read_bytes),
        file_name=f"{path.parent.name}{path.suffix}",
        mime="application/octet-stream",
        icon=":material/download:",
        key=key,
        on_click="ignore",
    )


def pick_run(runs: list[Path], key: str, help: str, container=st) -> tuple[Path, RunState]:  # noqa: A002, ANN001
    """A selectbox of run folders labelled with their state; returns the chosen run and its state."""
    states = {r: run_state(r) for r in runs}
    run = container.selectbox(
        "Model",
        runs,
        format_func=lambda r: f"{run_label(r)} ({states[r].state})",
        key=key,
        help=help,
    )
    return run, states[run]

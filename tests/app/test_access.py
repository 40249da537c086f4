"""The optional demo password, enforced through the router on every page."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from facetrack.workspace import create_project
from tests.conftest import REPO


@pytest.fixture
def protected(workspace, monkeypatch):
    monkeypatch.setenv("FACETRACK_PASSWORD", "open sesame")
    create_project("demo")
    return workspace


def _texts(at: AppTest) -> str:
    return " ".join(m.value for m in [*at.markdown, *at.caption, *at.info, *at.error, *at.title])


def test_without_password_nothing_is_shown(protected):
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60).run()
    assert not at.exception
    assert "protected by a password" in _texts(at)
    assert len(at.text_input) == 1 and at.text_input[0].label == "Password"
    assert "Create or open a project" not in _texts(at)  # no page content behind the gate


def _gated_page() -> None:
    import streamlit as st

    from ui.common import require_password

    require_password()
    st.markdown("secret page content")


def test_wrong_password_is_refused(protected):
    at = AppTest.from_function(_gated_page, default_timeout=60).run()
    assert "secret page content" not in _texts(at)
    at.text_input[0].input("nope")
    at.button[0].click().run()
    assert "not right" in _texts(at)
    assert "secret page content" not in _texts(at)


def test_right_password_opens_the_page(protected):
    at = AppTest.from_function(_gated_page, default_timeout=60).run()
    at.text_input[0].input("open sesame")
    at.button[0].click().run()
    assert not at.exception
    assert "protected by a password" not in _texts(at)
    assert "secret page content" in _texts(at)
    assert at.session_state["authenticated"] is True


def test_password_from_secrets_toml(workspace, monkeypatch):
    monkeypatch.delenv("FACETRACK_PASSWORD", raising=False)
    at = AppTest.from_function(_gated_page, default_timeout=60)
    at.secrets["password"] = "from secrets"
    at.run()
    assert "secret page content" not in _texts(at)
    at.text_input[0].input("from secrets")
    at.button[0].click().run()
    assert "secret page content" in _texts(at)


def test_no_password_configured_means_no_gate(workspace, monkeypatch):
    monkeypatch.delenv("FACETRACK_PASSWORD", raising=False)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60).run()
    assert not at.exception
    assert "protected by a password" not in _texts(at)


def test_deep_link_with_a_project_shows_nothing_before_the_password(protected):
    """``/capture?project=holiday-2026`` without the password: the form only, no project name, no picker."""
    create_project("holiday-2026")
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.query_params["project"] = "holiday-2026"
    at.switch_page("pages/capture.py")
    at.run()
    assert not at.exception
    assert "protected by a password" in _texts(at)
    assert "holiday" not in _texts(at) and "Capture" not in _texts(at)
    assert not at.selectbox and "sidebar_project:holiday-2026" not in at.session_state
    at.text_input[0].input("open sesame")
    at.button[0].click().run()
    assert not at.exception
    assert at.title[0].value == "1. Capture"
    assert at.session_state["project"] == "holiday-2026"  # the link's project, once the password is given

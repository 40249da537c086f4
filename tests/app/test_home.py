"""Home page: create/open projects, the checklist, deleting photos and projects."""

from __future__ import annotations

from pathlib import Path

from facetrack.workspace import list_projects
from tests.app.conftest import no_exception

HOME = "pages/home.py"


def _markdown(at) -> str:
    return "\n".join(m.value for m in at.markdown)


def test_no_project_invites_to_create(app, workspace: Path) -> None:
    at = app(HOME)
    no_exception(at)
    assert at.title[0].value == "FaceTrack"
    assert at.caption  # the one-sentence explanation
    assert any("Create or open a project" in i.value for i in at.info)


def test_create_project_makes_folder_and_selects_it(app, workspace: Path) -> None:
    at = app(HOME)
    at.text_input[0].input("My Face!")
    at.button[0].click().run()
    no_exception(at)
    assert list_projects(workspace) == ["My-Face"]
    assert at.session_state["project"] == "My-Face"
    assert any("Project: My-Face" in s.value for s in at.subheader)
    assert "Start by taking or uploading photos" in _markdown(at)


def test_create_project_with_bad_name_shows_error(app, workspace: Path) -> None:
    at = app(HOME)
    at.text_input[0].input("!!!")
    at.button[0].click().run()
    no_exception(at)
    assert at.error and "letter or digit" in at.error[0].value
    assert list_projects(workspace) == []


def test_checklist_counts(app, populated_project) -> None:
    at = app(HOME, project=populated_project.name)
    no_exception(at)
    text = _markdown(at)
    assert "6 photo(s)" in text
    assert "3 of 6 labelled: 2 with a face, 1 with no face" in text
    assert "3 photo(s) still need a label" in text


def test_delete_all_photos_needs_confirmation(app, populated_project) -> None:
    at = app(HOME, project=populated_project.name)
    button = at.button(key="delete_photos")
    assert button.disabled
    at.checkbox(key="confirm_delete_photos").check().run()
    at.button(key="delete_photos").click().run()
    no_exception(at)
    assert populated_project.image_ids() == []
    assert not any(populated_project.labels_dir.glob("*.json"))
    assert populated_project.path.exists()
    assert any("Deleted 6 photo(s)" in s.value for s in at.success)


def test_delete_project_removes_folder(app, populated_project) -> None:
    at = app(HOME, project=populated_project.name)
    at.checkbox(key="confirm_delete_project").check().run()
    at.button(key="delete_project").click().run()
    no_exception(at)
    assert not populated_project.path.exists()
    assert "project" not in at.session_state
    assert any("Deleted the project" in s.value for s in at.success)


def test_project_deleted_in_another_tab(app, populated_project) -> None:
    at = app(HOME, project=populated_project.name)
    populated_project.delete()
    at.run()
    no_exception(at)
    assert any("Create or open a project" in i.value for i in at.info)


def test_switching_project_on_home_sticks(app, workspace: Path) -> None:
    from facetrack.workspace import create_project

    create_project("alpha", workspace)
    create_project("beta", workspace)
    at = app(HOME, project="alpha")
    at.main.selectbox[0].set_value("beta").run()
    at.run()
    no_exception(at)
    assert at.session_state["project"] == "beta"
    assert any("Project: beta" in s.value for s in at.subheader)


def _create(at, name: str) -> None:
    at.text_input[0].input(name)
    at.button[0].click().run()


def test_a_new_second_project_becomes_current_everywhere(app, workspace: Path) -> None:
    """Regression: the sidebar picker switched back to the first project after "Project ... is ready"."""
    # (AppTest runs app.py, hence the sidebar, on the first run only: the browser test,
    # tests/e2e/test_project_browser.py, checks what the sidebar shows)
    at = app(HOME)
    _create(at, "first")
    _create(at, "second")
    no_exception(at)
    for _ in range(2):  # and it stays so on the next runs
        assert at.session_state["project"] == "second"
        assert at.query_params["project"] == "second"
        assert any("Project: second" in s.value for s in at.subheader)
        at.run()


def test_project_in_the_url_opens_it(workspace: Path) -> None:
    """A reload or a deep link (``/capture?project=beta``) opens that project in a new session."""
    from streamlit.testing.v1 import AppTest

    from facetrack.workspace import create_project
    from tests.app.conftest import REPO, TIMEOUT

    create_project("alpha", workspace)
    create_project("beta", workspace)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    at.query_params["project"] = "beta"
    at.switch_page("pages/capture.py")
    at.run()
    no_exception(at)
    assert at.title[0].value == "1. Capture"
    assert at.session_state["project"] == "beta"


def test_unknown_project_in_the_url_is_dropped(workspace: Path) -> None:
    from streamlit.testing.v1 import AppTest

    from tests.app.conftest import REPO, TIMEOUT

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    at.query_params["project"] = "gone"
    at.run()
    no_exception(at)
    assert "project" not in at.query_params
    assert any("Create or open a project" in i.value for i in at.info)


def test_privacy_note_says_it_in_plain_words_first(app, empty_project) -> None:
    """Issue 11, item 12: plain words first, the technical name (VGG16, ImageNet) second."""
    at = app(HOME, project=empty_project.name)
    text = next(c.value for c in at.caption if "Privacy" in c.value)
    assert "ready-made image model" in text
    assert text.index("ready-made image model") < text.index("VGG16")

"""Links between pages carry the current project, so a link opened in a new tab shows the same project."""

from __future__ import annotations

from urllib.parse import parse_qs

import pytest

from tests.app.conftest import no_exception


def _links(at) -> list:
    return [e.proto for e in at.get("page_link")]


@pytest.mark.parametrize(
    ("page", "project_fixture"),
    [
        ("pages/home.py", "populated_project"),
        ("pages/label.py", "populated_project"),
        ("pages/augment.py", "empty_project"),  # "Go to Label"
        ("pages/train.py", "populated_project"),
        ("pages/evaluate.py", "populated_project"),
        ("pages/live.py", "populated_project"),
    ],
)
def test_every_page_link_names_the_project(app, request, page, project_fixture) -> None:
    project = request.getfixturevalue(project_fixture)
    at = app(page, project=project.name)
    no_exception(at)
    links = _links(at)
    assert links, f"{page} shows no page link to check"
    for link in links:
        assert parse_qs(link.query_string).get("project") == [project.name], (page, link.page)


def test_without_a_project_links_carry_nothing(app, workspace) -> None:
    at = app("pages/augment.py")
    no_exception(at)
    links = _links(at)
    assert links  # "Go to Home"
    assert all(link.query_string == "" for link in links)

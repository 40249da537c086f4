"""Capture's import report shows file names as they are, never as markdown."""

from __future__ import annotations

from tests.app.conftest import jpeg_bytes, make_photo, no_exception

CAPTURE = "pages/capture.py"


def test_file_names_in_the_import_report_are_not_markup(app, empty_project) -> None:
    at = app(CAPTURE, project=empty_project.name)
    at.file_uploader[0].set_value(
        [
            (":red[x] **b**.jpg", jpeg_bytes(make_photo(1)), "image/jpeg"),
            (":smile:.json", b"{not json", "application/json"),
        ]
    ).run()
    [b for b in at.button if b.label == "Import"][0].click().run()
    no_exception(at)
    assert len(empty_project.image_ids()) == 1
    report = "\n".join(m.value for m in at.markdown)
    assert "\\:\u2060red\\[x\\] \\*\\*b\\*\\*.jpg" in report
    assert "\\:\u2060smile\\:\u2060.json" in report
    assert ":red[x]" not in report and ":smile:" not in report

"""File names are data: shown as they are, never as terminal controls or markdown."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from facetrack.textsafe import clean_name, markdown_safe, terminal_safe
from tests.conftest import REPO, jpeg_bytes, synthetic_face


def test_terminal_safe_writes_controls_out():
    assert terminal_safe("a\x1b[31mred\x07\n.jpg") == "a\\x1b[31mred\\x07\\x0a.jpg"
    assert terminal_safe("gpj.\u202eexe") == "gpj.\\u202eexe"  # right-to-left override
    assert terminal_safe("caf\udce9.jpg") == "caf\\udce9.jpg"  # printable on any terminal
    assert terminal_safe("Zoë 顔 ☺.jpg") == "Zoë 顔 ☺.jpg"


@pytest.mark.parametrize(
    "name",
    [
        ":red[x].jpg",
        ":smile:.jpg",
        ":material/close:.jpg",
        "$x^2$.jpg",
        "**b**.jpg",
        "[a](http://e).jpg",
        "a\\b.jpg",
        "`c`.jpg",
        "<b>.jpg",
        "~~s~~.jpg",
        "a&amp;b.jpg",
        "_i_.jpg",
    ],
)
def test_markdown_safe_escapes_inline_markup(name):
    out = markdown_safe(name)
    # every inline markup character is backslash-escaped; colons also break shortcodes
    special = "\\`*_[]<>~$:&|"
    i = 0
    while i < len(out):
        if out[i] == "\\":
            assert out[i + 1] in special
            i += 2
            continue
        assert out[i] not in special
        i += 1
    assert ":red[" not in out and re.search(r":[a-z/_]+:", out) is None  # no colour, emoji or icon
    assert out.replace("\u2060", "").replace("\\", "") == name.replace("\\", "")


@pytest.mark.parametrize(
    ("name", "out"),
    [
        ("# big.jpg", "\\# big.jpg"),
        ("> quote.jpg", "\\> quote.jpg"),
        ("- item.jpg", "\\- item.jpg"),
        ("1. one.jpg", "1\\. one.jpg"),
        ("www.example.com.jpg", "www\u2060.example.com.jpg"),
        ("me@example.com.jpg", "me@\u2060example.com.jpg"),
        ("plain name-2.jpg", "plain name-2.jpg"),
    ],
)
def test_markdown_safe_line_starts_and_links(name, out):
    assert markdown_safe(name) == out


def test_markdown_safe_writes_controls_out():
    assert "\n" not in markdown_safe("a\nb") and "\x1b" not in markdown_safe("\x1b[2J")


def test_clean_name_replaces_undecodable_bytes():
    assert clean_name("caf\udce9.jpg") == "caf\ufffd.jpg"
    assert clean_name("x\ud800") == "x?"
    assert clean_name("Zoë.jpg") == "Zoë.jpg"


def test_cli_import_report_escapes_file_names(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "good.jpg").write_bytes(jpeg_bytes(synthetic_face()))
    (src / "evil\x1b[2J\x1b[31m.txt").write_text("not a photo")
    with open(os.fsencode(src) + b"/caf\xe9.jpg", "wb") as fh:  # not valid UTF-8
        fh.write(jpeg_bytes(synthetic_face(seed=1)))
    env = {**os.environ, "FACETRACK_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "facetrack", "import", str(src), "--project", "p", "--quiet"],
        capture_output=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert b"\x1b" not in proc.stdout + proc.stderr
    assert b"skipped evil\\x1b[2J\\x1b[31m.txt" in proc.stderr
    assert b"2 photo(s) added" in proc.stdout
    assert Path(tmp_path / "home" / "p").is_dir()

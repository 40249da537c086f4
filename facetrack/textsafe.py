"""File names are data: make them safe to print in a terminal or to show as markdown.

Names come from users' folders, zips and uploads. They may hold bytes that are
not UTF-8 (Python keeps them as lone surrogates), control characters (an
escape sequence can recolour or rewrite a terminal), bidirectional overrides
(text that reads backwards), or markdown (Streamlit renders ``:red[x]`` as
red text and ``:smile:`` as an emoji). These helpers return text that shows
the name as it is, with the dangerous parts written out visibly.
"""

from __future__ import annotations

import re
import unicodedata

# Characters that change how the text around them is displayed.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Characters that format text anywhere in a line (CommonMark, GFM, Streamlit's colours, icons and maths).
_MD_INLINE = re.compile(r"([\\`*_\[\]<>~$:&|])")
# Characters that format a line only at its start: headings, quotes, lists, setext underlines.
_MD_LINE_START = re.compile(r"^(\d{0,9})([#>+=.)-])")
# GFM turns ``www.x`` and ``a@b.c`` into links: a word joiner inside breaks them.
_AUTOLINK = re.compile(r"(?i)(www|@)(?=(?<=www)\.|(?<=@)\w)")
# U+2060 WORD JOINER: invisible, breaks ``:name:`` shortcodes and ``:color[...]`` directives.
_WORD_JOINER = "\u2060"


def clean_name(name: str) -> str:
    """``name`` as valid Unicode: bytes that were not UTF-8 become U+FFFD.

    File names read from disk on Linux keep undecodable bytes as lone
    surrogates (``surrogateescape``), which cannot be written as UTF-8 JSON or
    printed. Use the cleaned form for storing and showing; keep the original
    to open the file.
    """
    try:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # surrogates that were not undecodable bytes (e.g. from JSON escapes)
        return name.encode("utf-8", "replace").decode("utf-8")


def _escape_char(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def terminal_safe(text: str) -> str:
    """``text`` with control characters, lone surrogates and bidi overrides written as ``\\xNN``/``\\uNNNN``.

    The result prints on any terminal without moving the cursor, changing
    colours or raising ``UnicodeEncodeError``; ordinary letters in any script
    are kept.
    """
    out = []
    for ch in str(text):
        if ch in _BIDI or unicodedata.category(ch) in ("Cc", "Cs"):
            out.append(_escape_char(ch))
        else:
            out.append(ch)
    return "".join(out)


def markdown_safe(text: str) -> str:
    """``text`` for Streamlit markdown, shown literally: no formatting, colours, emoji, icons or maths.

    Control characters are written out as by :func:`terminal_safe` (so the
    result is one line), the characters that format text inline are
    backslash-escaped (CommonMark), as is a heading, quote or list marker at
    the start, and an invisible word joiner follows each colon so
    ``:red[...]``, ``:smile:`` and ``:material/...:`` are not recognised
    (and ``www.`` and ``@`` get one too, so no link is made). Letters,
    digits, dots and most punctuation stay as they are.
    """
    escaped = _MD_INLINE.sub(r"\\\1", terminal_safe(text))
    escaped = _MD_LINE_START.sub(r"\1\\\2", escaped, count=1)
    escaped = _AUTOLINK.sub(lambda m: m.group(1) + _WORD_JOINER, escaped)
    return escaped.replace("\\:", "\\:" + _WORD_JOINER)

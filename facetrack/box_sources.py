"""Where each photo's saved face boxes came from: drawn by hand, or accepted from a suggester.

Kept beside the labels in ``<project>/box_sources.json`` (image id -> source:
``"hand"``, ``"mtcnn"`` for the pretrained face finder, or a run folder name
for the user's own model) so that the labelme files stay exactly as labelme
writes them. The Evaluate page uses it: comparing the pretrained face finder
with true boxes that are its own accepted suggestions measures nothing.
Photos labelled before this file existed (or imported) have no entry.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from facetrack.fileio import atomic_write_json, read_json

logger = logging.getLogger(__name__)

FILE_NAME = "box_sources.json"
HAND = "hand"


def _path(project: Any) -> Path:
    return Path(project.path) / FILE_NAME


def box_sources(project: Any) -> dict[str, str]:
    """Image id -> where its saved boxes came from ({} when nothing was recorded)."""
    try:
        doc = read_json(_path(project))
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        logger.warning("%s is not readable (%s): box sources unknown", _path(project), exc)
        return {}
    return {str(k): str(v) for k, v in doc.items()} if isinstance(doc, dict) else {}


def record_box_source(project: Any, image_id: str, source: str | None) -> None:
    """Remember where ``image_id``'s boxes came from; ``None`` forgets it (no face, cleared)."""
    with project.lock():
        current = box_sources(project)
        if source is None:
            if image_id not in current:
                return
            current.pop(image_id)
        else:
            if current.get(image_id) == source:
                return
            current[image_id] = source
        atomic_write_json(_path(project), current)

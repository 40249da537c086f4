"""The same photo imported again: found by its stored pixels, never stored twice.

An import (:mod:`facetrack.importer`) passes :func:`photo_hashes` to
:meth:`facetrack.workspace.Project.add_image`, which asks :func:`match` whether
a photo whose stored JPEG has the same ``sha256`` is the one being imported:

- it brings no label, or the same faces: it is that photo (nothing stored);
- the photo there has no label: it takes the imported one (a label is never
  replaced; the file's other shapes stay);
- a file of the same name, labelled otherwise since: imported again, the
  project's faces are kept (the report says so);
- otherwise (the same pixels under another name with other faces, as a
  dataset holding a photo twice does): stored as a photo of its own; the same
  pixels always share one side of the split.

Nothing here imports Streamlit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from facetrack.fileio import read_json
from facetrack.labels import Label, LabelError

if TYPE_CHECKING:
    from facetrack.workspace import Project


class DuplicatePhoto(ValueError):
    """The photo is in the project already (the same stored pixels): nothing new was stored.

    ``image_id``: the photo already there. ``label``: what became of the label
    the duplicate brought: ``"none"`` (it brought none), ``"added"`` (the photo
    had none: it has this one now), ``"same"`` (the same faces) or
    ``"differs"`` (other faces: the project's are kept).
    """

    def __init__(self, image_id: str, label: str) -> None:
        super().__init__(f"the same photo is already in the project ({image_id})")
        self.image_id = image_id
        self.label = label


def photo_hashes(project: Project) -> dict[str, list[str]]:
    """``sha256`` of the stored pixels -> the ids of the photos with them, oldest first."""
    out: dict[str, list[str]] = {}
    for image_id in project.image_ids():
        try:
            sha = read_json(project.meta_path(image_id)).get("sha256")
        except (FileNotFoundError, ValueError, AttributeError):
            continue
        if isinstance(sha, str):
            out.setdefault(sha, []).append(image_id)
    return out


def same_boxes(a: Label, b: Label, pixels: float = 0.01) -> bool:
    """The same faces (in any order) within ``pixels`` on every corner.

    Exact but for rounding: the same label file imported again. Two labels of
    one photo that differ by a pixel (a dataset that holds the photo twice)
    are two labels, both kept.
    """
    if len(a.boxes) != len(b.boxes):
        return False
    tol = np.array([pixels / a.width, pixels / a.height] * 2)
    rest = [np.asarray(x.to_list()) for x in b.boxes]
    for box in a.boxes:
        v = np.asarray(box.to_list())
        hit = next((i for i, r in enumerate(rest) if np.all(np.abs(r - v) <= tol)), None)
        if hit is None:
            return False
        rest.pop(hit)
    return True


def match(
    project: Project, image_ids: list[str], label: Label | None, original_name: str | None
) -> DuplicatePhoto | None:
    """The photo among ``image_ids`` (the same pixels) that this import is; None: store it anew.

    ``label``: the import's, in the stored photo's pixels. A photo without a
    label takes it here (see the module docstring).
    """
    ids = [i for i in image_ids if project.image_path(i).exists()]
    if not ids:
        return None
    if label is None or not label.is_labelled:
        return DuplicatePhoto(ids[0], "none")
    with project.lock():
        current: dict[str, Label | None] = {}
        for i in ids:
            try:
                current[i] = project.read_label(i)
            except LabelError:
                current[i] = None  # unreadable: nothing in it to keep
        labelled = [i for i in ids if current[i] is not None and current[i].is_labelled]
        for i in labelled:
            if same_boxes(current[i], label):
                return DuplicatePhoto(i, "same")
        for i in labelled:
            if project.info(i).original_name == original_name:  # the same file again, relabelled since
                return DuplicatePhoto(i, "differs")
        target = next(
            (i for i in ids if i not in labelled and _take_label(project, i, current[i], label)), None
        )
        if target is not None:
            return DuplicatePhoto(target, "added")
    return None


def _take_label(project: Project, image_id: str, current: Label | None, label: Label) -> bool:
    """Write ``label`` for a photo without one (its other shapes stay); False if the sizes differ."""
    info = project.info(image_id)
    if (label.width, label.height) != (info.width, info.height):
        return False
    if current is not None and (current.width, current.height) == (info.width, info.height):
        label = current.with_boxes(list(label.boxes))
    project.write_label(image_id, label)
    return True

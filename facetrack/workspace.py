"""Projects on disk.

A workspace folder (``$FACETRACK_HOME``, default ``./workspace``) holds one
folder per project::

    <project>/
      project.json        name, creation time
      images/<id>.jpg     frames as captured or uploaded, re-encoded to JPEG
      labels/<id>.json    labelme JSON; no shapes = "no face"; missing = not labelled
      meta/<id>.json      size, capture burst and time, original file name
      split.json          {image id: "train" | "val" | "test"}, assigned once
      augmented/          generated training set (disposable)
      cache/              cached backbone features (disposable)
      runs/<time>-<name>/ one folder per training

Image ids are generated (time-sortable), never taken from file names. Every
write is atomic; read-modify-write of shared files holds the project lock, so
several browser tabs and the command line can work on one project at once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from facetrack.fileio import atomic_write_bytes, atomic_write_json, file_lock, read_json
from facetrack.images import MAX_SIDE, MIN_SIDE, ImageError, decode_image, encode_jpeg, limit_size, to_rgb
from facetrack.labels import Box, Label, LabelError, labelme_bytes, read_labelme, write_labelme
from facetrack.textsafe import clean_name

WORKSPACE_ENV = "FACETRACK_HOME"
DEFAULT_RATIOS = (0.70, 0.15, 0.15)
_ID_RE = re.compile(r"^[0-9]{13}-[0-9a-f]{6}$")
_NAME_RE = re.compile(r"[^A-Za-z0-9_-]+")
logger = logging.getLogger(__name__)


class WorkspaceError(ValueError):
    """A project operation that cannot be done; the message says why."""


def workspace_root() -> Path:
    """The workspace folder: ``$FACETRACK_HOME`` or ``./workspace``."""
    return Path(os.environ.get(WORKSPACE_ENV) or "workspace").expanduser().absolute()


def project_slug(name: str) -> str:
    """A folder-safe name for a project ("My Face!" -> "My-Face")."""
    slug = _NAME_RE.sub("-", name.strip()).strip("-_")[:60]
    if not slug:
        raise WorkspaceError("give the project a name with at least one letter or digit")
    return slug


def list_projects(root: Path | None = None) -> list[str]:
    """Names of the projects in the workspace, sorted."""
    root = root or workspace_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "project.json").is_file())


def create_project(name: str, root: Path | None = None) -> Project:
    """Create a project (or open it when it exists already)."""
    root = root or workspace_root()
    path = root / project_slug(name)
    path.mkdir(parents=True, exist_ok=True)
    with file_lock(path / ".lock"):
        if not (path / "project.json").exists():
            atomic_write_json(path / "project.json", {"name": name.strip(), "created": time.time()})
    return Project(path)


def open_project(name_or_path: str | Path, root: Path | None = None) -> Project:
    """Open an existing project by name (in the workspace) or by folder path."""
    candidate = Path(name_or_path)
    if not (candidate / "project.json").is_file():
        candidate = (root or workspace_root()) / str(name_or_path)
    if not (candidate / "project.json").is_file():
        raise WorkspaceError(f"no project called {str(name_or_path)!r}")
    return Project(candidate)


def new_image_id(now: float | None = None) -> str:
    """A unique, time-sortable image id: milliseconds since 1970 and 6 random hex digits."""
    return f"{int((now if now is not None else time.time()) * 1000):013d}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class ImageInfo:
    """What a project knows about one image besides its pixels."""

    id: str
    width: int
    height: int
    captured_at: float
    burst: str | None = None
    original_name: str | None = None
    source: str = "upload"  # "camera", "upload" or "import"
    resized_from: tuple[int, int] | None = None
    sha256: str | None = None  # of the stored JPEG: the same photo gets the same split in any project


@dataclass(frozen=True)
class ProjectStatus:
    """Counts for the home page checklist."""

    images: int
    labelled: int
    faces: int
    no_face: int
    augmented: int
    runs: int

    @property
    def unlabelled(self) -> int:
        return self.images - self.labelled


class Project:
    """One project folder. Cheap to construct; every method reads the disk afresh."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path).absolute()

    # -- folders ----------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def images_dir(self) -> Path:
        return self.path / "images"

    @property
    def labels_dir(self) -> Path:
        return self.path / "labels"

    @property
    def meta_dir(self) -> Path:
        return self.path / "meta"

    @property
    def augmented_dir(self) -> Path:
        return self.path / "augmented"

    @property
    def cache_dir(self) -> Path:
        return self.path / "cache"

    @property
    def runs_dir(self) -> Path:
        return self.path / "runs"

    @property
    def lock_path(self) -> Path:
        return self.path / ".lock"

    def lock(self):  # noqa: ANN201 - a context manager
        """The project lock (threads and processes) for read-modify-write cycles."""
        return file_lock(self.lock_path)

    def image_path(self, image_id: str) -> Path:
        return self.images_dir / f"{_check_id(image_id)}.jpg"

    def label_path(self, image_id: str) -> Path:
        return self.labels_dir / f"{_check_id(image_id)}.json"

    def meta_path(self, image_id: str) -> Path:
        return self.meta_dir / f"{_check_id(image_id)}.json"

    # -- images -----------------------------------------------------------------
    def image_ids(self) -> list[str]:
        """All image ids, oldest first."""
        if not self.images_dir.is_dir():
            return []
        return sorted(p.stem for p in self.images_dir.glob("*.jpg") if _ID_RE.match(p.stem))

    def add_image(
        self,
        source: bytes | np.ndarray,
        *,
        color: str = "rgb",
        burst: str | None = None,
        captured_at: float | None = None,
        original_name: str | None = None,
        origin: str = "upload",
        label: Label | None = None,
        known: dict[str, list[str]] | None = None,
    ) -> ImageInfo:
        """Store one image (file bytes, or a camera frame array in ``color`` order).

        Images are converted to 8-bit RGB, downscaled to at most
        :data:`facetrack.images.MAX_SIDE` pixels a side and re-encoded as JPEG.
        When ``label`` is given (boxes normalized; its size must match the
        image's), it is written as labelme JSON in the stored image's pixels.
        Raises :class:`facetrack.images.ImageError` for unusable images and
        :class:`facetrack.labels.LabelError` for a label of another size.

        ``known`` (imports: :func:`facetrack.samephoto.photo_hashes`): a photo
        already stored is not stored again when :func:`facetrack.samephoto.match`
        finds which one it is (:class:`facetrack.samephoto.DuplicatePhoto`).
        """
        original_name = clean_name(original_name) if original_name else original_name
        name = original_name or "image"
        rgb = decode_image(source, name) if isinstance(source, bytes) else to_rgb(source, color)
        h0, w0 = rgb.shape[:2]
        if label is not None and (label.width, label.height) != (w0, h0):
            raise LabelError(
                f"{name}: the label is for a {label.width}x{label.height} image but the image is {w0}x{h0}"
            )
        rgb = limit_size(rgb)
        h, w = rgb.shape[:2]
        if min(h, w) < MIN_SIDE:
            raise ImageError(
                f"{name}: {w0}x{h0} would be {w}x{h} pixels once fitted into {MAX_SIDE} pixels a side; too thin to use"
            )
        if label is not None:  # refuse a label that would not read back before anything is written
            label = label.resized(w, h)
            try:
                labelme_bytes(label)
            except LabelError as exc:
                how = f"once resized from {w0}x{h0} to {w}x{h}, " if (w, h) != (w0, h0) else ""
                raise LabelError(f"{name}: {how}{exc}") from exc
        now = time.time()
        image_id = new_image_id(captured_at if captured_at is not None else now)
        info = ImageInfo(
            id=image_id,
            width=w,
            height=h,
            captured_at=captured_at if captured_at is not None else now,
            burst=burst,
            original_name=original_name,
            source=origin,
            resized_from=(w0, h0) if (w0, h0) != (w, h) else None,
        )
        data = encode_jpeg(rgb)
        info = replace(info, sha256=hashlib.sha256(data).hexdigest())
        if known is not None and known.get(info.sha256):
            from facetrack.samephoto import match

            dup = match(self, known[info.sha256], label, original_name)
            if dup is not None:
                raise dup
        if not self.exists():  # deleted (maybe in another tab): never re-create it
            raise WorkspaceError("this project was deleted")
        for folder in (self.meta_dir, self.images_dir):
            folder.mkdir(exist_ok=True)  # one level: fails if the project went meanwhile
        # meta first, image last: an image without meta is never listed half-made
        atomic_write_json(self.meta_path(image_id), asdict(info), parents=False)
        if label is not None:
            self.write_label(image_id, label)
        atomic_write_bytes(self.image_path(image_id), data, parents=False)
        return info

    def info(self, image_id: str) -> ImageInfo:
        """The stored facts about one image (rebuilt from the image if meta is missing)."""
        try:
            doc = read_json(self.meta_path(image_id))
            if doc.get("resized_from"):
                doc["resized_from"] = tuple(doc["resized_from"])
            return ImageInfo(**doc)
        except (FileNotFoundError, ValueError, TypeError):
            from facetrack.images import read_rgb

            rgb = read_rgb(self.image_path(image_id))
            return ImageInfo(id=image_id, width=rgb.shape[1], height=rgb.shape[0], captured_at=0.0)

    def image_bytes(self, image_id: str) -> bytes:
        return self.image_path(image_id).read_bytes()

    def delete_image(self, image_id: str) -> None:
        """Remove a photo and everything made from it: label, meta, augmented copies, cached features."""
        with self.lock():
            for path in (self.image_path(image_id), self.label_path(image_id), self.meta_path(image_id)):
                path.unlink(missing_ok=True)
            self._forget_in_split([image_id])
        self._delete_derived([image_id])

    def delete_all_images(self) -> int:
        """Remove every photo, label and everything made from them. Returns how many photos."""
        ids = self.image_ids()
        with self.lock():
            for sub in (self.images_dir, self.labels_dir, self.meta_dir):
                shutil.rmtree(sub, ignore_errors=True)
            (self.path / "split.json").unlink(missing_ok=True)
        shutil.rmtree(self.augmented_dir, ignore_errors=True)
        shutil.rmtree(self.cache_dir, ignore_errors=True)
        return len(ids)

    def _delete_derived(self, image_ids: list[str]) -> None:
        if self.augmented_dir.is_dir():
            for image_id in image_ids:
                for path in self.augmented_dir.rglob(f"{image_id}*"):
                    path.unlink(missing_ok=True)
        # cached features mix many images in one file: drop the cache, it is rebuilt on demand
        shutil.rmtree(self.cache_dir, ignore_errors=True)

    def exists(self) -> bool:
        """False once the project was deleted (its ``project.json`` is gone): jobs then stop."""
        return (self.path / "project.json").is_file()

    def delete(self) -> None:
        """Delete the whole project folder."""
        shutil.rmtree(self.path, ignore_errors=True)

    # -- labels -----------------------------------------------------------------
    def read_label(self, image_id: str) -> Label | None:
        """The image's label, or None when it is not labelled yet. Raises LabelError if broken."""
        try:
            return read_labelme(self.label_path(image_id))
        except FileNotFoundError:
            return None

    def boxes(self, image_id: str) -> list[Box] | None:
        """Face boxes (normalized); [] = "no face"; None = not labelled, or unreadable label.

        A label file that keeps only other shapes (people, cars) and was never
        marked "no face" is not labelled for faces: None.
        """
        try:
            label = self.read_label(image_id)
        except LabelError:
            return None
        return list(label.boxes) if label is not None and label.is_labelled else None

    def label_note(self, image_id: str) -> str | None:
        """Why a photo with a label file still counts as not labelled, in plain words; None otherwise."""
        try:
            label = self.read_label(image_id)
        except LabelError as exc:
            return f"This photo's label file is damaged ({exc}): draw the boxes again to replace it."
        if label is None or label.is_labelled:
            return None
        return (
            f"This photo's label keeps {len(label.other_shapes)} other shape(s) but no face: "
            "draw the faces, or mark it as having none (the other shapes stay)."
        )

    def set_boxes(self, image_id: str, boxes: list[Box]) -> None:
        """Save the image's face boxes (normalized) as labelme JSON; [] marks "no face".

        Shapes, flags and keys of the file that FaceTrack does not use stay as
        they are. Raises :class:`LabelError` for boxes that cannot be stored
        (thinner than 2 pixels, more than :data:`facetrack.labels.MAX_SHAPES`).
        """
        with self.lock():
            if not self.image_path(image_id).exists():
                raise WorkspaceError("this photo was deleted (maybe in another tab)")
            info = self.info(image_id)
            self.write_label(image_id, self._current_label(image_id, info).with_boxes(list(boxes)))

    def _current_label(self, image_id: str, info: ImageInfo) -> Label:
        """The stored label (for its kept shapes and keys), or an empty one."""
        try:
            label = self.read_label(image_id)
        except LabelError as exc:
            logger.warning("%s: unreadable label replaced: %s", image_id, exc)
            label = None
        if label is None or (label.width, label.height) != (info.width, info.height):
            return Label(image_path="", width=info.width, height=info.height)
        return label

    def write_label(self, image_id: str, label: Label) -> None:
        """Store a whole label as it is (faces, other shapes, flags); hold :meth:`lock` around read + write."""
        write_labelme(self.label_path(image_id), replace(label, image_path=f"../images/{image_id}.jpg"))

    def clear_label(self, image_id: str) -> None:
        """Mark the image as not labelled yet (other shapes the file keeps stay)."""
        with self.lock():
            try:
                label = self.read_label(image_id)
            except LabelError:
                label = None
            if label is not None and label.other_shapes:
                self.write_label(image_id, replace(label.with_boxes([]), no_face=False))
            else:
                self.label_path(image_id).unlink(missing_ok=True)

    def labelled_ids(self) -> list[str]:
        """Images whose label says where the faces are (or that there is none)."""
        return [i for i in self.image_ids() if self.label_path(i).exists() and self.boxes(i) is not None]

    def first_unlabelled(self) -> str | None:
        return next((i for i in self.image_ids() if self.boxes(i) is None), None)

    # -- split ------------------------------------------------------------------
    def split(self, ratios: tuple[float, float, float] = DEFAULT_RATIOS) -> dict[str, str]:
        """Assign every labelled image to train/val/test once, and return the mapping.

        See :func:`facetrack.split.assign_split` for the rule. Stored in
        ``split.json``; images already assigned never move.
        """
        from facetrack.split import assign_split

        with self.lock():
            path = self.path / "split.json"
            try:
                current = {k: v for k, v in read_json(path).items() if isinstance(v, str)}
            except (FileNotFoundError, ValueError, AttributeError):
                current = {}
            labelled = self.labelled_ids()
            groups = {i: self._group_key(i) for i in labelled}
            new = assign_split(current, groups, ratios)
            alive = set(self.image_ids())
            new = {k: v for k, v in new.items() if k in alive}
            if new != current:
                atomic_write_json(path, new)
            return new

    def stored_split(self) -> dict[str, str]:
        """The split as ``split.json`` stores it (image id -> side), for views: reads only, assigns nothing.

        Labelled photos not assigned yet are missing; :meth:`split` assigns them.
        """
        from facetrack.split import SPLITS

        try:
            current = read_json(self.path / "split.json")
        except (FileNotFoundError, ValueError):
            return {}
        if not isinstance(current, dict):
            return {}
        alive = set(self.image_ids())
        return {k: v for k, v in current.items() if v in SPLITS and k in alive}

    def _group_key(self, image_id: str) -> str:
        info = self.info(image_id)
        if info.burst:
            return f"burst:{info.burst}"
        return f"photo:{info.sha256}" if info.sha256 else f"image:{image_id}"

    def _forget_in_split(self, image_ids: list[str]) -> None:
        path = self.path / "split.json"
        try:
            current = read_json(path)
        except (FileNotFoundError, ValueError):
            return
        kept = {k: v for k, v in current.items() if k not in set(image_ids)}
        if kept != current:
            atomic_write_json(path, kept)

    # -- runs and status --------------------------------------------------------
    def runs(self) -> list[Path]:
        """Run folders, newest first."""
        if not self.runs_dir.is_dir():
            return []
        return sorted((p for p in self.runs_dir.iterdir() if p.is_dir()), key=lambda p: p.name, reverse=True)

    def latest_run(self, with_model: bool = True) -> Path | None:
        """The newest run (with a saved model, unless ``with_model`` is False)."""
        from facetrack.runs import has_model

        for run in self.runs():
            if not with_model or has_model(run):
                return run
        return None

    def status(self) -> ProjectStatus:
        """Counts of photos, labels, augmented images and runs."""
        ids = self.image_ids()
        faces = no_face = labelled = 0
        for i in ids:
            boxes = self.boxes(i)
            if boxes is None:
                continue
            labelled += 1
            if boxes:
                faces += 1
            else:
                no_face += 1
        augmented = len(list(self.augmented_dir.glob("train/*.jpg"))) if self.augmented_dir.is_dir() else 0
        return ProjectStatus(
            images=len(ids),
            labelled=labelled,
            faces=faces,
            no_face=no_face,
            augmented=augmented,
            runs=len(self.runs()),
        )


def _check_id(image_id: str) -> str:
    """Refuse anything that is not a generated image id (ids are never paths)."""
    if not isinstance(image_id, str) or not _ID_RE.match(image_id):
        raise WorkspaceError(f"{image_id!r} is not an image id")
    return image_id

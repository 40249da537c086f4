"""Import photos and labelme labels into a project: folders, zips and uploads.

Each file is handled on its own: a bad image or label is reported with the
reason, one line per file, and skipped; the rest proceeds, and nothing
half-written is left in the project. File names are only used to pair an
image with its label and for messages; stored files are named by generated
ids.

Labels are paired with photos as labelme does: by the JSON's ``imagePath``
relative to the JSON file, then by the image beside it with the same name
(or, for the ``labels/`` + ``images/`` layout, in the sibling ``images``
folder). Never across other folders by bare name: ``day1/0001.json`` labels
``day1/0001.jpg`` and nothing else. A different letter case is accepted only
when it picks exactly one image; anything ambiguous is reported, not guessed.
"""

from __future__ import annotations

import errno
import io
import logging
import posixpath
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from facetrack.images import IMAGE_EXTENSIONS, ImageError
from facetrack.labels import Label, LabelError, check_label_size, parse_label_bytes
from facetrack.samephoto import DuplicatePhoto, photo_hashes
from facetrack.textsafe import clean_name
from facetrack.workspace import Project

MAX_FILE_BYTES = 50 * 1024 * 1024
MAX_ZIP_MEMBERS = 20_000
MAX_ZIP_UNPACKED = 2 * 1024 * 1024 * 1024
MAX_ZIP_RATIO = 200  # unpacked / packed, per member, beyond which we call it a zip bomb
# errors of the project's disk that stop the whole import (every later file would fail the same way)
_FATAL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)

Progress = Callable[[int, int], None]
logger = logging.getLogger(__name__)


class ImportError_(ValueError):
    """A whole import that cannot start or go on (not a folder, not a zip, zip bomb, disk full)."""


@dataclass
class ImportReport:
    """What an import did, file by file. Names are as found (show them through :mod:`facetrack.textsafe`)."""

    added: list[tuple[str, str]] = field(default_factory=list)  # (source name, image id)
    labelled: int = 0  # photos whose label says where the faces are (or that there is none)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source name, reason)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (source name, remark)
    faces: int = 0  # face boxes stored
    shapes_only: int = 0  # photos whose label keeps other shapes but no face: not labelled for faces
    # photos already in the project (the same pixels), not stored again: (source name, its image id)
    already: list[tuple[str, str]] = field(default_factory=list)
    labels_added: int = 0  # of those, photos that had no label and took the one imported

    def merge(self, other: ImportReport) -> None:
        self.added += other.added
        self.labelled += other.labelled
        self.skipped += other.skipped
        self.notes += other.notes
        self.faces += other.faces
        self.shapes_only += other.shapes_only
        self.already += other.already
        self.labels_added += other.labels_added

    def summary(self) -> str:
        """One line: photos added, how many with labels, faces, photos already there, files skipped."""
        parts = [f"{len(self.added)} photo(s) added ({self.labelled} with labels)"]
        if self.faces:
            parts.append(f"{self.faces} face(s)")
        if self.shapes_only:
            parts.append(f"{self.shapes_only} with other shapes kept but no face marked")
        if self.already:
            labels = f"; labels added to {self.labels_added} of them" if self.labels_added else ""
            parts.append(f"{len(self.already)} already in the project (not added again{labels})")
        if self.skipped:
            parts.append(f"{len(self.skipped)} file(s) skipped")
        return ", ".join(parts)

    def lines(self) -> list[str]:
        """The report as plain text, one line per skipped file or remark (not escaped)."""
        return [f"skipped {name}: {why}" for name, why in self.skipped] + [
            f"note {name}: {note}" for name, note in self.notes
        ]


@dataclass
class _Entry:
    path: str  # posix path inside the source as found (may hold undecodable bytes as surrogates)
    read: Callable[[], bytes]
    size: int

    @property
    def name(self) -> str:
        """The path for messages and for storing: valid Unicode."""
        return clean_name(self.path)

    @property
    def folder(self) -> str:
        return posixpath.dirname(self.path)

    @property
    def stem(self) -> str:
        return PurePosixPath(self.path).stem

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.path).suffix.lower()


def import_folder(project: Project, src: Path, progress: Progress | None = None) -> ImportReport:
    """Import ``src`` (``images/`` + ``labels/``, or images with their JSON side by side)."""
    src = Path(src)
    if not src.is_dir():
        raise ImportError_(f"{src} is not a folder")
    report = ImportReport()
    entries = []
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src).as_posix()
        try:
            if path.is_file() and not path.name.startswith("."):
                entries.append(_Entry(rel, path.read_bytes, path.stat().st_size))
        except OSError as exc:
            report.skipped.append((clean_name(rel), f"cannot be read ({exc.strerror or exc})"))
    report.merge(_import_entries(project, entries, progress))
    return report


def import_zip(
    project: Project, data: bytes, name: str = "upload.zip", progress: Progress | None = None
) -> ImportReport:
    """Import a zip of images and labelme JSON, refusing zip bombs and unsafe member names."""
    report = ImportReport()
    entries = _zip_entries(data, name, report)
    report.merge(_import_entries(project, entries, progress))
    return report


def import_files(
    project: Project, files: Iterable[tuple[str, bytes]], progress: Progress | None = None
) -> ImportReport:
    """Import uploaded files: images, labelme JSON and zips, in any mix."""
    report = ImportReport()
    entries: list[_Entry] = []
    for name, data in files:
        if name.lower().endswith(".zip"):
            try:
                entries += _zip_entries(data, name, report)
            except ImportError_ as exc:
                report.skipped.append((name, str(exc)))
        else:
            entries.append(_Entry(name, (lambda d=data: d), len(data)))
    report.merge(_import_entries(project, entries, progress))
    return report


def _zip_entries(data: bytes, name: str, report: ImportReport) -> list[_Entry]:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ImportError_(f"{name}: not a readable zip file") from exc
    if len(infos) > MAX_ZIP_MEMBERS:
        raise ImportError_(f"{name}: {len(infos)} files is more than the {MAX_ZIP_MEMBERS} allowed")
    unpacked = sum(i.file_size for i in infos)
    if unpacked > MAX_ZIP_UNPACKED:
        raise ImportError_(f"{name}: unpacks to {unpacked / 2**30:.1f} GiB, more than the 2 GiB allowed")
    entries = []
    for info in infos:
        if info.is_dir():
            continue
        member = info.filename
        pure = PurePosixPath(member.replace("\\", "/"))
        if pure.is_absolute() or ".." in pure.parts or (len(member) > 1 and member[1] == ":"):
            report.skipped.append((f"{name}:{member}", "unsafe path inside the zip; ignored"))
            continue
        if pure.name.startswith(".") or "__MACOSX" in pure.parts:
            continue
        if info.file_size > MAX_FILE_BYTES:
            report.skipped.append((f"{name}:{member}", f"larger than {MAX_FILE_BYTES // 2**20} MB unpacked"))
            continue
        if (
            info.compress_size
            and info.file_size / info.compress_size > MAX_ZIP_RATIO
            and info.file_size > 2**20
        ):
            report.skipped.append((f"{name}:{member}", "compressed suspiciously well (zip bomb); ignored"))
            continue

        def read(zf: zipfile.ZipFile = zf, info: zipfile.ZipInfo = info) -> bytes:
            with zf.open(info) as fh:
                return fh.read(MAX_FILE_BYTES + 1)[: MAX_FILE_BYTES + 1]

        entries.append(_Entry(pure.as_posix(), read, info.file_size))
    return entries


class _Images:
    """The images of one import, looked up by path: exactly, or by a different case when that is unique."""

    def __init__(self, images: list[_Entry]) -> None:
        self.by_path = {e.path: e for e in images}
        self.by_lower: dict[str, list[_Entry]] = {}
        self.by_stem: dict[tuple[str, str], list[_Entry]] = {}
        self.by_stem_lower: dict[tuple[str, str], list[_Entry]] = {}
        for e in images:
            self.by_lower.setdefault(e.path.lower(), []).append(e)
            self.by_stem.setdefault((e.folder, e.stem), []).append(e)
            self.by_stem_lower.setdefault((e.folder, e.stem.lower()), []).append(e)

    def at(self, path: str) -> list[_Entry]:
        exact = self.by_path.get(path)
        return [exact] if exact else self.by_lower.get(path.lower(), [])

    def stem(self, folder: str, stem: str) -> list[_Entry]:
        return self.by_stem.get((folder, stem)) or self.by_stem_lower.get((folder, stem.lower()), [])


def _candidates(j: _Entry, label: Label, images: _Images) -> Iterable[list[_Entry]]:
    """Images ``j`` may label, most certain first (labelme's order); never outside its folder and ``images/``."""
    image_path = label.image_path.replace("\\", "/")
    is_rooted = image_path.startswith("/") or (len(image_path) > 1 and image_path[1] == ":")
    if image_path and not is_rooted:
        resolved = posixpath.normpath(posixpath.join(j.folder, image_path))
        if not resolved.startswith("../"):
            yield images.at(resolved)
    base = posixpath.basename(image_path)
    folders = [j.folder]
    if PurePosixPath(j.folder).name.lower() == "labels":  # labels/x.json beside images/x.jpg
        parent = posixpath.dirname(j.folder)
        folders += [posixpath.join(parent, name) for name in ("images", "Images", "IMAGES")]
    for folder in folders:
        if base:
            yield images.at(posixpath.join(folder, base))
        yield images.stem(folder, j.stem)


def _find_image(j: _Entry, label: Label, images: _Images) -> tuple[_Entry | None, str]:
    for found in _candidates(j, label, images):
        if len(found) == 1:
            return found[0], ""
        if len(found) > 1:
            names = " and ".join(sorted(e.name for e in found))
            return None, f"ambiguous: it could label {names}; not used"
    return None, "label without its image (its imagePath and name match no photo in its folder)"


def _read_labels(
    jsons: list[_Entry], images: _Images, report: ImportReport
) -> dict[str, tuple[_Entry, Label]]:
    """Parse each JSON and pair it with one image path; report every JSON that is not used."""
    claims: dict[str, list[tuple[_Entry, Label]]] = {}
    for j in jsons:
        try:
            check_label_size(j.size, j.name)
            label = parse_label_bytes(j.read(), source=j.name)
        except LabelError as exc:
            report.skipped.append((j.name, str(exc)))
            continue
        except OSError as exc:
            report.skipped.append((j.name, f"cannot be read ({exc.strerror or exc})"))
            continue
        target, why = _find_image(j, label, images)
        if target is None:
            report.skipped.append((j.name, why))
        else:
            claims.setdefault(target.path, []).append((j, label))
    paired = {}
    for path, found in claims.items():
        if len(found) == 1:
            paired[path] = found[0]
            continue
        others = ", ".join(sorted(j.name for j, _ in found))
        for j, _ in found:
            report.skipped.append((j.name, f"ambiguous: {others} all label {clean_name(path)}; none used"))
    return paired


def _import_entries(project: Project, entries: list[_Entry], progress: Progress | None) -> ImportReport:
    report = ImportReport()
    images = [e for e in entries if e.suffix in IMAGE_EXTENSIONS]
    jsons = [e for e in entries if e.suffix == ".json"]
    for e in entries:
        if e.suffix not in IMAGE_EXTENSIONS and e.suffix != ".json":
            report.skipped.append((e.name, "not an image or a labelme JSON file"))
    labels = _read_labels(jsons, _Images(images), report)
    known = photo_hashes(project)
    for n, e in enumerate(images):
        if progress:
            progress(n, len(images))
        paired = labels.get(e.path)
        try:
            _add_one(project, e, paired, report, known)
        except OSError as exc:
            if exc.errno in _FATAL_ERRNOS:
                raise ImportError_(
                    f"the project's disk refused to write ({exc.strerror}); "
                    f"{len(report.added)} photo(s) were added before it stopped"
                ) from exc
            report.skipped.append((e.name, f"cannot be read or stored ({exc.strerror or exc})"))
        except (ImageError, LabelError) as exc:
            report.skipped.append((e.name, str(exc)))
        except Exception as exc:  # one odd file must not stop the import: said in the report and the log
            logger.exception("importing %s failed", e.name)
            report.skipped.append((e.name, f"could not be imported ({type(exc).__name__}: {exc})"))
    if progress:
        progress(len(images), len(images))
    return report


def _add_one(
    project: Project,
    e: _Entry,
    paired: tuple[_Entry, Label] | None,
    report: ImportReport,
    known: dict[str, list[str]],
) -> None:
    if e.size > MAX_FILE_BYTES:
        raise ImageError(f"{e.name}: larger than {MAX_FILE_BYTES // 2**20} MB")
    data = e.read()
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(f"{e.name}: larger than {MAX_FILE_BYTES // 2**20} MB")
    label = paired[1] if paired else None
    try:
        info = project.add_image(
            data, original_name=PurePosixPath(e.name).name, origin="import", label=label, known=known
        )
    except DuplicatePhoto as dup:
        _already_there(e, paired, dup, report)
        return
    report.added.append((e.name, info.id))
    same = known.setdefault(info.sha256 or "", [])
    same.append(info.id)
    if len(same) > 1:  # the same pixels, labelled otherwise, under another name
        first = project.info(same[0]).original_name or same[0]
        report.notes.append(
            (
                e.name,
                f"the same photo as {first}, with other boxes: both are kept, on the same side of "
                "the split (delete the wrong one on the Label page)",
            )
        )
    if info.resized_from:
        w0, h0 = info.resized_from
        report.notes.append((e.name, f"resized from {w0}x{h0} to {info.width}x{info.height}"))
    if label is not None and paired is not None:
        _count_label(paired[0], label, report)


def _count_label(j: _Entry, label: Label, report: ImportReport) -> None:
    """A label that came in with its photo: its remarks, and what it says about faces."""
    report.notes += [(j.name, note) for note in label.notes]
    if label.is_labelled:
        report.labelled += 1
        report.faces += len(label.boxes)
    else:
        report.shapes_only += 1


def _already_there(
    e: _Entry, paired: tuple[_Entry, Label] | None, dup: DuplicatePhoto, report: ImportReport
) -> None:
    """A photo the project has: counted, its label added if the project's had none, a difference said."""
    report.already.append((e.name, dup.image_id))
    if paired is None:
        return
    j, label = paired
    if dup.label == "added":  # only a label that marks faces (or none) is ever added
        report.labels_added += 1
        _count_label(j, label, report)
    elif dup.label == "differs":
        report.notes.append(
            (
                j.name,
                "the photo is already in the project with other boxes; the project's boxes are kept "
                "(change them on the Label page)",
            )
        )

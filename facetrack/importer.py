"""Import photos and labelme labels into a project: folders, zips and uploads.

Each file is handled on its own: a bad image or label is reported with the
reason and skipped, the rest proceeds, and nothing half-written is left in the
project. File names are only used to pair an image with its label and for
messages; stored files are named by generated ids.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from facetrack.images import IMAGE_EXTENSIONS, ImageError
from facetrack.labels import Label, LabelError, parse_labelme
from facetrack.workspace import Project

MAX_FILE_BYTES = 50 * 1024 * 1024
MAX_ZIP_MEMBERS = 20_000
MAX_ZIP_UNPACKED = 2 * 1024 * 1024 * 1024
MAX_ZIP_RATIO = 200  # unpacked / packed, per member, beyond which we call it a zip bomb

Progress = Callable[[int, int], None]


class ImportError_(ValueError):
    """A whole import that cannot start (not a folder, not a zip, zip bomb)."""


@dataclass
class ImportReport:
    """What an import did, file by file."""

    added: list[tuple[str, str]] = field(default_factory=list)  # (source name, image id)
    labelled: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source name, reason)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (source name, remark)

    def merge(self, other: ImportReport) -> None:
        self.added += other.added
        self.labelled += other.labelled
        self.skipped += other.skipped
        self.notes += other.notes

    def summary(self) -> str:
        parts = [f"{len(self.added)} photo(s) added ({self.labelled} with labels)"]
        if self.skipped:
            parts.append(f"{len(self.skipped)} file(s) skipped")
        return ", ".join(parts)


@dataclass
class _Entry:
    name: str  # display name, e.g. "labels/a.json"
    read: Callable[[], bytes]
    size: int

    @property
    def stem(self) -> str:
        return PurePosixPath(self.name).stem

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix.lower()


def import_folder(project: Project, src: Path, progress: Progress | None = None) -> ImportReport:
    """Import ``src`` (``images/`` + ``labels/``, or images with their JSON side by side)."""
    src = Path(src)
    if not src.is_dir():
        raise ImportError_(f"{src} is not a folder")
    entries = []
    for path in sorted(src.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            rel = path.relative_to(src).as_posix()
            entries.append(_Entry(rel, path.read_bytes, path.stat().st_size))
    return _import_entries(project, entries, progress)


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


def _import_entries(project: Project, entries: list[_Entry], progress: Progress | None) -> ImportReport:  # noqa: C901 - split in the importer work (issue 9 report)
    report = ImportReport()
    images = [e for e in entries if e.suffix in IMAGE_EXTENSIONS]
    jsons = [e for e in entries if e.suffix == ".json"]
    others = [e for e in entries if e.suffix not in IMAGE_EXTENSIONS and e.suffix != ".json"]
    for e in others:
        report.skipped.append((e.name, "not an image or a labelme JSON file"))

    # Pair each label with an image: by the label's imagePath, else by the same file stem.
    by_name = {PurePosixPath(e.name).name.lower(): e for e in images}
    by_stem: dict[str, list[_Entry]] = {}
    for e in images:
        by_stem.setdefault(e.stem.lower(), []).append(e)
    labels: dict[str, tuple[_Entry, Label]] = {}
    for j in jsons:
        try:
            data = j.read()
            if len(data) > MAX_FILE_BYTES:
                raise LabelError(f"{j.name}: larger than {MAX_FILE_BYTES // 2**20} MB")
            try:
                doc = json.loads(data.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise LabelError(f"{j.name}: not valid JSON") from exc
            label = parse_labelme(doc, source=j.name)
        except LabelError as exc:
            report.skipped.append((j.name, str(exc)))
            continue
        target = by_name.get(PurePosixPath(label.image_path.replace("\\", "/")).name.lower())
        if target is None:
            same = by_stem.get(j.stem.lower(), [])
            target = same[0] if len(same) == 1 else None
        if target is None:
            report.skipped.append((j.name, "label without its image"))
            continue
        labels[target.name] = (j, label)

    for n, e in enumerate(images):
        if progress:
            progress(n, len(images))
        try:
            if e.size > MAX_FILE_BYTES:
                raise ImageError(f"{e.name}: larger than {MAX_FILE_BYTES // 2**20} MB")
            data = e.read()
            if len(data) > MAX_FILE_BYTES:
                raise ImageError(f"{e.name}: larger than {MAX_FILE_BYTES // 2**20} MB")
            paired = labels.get(e.name)
            label = paired[1] if paired else None
            info = project.add_image(
                data, original_name=PurePosixPath(e.name).name, origin="import", label=label
            )
        except (ImageError, LabelError) as exc:
            report.skipped.append((e.name, str(exc)))
            continue
        report.added.append((e.name, info.id))
        if label is not None:
            report.labelled += 1
        if info.resized_from:
            w0, h0 = info.resized_from
            report.notes.append((e.name, f"resized from {w0}x{h0} to {info.width}x{info.height}"))
    if progress:
        progress(len(images), len(images))
    return report

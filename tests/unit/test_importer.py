import io
import json
import zipfile

import pytest

from facetrack.importer import ImportError_, import_files, import_folder, import_zip
from facetrack.labels import Box, Label, labelme_dict
from facetrack.workspace import create_project
from tests.conftest import jpeg_bytes, synthetic_face


def _label_doc(name: str, w: int, h: int, points) -> dict:
    doc = labelme_dict(Label(name, w, h, ()))
    if points is not None:
        doc["shapes"] = [{"label": "face", "points": points, "shape_type": "rectangle"}]
    return doc


def _write(folder, name, data):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())


def test_import_folder_images_and_labels(workspace, tmp_path):
    src = tmp_path / "src"
    _write(src, "images/a.jpg", jpeg_bytes(synthetic_face(200, 100)))
    _write(src, "labels/a.json", _label_doc("../images/a.jpg", 200, 100, [[150, 90], [20, 10]]))  # inverted
    _write(src, "images/b.jpg", jpeg_bytes(synthetic_face(200, 100, box=None)))
    _write(src, "labels/b.json", _label_doc("../images/b.jpg", 200, 100, None))
    _write(src, "images/unlabelled.jpg", jpeg_bytes(synthetic_face(200, 100)))
    p = create_project("p")
    report = import_folder(p, src)
    assert len(report.added) == 3 and report.labelled == 2 and report.skipped == []
    by_name = dict(report.added)
    assert p.boxes(by_name["images/a.jpg"])[0].to_list() == pytest.approx([0.1, 0.1, 0.75, 0.9])
    assert p.boxes(by_name["images/b.jpg"]) == []
    assert p.boxes(by_name["images/unlabelled.jpg"]) is None


def test_import_side_by_side_with_non_ascii_names(workspace, tmp_path):
    src = tmp_path / "src"
    _write(src, "Zoë 顔.jpg", jpeg_bytes(synthetic_face()))
    _write(src, "Zoë 顔.json", _label_doc("Zoë 顔.jpg", 160, 120, [[10, 10], [60, 60]]))
    p = create_project("p")
    report = import_folder(p, src)
    assert report.labelled == 1 and report.skipped == []
    assert p.info(report.added[0][1]).original_name == "Zoë 顔.jpg"


def test_bad_files_are_reported_and_the_rest_proceeds(workspace, tmp_path):
    src = tmp_path / "src"
    good = jpeg_bytes(synthetic_face())
    _write(src, "good.jpg", good)
    _write(src, "empty.jpg", b"")
    _write(src, "truncated.jpg", good[: len(good) // 3])
    _write(src, "text.png", b"not a png")
    _write(src, "zero.jpg", good)
    _write(src, "zero.json", _label_doc("zero.jpg", 160, 120, [[10, 10], [10, 10]]))
    _write(src, "outside.jpg", good)
    _write(src, "outside.json", _label_doc("outside.jpg", 160, 120, [[500, 500], [900, 900]]))
    _write(src, "notlabelme.jpg", good)
    _write(src, "notlabelme.json", {"hello": "world"})
    _write(src, "orphan.json", _label_doc("orphan.jpg", 160, 120, [[10, 10], [50, 50]]))
    _write(src, "wrongsize.jpg", good)
    _write(src, "wrongsize.json", _label_doc("wrongsize.jpg", 999, 999, [[10, 10], [50, 50]]))
    _write(src, "readme.txt", b"hi")
    p = create_project("p")
    report = import_folder(p, src)
    skipped = dict(report.skipped)
    assert "empty" in skipped["empty.jpg"]
    assert "truncated" in skipped["truncated.jpg"]
    assert "not an image" in skipped["text.png"]
    assert "empty or outside" in skipped["zero.json"]
    assert "empty or outside" in skipped["outside.json"]
    assert "not a labelme file" in skipped["notlabelme.json"]
    assert "without its image" in skipped["orphan.json"]
    assert "label is for a 999x999" in skipped["wrongsize.jpg"]
    assert "readme.txt" in skipped
    # photos whose label was refused are still imported, unlabelled; the good one is there
    added = dict(report.added)
    assert {"good.jpg", "zero.jpg", "outside.jpg", "notlabelme.jpg"} <= set(added)
    assert "wrongsize.jpg" not in added
    assert p.boxes(added["zero.jpg"]) is None
    assert len(p.image_ids()) == len(report.added)
    assert not list(p.path.rglob("*.tmp"))


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_zip_with_unsafe_paths_writes_nothing_outside(workspace, tmp_path):
    face = jpeg_bytes(synthetic_face())
    data = _zip({"../../evil.jpg": face, "/abs/evil2.jpg": face, "ok/photo.jpg": face})
    p = create_project("p")
    report = import_zip(p, data)
    assert [n for n, _ in report.added] == ["ok/photo.jpg"]
    assert len([s for s in report.skipped if "unsafe path" in s[1]]) == 2
    assert not (tmp_path / "evil.jpg").exists() and not (workspace.parent / "evil.jpg").exists()
    assert len(p.image_ids()) == 1


def test_zip_bomb_member_is_refused(workspace):
    data = _zip({"bomb.jpg": b"\0" * (20 * 1024 * 1024), "ok.jpg": jpeg_bytes(synthetic_face())})
    p = create_project("p")
    report = import_zip(p, data)
    assert any("zip bomb" in reason for _, reason in report.skipped)
    assert [n for n, _ in report.added] == ["ok.jpg"]


def test_not_a_zip(workspace):
    p = create_project("p")
    with pytest.raises(ImportError_):
        import_zip(p, b"PK but not really")
    report = import_files(p, [("broken.zip", b"nope"), ("a.jpg", jpeg_bytes(synthetic_face()))])
    assert dict(report.skipped)["broken.zip"].startswith("broken.zip: not a readable zip")
    assert len(report.added) == 1


def test_import_files_pairs_uploaded_json(workspace):
    p = create_project("p")
    doc = _label_doc("C:\\Users\\me\\a.jpg", 160, 120, [[10, 10], [80, 90]])
    report = import_files(p, [("a.jpg", jpeg_bytes(synthetic_face())), ("a.json", json.dumps(doc).encode())])
    assert report.labelled == 1
    assert p.boxes(report.added[0][1])[0] == Box.from_pixels([[10, 10], [80, 90]], 160, 120)


def test_import_shared_faces(workspace, shared_faces, tmp_path):
    src = tmp_path / "few"
    for name in sorted((shared_faces / "images").iterdir())[::100]:
        _write(src, f"images/{name.name}", name.read_bytes())
        _write(src, f"labels/{name.stem}.json", (shared_faces / "labels" / f"{name.stem}.json").read_bytes())
    p = create_project("p")
    report = import_folder(p, src)
    assert report.skipped == [] and report.labelled == len(report.added) == 12

import io
import json
import os
import zipfile

import pytest

from facetrack.importer import ImportError_, import_files, import_folder, import_zip
from facetrack.labels import Box, Label, labelme_dict
from facetrack.workspace import create_project
from tests.conftest import SHARED_DATA, jpeg_bytes, png_bytes, synthetic_face


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
    _write(src, "images/unlabelled.jpg", jpeg_bytes(synthetic_face(200, 100, seed=1)))
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
    _write(src, "zero.jpg", jpeg_bytes(synthetic_face(seed=1)))  # each photo its own pixels
    _write(src, "zero.json", _label_doc("zero.jpg", 160, 120, [[10, 10], [10, 10]]))
    _write(src, "outside.jpg", jpeg_bytes(synthetic_face(seed=2)))
    _write(src, "outside.json", _label_doc("outside.jpg", 160, 120, [[500, 500], [900, 900]]))
    _write(src, "notlabelme.jpg", jpeg_bytes(synthetic_face(seed=3)))
    _write(src, "notlabelme.json", {"hello": "world"})
    _write(src, "orphan.json", _label_doc("orphan.jpg", 160, 120, [[10, 10], [50, 50]]))
    _write(src, "wrongsize.jpg", jpeg_bytes(synthetic_face(seed=4)))
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


# -- one bad file never stops an import ------------------------------------------------------------
def test_malicious_files_get_one_line_each_and_the_good_ones_land(workspace, tmp_path):
    src = tmp_path / "src"
    for seed, name in enumerate(("a", "deep", "overflow", "nan", "bigint", "b")):
        _write(src, f"{name}.jpg", jpeg_bytes(synthetic_face(seed=seed)))
    _write(src, "a.json", _label_doc("a.jpg", 160, 120, [[10, 10], [60, 60]]))
    _write(src, "deep.json", ("[" * 200_000 + "]" * 200_000).encode())
    _write(
        src,
        "overflow.json",
        json.dumps(_label_doc("overflow.jpg", 160, 120, [[1, 1], [5, 5]]))
        .replace("[[1, 1]", "[[1" + "0" * 400 + ", 1]")
        .encode(),
    )
    _write(src, "nan.json", json.dumps(_label_doc("nan.jpg", 160, 120, [[float("nan"), 1], [5, 5]])).encode())
    _write(
        src,
        "bigint.json",
        json.dumps(_label_doc("bigint.jpg", 160, 120, [[1, 1], [5, 5]]))
        .replace("[[1, 1]", "[[" + "1" * 5000 + ", 1]")
        .encode(),
    )
    # a file name that is not valid UTF-8, half way through the folder
    os.makedirs(os.fsencode(src / "m"), exist_ok=True)
    with open(os.fsencode(src / "m") + b"/caf\xe9.jpg", "wb") as fh:
        fh.write(jpeg_bytes(synthetic_face(seed=6)))
    with open(os.fsencode(src / "m") + b"/caf\xe9.json", "wb") as fh:
        fh.write(
            json.dumps(
                _label_doc("caf\udce9.jpg", 160, 120, [[10, 10], [60, 60]]), ensure_ascii=False
            ).encode("utf-8", "surrogateescape")
        )
    _write(src, "b.json", _label_doc("b.jpg", 160, 120, [[20, 20], [70, 70]]))
    p = create_project("p")
    report = import_folder(p, src)
    skipped = dict(report.skipped)
    assert set(skipped) == {"deep.json", "overflow.json", "nan.json", "bigint.json", "m/caf\ufffd.json"}
    assert len(report.skipped) == 5
    assert "nested" in skipped["deep.json"] and "not numbers" in skipped["overflow.json"]
    # every photo lands; the ones with good labels are labelled
    added = dict(report.added)
    assert len(added) == 7 and "m/caf\ufffd.jpg" in added
    assert report.labelled == 2 and report.faces == 2
    assert p.boxes(added["a.jpg"]) and p.boxes(added["b.jpg"]) and p.boxes(added["deep.jpg"]) is None
    assert p.info(added["m/caf\ufffd.jpg"]).original_name == "caf\ufffd.jpg"


def test_a_35_mb_label_is_refused_and_its_photo_still_lands(workspace, tmp_path):
    src = tmp_path / "src"
    _write(src, "a.jpg", jpeg_bytes(synthetic_face()))
    shape = json.dumps(
        {
            "label": "face",
            "points": [[1, 1], [9, 9]],
            "shape_type": "rectangle",
            "group_id": None,
            "description": "",
            "flags": {},
            "mask": None,
        },
        indent=2,
    )
    _write(
        src,
        "a.json",
        (
            '{"imageWidth": 160, "imageHeight": 120, "imagePath": "a.jpg", "shapes": ['
            + ",".join([shape] * 300_000)
            + "]}"
        ).encode(),
    )
    assert (src / "a.json").stat().st_size > 35 * 10**6
    p = create_project("p")
    report = import_folder(p, src)
    assert len(report.added) == 1 and report.labelled == 0
    assert "larger than the 16 MB" in dict(report.skipped)["a.json"]


# -- labels are matched to photos as labelme does ----------------------------------------------
def _day_folders(src) -> None:
    _write(src, "day1/0001.jpg", jpeg_bytes(synthetic_face(seed=1)))
    _write(src, "day1/0001.json", _label_doc("0001.jpg", 160, 120, [[10, 10], [50, 50]]))
    _write(src, "day2/0001.jpg", jpeg_bytes(synthetic_face(seed=2)))
    _write(src, "day2/0001.json", _label_doc("0001.jpg", 160, 120, [[80, 60], [150, 110]]))


def _check_days(p, report) -> None:
    assert len(report.added) == 2 and report.labelled == 2 and report.skipped == []
    added = dict(report.added)
    assert p.boxes(added["day1/0001.jpg"]) == [Box.from_pixels([[10, 10], [50, 50]], 160, 120)]
    assert p.boxes(added["day2/0001.jpg"]) == [Box.from_pixels([[80, 60], [150, 110]], 160, 120)]


def test_same_names_in_two_folders_each_keep_their_own_boxes(workspace, tmp_path):
    _day_folders(tmp_path / "src")
    p = create_project("p")
    _check_days(p, import_folder(p, tmp_path / "src"))


def test_same_names_in_two_folders_of_a_zip(workspace, tmp_path):
    _day_folders(tmp_path / "src")
    members = {
        f.relative_to(tmp_path / "src").as_posix(): f.read_bytes() for f in (tmp_path / "src").rglob("*.*")
    }
    p = create_project("p")
    _check_days(p, import_zip(p, _zip(members)))


def test_names_differing_by_case_never_get_each_others_boxes(workspace, tmp_path):
    src = tmp_path / "src"
    _write(src, "a.jpg", jpeg_bytes(synthetic_face(seed=1)))
    _write(src, "A.jpg", jpeg_bytes(synthetic_face(seed=2)))
    _write(src, "a.json", _label_doc("", 160, 120, [[10, 10], [50, 50]]))  # no imagePath: by name
    _write(src, "A.json", _label_doc("A.jpg", 160, 120, [[80, 60], [150, 110]]))
    _write(src, "b.jpg", jpeg_bytes(synthetic_face(seed=3)))
    _write(src, "B.JPG", jpeg_bytes(synthetic_face(seed=4)))
    _write(src, "x.json", _label_doc("B.jpg", 160, 120, [[10, 10], [50, 50]]))  # B.jpg: b.jpg or B.JPG?
    _write(src, "c.JPG", jpeg_bytes(synthetic_face(seed=5)))
    _write(src, "c.json", _label_doc("C.jpg", 160, 120, [[10, 10], [50, 50]]))  # one match, other case
    p = create_project("p")
    report = import_folder(p, src)
    added = dict(report.added)
    assert p.boxes(added["a.jpg"]) == [Box.from_pixels([[10, 10], [50, 50]], 160, 120)]
    assert p.boxes(added["A.jpg"]) == [Box.from_pixels([[80, 60], [150, 110]], 160, 120)]
    assert p.boxes(added["b.jpg"]) is None and p.boxes(added["B.JPG"]) is None
    assert "ambiguous" in dict(report.skipped)["x.json"]
    assert p.boxes(added["c.JPG"]) is not None


def test_a_label_is_never_matched_across_folders_by_bare_name(workspace, tmp_path):
    src = tmp_path / "src"
    _write(src, "photos/0001.jpg", jpeg_bytes(synthetic_face(seed=1)))
    _write(src, "other/0001.json", _label_doc("0001.jpg", 160, 120, [[10, 10], [50, 50]]))
    _write(src, "two/p.jpg", jpeg_bytes(synthetic_face(seed=2)))
    _write(src, "two/p.png", png_bytes(synthetic_face(seed=3)))
    _write(src, "two/p.json", _label_doc("", 160, 120, [[10, 10], [50, 50]]))
    _write(src, "dup/q.jpg", jpeg_bytes(synthetic_face(seed=4)))
    _write(src, "dup/q.json", _label_doc("q.jpg", 160, 120, [[10, 10], [50, 50]]))
    _write(src, "dup/q copy.json", _label_doc("q.jpg", 160, 120, [[70, 10], [150, 50]]))
    p = create_project("p")
    report = import_folder(p, src)
    skipped = dict(report.skipped)
    assert "without its image" in skipped["other/0001.json"]
    assert "ambiguous" in skipped["two/p.json"]
    assert "ambiguous" in skipped["dup/q.json"] and "ambiguous" in skipped["dup/q copy.json"]
    assert report.labelled == 0 and len(report.added) == 4


# -- shapes FaceTrack does not use are kept, and said so ------------------------------------------
def _person_doc(name: str) -> dict:
    """As in labelme's own example folder: rectangles labelled ``person``."""
    doc = labelme_dict(Label(name, 160, 120, ()))
    doc["shapes"] = [
        {
            "label": "person",
            "points": [[5, 5], [70, 110]],
            "group_id": None,
            "description": "",
            "shape_type": "rectangle",
            "flags": {},
            "mask": None,
        },
        {
            "label": "person",
            "points": [[80, 5], [150, 110]],
            "group_id": None,
            "description": "",
            "shape_type": "rectangle",
            "flags": {},
            "mask": None,
        },
    ]
    doc["imageData"] = "aGVsbG8="
    return doc


def test_labelme_example_people_are_kept_not_made_no_face(workspace, tmp_path):
    src = tmp_path / "src"
    for i in range(3):
        _write(src, f"{i}.jpg", jpeg_bytes(synthetic_face(seed=i)))
        _write(src, f"{i}.json", _person_doc(f"{i}.jpg"))
    p = create_project("p")
    report = import_folder(p, src)
    assert len(report.added) == 3 and report.labelled == 0 and report.shapes_only == 3
    assert "3 with other shapes kept but no face marked" in report.summary()
    for name, image_id in report.added:
        assert p.boxes(image_id) is None  # not a "no face" training example
        stored = json.loads(p.label_path(image_id).read_text())
        assert stored["shapes"] == _person_doc(name)["shapes"] and stored["imageData"] is None
    notes = [note for name, note in report.notes if name == "0.json"]
    assert any("person rectangle x2" in n for n in notes) and any("imageData" in n for n in notes)
    assert any("not labelled for faces" in n for n in notes)
    assert p.status().no_face == 0


def test_face_polygon_becomes_its_rectangle_and_the_report_says_so(workspace, tmp_path):
    src = tmp_path / "src"
    _write(src, "a.jpg", jpeg_bytes(synthetic_face()))
    doc = _label_doc("a.jpg", 160, 120, None)
    doc["shapes"] = [
        {"label": "face", "points": [[20, 10], [60, 15], [40, 70]], "shape_type": "polygon"},
        {"label": "face", "points": [[100, 10], [140, 60]]},
    ]  # no shape_type: labelme's polygon
    _write(src, "a.json", doc)
    p = create_project("p")
    report = import_folder(p, src)
    (image_id,) = dict(report.added).values()
    assert p.boxes(image_id) == [
        Box.from_pixels([[20, 10], [60, 70]], 160, 120),
        Box.from_pixels([[100, 10], [140, 60]], 160, 120),
    ]
    assert any("2 face polygon(s)" in note for _, note in report.notes)


def test_report_lines_are_plain_text(workspace, tmp_path):
    src = tmp_path / "src"
    _write(src, ":red[x]\x1b[2J.jpg", jpeg_bytes(synthetic_face()))
    _write(src, "readme.txt", b"hi")
    p = create_project("p")
    report = import_folder(p, src)
    assert report.lines() == ["skipped readme.txt: not an image or a labelme JSON file"]
    assert report.added[0][0] == ":red[x]\x1b[2J.jpg"


def test_import_shared_multi_keeps_every_face(workspace):
    folder = SHARED_DATA / "multi"
    if not (folder / "boxes.json").is_file():
        pytest.skip(f"multi-face data not found at {folder} (this test needs ../shared/data/multi)")
    truth = json.loads((folder / "boxes.json").read_text())
    p = create_project("p")
    report = import_folder(p, folder)
    assert [n for n, _ in report.skipped] == ["boxes.json"]  # not a labelme file; said so
    assert len(report.added) == report.labelled == len(truth) == 150
    expected = sum(len(t["faces"]) for t in truth)
    assert report.faces == expected
    assert sum(len(p.boxes(i)) for i in p.image_ids()) == expected
    by_name = {n: i for n, i in report.added}
    for t in truth[:20]:
        got = p.boxes(by_name[t["image"]])
        assert len(got) == len(t["faces"]) >= 2


# -- the same photo twice ---------------------------------------------------------------------------
def _three_photos(src, labelled: bool = True) -> None:
    for k, name in enumerate(("a", "b", "c")):
        _write(src, f"images/{name}.jpg", jpeg_bytes(synthetic_face(seed=k)))
        if labelled:
            _write(
                src,
                f"labels/{name}.json",
                _label_doc(f"../images/{name}.jpg", 160, 120, [[40, 30], [100, 90]]),
            )


def test_importing_a_folder_again_adds_only_the_new_photos(workspace, tmp_path):
    src = tmp_path / "src"
    _three_photos(src)
    p = create_project("p")
    first = import_folder(p, src)
    assert len(first.added) == 3 and first.already == []
    _write(src, "images/d.jpg", jpeg_bytes(synthetic_face(seed=9)))  # one new photo since
    again = import_folder(p, src)
    assert [n for n, _ in again.added] == ["images/d.jpg"]
    assert sorted(n for n, _ in again.already) == ["images/a.jpg", "images/b.jpg", "images/c.jpg"]
    assert dict(again.already)["images/a.jpg"] == dict(first.added)["images/a.jpg"]  # which photo it is
    assert again.skipped == []
    assert len(p.image_ids()) == 4  # not 7: a re-import never doubles the training set
    assert "3 already in the project" in again.summary()


def test_the_same_photo_twice_in_one_upload_is_stored_once(workspace):
    data = jpeg_bytes(synthetic_face())
    p = create_project("p")
    report = import_files(p, [("one.jpg", data), ("copy of one.jpg", data)])
    assert [n for n, _ in report.added] == ["one.jpg"]
    assert report.already == [("copy of one.jpg", report.added[0][1])]
    assert len(p.image_ids()) == 1


def test_labels_imported_later_label_the_photos_already_there(workspace, tmp_path):
    photos, labelled = tmp_path / "photos", tmp_path / "labelled"
    _three_photos(photos, labelled=False)
    _three_photos(labelled)
    p = create_project("p")
    import_folder(p, photos)
    assert p.labelled_ids() == []
    report = import_folder(p, labelled)
    assert report.added == [] and report.labels_added == 3 and report.labelled == 3
    assert len(p.labelled_ids()) == 3 and len(p.image_ids()) == 3
    assert p.boxes(p.image_ids()[0])[0].to_list() == pytest.approx([0.25, 0.25, 0.625, 0.75])
    assert "labels added to 3 of them" in report.summary()


def test_a_reimport_with_other_boxes_keeps_the_projects_and_says_so(workspace, tmp_path):
    src = tmp_path / "src"
    _three_photos(src)
    p = create_project("p")
    first = dict(import_folder(p, src).added)
    p.set_boxes(first["images/a.jpg"], [Box(0.5, 0.5, 0.9, 0.9)])  # corrected on the Label page
    _write(src, "labels/b.json", _label_doc("../images/b.jpg", 160, 120, None))  # changed in the folder
    report = import_folder(p, src)
    assert report.added == [] and report.labels_added == 0
    notes = dict(report.notes)
    assert "other boxes" in notes["labels/a.json"] and "kept" in notes["labels/a.json"]
    assert "other boxes" in notes["labels/b.json"]
    assert "labels/c.json" not in notes  # the same boxes: nothing to say
    assert p.boxes(first["images/a.jpg"])[0].to_list() == pytest.approx([0.5, 0.5, 0.9, 0.9])
    assert len(p.boxes(first["images/b.jpg"])) == 1  # the project's label, not the folder's "no face"


def test_the_same_photo_under_another_name_with_other_boxes_is_kept_and_said(workspace, tmp_path):
    """A dataset holding one photo twice, each file with its own faces: both land, noted, one side of the split."""
    src = tmp_path / "src"
    data = jpeg_bytes(synthetic_face())
    _write(src, "images/p1.jpg", data)
    _write(src, "labels/p1.json", _label_doc("../images/p1.jpg", 160, 120, [[40, 30], [100, 90]]))
    _write(src, "images/p2.jpg", data)
    _write(src, "labels/p2.json", _label_doc("../images/p2.jpg", 160, 120, [[10, 10], [50, 50]]))
    _write(src, "images/p3.jpg", data)
    _write(src, "labels/p3.json", _label_doc("../images/p3.jpg", 160, 120, [[40, 30], [100, 90]]))  # as p1
    p = create_project("p")
    report = import_folder(p, src)
    added = dict(report.added)
    assert set(added) == {"images/p1.jpg", "images/p2.jpg"} and report.labelled == report.faces == 2
    assert dict(report.already) == {"images/p3.jpg": added["images/p1.jpg"]}
    assert "the same photo as p1.jpg" in dict(report.notes)["images/p2.jpg"]
    split = p.split()
    assert split[added["images/p1.jpg"]] == split[added["images/p2.jpg"]]
    again = import_folder(p, src)  # and importing the folder again adds nothing
    assert again.added == [] and len(again.already) == 3 and len(p.image_ids()) == 2

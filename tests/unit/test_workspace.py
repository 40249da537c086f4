import json
import threading

import numpy as np
import pytest

from facetrack.images import ImageError
from facetrack.labels import Box, Label, LabelError, labelme_dict
from facetrack.workspace import (
    WorkspaceError,
    create_project,
    list_projects,
    open_project,
    project_slug,
    workspace_root,
)
from tests.conftest import jpeg_bytes, png_bytes, synthetic_face


def test_workspace_root_follows_env(workspace):
    assert workspace_root() == workspace


def test_create_list_open_delete(workspace):
    p = create_project("My Face!")
    assert p.name == "My-Face"
    assert list_projects() == ["My-Face"]
    assert open_project("My-Face").path == p.path
    p.delete()
    assert list_projects() == []
    with pytest.raises(WorkspaceError):
        open_project("My-Face")
    with pytest.raises(WorkspaceError):
        project_slug("!!!")


def test_add_camera_frame_keeps_resolution_and_burst(workspace):
    p = create_project("p")
    frame_bgr = synthetic_face(640, 480)[..., ::-1].copy()
    info = p.add_image(frame_bgr, color="bgr", burst="burst-1", origin="camera")
    assert (info.width, info.height) == (640, 480)
    assert p.image_ids() == [info.id]
    meta = json.loads(p.meta_path(info.id).read_text())
    assert meta["burst"] == "burst-1" and meta["source"] == "camera"
    assert p.info(info.id).burst == "burst-1"


def test_huge_image_is_downscaled(workspace):
    p = create_project("p")
    big = np.zeros((8000, 8000, 3), np.uint8)
    info = p.add_image(jpeg_bytes(big), original_name="big.jpg")
    assert (info.width, info.height) == (4096, 4096)
    assert info.resized_from == (8000, 8000)


def test_bad_upload_leaves_nothing(workspace):
    p = create_project("p")
    with pytest.raises(ImageError):
        p.add_image(b"garbage", original_name="x.jpg")
    assert p.image_ids() == []
    assert not any(p.meta_dir.glob("*")) if p.meta_dir.exists() else True


def test_labels_are_labelme_and_no_face_is_empty(workspace):
    p = create_project("p")
    a = p.add_image(jpeg_bytes(synthetic_face(200, 100))).id
    b = p.add_image(jpeg_bytes(synthetic_face(200, 100, box=None))).id
    c = p.add_image(jpeg_bytes(synthetic_face(200, 100))).id
    p.set_boxes(a, [Box(0.1, 0.2, 0.5, 0.9)])
    p.set_boxes(b, [])
    doc = json.loads(p.label_path(a).read_text())
    assert doc["shapes"][0]["points"] == [[20.0, 20.0], [100.0, 90.0]]
    assert doc["imagePath"] == f"../images/{a}.jpg"
    assert (p.label_path(a).parent / doc["imagePath"]).resolve() == p.image_path(a).resolve()
    assert p.boxes(b) == [] and p.boxes(c) is None
    s = p.status()
    assert (s.images, s.labelled, s.faces, s.no_face, s.unlabelled) == (3, 2, 1, 1, 1)
    assert p.first_unlabelled() == c
    p.clear_label(a)
    assert p.boxes(a) is None


def test_label_size_must_match_image(workspace):
    p = create_project("p")
    with pytest.raises(LabelError, match="label is for a 50x50 image"):
        p.add_image(jpeg_bytes(synthetic_face(200, 100)), label=Label("x.jpg", 50, 50, ()))
    assert p.image_ids() == []


def test_saving_a_label_of_a_deleted_photo_is_refused(workspace):
    p = create_project("p")
    a = p.add_image(jpeg_bytes(synthetic_face())).id
    p.delete_image(a)
    with pytest.raises(WorkspaceError, match="deleted"):
        p.set_boxes(a, [])
    assert not p.label_path(a).exists()


def test_ids_are_never_paths(workspace):
    p = create_project("p")
    for bad in ("../../etc/passwd", "a/b", "", "1234"):
        with pytest.raises(WorkspaceError):
            p.image_path(bad)


def test_delete_image_removes_derived_files(workspace):
    p = create_project("p")
    a = p.add_image(jpeg_bytes(synthetic_face())).id
    p.set_boxes(a, [Box(0.1, 0.1, 0.5, 0.5)])
    (p.augmented_dir / "train").mkdir(parents=True)
    (p.augmented_dir / "train" / f"{a}_0.jpg").write_bytes(b"x")
    (p.augmented_dir / "train" / f"{a}.json").write_text("{}")
    (p.cache_dir / "features").mkdir(parents=True)
    (p.cache_dir / "features" / "f.npy").write_bytes(b"x")
    p.split()
    p.delete_image(a)
    leftovers = [q for q in p.path.rglob(f"*{a}*")]
    assert leftovers == []
    assert not p.cache_dir.exists()
    assert a not in json.loads((p.path / "split.json").read_text())


def test_delete_all_images(workspace):
    p = create_project("p")
    for i in range(3):
        p.set_boxes(p.add_image(jpeg_bytes(synthetic_face(seed=i))).id, [])
    assert p.delete_all_images() == 3
    assert p.image_ids() == [] and p.status().labelled == 0
    assert not list(p.path.rglob("*.jpg"))


def test_split_is_stored_and_keeps_bursts(workspace):
    p = create_project("p")
    ids = []
    for b in range(4):
        for n in range(5):
            info = p.add_image(synthetic_face(seed=b * 10 + n), burst=f"burst-{b}")
            p.set_boxes(info.id, [Box(0.2, 0.2, 0.6, 0.6)])
            ids.append((b, info.id))
    split = p.split()
    for b in range(4):
        assert len({split[i] for bb, i in ids if bb == b}) == 1
    assert set(split.values()) == {"train", "val", "test"}
    # a new labelled photo is assigned, the old ones stay
    new = p.add_image(synthetic_face(seed=99)).id
    p.set_boxes(new, [])
    again = p.split()
    assert all(again[k] == v for k, v in split.items()) and new in again


def test_concurrent_label_writers_lose_nothing(workspace):
    p = create_project("p")
    ids = [p.add_image(synthetic_face(seed=i)).id for i in range(8)]
    errors = []

    def writer(k: int) -> None:
        try:
            for n in range(25):
                image_id = ids[(k + n) % len(ids)]
                p.set_boxes(image_id, [Box(0.1, 0.1, 0.2 + 0.01 * (n % 10), 0.5)] if n % 3 else [])
                p.split()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for image_id in ids:
        assert p.boxes(image_id) is not None  # every label parses
    assert set(json.loads((p.path / "split.json").read_text())) == set(ids)
    assert not list(p.path.rglob("*.tmp"))


def test_same_photos_get_the_same_split_in_any_project(workspace):
    photos = [synthetic_face(seed=i) for i in range(30)]

    def split_by_photo(name: str) -> list[str]:
        p = create_project(name)
        ids = [p.add_image(rgb).id for rgb in photos]
        for i in ids:
            p.set_boxes(i, [])
        split = p.split()
        return [split[i] for i in ids]

    first = split_by_photo("one")
    assert first == split_by_photo("two")  # ids differ, the photos do not
    assert set(first) == {"train", "val", "test"}


# -- labels keep what FaceTrack does not use ---------------------------------------------------
PERSON = {
    "label": "person",
    "points": [[10, 5], [150, 95]],
    "group_id": 1,
    "description": "",
    "shape_type": "rectangle",
    "flags": {},
    "mask": None,
}


def _with_person(p, image_id: str, boxes: tuple[Box, ...] = ()) -> None:
    """Store a label as another tool would: a person rectangle, a flag and a key of its own."""
    label = Label(
        "", 200, 100, boxes, other_shapes=(PERSON,), flags={"night": True}, extra={"tool": {"v": 1}}
    )
    p.label_path(image_id).parent.mkdir(parents=True, exist_ok=True)
    p.label_path(image_id).write_text(json.dumps(labelme_dict(label)))


def test_set_boxes_keeps_other_shapes_flags_and_keys(workspace):
    p = create_project("p")
    a = p.add_image(jpeg_bytes(synthetic_face(200, 100))).id
    _with_person(p, a, (Box(0.1, 0.1, 0.3, 0.5),))
    for boxes in ([Box(0.1, 0.1, 0.3, 0.5), Box(0.5, 0.2, 0.7, 0.6)], [Box(0.2, 0.2, 0.4, 0.4)], []):
        p.set_boxes(a, boxes)
        doc = json.loads(p.label_path(a).read_text())
        assert PERSON in doc["shapes"] and doc["tool"] == {"v": 1} and doc["flags"]["night"] is True
        assert p.boxes(a) == boxes
    assert doc["flags"] == {"night": True, "no_face": True}  # "no face" said explicitly, person kept


def test_a_label_with_only_other_shapes_is_not_labelled(workspace):
    p = create_project("p")
    a = p.add_image(jpeg_bytes(synthetic_face(200, 100))).id
    _with_person(p, a)
    assert p.boxes(a) is None and p.labelled_ids() == [] and p.first_unlabelled() == a
    assert p.status().no_face == 0 and p.status().unlabelled == 1
    assert p.split() == {}
    p.set_boxes(a, [Box(0.1, 0.1, 0.3, 0.5)])
    assert p.labelled_ids() == [a]
    p.clear_label(a)  # "not labelled yet" again, but the person stays
    assert p.boxes(a) is None
    assert json.loads(p.label_path(a).read_text())["shapes"] == [PERSON]


def test_boxes_too_small_to_store_are_refused_and_the_old_label_stays(workspace):
    p = create_project("p")
    a = p.add_image(jpeg_bytes(synthetic_face(200, 100))).id
    p.set_boxes(a, [Box(0.1, 0.1, 0.3, 0.5)])
    before = p.label_path(a).read_bytes()
    with pytest.raises(LabelError):
        p.set_boxes(a, [Box(0.1, 0.1, 0.105, 0.5)])  # 1 pixel wide
    assert p.label_path(a).read_bytes() == before


def test_many_faces_round_trip(workspace):
    p = create_project("p")
    a = p.add_image(jpeg_bytes(synthetic_face(640, 480))).id
    boxes = [
        Box(i / 40, j / 40, (i + 1) / 40, (j + 1) / 40) for i in range(0, 40, 2) for j in range(0, 40, 2)
    ]
    p.set_boxes(a, boxes)
    assert p.boxes(a) == [Box.from_pixels(b.to_pixels(640, 480), 640, 480) for b in boxes]
    with pytest.raises(LabelError, match="1000"):
        p.set_boxes(a, boxes * 3)


def test_a_box_that_no_longer_fits_after_resizing_is_refused_cleanly(workspace):
    p = create_project("p")
    # 8192x40 is stored as 4096x20: a 3-pixel-tall box becomes 1.5 pixels, too thin to read back
    wide = np.full((40, 8192, 3), 128, np.uint8)
    label = Label("w.png", 8192, 40, (Box.from_pixels([[100, 10], [400, 13]], 8192, 40),))
    with pytest.raises(LabelError, match="resized from 8192x40 to 4096x20"):
        p.add_image(png_bytes(wide), label=label, original_name="w.png")
    assert p.image_ids() == [] and not p.meta_dir.exists() and not p.labels_dir.exists()
    # 65535x20 would be 4096x1: refused as too thin, nothing written
    with pytest.raises(ImageError, match="too thin"):
        p.add_image(png_bytes(np.full((20, 65535, 3), 128, np.uint8)), original_name="strip.png")
    assert p.image_ids() == [] and not p.meta_dir.exists()


def test_resized_import_scales_kept_shapes(workspace):
    p = create_project("p")
    big = np.full((100, 8192, 3), 128, np.uint8)
    shape = {"label": "person", "points": [[8192, 0], [4096, 100]], "shape_type": "rectangle"}
    label = Label("b.png", 8192, 100, (Box(0.1, 0.1, 0.2, 0.9),), other_shapes=(shape,))
    info = p.add_image(png_bytes(big), label=label)
    stored = p.read_label(info.id)
    assert (stored.width, stored.height) == (4096, 50)
    assert stored.other_shapes[0]["points"] == [[4096.0, 0.0], [2048.0, 50.0]]


def test_file_names_that_are_not_utf8_are_stored_readably(workspace):
    p = create_project("p")
    info = p.add_image(jpeg_bytes(synthetic_face()), original_name="caf\udce9.jpg")
    assert p.info(info.id).original_name == "caf\ufffd.jpg"


def test_label_note_says_why_a_photo_is_not_labelled(workspace):
    p = create_project("p")
    a, b, c = (p.add_image(jpeg_bytes(synthetic_face(200, 100, seed=i))).id for i in range(3))
    _with_person(p, a)
    p.label_path(b).write_text("{broken")
    p.set_boxes(c, [])
    assert "1 other shape(s) but no face" in p.label_note(a)
    assert "damaged" in p.label_note(b)
    assert p.label_note(c) is None


def test_written_labels_follow_labelmes_loader_rules(workspace):
    """The checks labelme's LabelFile.load makes, on a label FaceTrack rewrote."""
    p = create_project("p")
    a = p.add_image(jpeg_bytes(synthetic_face(200, 100))).id
    _with_person(p, a, (Box(0.1, 0.1, 0.3, 0.5),))
    p.set_boxes(a, [Box(0.1, 0.1, 0.3, 0.5), Box(0.5, 0.2, 0.7, 0.6)])
    for boxes in ([Box(0.1, 0.1, 0.3, 0.5)], []):
        p.set_boxes(a, boxes)
        doc = json.loads(p.label_path(a).read_text(encoding="utf-8"))
        assert doc["imageData"] is None and isinstance(doc["imagePath"], str)
        assert (p.label_path(a).parent / doc["imagePath"]).resolve() == p.image_path(a).resolve()
        assert (doc["imageWidth"], doc["imageHeight"]) == (200, 100)
        assert all(isinstance(k, str) and isinstance(v, bool) for k, v in doc["flags"].items())
        for shape in doc["shapes"]:
            assert isinstance(shape["label"], str) and isinstance(shape["shape_type"], str)
            assert shape["points"] and all(
                isinstance(pt, list) and len(pt) == 2 and all(isinstance(v, (int, float)) for v in pt)
                for pt in shape["points"]
            )
            assert all(
                isinstance(k, str) and isinstance(v, bool) for k, v in (shape.get("flags") or {}).items()
            )
            assert shape.get("group_id") is None or isinstance(shape["group_id"], int)
            assert shape.get("description") is None or isinstance(shape["description"], str)
            assert shape.get("mask") is None

import json
import threading

import numpy as np
import pytest

from facetrack.images import ImageError
from facetrack.labels import Box, Label, LabelError
from facetrack.workspace import (
    WorkspaceError,
    create_project,
    list_projects,
    open_project,
    project_slug,
    workspace_root,
)
from tests.conftest import jpeg_bytes, synthetic_face


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

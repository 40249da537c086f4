import json

import numpy as np
import pytest

from facetrack.augment import AugmentSettings, augment_image, generate, preview
from facetrack.data import is_stale as data_is_stale
from facetrack.data import list_samples, sample_counts
from facetrack.labels import Box
from facetrack.workspace import create_project
from tests.conftest import synthetic_face


def _project(n_faces: int = 12, n_empty: int = 4):
    p = create_project("p")
    for i in range(n_faces):
        info = p.add_image(synthetic_face(200, 150, seed=i))
        p.set_boxes(info.id, [Box(0.3, 0.25, 0.6, 0.75)])
    for i in range(n_empty):
        info = p.add_image(synthetic_face(200, 150, box=None, seed=100 + i))
        p.set_boxes(info.id, [])
    return p


def test_settings_validate_and_roundtrip():
    s = AugmentSettings(copies_per_image=3, rotation=5)
    assert AugmentSettings.from_dict(s.to_dict()) == s
    assert AugmentSettings.from_dict({**s.to_dict(), "unknown": 1}) == s
    assert s.key() != AugmentSettings(copies_per_image=4, rotation=5).key()
    assert AugmentSettings().vertical_flip is False  # faces are not upside down
    with pytest.raises(ValueError):
        AugmentSettings(copies_per_image=0)
    with pytest.raises(ValueError):
        AugmentSettings(crop_scale_min=1.5)


def test_copies_have_the_output_shape_and_valid_boxes():
    rgb = synthetic_face(320, 200)
    box = Box(0.3, 0.25, 0.6, 0.75)
    copies = augment_image(rgb, box, AugmentSettings(output_size=96, output_height=72), count=30, seed=1)
    assert len(copies) == 30
    faces = [bs[0] for _, bs in copies if bs]
    assert all(img.shape == (72, 96, 3) and len(bs) <= 1 for img, bs in copies)
    square = augment_image(rgb, [box], AugmentSettings(output_size=64, output_height=0), count=2, seed=1)
    assert all(img.shape == (64, 64, 3) for img, _ in square)
    assert len(faces) > 15
    for b in faces:
        assert 0 <= b.x1 < b.x2 <= 1 and 0 <= b.y1 < b.y2 <= 1


def test_whole_frame_copy_keeps_the_box():
    rgb = synthetic_face(320, 200)
    box = Box(0.3, 0.25, 0.6, 0.75)
    s = AugmentSettings(
        crop_probability=0.0, zoom_out_probability=0.0, horizontal_flip=False, rotation=0, output_size=64
    )
    ((img, (b,)),) = augment_image(rgb, box, s, count=1, seed=0)
    assert b.to_list() == pytest.approx(box.to_list(), abs=1e-3)


def test_flip_mirrors_the_box():
    rgb = synthetic_face(320, 200)
    box = Box(0.1, 0.25, 0.4, 0.75)
    s = AugmentSettings(crop_probability=0.0, zoom_out_probability=0.0, rotation=0, output_size=64)
    boxes = {tuple(np.round(b.to_list(), 3)) for _, (b,) in augment_image(rgb, box, s, count=20, seed=3)}
    assert boxes == {(0.1, 0.25, 0.4, 0.75), (0.6, 0.25, 0.9, 0.75)}


def test_face_cut_off_by_a_crop_becomes_no_face():
    rgb = synthetic_face(400, 400)
    box = Box(0.0, 0.0, 0.25, 0.25)  # a face in the corner: small crops often leave it out
    s = AugmentSettings(
        crop_probability=1.0, crop_scale_min=0.1, rotation=0, min_visibility=0.6, output_size=64
    )
    copies = augment_image(rgb, box, s, count=60, seed=2)
    assert any(bs == [] for _, bs in copies)
    assert any(bs for _, bs in copies)


def test_zoom_out_shrinks_the_face_and_keeps_its_centre_inside():
    rgb = synthetic_face(320, 240)
    box = Box(0.3, 0.25, 0.6, 0.75)
    s = AugmentSettings(
        crop_probability=0.0, zoom_out=0.5, zoom_out_probability=1.0, horizontal_flip=False, rotation=0,
        output_size=96,
    )  # fmt: skip
    boxes = [bs for _, bs in augment_image(rgb, box, s, count=20, seed=4)]
    areas = [bs[0].area for bs in boxes if bs]
    assert len(areas) == 20 and max(areas) <= box.area + 1e-6 and min(areas) < 0.6 * box.area


def test_every_box_follows_and_a_cut_off_face_is_dropped_alone():
    """Two faces: crops keep one, the other or both; "no face" only when none is left."""
    rgb = synthetic_face(400, 300)
    left, right = Box(0.02, 0.3, 0.2, 0.6), Box(0.75, 0.3, 0.95, 0.6)
    s = AugmentSettings(crop_probability=1.0, crop_scale_min=0.2, rotation=0, min_visibility=0.6,
                        horizontal_flip=False, zoom_out_probability=0.0, output_size=80, output_height=60)  # fmt: skip
    counts = [len(bs) for _, bs in augment_image(rgb, [left, right], s, count=80, seed=5)]
    assert {0, 1, 2} <= set(counts)
    plain = AugmentSettings(crop_probability=0.0, zoom_out_probability=0.0, rotation=0, output_size=64)
    flips = {tuple(tuple(np.round(b.to_list(), 3)) for b in bs)
             for _, bs in augment_image(rgb, [left, right], plain, count=20, seed=3)}  # fmt: skip
    # both boxes follow the mirror (the order of the list may change)
    assert {frozenset(f) for f in flips} == {
        frozenset({(0.02, 0.3, 0.2, 0.6), (0.75, 0.3, 0.95, 0.6)}),
        frozenset({(0.8, 0.3, 0.98, 0.6), (0.05, 0.3, 0.25, 0.6)}),
    }


def test_preview_draws_every_box():
    rgb = synthetic_face(400, 300)
    faces = [Box(0.1, 0.3, 0.3, 0.6), Box(0.6, 0.3, 0.8, 0.6)]
    plain = AugmentSettings(crop_probability=0.0, zoom_out_probability=0.0, rotation=0, output_size=64)
    assert all(len(bs) == 2 for _, bs in preview(rgb, faces, plain, count=3, seed=1))


def test_preview_is_deterministic_for_a_seed():
    rgb = synthetic_face()
    box = Box(0.3, 0.25, 0.6, 0.75)
    a = preview(rgb, box, AugmentSettings(output_size=64), count=4, seed=7)
    b = preview(rgb, box, AugmentSettings(output_size=64), count=4, seed=7)
    assert all(np.array_equal(x[0], y[0]) and x[1] == y[1] for x, y in zip(a, b, strict=True))


def test_generate_augments_only_train_and_resumes(workspace):
    p = _project()
    s = AugmentSettings(copies_per_image=3, output_size=64)
    calls = []
    report = generate(p, s, progress=lambda d, t: calls.append((d, t)), workers=0)
    split = p.split()
    n = {side: sum(v == side for v in split.values()) for side in ("train", "val", "test")}
    assert report.counts["train"] == 3 * n["train"]
    assert report.counts["val"] == n["val"] and report.counts["test"] == n["test"]
    assert calls[-1] == (16, 16)
    # no copy of a val/test photo is in the training set
    train_sources = {s.source_id for s in list_samples(p.augmented_dir, "train", p.stored_split())}
    held_out = {k for k, v in split.items() if v != "train"}
    assert train_sources and not (train_sources & held_out)
    # resume: nothing to do the second time
    again = generate(p, s, workers=0)
    assert again.done == 0 and again.skipped == 16
    assert not data_is_stale(p.augmented_dir, p.stored_split(), p.labelled_ids())
    # a new labelled photo makes the set stale and is generated on its own
    info = p.add_image(synthetic_face(seed=50))
    p.set_boxes(info.id, [])
    assert data_is_stale(p.augmented_dir, p.stored_split(), p.labelled_ids())
    third = generate(p, s, workers=0)
    assert third.done == 1 and third.skipped == 16


def test_a_copy_cut_short_is_generated_again(workspace):
    """Copies are written without fsync; the marker's sizes catch one a crash cut short."""
    p = _project(n_faces=4, n_empty=0)
    s = AugmentSettings(copies_per_image=2, output_size=48)
    generate(p, s, workers=0)
    marker = sorted((p.augmented_dir / "train").glob("*.json"))[0]
    copy = marker.parent / json.loads(marker.read_text())["copies"][1]["file"]
    good = copy.read_bytes()
    copy.write_bytes(good[: len(good) // 3])  # what a power cut may leave
    report = generate(p, s, workers=0)
    assert report.done == 1 and report.skipped == 3
    assert copy.read_bytes() == good  # same seed: the same copy again


def test_generate_in_worker_processes(workspace):
    p = _project(n_faces=10, n_empty=2)
    report = generate(p, AugmentSettings(copies_per_image=2, output_size=48), workers=2)
    assert report.failed == [] and report.done == 12
    assert sample_counts(p.augmented_dir, p.stored_split())["train"] == 2 * sum(
        v == "train" for v in p.split().values()
    )


def test_changed_settings_regenerate(workspace):
    p = _project(n_faces=4, n_empty=0)
    generate(p, AugmentSettings(copies_per_image=2, output_size=48), workers=0)
    report = generate(p, AugmentSettings(copies_per_image=3, output_size=48), workers=0)
    assert report.skipped == 0
    assert all(
        len(json.loads(m.read_text())["copies"]) == 3 for m in (p.augmented_dir / "train").glob("*.json")
    )


def test_stop_keeps_finished_images(workspace):
    p = _project(n_faces=10, n_empty=0)
    seen = []
    report = generate(
        p, AugmentSettings(copies_per_image=2, output_size=48), progress=lambda d, t: seen.append(d),
        should_stop=lambda: len(seen) > 3, workers=0,
    )  # fmt: skip
    assert report.stopped and 0 < report.done < 10
    finished = generate(p, AugmentSettings(copies_per_image=2, output_size=48), workers=0)
    assert finished.skipped == report.done and not finished.stopped


def test_deleted_photo_disappears_from_samples(workspace):
    p = _project(n_faces=6, n_empty=0)
    generate(p, AugmentSettings(copies_per_image=2, output_size=48), workers=0)
    victim = next(k for k, v in p.split().items() if v == "train")
    p.delete_image(victim)
    assert victim not in {s.source_id for s in list_samples(p.augmented_dir, "train", p.stored_split())}
    assert not list(p.augmented_dir.rglob(f"{victim}*"))


def test_listing_and_counting_never_assign_the_split(workspace):
    """Page views read the split; only generation and training assign it (and write split.json)."""
    p = _project(n_faces=4, n_empty=0)
    generate(p, AugmentSettings(copies_per_image=2, output_size=48), workers=0)
    split_file = p.path / "split.json"
    before = split_file.read_bytes(), split_file.stat().st_mtime_ns
    info = p.add_image(synthetic_face(seed=77))
    p.set_boxes(info.id, [Box(0.3, 0.25, 0.6, 0.75)])
    split = p.stored_split()
    assert info.id not in split  # not assigned yet
    assert data_is_stale(p.augmented_dir, split, p.labelled_ids())
    counted = sample_counts(p.augmented_dir, split)
    for side in ("train", "val", "test"):
        list_samples(p.augmented_dir, side, split)
    assert (split_file.read_bytes(), split_file.stat().st_mtime_ns) == before
    assert counted["train"] == 2 * sum(v == "train" for v in split.values())
    assert info.id in p.split()  # generation/training assign it


def test_generation_stores_every_face_of_each_copy(workspace):
    p = create_project("multi")
    faces = [Box(0.1, 0.3, 0.3, 0.6), Box(0.6, 0.3, 0.8, 0.6)]
    for i in range(12):
        info = p.add_image(synthetic_face(200, 150, seed=i))
        p.set_boxes(info.id, faces)
    s = AugmentSettings(copies_per_image=2, multi_face_copies=3, crop_probability=0.0,
                        zoom_out_probability=0.0, rotation=0, output_size=64, output_height=48)  # fmt: skip
    generate(p, s, workers=0)
    split = p.stored_split()
    train = list_samples(p.augmented_dir, "train", split)
    assert train and len(train) == 3 * sum(v == "train" for v in split.values())  # multi_face_copies
    assert all(len(x.boxes) == 2 and x.box == x.boxes[0] for x in train)
    for side in ("val", "test"):
        for x in list_samples(p.augmented_dir, side, split):
            np.testing.assert_allclose(x.box_array(), [b.to_list() for b in faces], atol=1e-5)
    marker = json.loads(next((p.augmented_dir / "train").glob("*.json")).read_text())
    assert (
        len(marker["copies"][0]["boxes"]) == 2
        and marker["copies"][0]["box"] == marker["copies"][0]["boxes"][0]
    )


def test_a_set_made_before_multi_face_is_stale_and_still_readable(workspace):
    """Older sets stored one "box" per copy under a key without the format: regenerated, readable meanwhile."""
    p = _project(n_faces=4, n_empty=0)
    s = AugmentSettings(copies_per_image=2, output_size=48)
    generate(p, s, workers=0)
    old_key = "0123456789ab"
    settings_file = p.augmented_dir / "settings.json"
    settings_file.write_text(json.dumps({"key": old_key, "settings": s.to_dict()}))
    for marker in p.augmented_dir.glob("*/*.json"):
        doc = json.loads(marker.read_text())
        doc["key"] = old_key
        for c in doc["copies"]:
            c.pop("boxes")
        marker.write_text(json.dumps(doc))
    split = p.stored_split()
    old = list_samples(p.augmented_dir, "train", split)
    assert old and all(len(x.boxes) == (1 if x.box else 0) for x in old)
    assert data_is_stale(p.augmented_dir, split, p.labelled_ids()) is False  # same key as its markers
    report = generate(p, s, workers=0)  # the current key differs: everything is generated again
    assert report.skipped == 0 and report.done == 4
    assert all(
        "boxes" in c for m in p.augmented_dir.glob("*/*.json") for c in json.loads(m.read_text())["copies"]
    )

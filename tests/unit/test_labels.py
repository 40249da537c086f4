import json
import time

import pytest

from facetrack.labels import (
    MAX_SHAPES,
    Box,
    Label,
    LabelError,
    iou,
    labelme_dict,
    parse_labelme,
    read_labelme,
    write_labelme,
)


def test_from_pixels_sorts_and_clips_corners():
    box = Box.from_pixels([[150, 90], [-10, 10]], width=100, height=80)
    assert box.to_list() == pytest.approx([0.0, 10 / 80, 1.0, 1.0])


def test_from_pixels_accepts_flat_points():
    assert Box.from_pixels([10, 20, 30, 40], 100, 100).to_list() == pytest.approx([0.1, 0.2, 0.3, 0.4])


@pytest.mark.parametrize(
    "points",
    [
        [[10, 10], [10, 50]],  # zero width
        [[10, 10], [50, 10]],  # zero height
        [[200, 200], [300, 300]],  # wholly outside a 100x100 image
        [[-50, -50], [-10, -10]],
        [[1, 2]],
        [["a", 2], [3, 4]],
        None,
        [[float("nan"), 1], [5, 5]],
    ],
)
def test_from_pixels_refuses_unusable_boxes(points):
    with pytest.raises(LabelError):
        Box.from_pixels(points, 100, 100)


def test_box_rejects_values_outside_unit_square():
    with pytest.raises(LabelError):
        Box(0.1, 0.1, 1.2, 0.5)
    with pytest.raises(LabelError):
        Box(0.5, 0.1, 0.4, 0.5)


def test_iou():
    assert iou([0, 0, 2, 2], [1, 1, 3, 3]) == pytest.approx(1 / 7)
    assert iou([0, 0, 1, 1], [2, 2, 3, 3]) == 0.0
    assert Box(0.1, 0.1, 0.5, 0.5).iou(Box(0.1, 0.1, 0.5, 0.5)) == pytest.approx(1.0)


def test_labelme_roundtrip(tmp_path):
    label = Label("../images/a.jpg", 640, 480, (Box.from_pixels([[100, 50], [300, 250]], 640, 480),))
    path = tmp_path / "a.json"
    write_labelme(path, label)
    doc = json.loads(path.read_text())
    # what the labelme desktop app needs to open it
    assert doc["shapes"][0]["shape_type"] == "rectangle"
    assert doc["shapes"][0]["label"] == "face"
    assert doc["shapes"][0]["points"] == [[100.0, 50.0], [300.0, 250.0]]
    assert (doc["imageWidth"], doc["imageHeight"], doc["imagePath"]) == (640, 480, "../images/a.jpg")
    assert "imageData" in doc and "version" in doc and "flags" in doc
    again = read_labelme(path)
    assert again.boxes[0].to_list() == pytest.approx(label.boxes[0].to_list())


def test_no_face_is_empty_shapes(tmp_path):
    path = tmp_path / "n.json"
    write_labelme(path, Label("x.jpg", 10, 10, ()))
    assert json.loads(path.read_text())["shapes"] == []
    assert not read_labelme(path).has_face


def test_parse_reads_face_polygons_as_rectangles_and_keeps_other_shapes():
    doc = labelme_dict(Label("x.jpg", 100, 100, (Box(0.1, 0.1, 0.2, 0.2),)))
    doc["shapes"].append({"label": "face", "shape_type": "polygon", "points": [[1, 1], [5, 5], [1, 7]]})
    doc["shapes"].append({"label": "cat", "shape_type": "rectangle", "points": [[1, 1], [5, 5]]})
    label = parse_labelme(doc)
    assert [v for b in label.boxes for v in b.to_list()] == pytest.approx(
        [0.1, 0.1, 0.2, 0.2, 0.01, 0.01, 0.05, 0.07]
    )
    assert label.other_shapes == (doc["shapes"][2],)
    assert any("polygon" in n for n in label.notes) and any("cat rectangle" in n for n in label.notes)


@pytest.mark.parametrize(
    "doc",
    [
        [],
        {"shapes": []},
        {"shapes": [], "imageWidth": "640", "imageHeight": 480},
        {"shapes": [], "imageWidth": 0, "imageHeight": 480},
        {"shapes": "nope", "imageWidth": 10, "imageHeight": 10},
        {"shapes": [7], "imageWidth": 10, "imageHeight": 10},
        {
            "shapes": [{"label": "face", "shape_type": "rectangle", "points": [[1, 1], [1, 1]]}],
            "imageWidth": 10,
            "imageHeight": 10,
        },
        {"shapes": [], "imageWidth": 10, "imageHeight": 10, "imagePath": 5},
    ],
)
def test_parse_refuses_non_labelme(doc):
    with pytest.raises(LabelError):
        parse_labelme(doc)


def test_read_refuses_invalid_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(LabelError, match="not valid JSON"):
        read_labelme(path)


# -- bad files are refused with a LabelError, never another exception ---------------------------
def _doc_text(points: str, width: str = "100", extra: str = "") -> str:
    shape = f'{{"label": "face", "shape_type": "rectangle", "points": {points}}}'
    return f'{{"shapes": [{shape}], "imageWidth": {width}, "imageHeight": 100{extra}}}'


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested"),  # RecursionError in json
        ('{"shapes": [], "imageWidth": 10, "imageHeight": 10, "x": ' + "[" * 60 + "]" * 60 + "}", "nested"),
        (_doc_text("[[1" + "0" * 400 + ", 1], [5, 5]]"), "not numbers"),  # OverflowError in float()
        (_doc_text("[[1e999, 1], [5, 5]]"), "not finite"),  # parses as inf
        (_doc_text("[[-Infinity, 1], [5, 5]]"), "not finite"),
        (_doc_text("[[NaN, 1], [5, 5]]"), "not finite"),
        (_doc_text("[[1e300, 1], [5, 5]]"), "not finite"),  # absurd
        (_doc_text("[[1" + "0" * 5000 + ", 1], [5, 5]]"), "not valid JSON"),  # int longer than Python reads
        (_doc_text("[[1, 1], [5, 5]]", width="1" + "0" * 400), "positive integers"),  # 1/width overflows
        ('{"shapes": [], "imageWidth": 10, "imageHeight": 10}'.encode("utf-16").decode("latin-1"), "JSON"),
    ],
    ids=[
        "deep",
        "deeper-than-40",
        "overflow",
        "1e999",
        "-inf",
        "nan",
        "absurd",
        "long-int",
        "huge-width",
        "utf16",
    ],
)
def test_read_refuses_malicious_files_with_a_label_error(tmp_path, text, why):
    path = tmp_path / "bad.json"
    path.write_bytes(text.encode("utf-8") if not text.startswith("\xff\xfe") else text.encode("latin-1"))
    with pytest.raises(LabelError, match=why):
        read_labelme(path)


def _rect(i: int) -> dict:
    return {"label": "face", "shape_type": "rectangle", "points": [[i % 90, 1], [i % 90 + 5, 6]]}


def test_too_many_shapes_are_refused(tmp_path):
    doc = {"shapes": [_rect(i) for i in range(MAX_SHAPES + 1)], "imageWidth": 100, "imageHeight": 100}
    with pytest.raises(LabelError, match="at most 1000"):
        parse_labelme(doc)
    path = tmp_path / "many.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(LabelError, match="at most 1000"):
        read_labelme(path)
    ok = {**doc, "shapes": doc["shapes"][:MAX_SHAPES]}
    assert len(parse_labelme(ok).boxes) == MAX_SHAPES


def test_a_35_mb_label_with_300000_rectangles_is_refused_before_parsing(tmp_path):
    shape = json.dumps({**_rect(1), "group_id": None, "description": "", "flags": {}, "mask": None}, indent=2)
    path = tmp_path / "huge.json"
    path.write_text(
        '{"imageWidth": 100, "imageHeight": 100, "shapes": [' + ",".join([shape] * 300_000) + "]}"
    )
    assert path.stat().st_size > 35 * 10**6
    t0 = time.perf_counter()
    with pytest.raises(LabelError, match="larger than the 16 MB"):
        read_labelme(path)
    assert time.perf_counter() - t0 < 2.0


# -- what FaceTrack does not use is kept, untouched ----------------------------------------------
def _labelme_app_doc() -> dict:
    """A file as the labelme desktop app writes it, with things FaceTrack does not use."""
    return {
        "version": "5.4.1",
        "flags": {"blurry": True},
        "shapes": [
            {
                "label": "person",
                "points": [[5, 5], [90, 95]],
                "group_id": None,
                "description": "",
                "shape_type": "rectangle",
                "flags": {},
                "mask": None,
            },
            {
                "label": "face",
                "points": [[20, 10], [60, 50]],
                "group_id": 3,
                "description": "Ana",
                "shape_type": "rectangle",
                "flags": {"occluded": True},
                "mask": None,
                "score": 0.9,
            },
            {
                "label": "cat",
                "points": [[1, 1], [9, 1], [5, 9]],
                "group_id": None,
                "description": "",
                "shape_type": "polygon",
                "flags": {},
                "mask": None,
            },
            {"label": "face", "points": [[70, 70], [75, 75]], "shape_type": "circle"},
        ],
        "imagePath": "a.jpg",
        "imageData": None,
        "imageHeight": 100,
        "imageWidth": 120,
        "myTool": {"reviewed": ["bob"], "n": 2},
    }


def test_rewrite_keeps_every_shape_flag_and_key(tmp_path):
    doc = _labelme_app_doc()
    label = parse_labelme(doc)
    assert len(label.boxes) == 1
    path = tmp_path / "a.json"
    write_labelme(path, label.with_boxes([*label.boxes, Box(0.6, 0.1, 0.8, 0.3)]))
    out = json.loads(path.read_text())
    assert out["flags"] == {"blurry": True} and out["myTool"] == doc["myTool"]
    for kept in (doc["shapes"][0], doc["shapes"][2], doc["shapes"][3]):
        assert kept in out["shapes"]
    faces = [s for s in out["shapes"] if s["label"] == "face" and s["shape_type"] == "rectangle"]
    assert len(faces) == 2
    # the face that stayed keeps its own keys; the new one has labelme's defaults
    assert {k: faces[0][k] for k in ("group_id", "description", "flags", "score")} == {
        "group_id": 3,
        "description": "Ana",
        "flags": {"occluded": True},
        "score": 0.9,
    }
    assert faces[1]["group_id"] is None and faces[1]["flags"] == {}
    # same schema as labelme writes: its keys, in its order, first
    assert list(out)[:7] == [
        "version",
        "flags",
        "shapes",
        "imagePath",
        "imageData",
        "imageHeight",
        "imageWidth",
    ]
    again = read_labelme(path)
    assert again.other_shapes == label.other_shapes and len(again.boxes) == 2


def test_other_shapes_only_is_not_a_no_face_label(tmp_path):
    doc = {
        "shapes": [{"label": "person", "shape_type": "rectangle", "points": [[1, 1], [50, 50]]}],
        "imageWidth": 100,
        "imageHeight": 100,
    }
    label = parse_labelme(doc)
    assert label.boxes == () and not label.is_labelled and not label.no_face
    marked = label.with_boxes([])
    assert marked.is_labelled and marked.no_face
    path = tmp_path / "n.json"
    write_labelme(path, marked)
    out = json.loads(path.read_text())
    assert out["flags"] == {"no_face": True} and out["shapes"] == doc["shapes"]
    assert read_labelme(path).is_labelled and read_labelme(path).boxes == ()
    # a plain empty file still means "no face", as before
    assert parse_labelme({"shapes": [], "imageWidth": 9, "imageHeight": 9}).is_labelled


def test_resized_scales_kept_shapes():
    label = parse_labelme(_labelme_app_doc()).resized(60, 50)
    assert label.other_shapes[0]["points"] == [[2.5, 2.5], [45.0, 47.5]]
    assert label.boxes == parse_labelme(_labelme_app_doc()).boxes  # normalized boxes do not change


def test_a_label_that_would_not_read_back_is_never_written(tmp_path):
    path = tmp_path / "t.json"
    tiny = Label("x.jpg", 4096, 20, (Box(0.1, 0.1, 0.2, 0.9),)).resized(4096, 1)  # 0.8 px tall
    with pytest.raises(LabelError):
        write_labelme(path, tiny)
    assert not path.exists()


def test_kept_text_with_lone_surrogates_reads_back(tmp_path):
    doc = json.loads(
        '{"shapes": [{"label": "x\\udc80", "points": [[1, 1], [5, 5]]}], "imageWidth": 10, "imageHeight": 10}'
    )
    path = tmp_path / "s.json"
    write_labelme(path, parse_labelme(doc))
    assert read_labelme(path).other_shapes[0]["label"] == "x\udc80"

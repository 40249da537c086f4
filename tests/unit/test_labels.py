import json

import pytest

from facetrack.labels import (
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
    assert [v for b in label.boxes for v in b.to_list()] == pytest.approx([0.1, 0.1, 0.2, 0.2, 0.01, 0.01, 0.05, 0.07])
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

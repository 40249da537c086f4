"""Label page helpers: the suggestion store, suggestions fetched ahead in a thread, the photo strip window."""

from __future__ import annotations

import threading
import time

from facetrack.labels import Box
from facetrack.suggest import MTCNN_SOURCE, Suggestion
from ui.labeling import SuggestionStore, neighbours, prefetch, suggestion_store


def test_neighbours_stay_centred_and_inside() -> None:
    ids = [str(i) for i in range(20)]
    assert neighbours(ids, 0, 9) == list(range(9))
    assert neighbours(ids, 10, 9) == list(range(6, 15))
    assert neighbours(ids, 19, 9) == list(range(11, 20))
    assert neighbours(ids[:3], 1, 9) == [0, 1, 2]


def test_store_waits_for_a_value_being_computed() -> None:
    store = SuggestionStore(size=2)
    key = ("photo.jpg", 1.0, MTCNN_SOURCE)
    assert store.claim(key) and not store.claim(key)  # one computer at a time
    found = [Suggestion(Box(0.1, 0.1, 0.5, 0.5), 0.9, MTCNN_SOURCE)]

    def compute() -> None:
        time.sleep(0.2)
        store.put(key, found)
        store.release(key)

    threading.Thread(target=compute).start()
    assert store.wait(key, timeout=10) == found
    assert store.wait(("other.jpg", 1.0, MTCNN_SOURCE), timeout=0.01) is None  # nobody computes it
    store.put(("a", 0, ""), [])
    store.put(("b", 0, ""), [])
    assert store.get(key) is None  # the oldest dropped beyond the size


def test_prefetch_computes_the_face_finders_suggestions_in_the_background(
    populated_project, mtcnn_face_photo
) -> None:
    image_id = populated_project.add_image(mtcnn_face_photo["bytes"], original_name="face.jpg").id
    path = populated_project.image_path(image_id)
    key = (str(path), path.stat().st_mtime, MTCNN_SOURCE)
    prefetch(populated_project, [image_id], MTCNN_SOURCE)
    found = suggestion_store().wait(key, timeout=120)
    assert found and found[0].box.iou(mtcnn_face_photo["box"]) > 0.5
    prefetch(populated_project, [image_id], "")  # no suggestions chosen: nothing to do

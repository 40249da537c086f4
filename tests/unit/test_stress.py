"""Concurrency stress: several writer and reader processes on one project, then every file is checked.

Writers add photos (as a camera burst does), label them, relabel, delete some,
and recompute the split; readers list, read labels, counts and the split, as
open browser tabs do. Afterwards every photo must decode, every label must
parse and hold exactly the last boxes its writer saved, no deleted photo may
leave a file behind, and no temporary file may remain.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import random
import time

import cv2
import pytest

from facetrack.labels import Box
from facetrack.workspace import create_project, open_project
from tests.conftest import synthetic_face

WRITERS = 4
READERS = 2
SECONDS = 6.0


def _writer(root: str, k: int, seconds: float, out: mp.Queue) -> None:
    project = open_project("stress", root=__import__("pathlib").Path(root))
    rng = random.Random(k)
    expected: dict[str, list[list[float]]] = {}
    deleted: list[str] = []
    ops = 0
    end = time.time() + seconds
    frame = synthetic_face(160, 120, seed=k)
    while time.time() < end:
        r = rng.random()
        if r < 0.3 or not expected:
            info = project.add_image(frame, burst=f"burst-{k}-{ops // 10}", origin="camera")
            expected[info.id] = []
            project.set_boxes(info.id, [])
        elif r < 0.85:
            image_id = rng.choice(list(expected))
            x = round(rng.uniform(0.0, 0.5), 3)
            boxes = [Box(x, 0.1, x + 0.3, 0.6)] if rng.random() < 0.7 else []
            project.set_boxes(image_id, boxes)
            expected[image_id] = [b.to_list() for b in boxes]
        elif r < 0.95:
            image_id = rng.choice(list(expected))
            project.delete_image(image_id)
            expected.pop(image_id)
            deleted.append(image_id)
        else:
            project.split()
        ops += 1
    out.put({"writer": k, "ops": ops, "expected": expected, "deleted": deleted})


def _reader(root: str, seconds: float, out: mp.Queue) -> None:
    project = open_project("stress", root=__import__("pathlib").Path(root))
    ops = errors = 0
    end = time.time() + seconds
    while time.time() < end:
        for image_id in project.image_ids()[-20:]:
            try:
                project.boxes(image_id)  # None when deleted meanwhile: fine
            except Exception:
                errors += 1
        project.status()
        ops += 1
    out.put({"reader": True, "ops": ops, "errors": errors})


@pytest.mark.timeout(120)
def test_writers_and_readers_lose_nothing(workspace):
    create_project("stress")
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(workspace), k, SECONDS, out)) for k in range(WRITERS)]
    procs += [ctx.Process(target=_reader, args=(str(workspace), SECONDS, out)) for _ in range(READERS)]
    for p in procs:
        p.start()
    results = [out.get(timeout=90) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    project = open_project("stress")
    writes = [r for r in results if "writer" in r]
    reads = [r for r in results if "reader" in r]
    losses = 0
    for r in writes:
        for image_id, boxes in r["expected"].items():
            label = project.read_label(image_id)
            assert cv2.imread(str(project.image_path(image_id))) is not None
            got = [[round(v, 3) for v in b.to_list()] for b in label.boxes]
            want = [[round(v, 3) for v in b] for b in boxes]
            losses += got != want
        for image_id in r["deleted"]:
            assert not list(project.path.rglob(f"{image_id}*")), image_id
    assert losses == 0
    assert sum(r["errors"] for r in reads) == 0
    assert not [p for p in project.path.rglob("*") if p.name.endswith(".tmp")]
    split = (
        json.loads((project.path / "split.json").read_text())
        if (project.path / "split.json").exists()
        else {}
    )
    assert set(split) <= set(project.image_ids())
    total_ops = sum(r["ops"] for r in writes)
    print(
        f"\nstress: {WRITERS} writers x {total_ops} operations, {READERS} readers x "
        f"{sum(r['ops'] for r in reads)} passes, {len(project.image_ids())} photos left, losses {losses}"
    )
    assert total_ops > 50

"""A full disk: a clear "the disk is full" before long work, a clean stop during it, no stale status.

Each test mounts a real small tmpfs (tests.smalldisk). For the cases "the disk
fills up during the work", the free-space check before the work is told there
is room (``shutil.disk_usage`` patched), so the real ENOSPC of the tmpfs
comes from the writes themselves.
"""

from __future__ import annotations

import os
import shutil
from collections import namedtuple
from pathlib import Path

import pytest

from facetrack.__main__ import main
from facetrack.augment import AugmentSettings
from facetrack.data import Sample
from facetrack.fileio import DiskFull, atomic_write_json, ensure_free_space, read_json, write_status_json
from facetrack.labels import Box
from facetrack.tasks import augment_progress_path, generate_training_set
from facetrack.workspace import Project, create_project
from tests.conftest import jpeg_bytes, synthetic_face
from tests.smalldisk import fill, small_disk

Usage = namedtuple("Usage", "total used free")


def _photos(project: Project, n: int = 12) -> None:
    for i in range(n):
        box = (0.2 + 0.03 * i, 0.2, 0.6, 0.8) if i % 4 else None
        image_id = project.add_image(synthetic_face(160, 120, box=box, seed=i), burst=f"b{i}").id
        project.set_boxes(image_id, [Box(*box)] if box else [])


@pytest.fixture
def room_claimed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check before the work sees plenty of space; the writes then meet the real full disk."""
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(2**40, 0, 2**40))


def test_free_space_check_names_what_and_how_much(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", 256) as disk:
        with pytest.raises(DiskFull) as info:
            ensure_free_space(disk / "not" / "yet", 10 * 2**20, "augmentation")
        assert str(info.value).startswith("the disk is full: augmentation needs about 10 MB in ")
        ensure_free_space(disk, 64 * 2**10, "augmentation")  # fits


def test_status_is_rewritten_in_place_when_the_disk_is_full(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", 128) as disk:
        status = disk / "status.json"
        atomic_write_json(status, {"state": "running", "message": "x" * 200})
        fill(disk)
        with pytest.raises(OSError):
            atomic_write_json(status, {"state": "failed"})
        write_status_json(status, {"state": "failed", "message": "the disk is full"})
        assert read_json(status) == {"state": "failed", "message": "the disk is full"}
        assert [p.name for p in disk.iterdir() if p.name.endswith(".tmp")] == []


def test_augment_refuses_to_start_on_a_nearly_full_disk(tmp_path: Path, capsys) -> None:
    with small_disk(tmp_path / "disk", 2048) as disk:
        project = create_project("p", disk)
        _photos(project)
        code = main(
            ["augment", "--project", str(project.path), "--copies", "20", "--workers", "0", "--quiet"]
        )
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 1 and len(err) == 1, err
        assert err[0].startswith("error: the disk is full: augmentation needs about ")
        assert list(project.augmented_dir.rglob("*.jpg")) == []


def _no_partial_copies(project: Project) -> None:
    """Every copy on disk belongs to a finished photo (listed in its marker, at its full size)."""
    listed = set()
    for marker in project.augmented_dir.glob("*/*.json"):
        for c in read_json(marker)["copies"]:
            listed.add(marker.parent / c["file"])
            assert (marker.parent / c["file"]).stat().st_size == c["bytes"]
    assert set(project.augmented_dir.glob("*/*.jpg")) == listed
    assert not list(project.path.rglob("*.tmp"))


@pytest.mark.parametrize("workers", [0, 2])
def test_augment_stops_at_a_full_disk_and_leaves_no_partial_copy(
    tmp_path, capsys, room_claimed, workers
) -> None:
    with small_disk(tmp_path / "disk", 640) as disk:
        project = create_project("p", disk)
        _photos(project)
        args = ["augment", "--project", str(project.path), "--copies", "20", "--size", "160", "--quiet"]
        code = main([*args, "--workers", str(workers)])
        out, err = capsys.readouterr()
        assert code == 1 and "finished" not in out
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: the disk is full: no space left for "), lines
        _no_partial_copies(project)


def test_the_augment_job_reports_the_full_disk(tmp_path, room_claimed) -> None:
    with small_disk(tmp_path / "disk", 640) as disk:
        project = create_project("p", disk)
        _photos(project)
        progress = augment_progress_path(project)
        atomic_write_json(progress, {"state": "running"})
        with pytest.raises(DiskFull):
            generate_training_set(
                project, AugmentSettings(copies_per_image=20), progress_file=progress, workers=0
            )
        doc = read_json(progress)
        assert doc["state"] == "failed" and doc["message"].startswith("the disk is full"), doc
        _no_partial_copies(project)


def _samples(folder: Path, n: int) -> list[Sample]:
    folder.mkdir(parents=True, exist_ok=True)
    samples = []
    for i in range(n):
        path = folder / f"s{i}.jpg"
        path.write_bytes(jpeg_bytes(synthetic_face(64, 64, seed=i)))
        samples.append(Sample(path, Box(0.3, 0.25, 0.6, 0.75), f"s{i}"))
    return samples


def test_training_refuses_to_start_on_a_nearly_full_disk(tmp_path: Path) -> None:
    from facetrack.train import TrainSettings, train

    samples = _samples(tmp_path / "samples", 8)
    with small_disk(tmp_path / "disk", 1024) as disk:
        run = disk / "runs" / "r1"
        settings = TrainSettings(backbone="compact", weights="none", epochs=1, batch_size=4, input_size=48)
        with pytest.raises(DiskFull, match="the disk is full: training needs about"):
            train(samples, samples[:2], settings, run, cache_dir=disk / "cache")
        status = read_json(run / "status.json")
        assert status["state"] == "failed" and status["message"].startswith("the disk is full")


def test_a_cache_that_does_not_fit_fails_cleanly(tmp_path: Path, room_claimed) -> None:
    """Was: SIGBUS with no message, status.json "running" and a partial cache file."""
    from facetrack.train import TrainSettings, train

    samples = _samples(tmp_path / "samples", 64)  # 64 x 48 x 48 x 3 = 432 KB of pixels
    with small_disk(tmp_path / "disk", 256) as disk:
        run = disk / "runs" / "r1"
        settings = TrainSettings(backbone="compact", weights="none", epochs=1, batch_size=16, input_size=48)
        with pytest.raises(DiskFull, match="the disk is full"):
            train(samples, samples[:4], settings, run, cache_dir=disk / "cache")
        status = read_json(run / "status.json")
        assert status["state"] == "failed" and status["message"].startswith("the disk is full")
        assert [p.name for p in (disk / "cache").rglob("*.npy")] == []
        assert os.statvfs(disk).f_bfree > 0  # the partial cache's space was given back

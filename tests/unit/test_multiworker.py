"""Training on two machines, rehearsed on one: two worker processes on 127.0.0.1 train one model.

``train --strategy multiworker`` with a ``TF_CONFIG`` of two workers: both
must finish, in step (a worker whose partner is gone would wait forever), and
only the chief (worker 0) writes the run folder; the other worker's copies go
to a scratch folder that is removed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from facetrack.augment import AugmentSettings, generate
from facetrack.cluster import ClusterConfigError, worker_role
from facetrack.fileio import read_json
from facetrack.labels import Box
from facetrack.workspace import create_project
from tests.conftest import REPO, synthetic_face


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tf_config(ports: list[int], index: int) -> str:
    workers = [f"127.0.0.1:{p}" for p in ports]
    return json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})


def test_worker_role_from_tf_config() -> None:
    assert worker_role({}).is_chief and worker_role({}).workers == 1
    assert worker_role({"TF_CONFIG": _tf_config([1, 2], 0)}).is_chief
    second = worker_role({"TF_CONFIG": _tf_config([1, 2], 1)})
    assert not second.is_chief and second.workers == 2 and second.index == 1
    cluster = {"chief": ["a:1"], "worker": ["b:1"]}
    assert worker_role({"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "chief"}})}).is_chief
    worker0 = {"cluster": cluster, "task": {"type": "worker", "index": 0}}
    assert not worker_role({"TF_CONFIG": json.dumps(worker0)}).is_chief  # a cluster with a chief
    for bad in ("{", json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}})):
        with pytest.raises(ClusterConfigError):
            worker_role({"TF_CONFIG": bad})


@pytest.mark.timeout(600)
def test_two_workers_train_together_and_only_the_chief_writes_the_run(tmp_path: Path) -> None:
    project = create_project("two", tmp_path / "ws")
    for i in range(12):
        box = (0.15 + 0.03 * i, 0.2, 0.55 + 0.03 * i, 0.8) if i % 4 else None
        image_id = project.add_image(synthetic_face(96, 80, box=box, seed=i), burst=f"b{i}").id
        project.set_boxes(image_id, [Box(*box)] if box else [])
    generate(project, AugmentSettings(copies_per_image=2, output_size=48), workers=0)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    before = {p for p in project.path.rglob("*") if "cache" not in p.parts}

    ports = _free_ports(2)
    args = [sys.executable, "-m", "facetrack", "train", "--project", str(project.path), "--backbone", "compact",
            "--epochs", "1", "--batch-size", "8", "--input-size", "48", "--strategy", "multiworker",
            "--name", "two workers", "--quiet"]  # fmt: skip
    procs = []
    for index in (0, 1):
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "TMPDIR": str(scratch),
            "TF_CONFIG": _tf_config(ports, index),
        }
        procs.append(
            subprocess.Popen(
                args, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    try:
        outputs = [p.communicate(timeout=540) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    assert outputs[0][0].startswith("finished: best epoch 1") and "; run " in outputs[0][0]
    assert outputs[1][0].rstrip().endswith("; the chief writes the run")

    (run_dir,) = project.runs_dir.iterdir()  # one run, the chief's
    assert read_json(run_dir / "status.json")["state"] == "finished"
    assert read_json(run_dir / "status.json")["pid"] == procs[0].pid
    assert read_json(project.path / "training.json")["pid"] == procs[0].pid
    assert (run_dir / "model.keras").is_file()
    assert len((run_dir / "history.csv").read_text().strip().splitlines()) == 2  # header + 1 epoch
    after = {p for p in project.path.rglob("*") if "cache" not in p.parts}
    new = {p.relative_to(project.path) for p in after - before if run_dir not in p.parents}
    assert new == {Path("runs"), Path("runs") / run_dir.name, Path("training.json")}  # nothing else
    assert list(scratch.iterdir()) == []  # the worker's scratch run folder is gone

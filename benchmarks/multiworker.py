"""Two training workers against one: time per training step, same model, same global batch.

    python benchmarks/multiworker.py [--photos 48] [--copies 4] [--size 96] [--batch 32] [--epochs 3]
                                     [--cores-per-worker K]

Builds a project of synthetic labelled photos, augments it, then trains the
compact model with the command line (``python -m facetrack train``) in three
ways, each for ``--epochs`` epochs:

1. **one worker**, pinned to ``K`` cores (``--strategy default``);
2. **two workers, two "machines"**: ``--strategy multiworker`` with a
   ``TF_CONFIG`` of two workers on 127.0.0.1, each pinned to its own ``K``
   cores, as two machines of ``K`` cores would be (without the network: the
   gradients, about 0.5 MB a step for the compact model, go over loopback);
3. **two workers, one machine**: the same two workers sharing the first ``K``
   cores: what starting two workers on one computer would give.

The global batch is ``--batch`` in every case (with two workers each computes
half of it), so the steps do the same work. A step's time is an epoch's time
from ``history.csv`` divided by its batches, the median over the epochs after
the first (the first one includes tracing). ``K`` defaults to half the cores
(1 on a 2-core machine). Prints a table and one JSON line:
``{"one_ms", "two_machines_ms", "two_on_one_ms", "two_machines_ratio", "two_on_one_ratio", ...}``
(ratio = two workers' step time / one worker's; below 1 is faster).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from facetrack.augment import AugmentSettings, counts, generate  # noqa: E402
from facetrack.fileio import atomic_write_json  # noqa: E402
from facetrack.labels import Box  # noqa: E402
from facetrack.workspace import Project, create_project  # noqa: E402


def make_project(root: Path, photos: int, copies: int, size: int) -> Project:
    """``photos`` synthetic photos (three in four with a face box), augmented ``copies`` times."""
    import cv2
    import numpy as np

    project = create_project("bench", root)
    rng = np.random.default_rng(0)
    for i in range(photos):
        img = rng.integers(0, 90, (240, 320, 3), dtype=np.uint8)
        box = None
        if i % 4:
            x, y = rng.uniform(0.05, 0.5, 2)
            box = Box(float(x), float(y), float(x) + 0.35, float(y) + 0.45)
            centre = (int((x + 0.175) * 320), int((y + 0.225) * 240))
            cv2.ellipse(img, centre, (56, 54), 0, 0, 360, (230, 190, 160), -1)
        image_id = project.add_image(img, burst=f"b{i}").id
        project.set_boxes(image_id, [box] if box else [])
    generate(project, AugmentSettings(copies_per_image=copies, output_size=max(size, 32)), workers=0)
    return project


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def train(project: Project, args: argparse.Namespace, name: str, cores: list[set[int]]) -> float:
    """Train with ``len(cores)`` workers (worker i on ``cores[i]``); the median step time in seconds."""
    run_dir = project.runs_dir / name
    run_dir.mkdir(parents=True)
    atomic_write_json(run_dir / "request.json", {"export_tflite": False, "name": name})
    cmd = [sys.executable, "-m", "facetrack", "train", "--project", str(project.path), "--backbone", "compact",
           "--epochs", str(args.epochs), "--batch-size", str(args.batch), "--input-size", str(args.size),
           "--run-dir", str(run_dir), "--quiet"]  # fmt: skip
    ports = free_ports(len(cores))
    procs = []
    for index, mask in enumerate(cores):
        env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
        extra = []
        if len(cores) > 1:
            workers = [f"127.0.0.1:{p}" for p in ports]
            env["TF_CONFIG"] = json.dumps(
                {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            )
            extra = ["--strategy", "multiworker"]
        procs.append(
            subprocess.Popen(
                cmd + extra,
                env=env,
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                preexec_fn=lambda m=mask: os.sched_setaffinity(0, m),  # noqa: PLW0108
            )
        )
    for p in procs:
        out, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"{name}: worker failed:\n{err[-2000:]}")
    with open(run_dir / "history.csv", encoding="utf-8") as fh:
        seconds = [float(row["seconds"]) for row in csv.DictReader(fh)]
    n_train = counts(project)["train"]
    batches = -(-n_train // args.batch)
    return statistics.median(seconds[1:] or seconds) / batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=48)
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--size", type=int, default=96, help="model input size")
    parser.add_argument("--batch", type=int, default=32, help="global batch (both workers together)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--cores-per-worker", type=int, default=None)
    args = parser.parse_args()
    available = sorted(os.sched_getaffinity(0))
    k = args.cores_per_worker or max(1, len(available) // 2)
    if 2 * k > len(available):
        raise SystemExit(
            f"--cores-per-worker {k}: two workers need {2 * k} cores, this machine lets us use {len(available)}"
        )
    first, second = set(available[:k]), set(available[k : 2 * k])
    with tempfile.TemporaryDirectory(prefix="facetrack-mw-") as tmp:
        t0 = time.time()
        project = make_project(Path(tmp), args.photos, args.copies, args.size)
        n = counts(project)
        print(
            f"{n['train']} training images, input {args.size}, global batch {args.batch}, {k} core(s) per worker"
        )
        one = train(project, args, "one", [first])
        two_machines = train(project, args, "two-machines", [first, second])
        two_on_one = train(project, args, "two-on-one", [first, first])
    rows = [
        ("one worker", one),
        ("two workers, own cores", two_machines),
        ("two workers, shared cores", two_on_one),
    ]
    for label, value in rows:
        print(f"{label:>28}: {value * 1000:8.1f} ms/step  ({value / one:.2f}x one worker's time)")
    print(
        json.dumps(
            {
                "one_ms": round(one * 1000, 1),
                "two_machines_ms": round(two_machines * 1000, 1),
                "two_on_one_ms": round(two_on_one * 1000, 1),
                "two_machines_ratio": round(two_machines / one, 2),
                "two_on_one_ratio": round(two_on_one / one, 2),
                "cores_per_worker": k,
                "train_images": n["train"],
                "input_size": args.size,
                "batch": args.batch,
                "seconds": round(time.time() - t0, 1),
            }
        )
    )


if __name__ == "__main__":
    main()

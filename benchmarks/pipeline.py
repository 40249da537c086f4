"""The whole pipeline on the reference photos (one face, no face, groups), through the command line, timed.

    python benchmarks/pipeline.py [--data ../shared/data/faces --data ../shared/data/multi]
                                  [--backbone compact] [--keep DIR]

Runs exactly what a user runs, with the product's defaults, in a fresh
workspace: ``import`` of each folder into one project -> ``augment`` (the
split is made and stored on the way) -> ``train`` -> ``evaluate --json`` ->
``export --format tflite``. Prints the time of each step and the test-split
figures (AP@0.5 over every face, presence accuracy, faces), checks them
against the bar (AP@0.5 >= 0.85, presence accuracy >= 0.95, all within 12
minutes), and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = [REPO.parent / "shared" / "data" / "faces", REPO.parent / "shared" / "data" / "multi"]
BAR = {"ap50": 0.85, "presence_accuracy": 0.95, "seconds": 12 * 60}


def step(name: str, args: list[str], env: dict[str, str], times: dict[str, float]) -> str:
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "facetrack", *args, "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    times[name] = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"{name} failed: {proc.stderr.strip()}")
    print(f"{name:10s} {times[name]:7.1f} s   {proc.stdout.strip().splitlines()[-1][:110]}", flush=True)
    return proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--data", type=Path, action="append", help="a folder to import (repeat; default faces + multi)"
    )
    ap.add_argument("--backbone", default="compact", choices=["compact", "vgg16"])
    ap.add_argument("--keep", type=Path, help="use this folder as the workspace and keep it")
    args = ap.parse_args()
    folders = args.data or DEFAULT_DATA
    for folder in folders:
        if not (folder / "images").is_dir():
            sys.exit(f"photos not found at {folder} (needs ../shared/data/faces and ../shared/data/multi)")
    home = args.keep or Path(tempfile.mkdtemp(prefix="facetrack-pipeline-"))
    env = {**os.environ, "FACETRACK_HOME": str(home), "PYTHONPATH": str(REPO)}
    times: dict[str, float] = {}
    print(f"workspace {home}; {os.cpu_count()} CPU cores; load {os.getloadavg()[0]:.1f}\n", flush=True)
    for k, folder in enumerate(folders):
        step(f"import {k + 1}", ["import", str(folder), "--project", "faces"], env, times)
    step("augment", ["augment", "--project", "faces"], env, times)
    train_args = ["train", "--project", "faces", "--backbone", args.backbone]
    if args.backbone == "vgg16":
        train_args += ["--weights", "none"]
    step("train", train_args, env, times)
    metrics = json.loads(
        step("evaluate", ["evaluate", "--project", "faces", "--json"], env, times).splitlines()[-1]
    )
    run = Path(metrics["run"])
    step("export", ["export", "--run", str(run), "--format", "tflite"], env, times)
    total = sum(times.values())
    print()
    for key in ("ap50", "presence_accuracy", "precision", "recall", "f1", "fp_rate", "mean_iou", "hit_rate"):
        value = metrics.get(key)
        print(f"{key:>18s}: {value:.3f}" if isinstance(value, float) else f"{key:>18s}: {value}")
    print(f"{'test photos':>18s}: {metrics['n_images']} ({metrics['n_faces']} with a face, "
          f"{metrics.get('faces')} faces in all)")  # fmt: skip
    print(f"{'threshold':>18s}: {metrics.get('threshold')} (chosen on validation)")
    print(f"{'total time':>18s}: {total:.0f} s ({total / 60:.1f} min); load {os.getloadavg()[0]:.1f}")
    ok = (
        (metrics.get("ap50") or 0.0) >= BAR["ap50"]
        and (metrics.get("presence_accuracy") or 0.0) >= BAR["presence_accuracy"]
        and total <= BAR["seconds"]
    )
    print(
        f"{'quality bar':>18s}: {'met' if ok else 'NOT met'} "
        f"(AP@0.5 over every face >= 0.85, presence accuracy >= 0.95, <= 12 min)\n"
    )
    keys = ("ap50", "presence_accuracy", "faces", "recall", "precision", "mean_iou", "fp_rate", "threshold")
    print(json.dumps({"seconds": {k: round(v, 1) for k, v in times.items()}, "total_s": round(total, 1),
                      **{k: metrics.get(k) for k in keys}, "load": round(os.getloadavg()[0], 1),
                      "bar_met": ok}))  # fmt: skip
    if not args.keep:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()

"""The whole pipeline on the reference faces, through the command line, timed step by step.

    python benchmarks/pipeline.py [--data ../shared/data/faces] [--backbone compact] [--keep DIR]

Runs exactly what a user runs, with the product's defaults, in a fresh
workspace: ``import`` -> ``augment`` (the split is made and stored on the way)
-> ``train`` -> ``evaluate --json`` -> ``export --format tflite``. Prints the
time of each step and the test-split metrics, checks them against the quality
bar (presence accuracy >= 0.90, mean IoU >= 0.60, all within 10 minutes), and
ends with one JSON line.
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
DEFAULT_DATA = REPO.parent / "shared" / "data" / "faces"


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
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--backbone", default="compact", choices=["compact", "vgg16"])
    ap.add_argument("--keep", type=Path, help="use this folder as the workspace and keep it")
    args = ap.parse_args()
    if not (args.data / "images").is_dir():
        sys.exit(f"face data not found at {args.data} (needs ../shared/data/faces)")
    home = args.keep or Path(tempfile.mkdtemp(prefix="facetrack-pipeline-"))
    env = {**os.environ, "FACETRACK_HOME": str(home), "PYTHONPATH": str(REPO)}
    times: dict[str, float] = {}
    print(f"workspace {home}; {os.cpu_count()} CPU cores; load {os.getloadavg()[0]:.1f}\n", flush=True)
    step("import", ["import", str(args.data), "--project", "faces"], env, times)
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
    for key in ("presence_accuracy", "precision", "recall", "f1", "fp_rate", "mean_iou", "hit_rate", "ap50"):
        print(f"{key:>18s}: {metrics[key]:.3f}")
    print(f"{'test images':>18s}: {metrics['n_images']} ({metrics['n_faces']} with a face)")
    print(f"{'total time':>18s}: {total:.0f} s ({total / 60:.1f} min)")
    ok = metrics["presence_accuracy"] >= 0.90 and metrics["mean_iou"] >= 0.60 and total <= 600
    print(
        f"{'quality bar':>18s}: {'met' if ok else 'NOT met'} (accuracy >= 0.90, mean IoU >= 0.60, <= 10 min)\n"
    )
    print(json.dumps({"seconds": {k: round(v, 1) for k, v in times.items()}, "total_s": round(total, 1),
                      **{k: metrics[k] for k in ("presence_accuracy", "mean_iou", "hit_rate", "fp_rate", "ap50")},
                      "bar_met": ok}))  # fmt: skip
    if not args.keep:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()

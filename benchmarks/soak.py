"""Soak test of the live page's frame callback: memory must stay flat over a long run.

    python benchmarks/soak.py [--minutes 10] [--run RUN_DIR] [--fps 30]

Feeds 640x480 frames (face photos from ../shared/data/faces when present, else
synthetic) to :class:`ui.live.LiveProcessor` (exactly what the Live page's
``video_frame_callback`` calls) with the run's detector (LiteRT), at up to
``--fps`` frames per second, for ``--minutes``. Prints the resident memory
every ``--every`` seconds, and ends with one JSON line: frames, fps, memory at
start and at end (after warm-up), and the growth.
Without ``--run`` a compact model with random weights is built and exported
(speed and memory do not depend on the weights).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import aiortc  # noqa: E402, F401  (before TensorFlow; see ui/__init__.py)
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402

from facetrack.detect import Detector  # noqa: E402
from ui.live import LiveProcessor  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "faces" / "images"


def frames(n: int = 60) -> list[np.ndarray]:
    paths = sorted(DATA.glob("wf_*.jpg"))[:n] if DATA.is_dir() else []
    out = []
    for p in paths:
        img = cv2.imread(str(p))
        if img is not None:
            out.append(cv2.resize(img, (640, 480)))
    rng = np.random.default_rng(0)
    while len(out) < n:
        out.append(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))
    return out


def random_run() -> Path:
    from facetrack.export import export_tflite
    from facetrack.model import build_model

    run = Path(tempfile.mkdtemp(prefix="soak-run-"))
    model = build_model("compact", weights=None, input_size=120)
    model.save(run / "model.keras")
    export_tflite(model, run / "model.tflite")
    (run / "settings.json").write_text(json.dumps({"settings": {"backbone": "compact", "input_size": 120}}))
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--run", type=Path)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--every", type=float, default=60.0, help="seconds between memory readings")
    args = ap.parse_args()
    run = args.run or random_run()
    detector = Detector.from_run(run, backend="auto")
    processor = LiveProcessor(threshold=0.5, smoothing=True)
    processor.configure(detector, 0.5, True)
    proc = psutil.Process()
    video = frames()
    period = 1.0 / args.fps
    # warm-up: first calls allocate the interpreter's buffers
    for f in video[:30]:
        processor.process(f.copy())
    start_mb = proc.memory_info().rss / 2**20
    print(f"backend {detector.backend}; start RSS {start_mb:.1f} MiB", flush=True)
    t0 = time.perf_counter()
    end = t0 + args.minutes * 60
    next_report = t0 + args.every
    n = 0
    readings = [start_mb]
    while time.perf_counter() < end:
        t = time.perf_counter()
        processor.process(video[n % len(video)].copy())
        n += 1
        if t >= next_report:
            mb = proc.memory_info().rss / 2**20
            readings.append(mb)
            print(
                f"{(t - t0) / 60:5.1f} min  {n:7d} frames  RSS {mb:7.1f} MiB  fps {processor.snapshot().fps}",
                flush=True,
            )
            next_report += args.every
        rest = period - (time.perf_counter() - t)
        if rest > 0:
            time.sleep(rest)
    end_mb = proc.memory_info().rss / 2**20
    seconds = time.perf_counter() - t0
    print(json.dumps({"minutes": round(seconds / 60, 2), "frames": n, "fps": round(n / seconds, 1),
                      "rss_start_mb": round(start_mb, 1), "rss_end_mb": round(end_mb, 1),
                      "rss_growth_mb": round(end_mb - start_mb, 1), "rss_max_mb": round(max(readings + [end_mb]), 1)}))  # fmt: skip


if __name__ == "__main__":
    main()

"""Per-frame cost of live detection: the tutorial's loop against FaceTrack's fast path.

    python benchmarks/live.py [--frames 100] [--threads 2] [--run RUN_DIR] [--data DIR]
    python benchmarks/live.py --only-dense [--dense-run RUN_DIR] [--dense-hw 120x160]

Builds VGG16 + heads at 120x120 with random weights (``weights=None``, no
download) through ``facetrack.model.build_model`` (the compact backbone in its
mirror-averaged form, as training saves it), exports it to ``.tflite`` with
dynamic-range quantization, and times, on the same 640x480 BGR frames (photos
from ``--data``/images resized, or synthetic frames):

- tutorial: ``cv2.cvtColor``, crop, ``tf.image.resize`` to 120x120, ``/255``,
  ``model.predict(np.expand_dims(...))``, draw (as in the tutorial's loop);
- ours: ``Detector.detect`` (LiteRT) + ``draw_detections``, also split into
  preprocess / inference parts, and the same for the compact backbone.

And the compact multi-face (dense) model, the Live page's default, on 640x480
frames showing two people side by side (two face photos, each resized into
its half): ``Detector.detect`` (resize, LiteRT inference, decode: threshold,
NMS) + ``draw_detections``, and its parts timed apart (resize + to float,
inference, decode, draw). Random weights, mirror-averaged as training saves it (``--dense-hw``, default 120x160;
decoding keeps the two best cells so that two boxes are drawn, as in the
demo), or a trained run's ``model.tflite`` and ``decode.json`` with
``--dense-run``.

Prints a table (median and p90 ms per frame, frames per second) and ends with
one JSON line ``{"tutorial_ms", "ours_ms", "speedup", "compact_dense_ms", ...}`` (medians).

``--run RUN_DIR``: also measures what quantization costs on a trained run:
mean IoU and score difference between its Keras model and its dynamic-range
``.tflite`` on up to ``--samples`` labelled face photos from ``--data``, and
each backend's mean IoU to the true boxes.
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

import cv2  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facetrack.decode import DecodeSettings  # noqa: E402
from facetrack.detect import Detector, detections_from_outputs, draw_detections  # noqa: E402
from facetrack.export import export_tflite  # noqa: E402
from facetrack.labels import Box  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"
SIZE = 120


def build(backbone: str):
    """The app's model with random weights, as training saves it (compact: mirror-averaged)."""
    from facetrack.model import build_model, with_mirror_average

    model = build_model(backbone, weights=None, input_size=SIZE)
    if backbone == "compact":
        model = with_mirror_average(model)
    return model, "facetrack.model"


def load_frames(n: int, data: Path) -> tuple[list[np.ndarray], str]:
    """``n`` 640x480 BGR frames: face photos resized, else synthetic."""
    folder = data / "images"
    if folder.is_dir():
        paths = sorted(folder.glob("wf_*.jpg"))[:n] or sorted(folder.glob("*.jpg"))[:n]
        frames = []
        for p in paths:
            img = cv2.imread(str(p))
            if img is not None:
                frames.append(cv2.resize(img, (640, 480), interpolation=cv2.INTER_LINEAR))
        if frames:
            while len(frames) < n:
                frames.append(frames[len(frames) % len(paths)])
            return frames, f"{len(paths)} photos from {folder}, resized to 640x480"
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(n):
        f = np.full((480, 640, 3), rng.integers(0, 255, 3), np.uint8)
        cv2.circle(
            f, (int(rng.integers(640)), int(rng.integers(480))), 120, rng.integers(0, 255, 3).tolist(), -1
        )
        frames.append(cv2.GaussianBlur(f, (0, 0), 5))
    return frames, "synthetic 640x480 frames"


def tutorial_loop(model, frames: list[np.ndarray], warmup: int = 3) -> list[float]:
    """The tutorial's per-frame code (its model took 0..1 input; the cost is the same)."""
    import tensorflow as tf

    times = []
    for i, original in enumerate([*frames[:warmup], *frames]):
        frame = original.copy()
        t0 = time.perf_counter()
        frame = frame[50:500, 50:500, :]
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        resized = tf.image.resize(rgb, (SIZE, SIZE))
        yhat = model.predict(np.expand_dims(resized / 255, 0), verbose=0)
        sample_coords = yhat["bbox"][0] if isinstance(yhat, dict) else yhat[1][0]
        score = yhat["class"][0] if isinstance(yhat, dict) else yhat[0][0]
        if score > -1:  # always draw, so both sides draw every frame
            p1 = tuple(np.multiply(sample_coords[:2], [450, 450]).astype(int))
            p2 = tuple(np.multiply(sample_coords[2:], [450, 450]).astype(int))
            cv2.rectangle(frame, p1, p2, (255, 0, 0), 2)
            cv2.rectangle(frame, tuple(np.add(p1, [0, -30])), tuple(np.add(p1, [80, 0])), (255, 0, 0), -1)
            cv2.putText(
                frame, "face", tuple(np.add(p1, [0, -5])), cv2.FONT_HERSHEY_SIMPLEX, 1, (255, 255, 255), 2
            )
        dt = time.perf_counter() - t0
        if i >= warmup:
            times.append(dt)
    return times


def ours_loop(det: Detector, frames: list[np.ndarray], warmup: int = 5) -> list[float]:
    """FaceTrack's live path: detect on the whole frame, draw in place (with FPS)."""
    old, det.threshold = det.threshold, 0.0  # always draw, as the tutorial side does
    times = []
    fps = 0.0
    try:
        for i, original in enumerate([*frames[:warmup], *frames]):
            frame = original.copy()  # a fresh frame, as the webrtc callback gets
            t0 = time.perf_counter()
            draw_detections(frame, det.detect(frame), fps=fps)
            dt = time.perf_counter() - t0
            fps = 1.0 / dt
            if i >= warmup:
                times.append(dt)
    finally:
        det.threshold = old
    return times


def parts_loop(det: Detector, frames: list[np.ndarray]) -> dict[str, list[float]]:
    """Preprocess and inference timed apart (inference = predict_raw minus preprocess)."""
    pre, full = [], []
    for frame in frames:
        t0 = time.perf_counter()
        det.preprocess(frame)
        t1 = time.perf_counter()
        det.predict_raw(frame)
        t2 = time.perf_counter()
        pre.append(t1 - t0)
        full.append(t2 - t1)
    return {"preprocess": pre, "predict_raw": full}


def two_face_frames(frames: list[np.ndarray]) -> list[np.ndarray]:
    """640x480 frames of two photos side by side (each resized into its 320x480 half)."""
    out = []
    for i, f in enumerate(frames):
        other = frames[(i + 1) % len(frames)]
        halves = [cv2.resize(img, (320, 480), interpolation=cv2.INTER_AREA) for img in (f, other)]
        out.append(np.ascontiguousarray(np.concatenate(halves, axis=1)))
    return out


def dense_detector(tmp: Path, hw: tuple[int, int], run: Path | None, threads: int) -> tuple[Detector, str]:
    """The compact multi-face LiteRT detector: a trained run's, or random weights at ``hw``."""
    if run is not None:
        det = Detector.from_run(run, backend="litert", num_threads=threads)
        return det, f"run {run.name}, threshold {det.threshold:.2f} (decode.json)"
    from facetrack.model import build_model, with_mirror_average

    # as training saves it: mirror-averaged (the image and its mirror, cell by cell)
    model = with_mirror_average(build_model("compact", weights=None, input_size=hw, head="dense"))
    path = export_tflite(model, tmp / "compact_dense.tflite", quantize="dynamic")
    # random weights: keep the two best cells, so that decoding and drawing do the demo's work
    det = Detector.from_tflite(path, 0.0, threads, decode_settings=DecodeSettings(threshold=0.0, max_faces=2))
    return det, f"random weights, {model.count_params() / 1e6:.2f} M params, two best cells kept"


def dense_loop(
    det: Detector, frames: list[np.ndarray], warmup: int = 5
) -> tuple[dict[str, list[float]], float]:
    """Whole-frame cost (detect + draw) and its parts, per frame; and the mean number of faces drawn."""
    times: dict[str, list[float]] = {k: [] for k in ("total", "preprocess", "infer", "decode", "draw")}
    faces = []
    settings = det.decode_settings.replace(threshold=det.threshold)
    for i, original in enumerate([*frames[:warmup], *frames]):
        frame = original.copy()
        h, w = frame.shape[:2]
        t0 = time.perf_counter()
        drawn = det.detect(frame)
        draw_detections(frame, drawn, fps=30.0)
        t1 = time.perf_counter()
        det.preprocess(frame)
        t2 = time.perf_counter()
        scores, boxes = det.predict_outputs(frame)
        t3 = time.perf_counter()
        found = detections_from_outputs(scores, boxes, w, h, settings)
        t4 = time.perf_counter()
        draw_detections(original.copy(), found, fps=30.0)
        t5 = time.perf_counter()
        if i >= warmup:
            times["total"].append(t1 - t0)
            times["preprocess"].append(t2 - t1)
            times["infer"].append(t3 - t2 - (t2 - t1))  # predict_outputs minus its resize
            times["decode"].append(t4 - t3)
            times["draw"].append(t5 - t4)
            faces.append(len(drawn))
    return times, float(np.mean(faces)) if faces else 0.0


def stats(times: list[float]) -> tuple[float, float]:
    ms = np.array(times) * 1000
    return float(np.median(ms)), float(np.percentile(ms, 90))


def row(name: str, times: list[float]) -> str:
    med, p90 = stats(times)
    best = float(np.min(times)) * 1000
    return f"{name:<46} {med:>9.2f} {p90:>9.2f} {best:>8.2f} {1000 / med:>8.1f}"


def test_split_faces(run_dir: Path) -> list[tuple[Path, Box]]:
    """(image, true box) of the face photos in the test split of the run's project, if any."""
    from facetrack.tasks import load_samples
    from facetrack.workspace import open_project

    project_dir = Path(run_dir).resolve().parent.parent
    if not (project_dir / "project.json").is_file():
        return []
    samples = load_samples(open_project(project_dir), "test")
    return [(s.path, s.box) for s in samples if s.box is not None]


def quantization_cost(run_dir: Path, data: Path, samples: int, threads: int) -> dict[str, float]:
    """Keras vs dynamic-range TFLite of a trained run on labelled face photos."""
    from facetrack.model import load_model

    model = load_model(run_dir / "model.keras")
    keras_det = Detector.from_keras_model(model, threshold=0.0)
    with tempfile.TemporaryDirectory() as tmp:
        lite = Detector.from_tflite(export_tflite(model, Path(tmp) / "m.tflite", "dynamic"), 0.0, threads)
    pairs = test_split_faces(run_dir)
    source = "the run's project, test split"
    if not pairs:  # a run outside a project: the tail of the reference photos
        items = json.loads((data / "boxes.json").read_text())
        items = [it for it in items if it.get("faces")][-samples:]
        pairs = [
            (data / it["image"], Box.from_pixels(it["faces"][0], it["width"], it["height"])) for it in items
        ]
        source = f"the last {len(pairs)} face photos of {data}"
    ious, ious_k, ious_l, dscore = [], [], [], []
    for path, truth in pairs[:samples]:
        img = cv2.imread(str(path))
        if img is None:
            continue
        sk, bk = keras_det.predict_raw(img)
        sl, bl = lite.predict_raw(img)
        ious.append(bk.iou(bl))
        ious_k.append(bk.iou(truth))
        ious_l.append(bl.iou(truth))
        dscore.append(abs(sk - sl))
    return {
        "images": len(ious),
        "photos": source,
        "mean_iou_keras_vs_tflite": float(np.mean(ious)),
        "mean_abs_score_diff": float(np.mean(dscore)),
        "mean_iou_to_truth_keras": float(np.mean(ious_k)),
        "mean_iou_to_truth_tflite": float(np.mean(ious_l)),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument(
        "--run", type=Path, default=None, help="a trained run folder: measure quantization's IoU cost"
    )
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--skip-keras", action="store_true", help="skip the Keras-backend row")
    ap.add_argument("--only-dense", action="store_true", help="only the compact multi-face rows")
    ap.add_argument("--dense-hw", default="120x160", help="random-weight dense model input, HxW")
    ap.add_argument(
        "--dense-run", type=Path, default=None, help="a trained multi-face run (its model.tflite)"
    )
    args = ap.parse_args(argv)

    frames, source = load_frames(args.frames, args.data)
    print(f"frames: {len(frames)} {source}; LiteRT threads: {args.threads}", flush=True)
    print("compact multi-face rows: two of these photos side by side in each frame", flush=True)
    results: dict[str, list[float]] = {}
    extra: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        hw = tuple(int(v) for v in args.dense_hw.lower().split("x"))
        det, origin = dense_detector(Path(tmp), (hw[0], hw[1]), args.dense_run, args.threads)
        h_in, w_in = det.input_hw
        print(f"compact multi-face: {origin}, input {w_in}x{h_in}", flush=True)
        dense, faces_per_frame = dense_loop(det, two_face_frames(frames))
        label = f"compact multi-face {w_in}x{h_in}"
        results[f"{label}: detect+draw (LiteRT)"] = dense["total"]
        for part in ("preprocess", "infer", "decode", "draw"):
            results[f"{label}   of which {part}"] = dense[part]
        extra["compact_dense_ms"] = round(stats(dense["total"])[0], 2)
        extra["dense_faces_per_frame"] = round(faces_per_frame, 2)
        for backbone in () if args.only_dense else ("vgg16", "compact"):
            t0 = time.perf_counter()
            model, origin = build(backbone)
            path = export_tflite(model, Path(tmp) / f"{backbone}.tflite", quantize="dynamic")
            print(
                f"{backbone}: {origin}, {model.count_params() / 1e6:.1f} M params, "
                f"tflite {path.stat().st_size / 1e6:.1f} MB, built+exported in {time.perf_counter() - t0:.1f} s",
                flush=True,
            )
            det = Detector.from_tflite(path, threshold=0.5, num_threads=args.threads)
            if backbone == "vgg16":
                results["vgg16 tutorial: cvtColor+tf.resize+predict+draw"] = tutorial_loop(model, frames)
                if not args.skip_keras:
                    kdet = Detector.from_keras_model(model)
                    results["vgg16 ours, Keras backend (fallback)"] = ours_loop(kdet, frames[:30])
            results[f"{backbone} ours: detect+draw (LiteRT dynamic)"] = ours_loop(det, frames)
            parts = parts_loop(det, frames)
            results[f"{backbone}   of which resize+to float (fast)"] = parts["preprocess"]
            results[f"{backbone}   of which predict_raw (pre+infer+post)"] = parts["predict_raw"]
    print()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"load average (1 min) at the end: {load:.2f} on {os.cpu_count()} cores (other work inflates every row)"
    )
    print(f"{'per 640x480 frame':<46} {'median ms':>9} {'p90 ms':>9} {'min ms':>8} {'fps':>8}")
    for name, times in results.items():
        print(row(name, times))
    print(f"compact multi-face: {extra['dense_faces_per_frame']} faces drawn per frame on average")
    if args.only_dense:
        print(json.dumps({**extra, "load": round(load, 2)}))
        return 0
    tutorial_ms = stats(results["vgg16 tutorial: cvtColor+tf.resize+predict+draw"])[0]
    ours_ms = stats(results["vgg16 ours: detect+draw (LiteRT dynamic)"])[0]
    compact_ms = stats(results["compact ours: detect+draw (LiteRT dynamic)"])[0]
    if args.run is not None:
        q = quantization_cost(args.run, args.data, args.samples, args.threads)
        print()
        print(f"quantization cost on {args.run.name} ({q['images']} face photos from {q['photos']}):")
        for k, v in q.items():
            print(f"  {k}: {v:.4f}" if isinstance(v, float) else f"  {k}: {v}")
        extra.update({k: round(v, 4) for k, v in q.items() if isinstance(v, float)})
    out = {
        "tutorial_ms": round(tutorial_ms, 2),
        "ours_ms": round(ours_ms, 2),
        "speedup": round(tutorial_ms / ours_ms, 2),
        "compact_ms": round(compact_ms, 2),
        "load": round(load, 2),
        **extra,
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Fake camera files for chromium: Y4M writers and a face video from the shared data.

Chromium's ``--use-file-for-fake-video-capture=<file>.y4m`` plays a Y4M file
in a loop as the webcam. A Y4M file is one header line
(``YUV4MPEG2 W640 H480 F30:1 Ip A1:1 C420jpeg``), then per frame ``FRAME``,
a newline and the I420 planes (Y at full size, then U and V at half size).

Boxes returned by :func:`face_video` are pixel ``[x1, y1, x2, y2]`` in the
video frame (640x480 by default), one list per frame. :func:`two_face_video`
shows two different people side by side (the Live page's camera in the
browser tests) and returns, per frame, the list of its true face boxes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
FACES = SHARED_DATA / "faces"
MULTI = SHARED_DATA / "multi"

# Background of the letterbox: neutral grey, far from the live page's green box colour.
LETTERBOX_RGB = (128, 128, 128)


def write_y4m(path: str | Path, frames_rgb: Iterable[np.ndarray], fps: int = 30) -> Path:
    """Write RGB ``(H, W, 3)`` uint8 frames (all the same even size) as a Y4M file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = None
    n = 0
    with open(path, "wb") as f:
        for frame in frames_rgb:
            frame = np.ascontiguousarray(frame, dtype=np.uint8)
            h, w = frame.shape[:2]
            if frame.ndim != 3 or frame.shape[2] != 3:
                raise ValueError(f"frames must be (H, W, 3) RGB, got {frame.shape}")
            if w % 2 or h % 2:
                raise ValueError(f"frame size must be even for I420, got {w}x{h}")
            if size is None:
                size = (w, h)
                f.write(f"YUV4MPEG2 W{w} H{h} F{int(fps)}:1 Ip A1:1 C420jpeg\n".encode())
            elif (w, h) != size:
                raise ValueError(f"frame {n} is {w}x{h}, the first was {size[0]}x{size[1]}")
            f.write(b"FRAME\n")
            f.write(cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420).tobytes())
            n += 1
    if n == 0:
        raise ValueError("no frames to write")
    return path


def read_y4m_frame(path: str | Path, index: int = 0) -> np.ndarray:
    """Read frame ``index`` of a Y4M file written by :func:`write_y4m`, as RGB (for checks)."""
    data = Path(path).read_bytes()
    header, _, rest = data.partition(b"\n")
    fields = {t[:1]: t[1:] for t in header.split()[1:]}
    w, h = int(fields[b"W"]), int(fields[b"H"])
    frame_len = len(b"FRAME\n") + w * h * 3 // 2
    start = index * frame_len + len(b"FRAME\n")
    yuv = np.frombuffer(rest[start : start + w * h * 3 // 2], np.uint8).reshape(h * 3 // 2, w)
    return cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB_I420)


def solid_video(
    path: str | Path, rgb: Sequence[int] = (200, 120, 40), size=(640, 480), frames: int = 30, fps: int = 30
) -> Path:
    """A short video of one colour with a moving white square (so frames differ)."""
    w, h = size

    def gen():
        for i in range(frames):
            img = np.empty((h, w, 3), np.uint8)
            img[:] = rgb
            x = (i * 8) % (w - 40)
            img[20:60, x : x + 40] = 255
            yield img

    return write_y4m(path, gen(), fps)


def face_records(
    limit: int | None = None, min_side: int = 200, min_face_share: float = 0.3, max_face_share: float = 0.6
) -> list[dict]:
    """Face photos of the shared set (``wf_*``) with one clear face, sorted by file name.

    Each record: ``{"path": Path, "width", "height", "box": [x1, y1, x2, y2]}``
    in the photo's pixels. Only photos at least ``min_side`` pixels a side whose
    face is at least ``min_face_share`` of the width are kept: they make clear
    frames for the fake camera (``max_face_share`` leaves out close-ups).
    """
    doc = json.loads((FACES / "boxes.json").read_text())
    out = []
    for rec in doc:
        name = Path(rec["image"]).name
        if not name.startswith("wf_") or len(rec["faces"]) != 1:
            continue
        w, h = rec["width"], rec["height"]
        x1, y1, x2, y2 = rec["faces"][0]
        if min(w, h) < min_side or not min_face_share <= (x2 - x1) / w <= max_face_share:
            continue
        # keep faces well inside the photo: clipped boxes are poor targets
        if x1 < 2 or y1 < 2 or x2 > w - 2 or y2 > h - 2:
            continue
        out.append({"path": FACES / "images" / name, "width": w, "height": h, "box": [x1, y1, x2, y2]})
    out.sort(key=lambda r: r["path"].name)
    return out[:limit] if limit else out


def letterbox(rgb: np.ndarray, box: Sequence[float], size=(640, 480)) -> tuple[np.ndarray, list[float]]:
    """Fit ``rgb`` inside ``size`` keeping its aspect (grey bars); return the frame and the moved box."""
    w, h = size
    ih, iw = rgb.shape[:2]
    scale = min(w / iw, h / ih)
    nw, nh = max(1, round(iw * scale)), max(1, round(ih * scale))
    resized = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    frame = np.empty((h, w, 3), np.uint8)
    frame[:] = LETTERBOX_RGB
    ox, oy = (w - nw) // 2, (h - nh) // 2
    frame[oy : oy + nh, ox : ox + nw] = resized
    x1, y1, x2, y2 = box
    return frame, [ox + x1 * scale, oy + y1 * scale, ox + x2 * scale, oy + y2 * scale]


def load_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise OSError(f"cannot read {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def face_video(
    path: str | Path,
    size=(640, 480),
    seconds: float = 4.0,
    fps: int = 30,
    hold_frames: int = 60,
    records: list[dict] | None = None,
) -> list[list[float]]:
    """Write a Y4M of shared face photos, each letterboxed into ``size`` and held ``hold_frames`` frames.

    Returns the true face box per frame, pixel ``[x1, y1, x2, y2]`` in the
    video frame. Raises FileNotFoundError when the shared data is absent.
    """
    if not (FACES / "boxes.json").is_file():
        raise FileNotFoundError(f"shared face data not found in {FACES}")
    n_frames = max(1, round(seconds * fps))
    n_photos = max(1, -(-n_frames // hold_frames))
    records = records or face_records(limit=n_photos)
    if not records:
        raise FileNotFoundError(f"no usable face photo in {FACES / 'images'}")
    stills = [letterbox(load_rgb(r["path"]), r["box"], size) for r in records]
    boxes: list[list[float]] = []

    def gen():
        for i in range(n_frames):
            frame, box = stills[(i // hold_frames) % len(stills)]
            boxes.append(box)
            yield frame

    write_y4m(path, gen(), fps)
    return boxes


def pair_frame(left: dict, right: dict, size=(640, 480)) -> tuple[np.ndarray, list[list[float]]]:
    """Two face photos (records of :func:`face_records`) side by side, each fitted into its half of ``size``.

    Returns the frame (RGB) and the two true face boxes, pixel ``[x1, y1, x2, y2]``, left one first.
    """
    w, h = size
    half = (w // 2, h)
    frame = np.empty((h, w, 3), np.uint8)
    boxes = []
    for k, rec in enumerate((left, right)):
        part, box = letterbox(load_rgb(rec["path"]), rec["box"], half)
        ox = k * half[0]
        frame[:, ox : ox + half[0]] = part
        boxes.append([box[0] + ox, box[1], box[2] + ox, box[3]])
    return frame, boxes


def camera_pairs(n_stills: int = 2) -> list[tuple[dict, dict]]:
    """The record pairs the two-face camera shows: ``2 * n_stills`` different people, two per still."""
    records = face_records(limit=2 * n_stills)
    if len(records) < 2 * n_stills:
        raise FileNotFoundError(f"need {2 * n_stills} usable face photos in {FACES / 'images'}")
    return [(records[2 * i], records[2 * i + 1]) for i in range(n_stills)]


def two_face_video(
    path: str | Path,
    size=(640, 480),
    seconds: float = 4.0,
    fps: int = 30,
    hold_frames: int = 60,
    pairs: list[tuple[dict, dict]] | None = None,
) -> list[list[list[float]]]:
    """Write a Y4M of two different people side by side (:func:`pair_frame`), each still held ``hold_frames``.

    Returns, per frame, the two true face boxes (pixel ``[x1, y1, x2, y2]``,
    left first). Raises FileNotFoundError when the shared data is absent.
    """
    if not (FACES / "boxes.json").is_file():
        raise FileNotFoundError(f"shared face data not found in {FACES}")
    n_frames = max(1, round(seconds * fps))
    stills = [pair_frame(a, b, size) for a, b in (pairs or camera_pairs())]
    boxes: list[list[list[float]]] = []

    def gen():
        for i in range(n_frames):
            frame, still_boxes = stills[(i // hold_frames) % len(stills)]
            boxes.append(still_boxes)
            yield frame

    write_y4m(path, gen(), fps)
    return boxes


# -- projects built through the library (for pages that need data) -------------


def no_face_paths(limit: int) -> list[Path]:
    """Colour photos without a face from the shared set (``c101_*``)."""
    return sorted((FACES / "images").glob("c101_*.jpg"))[:limit]


def multi_records(limit: int | None = None) -> list[dict]:
    """Group photos of the shared set (``multi/``, two or more faces), sorted by file name.

    Each record: ``{"path": Path, "width", "height", "boxes": [[x1, y1, x2, y2], ...]}`` in pixels.
    """
    doc = json.loads((MULTI / "boxes.json").read_text())
    out = [
        {"path": MULTI / rec["image"], "width": rec["width"], "height": rec["height"], "boxes": rec["faces"]}
        for rec in doc
    ]
    out.sort(key=lambda r: r["path"].name)
    return out[:limit] if limit else out


def make_face_project(
    root: Path,
    name: str,
    n_faces: int,
    n_empty: int = 0,
    copies: int | None = None,
    output_size: int = 128,
    extra_records: list[dict] | None = None,
):
    """A project of shared photos labelled with their true boxes; with ``copies``, also its training set.

    ``extra_records`` (e.g. the fake camera's photos) are added first.
    Returns the :class:`facetrack.workspace.Project`.
    """
    from facetrack.augment import AugmentSettings, generate
    from facetrack.labels import Box
    from facetrack.workspace import create_project

    project = create_project(name, root)
    records = list(extra_records or [])
    seen = {r["path"] for r in records}
    records += [r for r in face_records(min_face_share=0.25, max_face_share=0.8) if r["path"] not in seen]
    records = [dict(r, boxes=[r["box"]]) for r in records[:n_faces]]
    for i, rec in enumerate(records):
        info = project.add_image(
            rec["path"].read_bytes(), original_name=rec["path"].name, origin="import", burst=f"face{i}"
        )
        sx, sy = info.width / rec["width"], info.height / rec["height"]
        project.set_boxes(
            info.id,
            [
                Box.from_pixels([x1 * sx, y1 * sy, x2 * sx, y2 * sy], info.width, info.height)
                for x1, y1, x2, y2 in rec["boxes"]
            ],
        )
    for i, path in enumerate(no_face_paths(n_empty)):
        info = project.add_image(
            path.read_bytes(), original_name=path.name, origin="import", burst=f"empty{i}"
        )
        project.set_boxes(info.id, [])
    if copies:
        generate(
            project, AugmentSettings(copies_per_image=copies, output_size=output_size, seed=1), workers=0
        )
    return project


def camera_samples(
    project,
    stills: list[tuple[np.ndarray, list[list[float]]]],
    copies: int = 12,
    seed: int = 0,
    prefix: str = "cam",
):
    """Extra training samples: the fake camera's own frames (every face boxed), slightly shifted and rescaled.

    The live detector sees the whole 640x480 frame squeezed to its input size,
    so these teach it exactly what the camera shows. ``stills``: frames and
    their pixel face boxes. Written under ``<project>/cache/e2e-camera/``;
    returns :class:`facetrack.data.Sample` s.
    """
    from facetrack.labels import Box

    rng = np.random.default_rng(seed)
    folder = project.path / "cache" / "e2e-camera"
    folder.mkdir(parents=True, exist_ok=True)
    samples = []
    for k, (frame, boxes) in enumerate(stills):
        h, w = frame.shape[:2]
        for c in range(copies):
            scale = rng.uniform(0.85, 1.1)
            dx, dy = rng.uniform(-0.08, 0.08) * w, rng.uniform(-0.08, 0.08) * h
            m = np.array([[scale, 0, (1 - scale) * w / 2 + dx], [0, scale, (1 - scale) * h / 2 + dy]])
            img = cv2.warpAffine(frame, m, (w, h), borderValue=LETTERBOX_RGB)
            img = np.clip(img.astype(np.float32) * rng.uniform(0.85, 1.15), 0, 255).astype(np.uint8)
            moved = [
                Box.from_pixels(p, w, h)
                for p in ([v * scale + m[k % 2, 2] for k, v in enumerate(b)] for b in boxes)
                if visible_share(p, w, h) >= 0.5  # a face mostly cut off is no target
            ]
            path = folder / f"{prefix}{k}_{c}.jpg"
            cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
            samples.append(make_sample(path, moved, f"{prefix}{k}"))
    return samples


def visible_share(box: Sequence[float], w: int, h: int) -> float:
    """The share of a pixel box's area inside a ``w`` x ``h`` frame."""
    x1, y1, x2, y2 = box
    area = max(x2 - x1, 0.0) * max(y2 - y1, 0.0)
    inside = max(min(x2, w) - max(x1, 0.0), 0.0) * max(min(y2, h) - max(y1, 0.0), 0.0)
    return inside / area if area > 0 else 0.0


def make_sample(path: Path, boxes: list, source_id: str):
    """A :class:`facetrack.data.Sample` of ``path`` with its normalized face boxes."""
    from facetrack.data import Sample

    return Sample(path=path, boxes=tuple(boxes), source_id=source_id)


def group_stills(limit: int, size=(640, 480)) -> list[tuple[np.ndarray, list[list[float]]]]:
    """Group photos of the shared set squeezed to ``size`` (as the detector sees a frame), every face boxed."""
    w, h = size
    out = []
    for rec in multi_records():
        if len(out) >= limit:
            break
        if len(rec["boxes"]) > 6:  # crowds: faces too small for the camera's model
            continue
        sx, sy = w / rec["width"], h / rec["height"]
        frame = cv2.resize(load_rgb(rec["path"]), (w, h), interpolation=cv2.INTER_AREA)
        out.append((frame, [[b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy] for b in rec["boxes"]]))
    return out


def train_live_model(
    root: Path, name: str, pairs: list[tuple[dict, dict]], epochs: int = 24, n_groups: int = 20
) -> Path:
    """Build project ``name`` in workspace ``root`` and train a compact model that finds the camera's faces.

    ``pairs``: the photo pairs the two-face camera shows (:func:`camera_pairs`).
    The project holds one-face photos (the camera's people first) and photos
    without a face; training adds the camera's own two-face frames and
    ``n_groups`` group photos (:func:`group_stills`), every face boxed.
    Returns the run folder (``model.keras`` and ``model.tflite`` inside). Meant to run in its own process (it imports TensorFlow):
    ``python tests/e2e/fakecam.py train-live ROOT NAME``.
    """
    from facetrack.tasks import load_samples
    from facetrack.train import TrainSettings, train

    camera_records = [r for pair in pairs for r in pair]
    project = make_face_project(root, name, n_faces=40, n_empty=12, copies=6, extra_records=camera_records)
    stills = [pair_frame(a, b) for a, b in pairs]
    groups = group_stills(n_groups)
    train_samples = (
        load_samples(project, "train")
        + camera_samples(project, stills, copies=24)
        + camera_samples(project, groups, copies=3, seed=2, prefix="group")
    )
    val_samples = load_samples(project, "val") + camera_samples(project, stills, copies=4, seed=1)
    # a short training (about 10 batches an epoch): a short weight average, every epoch counts
    settings = TrainSettings(
        backbone="compact",
        weights="none",
        epochs=epochs,
        patience=epochs,
        batch_size=32,
        ema_decay=0.98,
        mosaic=0.0,  # the camera's faces are large: no small-face mosaics (they cost time here)
        name="e2e-live",
    )
    run_dir = project.runs_dir / "20260101-000000-e2e-live"
    result = train(train_samples, val_samples, settings, run_dir)
    if result.state != "finished":
        raise RuntimeError(f"training ended {result.state}")
    return run_dir


if __name__ == "__main__":
    import sys

    if len(sys.argv) == 4 and sys.argv[1] == "train-live":
        sys.path.insert(0, str(REPO_ROOT))
        print(train_live_model(Path(sys.argv[2]), sys.argv[3], camera_pairs()), flush=True)
    else:
        sys.exit("usage: python tests/e2e/fakecam.py train-live WORKSPACE PROJECT")

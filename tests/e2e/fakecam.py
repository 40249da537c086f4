"""Fake camera files for chromium: Y4M writers and a face video from the shared data.

Chromium's ``--use-file-for-fake-video-capture=<file>.y4m`` plays a Y4M file
in a loop as the webcam. A Y4M file is one header line
(``YUV4MPEG2 W640 H480 F30:1 Ip A1:1 C420jpeg``), then per frame ``FRAME``,
a newline and the I420 planes (Y at full size, then U and V at half size).

Boxes returned by :func:`face_video` are pixel ``[x1, y1, x2, y2]`` in the
video frame (640x480 by default), one list per frame.
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

"""Safe image decoding and encoding.

Every image that enters a project goes through :func:`decode_image`: it refuses
empty, corrupt, truncated and decompression-bomb files with a clear
:class:`ImageError`, applies the EXIF orientation, and converts alpha,
grayscale, palette, CMYK and 16-bit images to 8-bit RGB. Stored images are
re-encoded as JPEG by :func:`encode_jpeg`.
"""

from __future__ import annotations

import io
import logging
import os
import warnings

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facetrack.fileio import FileTooLarge, read_capped

log = logging.getLogger(__name__)

# Refuse files that declare more pixels than this before decoding them.
MAX_PIXELS = 80_000_000
# Refuse image files larger than this before reading them (80 MP as uncompressed 24-bit is 240 MB).
MAX_FILE_BYTES = 256 * 2**20
# Images with a longer side than this are downscaled when stored.
MAX_SIDE = 4096
# Smallest usable image side.
MIN_SIDE = 16
JPEG_QUALITY = 95
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")


class ImageError(ValueError):
    """An image that cannot be used; the message says why in plain words."""


def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    """Decode image bytes to an RGB ``uint8`` array of shape (H, W, 3).

    Raises :class:`ImageError` for empty, unreadable, truncated, tiny or
    oversized (decompression bomb) files. Transparent pixels are put on white.
    """
    if not data:
        raise ImageError(f"{name}: the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise ImageError(
                    f"{name}: {width}x{height} pixels is too large "
                    f"(the limit is {MAX_PIXELS // 1_000_000} megapixels)"
                )
            img.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(
            f"{name}: the image declares an enormous pixel size: too large to open safely"
        ) from exc
    except UnidentifiedImageError as exc:
        raise ImageError(
            f"{name}: not an image FaceTrack can read (JPEG, PNG, BMP, WebP, TIFF, GIF)"
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{name}: the image is corrupt or truncated ({exc})") from exc
    try:
        img = ImageOps.exif_transpose(img)
    except Exception as exc:  # noqa: BLE001 - a broken EXIF block is not a reason to refuse the pixels
        log.info("%s: EXIF orientation ignored (%s: %s)", name, type(exc).__name__, exc)
    arr = _to_rgb8(img)
    if min(arr.shape[:2]) < MIN_SIDE:
        raise ImageError(f"{name}: {arr.shape[1]}x{arr.shape[0]} pixels is too small (at least {MIN_SIDE})")
    return arr


def read_image_file(path: str | os.PathLike, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of an image file, refused before reading when it cannot be an image FaceTrack opens.

    Raises :class:`ImageError` for a missing or unreadable file, something that
    is not a regular file (``/dev/zero``, a pipe, a folder) and a file over
    ``max_bytes``; reads at most ``max_bytes + 1`` bytes.
    """
    name = os.fspath(path)
    try:
        return read_capped(path, max_bytes)
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file") from None
    except FileTooLarge as exc:
        raise ImageError(f"{name}: {str(exc).split(': ', 1)[-1]}") from None
    except IsADirectoryError:
        raise ImageError(f"{name}: not a regular file") from None
    except OSError as exc:
        raise ImageError(f"{name}: cannot be read ({exc.strerror or exc})") from None


def _to_rgb8(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        gray = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.stack([gray] * 3, axis=-1))
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        gray = ((arr - lo) / (hi - lo or 1.0) * 255.0).astype(np.uint8)
        return np.ascontiguousarray(np.stack([gray] * 3, axis=-1))
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def to_rgb(frame: np.ndarray, color: str = "rgb") -> np.ndarray:
    """Convert a camera frame (``color`` = "rgb", "bgr", "bgra", "rgba" or gray) to RGB uint8."""
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.ndim != 3 or frame.shape[2] not in (3, 4):
        raise ImageError(f"frame of shape {frame.shape} is not an image")
    if frame.dtype != np.uint8:
        raise ImageError(f"frame of type {frame.dtype} is not 8-bit")
    color = color.lower()
    if frame.shape[2] == 4:
        code = cv2.COLOR_BGRA2RGB if color.startswith("bgr") else cv2.COLOR_RGBA2RGB
        return cv2.cvtColor(frame, code)
    if color.startswith("bgr"):
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(frame)


def limit_size(rgb: np.ndarray, max_side: int = MAX_SIDE) -> np.ndarray:
    """Downscale so that the longer side is at most ``max_side`` (keeps aspect)."""
    h, w = rgb.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return rgb
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def encode_jpeg(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """Encode an RGB uint8 image as JPEG bytes."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ImageError("could not encode the image as JPEG")
    return buf.tobytes()


def read_rgb(path: str | object) -> np.ndarray:
    """Read an image file FaceTrack wrote (JPEG) as RGB uint8. Raises :class:`ImageError`."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageError(f"{path}: cannot be read")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

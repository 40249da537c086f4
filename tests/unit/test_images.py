import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from facetrack.images import MAX_PIXELS, ImageError, decode_image, limit_size, to_rgb
from tests.conftest import jpeg_bytes, synthetic_face


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` but holds almost no data (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 10))
        + chunk(b"IEND", b"")
    )


def _pil_bytes(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def test_jpeg_decodes_to_rgb():
    rgb = synthetic_face()
    out = decode_image(jpeg_bytes(rgb))
    assert out.shape == rgb.shape and out.dtype == np.uint8
    # the face ellipse (230, 190, 160) stays in RGB order (not swapped to BGR)
    center = out[60, 65].astype(int)
    assert np.abs(center - np.array([230, 190, 160])).max() < 25


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"hello, not an image", "not an image"),
        (b"\xff\xd8\xff\xe0" + b"\0" * 50, "corrupt|not an image"),
    ],
)
def test_unusable_bytes_are_refused(data, message):
    with pytest.raises(ImageError, match=message):
        decode_image(data, "x.jpg")


def test_truncated_jpeg_is_refused():
    data = jpeg_bytes(synthetic_face(400, 300))
    with pytest.raises(ImageError, match="corrupt or truncated"):
        decode_image(data[: len(data) // 2], "half.jpg")


def test_decompression_bomb_is_refused_before_decoding():
    with pytest.raises(ImageError, match="too large"):
        decode_image(_png_header_only(100_000, 100_000), "bomb.png")
    assert MAX_PIXELS < 100_000 * 100_000


def test_alpha_is_put_on_white():
    rgba = np.zeros((32, 32, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[:16, :, 3] = 255  # top half opaque red, bottom half transparent
    out = decode_image(_pil_bytes(Image.fromarray(rgba, "RGBA")))
    assert out.shape == (32, 32, 3)
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[31, 0]) == (255, 255, 255)


def test_grayscale_and_16_bit():
    gray = decode_image(_pil_bytes(Image.fromarray(np.full((20, 30), 128, np.uint8), "L")))
    assert gray.shape == (20, 30, 3) and gray[0, 0, 0] == 128
    sixteen = np.full((20, 30), 65535, dtype=np.uint16)
    ok, buf = cv2.imencode(".png", sixteen)
    out = decode_image(buf.tobytes())
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8 and out.max() == 255


def test_tiny_image_is_refused():
    with pytest.raises(ImageError, match="too small"):
        decode_image(_pil_bytes(Image.new("RGB", (4, 4))))


def test_limit_size_keeps_aspect():
    big = np.zeros((1000, 8000, 3), np.uint8)
    out = limit_size(big, 4096)
    assert out.shape == (512, 4096, 3)
    small = np.zeros((10, 20, 3), np.uint8)
    assert limit_size(small, 4096) is small


def test_to_rgb_conversions():
    bgr = np.zeros((4, 4, 3), np.uint8)
    bgr[..., 0] = 200  # blue in BGR
    assert tuple(to_rgb(bgr, "bgr")[0, 0]) == (0, 0, 200)
    assert to_rgb(np.zeros((4, 4), np.uint8)).shape == (4, 4, 3)
    assert to_rgb(np.zeros((4, 4, 4), np.uint8), "bgr").shape == (4, 4, 3)
    with pytest.raises(ImageError):
        to_rgb(np.zeros((4, 4, 3), np.float32))

"""Where pretrained weights live, and whether VGG16's ImageNet weights can be had right now.

Light (no Keras import), so pages can ask without loading Keras. The checks
are cheap and download nothing. The Train page uses them to pick a backbone
that works here and now: VGG16 when its weights are in the Keras cache or
the download host answers, otherwise the compact backbone (trained from
scratch, offline). ``FACETRACK_OFFLINE=1`` tells FaceTrack never to look
for the internet.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

VGG16_NOTOP_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
VGG16_NOTOP_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
    "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
)
VGG16_NOTOP_MD5 = "6d6bbae143d832006294945121d1f1fc"
OFFLINE_ENV = "FACETRACK_OFFLINE"


def keras_models_dir() -> Path:
    """The folder where Keras keeps downloaded weights (``$KERAS_HOME/models``, default ``~/.keras/models``)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def vgg16_weights_path() -> Path:
    """Where Keras keeps the VGG16 notop weights."""
    return keras_models_dir() / VGG16_NOTOP_FILE


def vgg16_weights_cached() -> bool:
    """True when the weights file is in the Keras cache (and not a stub of a broken download)."""
    path = vgg16_weights_path()
    return path.is_file() and path.stat().st_size > 1_000_000


def offline_requested() -> bool:
    """True when ``$FACETRACK_OFFLINE`` is set to 1/true/yes."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes")


def host_reachable(url: str, timeout: float = 1.5) -> bool:
    """True when the host of ``url`` resolves and accepts a TCP connection (nothing is sent)."""
    parts = urlsplit(url)
    if not parts.hostname:
        return False
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except OSError as exc:
        logger.info("%s is not reachable: %s", parts.hostname, exc)
        return False


def vgg16_availability(timeout: float = 1.5) -> str:
    """``"cached"``, ``"downloadable"`` or ``"offline"`` (weights neither here nor reachable)."""
    if vgg16_weights_cached():
        return "cached"
    if offline_requested() or not host_reachable(VGG16_NOTOP_URL, timeout):
        return "offline"
    return "downloadable"

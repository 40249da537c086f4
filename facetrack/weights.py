"""Where pretrained weights live; light (no Keras import), so pages can ask without loading Keras."""

from __future__ import annotations

import os
from pathlib import Path

VGG16_NOTOP_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
VGG16_NOTOP_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
    "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
)
VGG16_NOTOP_MD5 = "6d6bbae143d832006294945121d1f1fc"


def keras_models_dir() -> Path:
    """The folder where Keras keeps downloaded weights (``$KERAS_HOME/models``, default ``~/.keras/models``)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def vgg16_weights_cached() -> bool:
    """True when the VGG16 ImageNet weights are downloaded already (no download needed)."""
    path = keras_models_dir() / VGG16_NOTOP_FILE
    return path.is_file() and path.stat().st_size > 1_000_000

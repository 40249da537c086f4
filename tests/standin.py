"""A tiny Keras model with the detector's contract, for tests that need a model fast.

Same contract as :func:`facetrack.model.build_model`: input ``image``
``(N, S, S, 3)`` float32 RGB 0..255, outputs ``class`` ``(N, 1)`` and ``bbox``
``(N, 4)`` (sigmoids), without the cost of building the real backbones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
from keras import layers


@keras.saving.register_keras_serializable(package="facetrack_tests")
class ScalePixels(layers.Layer):
    """Stand-in for the model's preprocessing layer: 0..255 -> -1..1."""

    def call(self, x):
        return x / 127.5 - 1.0


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def standin_model(size: int, seed: int = 1, box: Sequence[float] | None = None) -> keras.Model:
    """Two small convolutions and two dense heads.

    With ``box``, the heads start near a confident face at that normalized
    ``[x1, y1, x2, y2]`` (so detections are proper boxes); without, both heads
    have random weights.
    """
    keras.utils.set_random_seed(seed)
    init = keras.initializers.RandomNormal(stddev=0.3, seed=seed)
    inp = keras.Input((size, size, 3), name="image")
    x = ScalePixels()(inp)
    x = layers.Conv2D(8, 3, strides=2, activation="relu", kernel_initializer=init)(x)
    x = layers.Conv2D(16, 3, strides=2, activation="relu", kernel_initializer=init)(x)
    x = layers.GlobalAveragePooling2D()(x)
    if box is None:
        cls = layers.Dense(1, activation="sigmoid", name="class", kernel_initializer=init)(x)
        out = layers.Dense(4, activation="sigmoid", name="bbox", kernel_initializer=init)(x)
    else:
        cls = layers.Dense(
            1,
            activation="sigmoid",
            name="class",
            kernel_initializer=init,
            bias_initializer=keras.initializers.Constant(1.0),
        )(x)
        out = layers.Dense(
            4,
            activation="sigmoid",
            name="bbox",
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.05, seed=seed),
            bias_initializer=keras.initializers.Constant([_logit(v) for v in box]),
        )(x)
    return keras.Model(inp, {"class": cls, "bbox": out})

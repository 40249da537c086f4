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


@keras.saving.register_keras_serializable(package="facetrack_tests")
class GridConstant(layers.Layer):
    """Stand-in for a dense head: the same per-cell ``values`` ``(Gh, Gw, C)`` for every image."""

    def __init__(self, values, **kwargs):
        super().__init__(**kwargs)
        self.values = [[[float(v) for v in cell] for cell in row] for row in values]

    def call(self, x):
        const = keras.ops.convert_to_tensor(self.values, "float32")
        zero = keras.ops.mean(x, axis=(1, 2, 3), keepdims=True) * 0.0  # ties the output to the input's batch
        return zero + const[None]

    def get_config(self):
        return {**super().get_config(), "values": self.values}


def dense_standin_model(
    hw: tuple[int, int], grid: tuple[int, int], faces: Sequence[tuple[float, Sequence[float]]]
) -> keras.Model:
    """A model with the dense head's contract that always finds ``faces``.

    Input ``image`` ``(N, h, w, 3)``; outputs ``class`` ``(N, Gh, Gw, 1)`` and
    ``bbox`` ``(N, Gh, Gw, 4)``. ``faces``: ``(score, [x1, y1, x2, y2])``
    each; its cell (the one holding the box centre) and the cell to its right
    (a weaker duplicate, score 0.8 of it, that NMS must remove) carry it;
    every other cell scores 0.01.
    """
    import numpy as np

    gh, gw = grid
    scores = np.full((gh, gw, 1), 0.01, np.float32)
    boxes = np.zeros((gh, gw, 4), np.float32)
    for score, box in faces:
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        r, c = min(int(cy * gh), gh - 1), min(int(cx * gw), gw - 1)
        scores[r, c, 0], boxes[r, c] = score, box
        if c + 1 < gw:
            scores[r, c + 1, 0] = 0.8 * score
            boxes[r, c + 1] = np.asarray(box) + [0.01, 0.0, 0.01, 0.0]
    inp = keras.Input((*hw, 3), name="image")
    x = ScalePixels()(inp)
    cls = GridConstant(scores.tolist(), name="class")(x)
    out = GridConstant(boxes.tolist(), name="bbox")(x)
    return keras.Model(inp, {"class": cls, "bbox": out})

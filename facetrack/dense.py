"""The dense (multi-face) head: per-cell face scores and boxes, their targets and losses.

Every cell of a feature grid ``(Gh, Gw)`` scores "a face is centred here" and
proposes that face's box (FCOS/CenterNet style). The model's outputs:

- ``"class"``: ``(N, Gh, Gw, 1)`` sigmoid, the cell's face score;
- ``"bbox"``: ``(N, Gh, Gw, 4)`` the cell's box as normalized ``[x1, y1, x2, y2]``
  of the whole image (see :mod:`facetrack.labels`): the centre moves from the
  cell's centre by at most ``reach`` cells (``tanh``), width and height are
  fractions of the image (``sigmoid``), see :class:`CellBoxes`.

:func:`facetrack.decode.decode` turns them into faces.

Targets (:func:`dense_targets`), from a list of boxes per image (0, 1 or
more): a cell is positive for a face when its centre lies within
``radius`` cells of the face centre (per axis, at most a quarter of the face
size, at least the cell holding the centre); cells in the face's central half
that are not positive are ignored (neither face nor background); a cell
positive for two faces takes the smaller one. The score target is 1
(positive), 0 (background) or -1 (ignored); the box target is the face's box
on positive cells and zeros elsewhere.

Losses (registered for ``safe_mode`` loading; they and :class:`CellBoxes`
live in :mod:`facetrack.layers` with the detector's other layers, and the
training batches in :func:`facetrack.data.dense_batches`): :class:`CellScoreLoss` (focal
binary cross-entropy, gamma 1, positives weighted x4, averaged over the
non-ignored cells of the batch, loss weight 20; ``photo_weight`` adds each
photo's focal cross-entropy of its best cell's score against "has a face",
off by default) and :class:`CellBoxLoss` (GIoU loss averaged over the positive
cells of the batch; 0 when the batch holds no face).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import keras
import numpy as np
from keras import layers

from facetrack.layers import DEFAULT_GAMMA, CellBoxes, CellBoxLoss, CellScoreLoss

# Measured in benchmarks/dense_research.py (README there): the score loss is a mean over ~300 cells.
DEFAULT_DENSE_LOSS_WEIGHTS = {"class": 20.0, "bbox": 1.0}
PRIOR_SCORE = 0.01  # the score head starts at this probability everywhere (RetinaNet's prior)
PRIOR_SIZE = 0.15  # and the box head at this width/height (fraction of the image)


def dense_head(
    features_shape: tuple[int, ...], width: int = 64, reach: float = 2.0, name: str = "dense_head"
) -> keras.Model:
    """Head model: features ``(N, Gh, Gw, C)`` -> ``{"class": (N, Gh, Gw, 1), "bbox": (N, Gh, Gw, 4)}``.

    One shared 3x3 convolution (BN, ReLU), then a 1x1 score convolution
    (sigmoid, starting at :data:`PRIOR_SCORE`) and a 1x1 box convolution
    decoded by :class:`CellBoxes`.
    """
    fin = keras.Input(tuple(features_shape), name="features")
    h = layers.Conv2D(width, 3, padding="same", use_bias=False, name="head_conv")(fin)
    h = layers.BatchNormalization(momentum=0.9, name="head_bn")(h)
    h = layers.ReLU(name="head_relu")(h)
    prior = -math.log((1 - PRIOR_SCORE) / PRIOR_SCORE)
    cls = layers.Conv2D(
        1, 1, activation="sigmoid", bias_initializer=keras.initializers.Constant(prior), name="class"
    )(h)
    size = math.log(PRIOR_SIZE / (1 - PRIOR_SIZE))
    raw = layers.Conv2D(
        4,
        1,
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
        bias_initializer=keras.initializers.Constant([0.0, 0.0, size, size]),
        name="bbox_raw",
    )(h)
    box = CellBoxes(reach, name="bbox")(raw)
    return keras.Model(fin, {"class": cls, "bbox": box}, name=name)


def vgg16_dense_parts(weights_path: str | None, input_hw: tuple[int, int]) -> tuple[keras.Model, keras.Model]:
    """VGG16 up to ``block5_conv3`` (a 1/16 grid, frozen) and a dense head on it.

    ``weights_path``: a VGG16 notop ``.h5`` (from
    :func:`facetrack.model.resolve_vgg16_weights`) or None for random weights.
    ``input_hw``: ``(H, W)``. Returns ``(feature_model, head_model)``.
    """
    from facetrack.model import Preprocess, vgg16_base

    h, w = int(input_hw[0]), int(input_hw[1])
    inp = keras.Input((h, w, 3), name="image", dtype="float32")
    x = Preprocess("vgg16", name="preprocess")(inp)
    base = vgg16_base(weights_path, (h, w))
    trunk = keras.Model(base.input, base.get_layer("block5_conv3").output, name="vgg16_trunk")
    trunk.trainable = False
    feats = trunk(x, training=False)
    feature_model = keras.Model(inp, feats, name="vgg16_features")
    feature_model.trainable = False
    head = dense_head(tuple(feats.shape[1:]), width=128, name="vgg16_dense_head")
    return feature_model, head


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class TargetSettings:
    """How faces become per-cell targets (see the module docstring).

    ``radius``: cells within this many cells of a face centre (per axis) are
    positive, limited to ``center_share`` of the face's half-size (but the
    centre cell always is). ``ignore_share``: non-positive cells within this
    share of the face's half-size from its centre are ignored.
    """

    radius: float = 1.0
    center_share: float = 0.5
    ignore_share: float = 0.5

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def image_targets(
    boxes: np.ndarray | Sequence[Sequence[float]],
    grid: tuple[int, int],
    settings: TargetSettings | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Targets of one image: ``(score (Gh, Gw, 1), box (Gh, Gw, 4))`` float32.

    ``boxes``: ``(K, 4)`` normalized ``[x1, y1, x2, y2]``, ``K >= 0``.
    ``grid``: ``(Gh, Gw)``. Score: 1 positive, 0 background, -1 ignored.
    """
    s = settings or TargetSettings()
    gh, gw = int(grid[0]), int(grid[1])
    score = np.zeros((gh, gw, 1), np.float32)
    target = np.zeros((gh, gw, 4), np.float32)
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    b = b[(b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])]
    if b.shape[0] == 0:
        return score, target
    # face centres and half-sizes in cell units, (K, 1, 1)
    cx = ((b[:, 0] + b[:, 2]) / 2 * gw)[:, None, None]
    cy = ((b[:, 1] + b[:, 3]) / 2 * gh)[:, None, None]
    hw = ((b[:, 2] - b[:, 0]) / 2 * gw)[:, None, None]
    hh = ((b[:, 3] - b[:, 1]) / 2 * gh)[:, None, None]
    dx = np.abs(np.arange(gw, dtype=np.float32)[None, None, :] + 0.5 - cx)  # (K, 1, Gw)
    dy = np.abs(np.arange(gh, dtype=np.float32)[None, :, None] + 0.5 - cy)  # (K, Gh, 1)
    rx = np.minimum(s.radius, s.center_share * hw)
    ry = np.minimum(s.radius, s.center_share * hh)
    home_x = np.floor(np.clip(cx, 0, gw - 1e-3)) + 0.5
    home_y = np.floor(np.clip(cy, 0, gh - 1e-3)) + 0.5
    is_home_x = np.abs(np.arange(gw)[None, None, :] + 0.5 - home_x) < 1e-3
    is_home_y = np.abs(np.arange(gh)[None, :, None] + 0.5 - home_y) < 1e-3
    pos = ((dx <= rx) | is_home_x) & ((dy <= ry) | is_home_y)  # (K, Gh, Gw)
    near = (dx <= s.ignore_share * hw) & (dy <= s.ignore_share * hh)
    area = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[:, None, None]
    owner = np.argmin(np.where(pos, area, np.inf), axis=0)  # smallest face wins a shared cell
    any_pos = pos.any(axis=0)
    score[..., 0] = np.where(any_pos, 1.0, np.where(near.any(axis=0), -1.0, 0.0))
    target[any_pos] = b[owner[any_pos]]
    return score, target


def dense_targets(
    boxes_per_image: Sequence[np.ndarray | Sequence[Sequence[float]]],
    grid: tuple[int, int],
    settings: TargetSettings | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Targets of a batch: ``(score (N, Gh, Gw, 1), box (N, Gh, Gw, 4))``; see :func:`image_targets`."""
    gh, gw = int(grid[0]), int(grid[1])
    n = len(boxes_per_image)
    score = np.zeros((n, gh, gw, 1), np.float32)
    box = np.zeros((n, gh, gw, 4), np.float32)
    for i, b in enumerate(boxes_per_image):
        score[i], box[i] = image_targets(b, (gh, gw), settings)
    return score, box


def flip_boxes(boxes: np.ndarray) -> np.ndarray:
    """Boxes ``(K, 4)`` of an image mirrored left-right."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    return np.stack([1.0 - b[:, 2], b[:, 1], 1.0 - b[:, 0], b[:, 3]], axis=1)


def mosaic(
    images: np.ndarray, boxes_per_image: Sequence[np.ndarray], count: int, seed: int = 0
) -> tuple[np.ndarray, list[np.ndarray]]:
    """``count`` new images, each four random ``images`` at half size in a 2x2 tile, with their boxes.

    ``images``: uint8 ``(N, H, W, 3)`` (H and W even); boxes normalized
    ``(K, 4)`` per image. Faces come out at half their size, four photos'
    faces in one frame: small faces and several faces per image, what group
    photos and a webcam across a room show. Returns ``(uint8 (count, H, W, 3),
    [boxes (K, 4)])``.
    """
    import cv2

    rng = np.random.default_rng(seed)
    n, h, w = images.shape[0], images.shape[1], images.shape[2]
    hh, hw = h // 2, w // 2
    out = np.empty((count, h, w, 3), np.uint8)
    out_boxes = []
    for k in range(count):
        parts = []
        for q, i in enumerate(rng.integers(0, n, 4)):
            qy, qx = divmod(q, 2)
            out[k, qy * hh : (qy + 1) * hh, qx * hw : (qx + 1) * hw] = cv2.resize(
                np.asarray(images[i]), (hw, hh), interpolation=cv2.INTER_AREA
            )
            b = np.asarray(boxes_per_image[i], np.float32).reshape(-1, 4)
            parts.append((b + np.array([qx, qy, qx, qy], np.float32)) / 2)
        out_boxes.append(np.concatenate(parts))
    return out, out_boxes


def predict_detections(
    model: keras.Model, images: np.ndarray, settings: Any = None, batch_size: int = 64
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Run a dense model on RGB images ``(N, H, W, 3)`` 0..255 and decode each image.

    ``settings``: :class:`facetrack.decode.DecodeSettings` (defaults when
    None). Returns ``[(scores (M,), boxes (M, 4))]`` per image, best first.
    For AP, pass settings with a low threshold (e.g. 0.05).
    """
    from facetrack.decode import decode

    out = model.predict(np.asarray(images, np.float32), batch_size=batch_size, verbose=0)
    return [decode(out["class"][i], out["bbox"][i], settings) for i in range(len(images))]


def compile_dense(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer | None = None,
    loss_weights: dict[str, float] | None = None,
    gamma: float = DEFAULT_GAMMA,
    pos_weight: float = 4.0,
    photo_weight: float = 0.0,
) -> keras.Model:
    """Compile a dense model (outputs ``class``/``bbox`` per cell) with the dense losses."""
    weights = dict(DEFAULT_DENSE_LOSS_WEIGHTS if loss_weights is None else loss_weights)
    model.compile(
        optimizer=optimizer or keras.optimizers.Adam(1e-3),
        loss={
            "class": CellScoreLoss(gamma=gamma, pos_weight=pos_weight, photo_weight=photo_weight),
            "bbox": CellBoxLoss(),
        },
        loss_weights={"class": weights["class"], "bbox": weights["bbox"]},
    )
    return model


def output_grid(model: keras.Model) -> tuple[int, int]:
    """``(Gh, Gw)`` of a dense model's ``class`` output."""
    out = model.output["class"] if isinstance(model.output, dict) else model.outputs[0]
    return int(out.shape[1]), int(out.shape[2])


def is_dense(model: keras.Model) -> bool:
    """True for a dense (per-cell) detector, False for the older one-box kind."""
    out = model.output["class"] if isinstance(model.output, dict) else model.outputs[0]
    return len(out.shape) == 4

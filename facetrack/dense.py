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

Losses (registered for ``safe_mode`` loading): :class:`CellScoreLoss` (focal
binary cross-entropy, positives weighted, averaged over the non-ignored cells
of the batch) and :class:`CellBoxLoss` (GIoU loss averaged over the positive
cells of the batch; 0 when the batch holds no face).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import keras
import numpy as np
from keras import layers, ops

DEFAULT_DENSE_LOSS_WEIGHTS = {"class": 1.0, "bbox": 1.0}
PRIOR_SCORE = 0.01  # the score head starts at this probability everywhere (RetinaNet's prior)
PRIOR_SIZE = 0.15  # and the box head at this width/height (fraction of the image)


# --------------------------------------------------------------------------- layers


@keras.saving.register_keras_serializable(package="facetrack")
class CellBoxes(layers.Layer):
    """Raw per-cell box values ``(N, Gh, Gw, 4)`` -> boxes ``(N, Gh, Gw, 4)`` normalized ``[x1, y1, x2, y2]``.

    Channels 0..1 move the centre from the cell centre by ``tanh * reach``
    cells; channels 2..3 are width and height as a fraction of the image
    (``sigmoid``). Corners are clipped to [0, 1].
    """

    def __init__(self, reach: float = 2.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reach = float(reach)

    def call(self, raw):
        raw = ops.cast(raw, "float32")
        shape = ops.shape(raw)
        gh, gw = shape[1], shape[2]
        fh, fw = ops.cast(gh, "float32"), ops.cast(gw, "float32")
        ys = (ops.cast(ops.arange(gh), "float32") + 0.5) / fh
        xs = (ops.cast(ops.arange(gw), "float32") + 0.5) / fw
        cx = ops.reshape(xs, (1, 1, -1)) + ops.tanh(raw[..., 0]) * (self.reach / fw)
        cy = ops.reshape(ys, (1, -1, 1)) + ops.tanh(raw[..., 1]) * (self.reach / fh)
        half_w = ops.sigmoid(raw[..., 2]) / 2
        half_h = ops.sigmoid(raw[..., 3]) / 2
        box = ops.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=-1)
        return ops.clip(box, 0.0, 1.0)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "reach": self.reach}


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
    from facetrack.model import Preprocess, WeightsUnavailable

    h, w = int(input_hw[0]), int(input_hw[1])
    inp = keras.Input((h, w, 3), name="image", dtype="float32")
    x = Preprocess("vgg16", name="preprocess")(inp)
    base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(h, w, 3))
    if weights_path is not None:
        try:
            base.load_weights(weights_path)
        except Exception as exc:
            raise WeightsUnavailable(
                f"The weights file '{weights_path}' could not be read as VGG16 weights ({exc}). "
                "Delete it so it is downloaded again, or choose the 'compact' backbone."
            ) from None
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


def dense_batches(
    images: np.ndarray,
    boxes_per_image: Sequence[np.ndarray],
    batch_size: int,
    grid: tuple[int, int],
    settings: TargetSettings | None = None,
    seed: int = 0,
    flip: bool = True,
):
    """A ``tf.data`` pipeline for ``model.fit``: shuffled batches of ``(image, {"class", "bbox"})``.

    ``images``: uint8 ``(N, H, W, 3)`` RGB (an array or a memmap);
    ``boxes_per_image[i]``: ``(K_i, 4)`` normalized, ``K_i >= 0``. Each epoch
    draws a new order and mirrors half of the images (``flip``), then builds
    the targets of the batch (:func:`dense_targets`). Elements: float32
    ``(B, H, W, 3)`` and ``{"class": (B, Gh, Gw, 1), "bbox": (B, Gh, Gw, 4)}``;
    the last incomplete batch is dropped.
    """
    import tensorflow as tf

    n = len(images)
    rng = np.random.default_rng(seed)
    gh, gw = int(grid[0]), int(grid[1])

    def gen():
        order = rng.permutation(n)
        for i in range(0, n - batch_size + 1, batch_size):
            idx = np.sort(order[i : i + batch_size])
            xb = np.asarray(images[idx], np.float32)
            bb = [np.asarray(boxes_per_image[j], np.float32).reshape(-1, 4) for j in idx]
            if flip:
                mirror = rng.random(len(idx)) < 0.5
                xb[mirror] = xb[mirror, :, ::-1]
                bb = [flip_boxes(b) if m else b for b, m in zip(bb, mirror, strict=True)]
            cls, box = dense_targets(bb, (gh, gw), settings)
            yield xb, {"class": cls, "bbox": box}

    sig = (
        tf.TensorSpec((None, *images.shape[1:]), tf.float32),
        {
            "class": tf.TensorSpec((None, gh, gw, 1), tf.float32),
            "bbox": tf.TensorSpec((None, gh, gw, 4), tf.float32),
        },
    )
    ds = tf.data.Dataset.from_generator(gen, output_signature=sig)
    return ds.apply(tf.data.experimental.assert_cardinality(n // batch_size)).prefetch(2)


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


# --------------------------------------------------------------------------- losses


def _batch_mean(per_sample_sum, weight_sum):
    """Scale per-sample sums so that Keras' mean over the batch is ``total / weight_sum``."""
    n = ops.cast(ops.shape(per_sample_sum)[0], "float32")
    return per_sample_sum * (n / ops.maximum(weight_sum, 1.0))


@keras.saving.register_keras_serializable(package="facetrack")
class CellScoreLoss(keras.losses.Loss):
    """Focal binary cross-entropy of the cell scores, averaged over the batch's non-ignored cells.

    ``y_true`` ``(N, Gh, Gw, 1)``: 1 face centre, 0 background, -1 ignored;
    ``y_pred`` the sigmoid scores. Per cell ``w * (1 - p_t)^gamma * BCE``
    with ``w = pos_weight`` on positives, 1 on background.
    """

    def __init__(
        self, gamma: float = 2.0, pos_weight: float = 4.0, name: str = "cell_score_loss", **kwargs: Any
    ) -> None:
        kwargs.setdefault("reduction", "sum_over_batch_size")
        super().__init__(name=name, **kwargs)
        self.gamma = float(gamma)
        self.pos_weight = float(pos_weight)

    def call(self, y_true, y_pred):
        y = ops.cast(y_true, "float32")[..., 0]
        p = ops.clip(ops.cast(y_pred, "float32")[..., 0], 1e-6, 1.0 - 1e-6)
        valid = ops.cast(y >= 0.0, "float32")
        pos = ops.cast(y > 0.5, "float32")
        bce = -(pos * ops.log(p) + (1.0 - pos) * ops.log(1.0 - p))
        pt = pos * p + (1.0 - pos) * (1.0 - p)
        weight = valid * (pos * self.pos_weight + (1.0 - pos))
        per = ops.sum(weight * ops.power(1.0 - pt, self.gamma) * bce, axis=(1, 2))
        return _batch_mean(per, ops.sum(valid))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "gamma": self.gamma, "pos_weight": self.pos_weight}


def giou_loss(y_true, y_pred):
    """``1 - GIoU`` of boxes ``[..., 4]`` ``[x1, y1, x2, y2]`` (element-wise over the leading axes)."""
    t = ops.cast(y_true, "float32")
    p = ops.cast(y_pred, "float32")
    area_t = (t[..., 2] - t[..., 0]) * (t[..., 3] - t[..., 1])
    area_p = ops.maximum(p[..., 2] - p[..., 0], 0.0) * ops.maximum(p[..., 3] - p[..., 1], 0.0)
    iw = ops.maximum(ops.minimum(t[..., 2], p[..., 2]) - ops.maximum(t[..., 0], p[..., 0]), 0.0)
    ih = ops.maximum(ops.minimum(t[..., 3], p[..., 3]) - ops.maximum(t[..., 1], p[..., 1]), 0.0)
    inter = iw * ih
    union = ops.maximum(area_t + area_p - inter, 1e-9)
    cw = ops.maximum(t[..., 2], p[..., 2]) - ops.minimum(t[..., 0], p[..., 0])
    ch = ops.maximum(t[..., 3], p[..., 3]) - ops.minimum(t[..., 1], p[..., 1])
    hull = ops.maximum(cw * ch, 1e-9)
    return 1.0 - (inter / union - (hull - union) / hull)


@keras.saving.register_keras_serializable(package="facetrack")
class CellBoxLoss(keras.losses.Loss):
    """GIoU loss of the boxes of positive cells, averaged over the batch's positive cells.

    ``y_true`` ``(N, Gh, Gw, 4)``: the face box on positive cells, zeros
    elsewhere (no area: not counted); ``y_pred`` the cell boxes. A batch
    without faces gives 0.
    """

    def __init__(self, name: str = "cell_box_loss", **kwargs: Any) -> None:
        kwargs.setdefault("reduction", "sum_over_batch_size")
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        t = ops.cast(y_true, "float32")
        mask = ops.cast((t[..., 2] - t[..., 0]) > 0.0, "float32")
        per = ops.sum(giou_loss(t, y_pred) * mask, axis=(1, 2))
        return _batch_mean(per, ops.sum(mask))


def compile_dense(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer | None = None,
    loss_weights: dict[str, float] | None = None,
    gamma: float = 2.0,
    pos_weight: float = 4.0,
) -> keras.Model:
    """Compile a dense model (outputs ``class``/``bbox`` per cell) with the dense losses."""
    weights = dict(DEFAULT_DENSE_LOSS_WEIGHTS if loss_weights is None else loss_weights)
    model.compile(
        optimizer=optimizer or keras.optimizers.Adam(1e-3),
        loss={"class": CellScoreLoss(gamma=gamma, pos_weight=pos_weight), "bbox": CellBoxLoss()},
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

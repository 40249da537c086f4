"""The detector's own Keras layers and its box loss, registered so that a ``.keras`` file reloads
with ``safe_mode=True`` (see :mod:`facetrack.model`, which builds models from them).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers, ops

IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)
DEFAULT_GAMMA = 1.0  # focal gamma of the cell scores: 1 separated face and background better than 2


@keras.saving.register_keras_serializable(package="facetrack")
class Preprocess(layers.Layer):
    """Turn RGB pixels 0..255 into what the backbone expects.

    ``mode="vgg16"``: the same as ``keras.applications.vgg16.preprocess_input``
    (RGB -> BGR, subtract the ImageNet channel means). ``mode="scale"``:
    ``x / 127.5 - 1`` (pixels to [-1, 1]). Shape is unchanged ``(N, S, S, 3)``.
    """

    def __init__(self, mode: str = "vgg16", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mode not in ("vgg16", "scale"):
            raise ValueError(f"unknown preprocessing mode {mode!r}")
        self.mode = mode

    def call(self, x):
        x = ops.cast(x, "float32")
        if self.mode == "vgg16":
            x = ops.flip(x, axis=-1)
            return x - ops.reshape(ops.convert_to_tensor(IMAGENET_BGR_MEAN, "float32"), (1, 1, 1, 3))
        return x / 127.5 - 1.0

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="facetrack")
class AddCoords(layers.Layer):
    """CoordConv: append two channels holding each cell's normalized x and y centre.

    ``(N, H, W, C)`` -> ``(N, H, W, C + 2)``; values in [0, 1].
    """

    def call(self, x):
        shape = ops.shape(x)
        h, w = shape[1], shape[2]
        ys = (ops.cast(ops.arange(h), "float32") + 0.5) / ops.cast(h, "float32")
        xs = (ops.cast(ops.arange(w), "float32") + 0.5) / ops.cast(w, "float32")
        yy = ops.broadcast_to(ops.reshape(ys, (1, -1, 1, 1)), (shape[0], h, w, 1))
        xx = ops.broadcast_to(ops.reshape(xs, (1, 1, -1, 1)), (shape[0], h, w, 1))
        return ops.concatenate([ops.cast(x, "float32"), xx, yy], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] + 2)


@keras.saving.register_keras_serializable(package="facetrack")
class GridBoxDecoder(layers.Layer):
    """Collapse per-cell predictions ``(N, G, G, 5)`` into one box ``(N, 4)``.

    Channel 0 is the cell's "face is here" logit, 1..2 move the box centre from
    the cell centre (``tanh``, at most ``reach`` cells), 3..4 are the box width
    and height (sigmoid, as a fraction of the image). The cell logits are
    softmax-normalized over the grid and the cell boxes (centre, size) are
    averaged with those weights; the result is returned as clipped
    ``[x1, y1, x2, y2]`` in [0, 1].
    """

    def __init__(self, reach: float = 1.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reach = float(reach)

    def call(self, p):
        shape = ops.shape(p)
        gh, gw = shape[1], shape[2]
        fh, fw = ops.cast(gh, "float32"), ops.cast(gw, "float32")
        ys = (ops.cast(ops.arange(gh), "float32") + 0.5) / fh
        xs = (ops.cast(ops.arange(gw), "float32") + 0.5) / fw
        cx = ops.reshape(xs, (1, 1, -1)) + ops.tanh(p[..., 1]) * self.reach / fw
        cy = ops.reshape(ys, (1, -1, 1)) + ops.tanh(p[..., 2]) * self.reach / fh
        bw = ops.sigmoid(p[..., 3])
        bh = ops.sigmoid(p[..., 4])
        logits = ops.reshape(p[..., 0], (shape[0], -1))
        att = ops.reshape(ops.softmax(logits, axis=-1), (shape[0], gh, gw))

        def wsum(v):
            return ops.sum(att * v, axis=(1, 2))

        mcx, mcy, mw, mh = wsum(cx), wsum(cy), wsum(bw), wsum(bh)
        box = ops.stack([mcx - mw / 2, mcy - mh / 2, mcx + mw / 2, mcy + mh / 2], axis=-1)
        return ops.clip(box, 0.0, 1.0)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 4)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "reach": self.reach}


@keras.saving.register_keras_serializable(package="facetrack")
class MaxOverGrid(layers.Layer):
    """``(N, G, G, C)`` -> ``(N, C)``: maximum over the grid of channel 0..C."""

    def call(self, x):
        return ops.max(x, axis=(1, 2))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])


# --------------------------------------------------------------------------- losses


@keras.saving.register_keras_serializable(package="facetrack")
class LocalizationLoss(keras.losses.Loss):
    """Box loss: squared error of the top-left corner plus squared error of width and height.

    ``y_true`` and ``y_pred`` are ``(N, 4)`` normalized ``[x1, y1, x2, y2]``.
    An image without a face has the target ``[0, 0, 0, 0]`` (no area) and does
    not count. Per face image:
    ``(x1-x1')^2 + (y1-y1')^2 + (w-w')^2 + (h-h')^2``; the loss is the mean over
    the face images of the batch (not a sum); a batch with no face gives 0.
    """

    def __init__(self, name: str = "localization_loss", **kwargs: Any) -> None:
        kwargs.setdefault("reduction", "sum_over_batch_size")
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.cast(y_pred, "float32")
        mask = ops.cast((y_true[:, 2] - y_true[:, 0]) > 0, "float32")
        d_xy = ops.sum(ops.square(y_true[:, :2] - y_pred[:, :2]), axis=-1)
        wh_t = y_true[:, 2:] - y_true[:, :2]
        wh_p = y_pred[:, 2:] - y_pred[:, :2]
        d_wh = ops.sum(ops.square(wh_t - wh_p), axis=-1)
        per = (d_xy + d_wh) * mask
        n = ops.cast(ops.shape(per)[0], "float32")
        n_faces = ops.maximum(ops.sum(mask), 1.0)
        # The reduction divides by N, so scale to get a mean over face images.
        return per * (n / n_faces)


def localization_loss(y_true, y_pred):
    """Functional form of :class:`LocalizationLoss` (a scalar)."""
    return LocalizationLoss()(y_true, y_pred)


@keras.saving.register_keras_serializable(package="facetrack")
class SortCorners(layers.Layer):
    """``(N, 4)`` -> ``(N, 4)``: make any two corners ``[x1, y1, x2, y2]`` with x1<=x2, y1<=y2."""

    def call(self, b):
        return ops.stack(
            [
                ops.minimum(b[:, 0], b[:, 2]),
                ops.minimum(b[:, 1], b[:, 3]),
                ops.maximum(b[:, 0], b[:, 2]),
                ops.maximum(b[:, 1], b[:, 3]),
            ],
            axis=-1,
        )

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="facetrack")
class MirrorImage(layers.Layer):
    """``(N, S, S, 3)`` -> the same images mirrored left-right."""

    def call(self, x):
        return ops.flip(x, axis=2)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="facetrack")
class MirrorBox(layers.Layer):
    """Boxes ``(..., 4)`` ``[x1, y1, x2, y2]`` found in a mirrored image -> boxes in the original image."""

    def call(self, b):
        return ops.stack([1.0 - b[..., 2], b[..., 1], 1.0 - b[..., 0], b[..., 3]], axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="facetrack")
class MirrorCells(layers.Layer):
    """A dense head's map ``(N, Gh, Gw, C)`` found in a mirrored image -> its cells in the original's order.

    Only the cells move; boxes inside them also need :class:`MirrorBox`.
    """

    def call(self, m):
        return ops.flip(m, axis=2)

    def compute_output_shape(self, input_shape):
        return input_shape


# --------------------------------------------------------------------------- the dense head (facetrack.dense)


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


def _batch_mean(per_sample_sum, weight_sum):
    """Scale per-sample sums so that Keras' mean over the batch is ``total / weight_sum``."""
    n = ops.cast(ops.shape(per_sample_sum)[0], "float32")
    return per_sample_sum * (n / ops.maximum(weight_sum, 1.0))


def _focal_ce(pt, gamma: float):
    """Focal cross-entropy ``(1 - pt)^gamma * -log(pt)`` of ``pt``, the probability of the right answer."""
    return ops.power(1.0 - pt, gamma) * -ops.log(pt)


@keras.saving.register_keras_serializable(package="facetrack")
class CellScoreLoss(keras.losses.Loss):
    """Focal binary cross-entropy of the cell scores, averaged over the batch's non-ignored cells.

    ``y_true`` ``(N, Gh, Gw, 1)``: 1 face centre, 0 background, -1 ignored;
    ``y_pred`` the sigmoid scores. Per cell ``w * (1 - p_t)^gamma * BCE``
    with ``w = pos_weight`` on positives, 1 on background.

    ``photo_weight`` adds, per image, the same focal cross-entropy of the
    photo's answer to "is there a face?", read as the detector reads it: the
    image's highest cell score (over its face cells when it has a face, over
    all its cells when it has none), times ``photo_weight``. The cell term
    is a mean over hundreds of mostly easy cells; this one speaks for the
    single cell that decides a photo's presence.
    """

    def __init__(
        self,
        gamma: float = DEFAULT_GAMMA,
        pos_weight: float = 4.0,
        photo_weight: float = 0.0,
        name: str = "cell_score_loss",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("reduction", "sum_over_batch_size")
        super().__init__(name=name, **kwargs)
        self.gamma = float(gamma)
        self.pos_weight = float(pos_weight)
        self.photo_weight = float(photo_weight)

    def call(self, y_true, y_pred):
        y = ops.cast(y_true, "float32")[..., 0]
        p = ops.clip(ops.cast(y_pred, "float32")[..., 0], 1e-6, 1.0 - 1e-6)
        valid = ops.cast(y >= 0.0, "float32")
        pos = ops.cast(y > 0.5, "float32")
        pt = pos * p + (1.0 - pos) * (1.0 - p)  # the probability given to the right answer
        weight = valid * (pos * self.pos_weight + (1.0 - pos))
        per = ops.sum(weight * _focal_ce(pt, self.gamma), axis=(1, 2))
        loss = _batch_mean(per, ops.sum(valid))
        if self.photo_weight > 0.0:
            # the photo's right answer: its best face cell's score, or (no face) 1 - its best cell's
            has_face = ops.max(pos, axis=(1, 2)) > 0.5
            photo_pt = ops.where(
                has_face, ops.max(ops.where(pos > 0.5, pt, 0.0), axis=(1, 2)), ops.min(pt, axis=(1, 2))
            )
            loss = loss + self.photo_weight * _focal_ce(photo_pt, self.gamma)
        return loss

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "gamma": self.gamma,
            "pos_weight": self.pos_weight,
            "photo_weight": self.photo_weight,
        }


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

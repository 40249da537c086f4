"""Face detector models: backbones, heads, losses, loading.

Every model built here maps a batch of RGB images to two named outputs:

- input ``"image"``: float32 RGB pixels in 0..255, shape ``(N, S, S, 3)`` where
  ``S`` is the input size (120 by default). Preprocessing is a layer inside the
  model (:class:`Preprocess`), so training, evaluation and live detection
  cannot disagree.
- output ``"class"``: ``(N, 1)`` sigmoid, probability that the image shows a face.
- output ``"bbox"``: ``(N, 4)`` in [0, 1], the face box as normalized
  ``[x1, y1, x2, y2]`` (see :mod:`facetrack.labels`).

A model is two parts so that features can be cached (``full = head(feature(x))``):
:func:`build_parts` returns ``(feature_model, head_model)`` and :func:`compose`
joins them. Backbones:

- ``"vgg16"``: VGG16 up to ``block5_pool`` (ImageNet weights, frozen by
  default), then a head that keeps the spatial 3x3x512 map (small conv +
  flatten) so the box can be located.
- ``"compact"``: a small CNN trained from scratch (no download). Strided
  convolutions down to 1/16 of the input, dilated separable blocks so that
  each position sees a whole large face, then a small top-down step back to
  the 1/8 grid (the deep map resized up and added to the last 1/8 map), so
  that small faces get cells of their own size: a ``G x G`` grid, 15x15 at
  120x120 input. Every cell predicts a face box (centre relative to its own
  position, width and height) and a "this cell sees the face" logit; the box
  output is the softmax-weighted average of the cell boxes. This keeps the
  head translation-equivariant, which localizes far better from a few hundred
  photos than a global dense regression. Training saves it in its
  mirror-averaged form (:func:`with_mirror_average`).

``head="dense"`` (issue 10, any number of faces; :mod:`facetrack.dense`):
the input may be non-square, ``input_size=(H, W)`` (4:3 like a webcam frame,
e.g. ``(120, 160)``), and the outputs are per cell: ``"class"``
``(N, Gh, Gw, 1)`` and ``"bbox"`` ``(N, Gh, Gw, 4)`` normalized
``[x1, y1, x2, y2]``; compact on its 1/8 grid, vgg16 on ``block5_conv3``
(1/16). :func:`facetrack.decode.decode` turns them into faces.

Losses (registered, so ``model.keras`` reloads with ``safe_mode=True``):
binary cross-entropy for ``class``; :class:`LocalizationLoss` for ``bbox``.
"""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import keras
from keras import layers

from facetrack.fileio import FileTooLarge, check_zip_sizes
from facetrack.layers import (
    AddCoords,
    GridBoxDecoder,
    LocalizationLoss,
    MaxOverGrid,
    MirrorBox,
    MirrorCells,
    MirrorImage,
    Preprocess,
    SortCorners,
)
from facetrack.runs import input_hw
from facetrack.weights import VGG16_NOTOP_FILE, VGG16_NOTOP_MD5, VGG16_NOTOP_URL, keras_models_dir

log = logging.getLogger(__name__)

BACKBONES = ("vgg16", "compact")
# "single": the tutorial's one-box head (N, 1) / (N, 4); "dense": per-cell scores and boxes
# (N, Gh, Gw, 1) / (N, Gh, Gw, 4), any number of faces (facetrack.dense).
HEADS = ("single", "dense")
DEFAULT_INPUT_SIZE = 120
# Default loss weights: total = loc + 0.5 * class, as in the tutorial.
DEFAULT_LOSS_WEIGHTS = {"bbox": 1.0, "class": 0.5}


class WeightsUnavailable(RuntimeError):
    """The ImageNet weights could not be found or downloaded; the message says what to do."""


class ModelLoadError(ValueError):
    """A model file could not be loaded; the message says why in plain words."""


def compile_model(
    model: keras.Model,
    learning_rate: float = 1e-3,
    loss_weights: dict[str, float] | None = None,
    optimizer: keras.optimizers.Optimizer | None = None,
) -> keras.Model:
    """Compile ``model`` (named outputs ``class``/``bbox``) with the FaceTrack losses.

    Total loss = ``loss_weights["bbox"] * loc + loss_weights["class"] * bce``
    (default ``loc + 0.5 * bce``).
    """
    weights = dict(DEFAULT_LOSS_WEIGHTS if loss_weights is None else loss_weights)
    model.compile(
        optimizer=optimizer or keras.optimizers.Adam(learning_rate),
        loss={"class": keras.losses.BinaryCrossentropy(), "bbox": LocalizationLoss()},
        loss_weights={"class": weights["class"], "bbox": weights["bbox"]},
    )
    return model


# --------------------------------------------------------------------------- weights


def _offline_message(folder: Path, reason: str) -> str:
    return (
        "The VGG16 backbone needs its ImageNet weights, a one-time download of about 58 MB "
        f"(file '{VGG16_NOTOP_FILE}'), and it could not be downloaded ({reason}). "
        f"Connect to the internet once and try again, or put that file in the folder '{folder}' "
        "(where Keras looks for it). "
        "Or choose the 'compact' backbone, which needs no download and works offline."
    )


def resolve_vgg16_weights(weights: str | os.PathLike | None) -> str | None:
    """Return a local file path for VGG16 notop weights, or None for random weights.

    ``"imagenet"``: the Keras cache file, downloaded once if missing; raises
    :class:`WeightsUnavailable` with a plain-language message if that fails.
    A path must point to an existing ``.h5``/``.weights.h5`` file.
    """
    if weights is None or (isinstance(weights, str) and weights.lower() in ("none", "")):
        return None
    if isinstance(weights, str) and weights.lower() == "imagenet":
        folder = keras_models_dir()
        target = folder / VGG16_NOTOP_FILE
        if target.is_file() and target.stat().st_size > 1_000_000:
            return str(target)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = keras.utils.get_file(
                VGG16_NOTOP_FILE,
                VGG16_NOTOP_URL,
                cache_dir=str(folder.parent),
                cache_subdir="models",
                file_hash=VGG16_NOTOP_MD5,
            )
        except BaseException as exc:  # noqa: BLE001 - any failure becomes one clear message
            if isinstance(exc, KeyboardInterrupt):
                raise
            reason = type(exc).__name__
            if isinstance(exc, OSError) or "URL" in reason or "HTTP" in reason or "Exception" in reason:
                reason = "no internet connection, or the server could not be reached"
            raise WeightsUnavailable(_offline_message(folder, reason)) from None
        return str(path)
    path = Path(weights)
    if not path.is_file():
        raise WeightsUnavailable(
            f"The weights file '{path}' does not exist. Choose an existing VGG16 weights file (.h5), "
            "'imagenet', or the 'compact' backbone."
        )
    return str(path)


# --------------------------------------------------------------------------- builders


def vgg16_base(weights_path: str | None, input_hw: tuple[int, int]) -> keras.Model:
    """Keras' VGG16 without its top, for ``(h, w, 3)`` inputs, with the weights file loaded (if any).

    Raises :class:`WeightsUnavailable` when the file cannot be read as VGG16 weights.
    """
    h, w = int(input_hw[0]), int(input_hw[1])
    base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(h, w, 3))
    if weights_path is not None:
        try:
            base.load_weights(weights_path)
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same plain message
            raise WeightsUnavailable(
                f"The weights file '{weights_path}' could not be read as VGG16 weights ({exc}). "
                "Delete it so it is downloaded again, or choose the 'compact' backbone."
            ) from None
    return base


def _vgg16_parts(weights: Any, input_size: int) -> tuple[keras.Model, keras.Model]:
    weights_path = resolve_vgg16_weights(weights)
    inp = keras.Input((input_size, input_size, 3), name="image", dtype="float32")
    x = Preprocess("vgg16", name="preprocess")(inp)
    base = vgg16_base(weights_path, (input_size, input_size))
    base.trainable = False
    feats = base(x, training=False)
    feature_model = keras.Model(inp, feats, name="vgg16_features")
    feature_model.trainable = False

    fshape = tuple(feats.shape[1:])
    fin = keras.Input(fshape, name="features")
    h = layers.Conv2D(128, 1, activation="relu", name="head_reduce")(fin)
    h = AddCoords(name="head_coords")(h)
    h = layers.Flatten(name="head_flatten")(h)
    h = layers.Dropout(0.3, name="head_dropout")(h)
    c = layers.Dense(256, activation="relu", name="class_hidden")(h)
    cls = layers.Dense(1, activation="sigmoid", name="class")(c)
    b = layers.Dense(256, activation="relu", name="bbox_hidden")(h)
    box = layers.Dense(4, activation="sigmoid", name="bbox_raw")(b)
    box = SortCorners(name="bbox")(box)
    head_model = keras.Model(fin, {"class": cls, "bbox": box}, name="vgg16_head")
    return feature_model, head_model


def _conv_bn(x, filters: int, kernel: int = 3, strides: int = 1, dilation: int = 1, name: str = ""):
    x = layers.Conv2D(
        filters,
        kernel,
        strides=strides,
        padding="same",
        dilation_rate=dilation,
        use_bias=False,
        name=f"{name}_conv",
    )(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _sep_bn(x, filters: int, strides: int = 1, dilation: int = 1, name: str = ""):
    x = layers.DepthwiseConv2D(
        3,
        strides=strides,
        padding="same",
        dilation_rate=dilation,
        use_bias=False,
        # He init over the 9 taps of one channel (Keras' default also counts channels: tiny outputs).
        depthwise_initializer=keras.initializers.RandomNormal(stddev=(2.0 / 9.0) ** 0.5),
        name=f"{name}_dw",
    )(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_dwbn")(x)
    x = layers.ReLU(name=f"{name}_dwrelu")(x)
    return _conv_bn(x, filters, kernel=1, name=f"{name}_pw")


# Feature extractor of the compact backbone: (kind, filters, stride, dilation) per block.
# "conv" = 3x3 conv + BN + ReLU; "sep" = depthwise 3x3 + BN + ReLU + 1x1 conv + BN + ReLU.
COMPACT_BLOCKS: tuple[tuple[str, int, int, int], ...] = (
    ("conv", 16, 2, 1),  # S/2  (plain strided convs early: cheap on CPU, unlike depthwise at high resolution)
    ("conv", 32, 2, 1),  # S/4
    ("conv", 48, 2, 1),  # S/8
    ("sep", 96, 1, 1),
    ("sep", 128, 2, 1),  # S/16: the 8x8 grid at 120x120
    ("sep", 128, 1, 2),  # dilated: each cell sees the whole face, even a large one
    ("sep", 128, 1, 4),
)
# The dense head's backbone: the same, wider at S/8 (where faces are found) and at S/16
# (cheap there: 80 cells at 160x120), and a global context (the whole picture's mean deep
# features) added to every cell, so that a lamp's or a panda's face-like patch is judged
# with the rest of the photo. Measured with benchmarks/pipeline.py (benchmarks/README.md).
COMPACT_DENSE_BLOCKS: tuple[tuple[str, int, int, int], ...] = (
    ("conv", 16, 2, 1),
    ("conv", 32, 2, 1),
    ("conv", 64, 2, 1),
    ("sep", 128, 1, 1),
    ("sep", 192, 2, 1),
    ("sep", 192, 1, 2),
    ("sep", 192, 1, 4),
)
# End on the S/8 grid (15x15 at 120x120) rather than S/16: the deep map is resized up
# and added to the last S/8 map (a small feature pyramid), which helps small faces.
COMPACT_FINE_WIDTH = 64
# Faster moving statistics than Keras' 0.99: short trainings from scratch end with usable BN stats.
BN_MOMENTUM = 0.9


def _compact_parts(
    input_size: int | tuple[int, int],
    blocks: tuple[tuple[str, int, int, int], ...] | None = None,
    head: str = "single",
) -> tuple[keras.Model, keras.Model]:
    if blocks is None:
        blocks = COMPACT_DENSE_BLOCKS if head == "dense" else COMPACT_BLOCKS
    ih, iw = input_hw(input_size)
    inp = keras.Input((ih, iw, 3), name="image", dtype="float32")
    x = Preprocess("scale", name="preprocess")(inp)
    skip = None
    last_down = max((i for i, b in enumerate(blocks) if b[2] == 2), default=-1)
    for i, (kind, filters, stride, dilation) in enumerate(blocks):
        if i == last_down and i > 0:
            skip = x  # the last map before the final downsampling
        if kind == "conv":
            x = _conv_bn(x, filters, 3, strides=stride, dilation=dilation, name=f"c{i}")
        else:
            x = _sep_bn(x, filters, strides=stride, dilation=dilation, name=f"s{i}")
    w4 = blocks[-1][1]
    if skip is not None:
        # Top-down: the deep map, resized up to the finer grid, plus the finer map itself,
        # so small faces get cells of their own size.
        h, w = int(skip.shape[1]), int(skip.shape[2])
        x = _conv_bn(x, COMPACT_FINE_WIDTH, 1, name="fine_reduce")
        up = layers.Resizing(h, w, interpolation="bilinear", name="fine_up")(x)
        lateral = _conv_bn(skip, COMPACT_FINE_WIDTH, 1, name="fine_lateral")
        parts = [up, lateral]
        if head == "dense":  # the whole picture's context, the same for every cell
            pooled = layers.GlobalAveragePooling2D(keepdims=True, name="context_pool")(x)
            parts.append(_conv_bn(pooled, COMPACT_FINE_WIDTH, 1, name="context"))
        x = layers.Add(name="fine_add")(parts)
        # A plain 3x3 conv: TensorFlow's CPU depthwise gradients cost more than this.
        x = _conv_bn(x, COMPACT_FINE_WIDTH, 3, name="fine_mix")
        w4 = COMPACT_FINE_WIDTH
    feature_model = keras.Model(inp, x, name="compact_features")
    if head == "dense":
        from facetrack.dense import dense_head

        return feature_model, dense_head(tuple(x.shape[1:]), width=w4, name="compact_dense_head")

    fin = keras.Input(tuple(x.shape[1:]), name="features")
    h = AddCoords(name="head_coords")(fin)
    h = _conv_bn(h, w4, 1, name="head")
    cells = layers.Conv2D(5, 1, name="cells")(h)
    box = GridBoxDecoder(name="bbox")(cells)
    pooled = layers.GlobalAveragePooling2D(name="class_gap")(h)
    cmax = MaxOverGrid(name="class_cellmax")(cells)
    c = layers.Concatenate(name="class_concat")([pooled, cmax])
    c = layers.Dropout(0.2, name="class_dropout")(c)
    cls = layers.Dense(1, activation="sigmoid", name="class")(c)
    head_model = keras.Model(fin, {"class": cls, "bbox": box}, name="compact_head")
    return feature_model, head_model


def build_parts(
    backbone: str = "vgg16",
    weights: Any = "imagenet",
    input_size: int | tuple[int, int] = DEFAULT_INPUT_SIZE,
    head: str = "single",
) -> tuple[keras.Model, keras.Model]:
    """Build ``(feature_model, head_model)``; ``compose`` joins them.

    ``feature_model``: ``(N, S, S, 3)`` RGB 0..255 -> feature map
    (vgg16: ``block5_pool``, ``(N, S//32, S//32, 512)``, frozen;
    compact: ``(N, S/8, S/8, 64)``, rounded up, trainable).
    ``head_model``: features -> ``{"class": (N, 1), "bbox": (N, 4)}``.
    ``weights`` only matters for vgg16: ``"imagenet"``, ``None``/``"none"``
    (random) or a path to a VGG16 notop ``.h5`` file. Raises
    :class:`WeightsUnavailable` when ImageNet weights cannot be had.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; choose one of {', '.join(HEADS)}")
    hw = input_hw(input_size)
    if min(hw) < 32:
        raise ValueError(f"input size {input_size} is too small (at least 32)")
    if head == "dense":
        if backbone == "vgg16":
            from facetrack.dense import vgg16_dense_parts

            return vgg16_dense_parts(resolve_vgg16_weights(weights), hw)
        return _compact_parts(hw, head="dense")
    if hw[0] != hw[1]:
        raise ValueError(f"the one-box head needs a square input, got {hw[0]}x{hw[1]}")
    if backbone == "vgg16":
        return _vgg16_parts(weights, hw[0])
    return _compact_parts(hw[0])


def compose(feature_model: keras.Model, head_model: keras.Model, name: str | None = None) -> keras.Model:
    """Join the parts into the full model: ``image (N,S,S,3)`` -> ``{"class": (N,1), "bbox": (N,4)}``.

    The parts' layers are shared (not copied), so weights trained in the parts
    are the full model's weights. A frozen (vgg16) feature model is called
    with ``training=False``.
    """
    shape = tuple(feature_model.input.shape[1:])
    inp = keras.Input(shape, name="image", dtype="float32")
    if feature_model.name.startswith("vgg16"):
        feats = feature_model(inp, training=False)
    else:
        feats = feature_model(inp)
    out = head_model(feats)
    cls = layers.Identity(name="class")(out["class"])
    box = layers.Identity(name="bbox")(out["bbox"])
    backbone = "vgg16" if feature_model.name.startswith("vgg16") else "compact"
    return keras.Model(inp, {"class": cls, "bbox": box}, name=name or f"facetrack_{backbone}")


def build_model(
    backbone: str = "vgg16",
    weights: Any = "imagenet",
    input_size: int | tuple[int, int] = DEFAULT_INPUT_SIZE,
    head: str = "single",
) -> keras.Model:
    """The full detector: ``image`` ``(N, S, S, 3)`` float32 RGB 0..255 ->
    ``{"class": (N, 1) sigmoid, "bbox": (N, 4) normalized [x1, y1, x2, y2]}``.

    See :func:`build_parts` for ``backbone`` and ``weights``.
    """
    return compose(*build_parts(backbone, weights, input_size, head))


def with_mirror_average(model: keras.Model) -> keras.Model:
    """The detector run on the image and on its mirror image, the two answers averaged.

    Test-time augmentation: ``class`` is the mean of the two probabilities,
    ``bbox`` the mean of the two boxes (the mirrored one mapped back; for the
    dense head, cell by cell with the mirrored cell). It doubles the cost of a
    frame (the compact backbone stays near 1 ms) and, measured on the
    reference faces, raises the mean IoU by 0.02 to 0.03 (one-box head). Same
    input, outputs and weights (shared) as ``model``, which must come from
    :func:`compose`.
    """
    feature_model, head_model = split_parts(model)
    inp = keras.Input(tuple(feature_model.input.shape[1:]), name="image", dtype="float32")
    plain = head_model(feature_model(inp))
    mirrored = head_model(feature_model(MirrorImage(name="mirror_image")(inp)))
    if len(plain["class"].shape) == 4:  # dense: per-cell maps
        back_cls = MirrorCells(name="mirror_cells")(mirrored["class"])
        back_box = MirrorBox(name="mirror_box")(MirrorCells(name="mirror_cell_boxes")(mirrored["bbox"]))
    else:
        back_cls, back_box = mirrored["class"], MirrorBox(name="mirror_box")(mirrored["bbox"])
    cls = layers.Average(name="class")([plain["class"], back_cls])
    box = layers.Average(name="bbox")([plain["bbox"], back_box])
    return keras.Model(inp, {"class": cls, "bbox": box}, name=model.name)


def split_parts(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """The ``(feature_model, head_model)`` inside a model made by :func:`compose`."""
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(nested) != 2:
        raise ValueError("this model was not made by facetrack.model.compose")
    return nested[0], nested[1]


# --------------------------------------------------------------------------- loading


def load_model(path: str | os.PathLike, compile: bool = False) -> keras.Model:
    """Load a ``.keras`` detector with ``safe_mode=True``.

    Raises :class:`ModelLoadError` (plain message) when the file is missing,
    corrupt, contains code (a Lambda layer), or lacks the ``class``/``bbox``
    outputs.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"The model file '{path}' does not exist.")
    if not zipfile.is_zipfile(path):
        raise ModelLoadError(
            f"The model file '{path.name}' is damaged or is not a Keras model (.keras) file."
        )
    try:  # before keras reads it: a config that inflates to 1 GB would cost several GB
        check_zip_sizes(path, {"config.json": 8 * 2**20, "metadata.json": 2**20}, total=2 * 2**30)
    except (FileTooLarge, zipfile.BadZipFile) as exc:
        raise ModelLoadError(f"The model file '{path.name}' was refused: {exc}.") from None
    try:
        model = keras.saving.load_model(str(path), compile=compile, safe_mode=True)
    except Exception as exc:  # noqa: BLE001
        text = str(exc)
        if "Lambda" in text or "safe_mode" in text or "lambda" in text:
            raise ModelLoadError(
                f"The model file '{path.name}' contains code (a Lambda layer) and was refused for safety. "
                "Only models made by FaceTrack can be loaded."
            ) from None
        raise ModelLoadError(
            f"The model file '{path.name}' could not be loaded; it may be damaged or made by another "
            f"program ({type(exc).__name__}: {text.splitlines()[0][:200] if text else ''})."
        ) from None
    names = set(_output_names(model))
    if not {"class", "bbox"} <= names:
        raise ModelLoadError(
            f"The model file '{path.name}' is not a face detector: it needs outputs 'class' and 'bbox' "
            f"(it has {sorted(names) or 'none'})."
        )
    return model


def _output_names(model: keras.Model) -> list[str]:
    out = model.output
    if isinstance(out, dict):
        return list(out.keys())
    try:
        return list(model.output_names)
    except (AttributeError, TypeError, ValueError):
        return []

"""Export a trained model: the ``.keras`` file, or a ``.tflite`` file for live use.

The TFLite file keeps the Keras model's contract: one input, float32 RGB in
``0..255``, shape ``(1, h, w, 3)`` (the model's preprocessing layer is baked
in), and two named outputs in the ``serving_default`` signature:

- ``class``: per cell ``(1, Gh, Gw, 1)`` face score (sigmoid), or ``(1, 1)``
  for a run trained before the dense head,
- ``bbox``: per cell ``(1, Gh, Gw, 4)`` normalized ``[x1, y1, x2, y2]``, or
  ``(1, 4)`` (see :mod:`facetrack.labels` for the box convention).

Readers should map outputs by signature name
(:func:`facetrack.detect.Detector` does); the last axis (1 and 4)
identifies them too, so files from elsewhere still load. The decoding
settings (threshold, NMS, maximum count) travel beside the model as
``decode.json`` (:mod:`facetrack.decode`); an export copied out of its run
folder gets a copy of it.

Quantization modes (measured on 2 CPU cores, VGG16 at 120x120, LiteRT with
XNNPACK and 2 threads): ``"none"`` float32, about 44 ms a frame;
``"dynamic"`` dynamic-range (int8 weights, activations quantized on the fly),
about 11.5 ms, 4x smaller file, box error about 1e-3; ``"int8"`` full
integer quantization calibrated on ``representative_images``, about 11 ms.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from facetrack.fileio import atomic_write_bytes
from facetrack.runs import KERAS_FILE, TFLITE_FILE

log = logging.getLogger(__name__)

QUANTIZE_MODES = ("none", "dynamic", "int8")
EXPORT_FORMATS = ("keras", "tflite")
INPUT_NAME = "image"
OUTPUT_NAMES = ("class", "bbox")


class ExportError(RuntimeError):
    """An export that cannot be done; the message says why and what to do."""


def model_input_size(model: Any) -> int:
    """The square input size ``S`` of a model whose input is ``(None, S, S, 3)``."""
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[1] is None or shape[1] != shape[2] or shape[3] != 3:
        raise ExportError(f"model input must be (None, S, S, 3) with a fixed S, got {shape}")
    return int(shape[1])


def model_input_hw(model: Any) -> tuple[int, int]:
    """``(H, W)`` of a model whose input is ``(None, H, W, 3)`` (the dense head allows ``H != W``)."""
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[1] is None or shape[2] is None or shape[3] != 3:
        raise ExportError(f"model input must be (None, H, W, 3) with a fixed H and W, got {shape}")
    return int(shape[1]), int(shape[2])


def named_outputs(model: Any, outputs: Any) -> dict[str, Any]:
    """Map a model call's outputs to ``{"class": ..., "bbox": ...}``.

    Accepts a dict (functional model with named outputs) or a list/tuple in
    ``model.output_names`` order.
    """
    if isinstance(outputs, dict):
        named = dict(outputs)
    else:
        names = list(getattr(model, "output_names", []) or [])
        if not isinstance(outputs, (list, tuple)) or len(names) != len(outputs):
            raise ExportError("model must have two named outputs, 'class' and 'bbox'")
        named = dict(zip(names, outputs, strict=True))
    missing = [n for n in OUTPUT_NAMES if n not in named]
    if missing:
        raise ExportError(f"model has no output named {', '.join(missing)} (outputs: {sorted(named)})")
    return {n: named[n] for n in OUTPUT_NAMES}


def _random_calibration(hw: tuple[int, int], count: int = 32) -> Iterable[np.ndarray]:
    rng = np.random.default_rng(0)
    for _ in range(count):
        yield rng.uniform(0, 255, (*hw, 3)).astype(np.float32)


@contextlib.contextmanager
def _saved_model_converter(model: Any, serve: Any, spec: Any) -> Iterator[Any]:
    """A ``TFLiteConverter`` for ``serve(spec)`` of ``model`` (builtin ops only).

    Keras 3 models convert through a SavedModel (what keras' own LiteRT export
    does): ``from_concrete_functions`` drops the variables here.
    """
    import keras
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="facetrack-export-") as tmp:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serving_default", serve, input_signature=[spec])
        archive.write_out(tmp, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        yield converter


def feature_tflite_bytes(feature_model: Any, batch_size: int) -> bytes:
    """A dynamic-range ``.tflite`` of a (frozen) feature model with a fixed batch.

    Input ``(batch_size, h, w, 3)`` float32 RGB ``0..255``; one output, the
    feature map ``(batch_size, h, w, c)`` float32. Used to fill the feature
    cache with the same int8 kernels that the exported model runs live.
    """
    import tensorflow as tf

    hw = model_input_hw(feature_model)
    spec = tf.TensorSpec([int(batch_size), *hw, 3], tf.float32, name=INPUT_NAME)

    def serve(image: Any) -> Any:
        return feature_model(image, training=False)

    try:
        with _saved_model_converter(feature_model, serve, spec) as converter:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            return converter.convert()
    except Exception as exc:  # the converter raises many types
        raise ExportError(f"TFLite conversion failed: {exc}") from exc


def tflite_bytes(
    model: Any,
    quantize: str = "dynamic",
    representative_images: Iterable[np.ndarray] | None = None,
) -> bytes:
    """Convert ``model`` to TFLite and return the flatbuffer bytes.

    ``representative_images`` (only for ``quantize="int8"``): RGB images
    ``(S, S, 3)`` in ``0..255`` (any numeric dtype), ideally ~100 real training
    images. Without them random noise is used, which calibrates poorly.
    Input and output stay float32 in every mode.
    """
    if quantize not in QUANTIZE_MODES:
        raise ExportError(f"quantize must be one of {QUANTIZE_MODES}, got {quantize!r}")
    import tensorflow as tf

    hw = model_input_hw(model)
    spec = tf.TensorSpec([1, *hw, 3], tf.float32, name=INPUT_NAME)

    def serve(image: Any) -> dict[str, Any]:
        return named_outputs(model, model(image, training=False))

    with _saved_model_converter(model, serve, spec) as converter:
        if quantize in ("dynamic", "int8"):
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "int8":
            images = representative_images if representative_images is not None else _random_calibration(hw)

            def representative_dataset() -> Iterable[list[np.ndarray]]:
                for img in images:
                    arr = np.asarray(img, dtype=np.float32)
                    if arr.shape != (*hw, 3):
                        raise ExportError(f"representative image shape {arr.shape}, expected {(*hw, 3)}")
                    yield [arr[None]]

            converter.representative_dataset = representative_dataset
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                tf.lite.OpsSet.TFLITE_BUILTINS,
            ]
        try:
            return converter.convert()
        except ExportError:
            raise
        except Exception as exc:  # the converter raises many types
            raise ExportError(f"TFLite conversion failed: {exc}") from exc


def export_tflite(
    model: Any,
    path: Path,
    quantize: str = "dynamic",
    representative_images: Iterable[np.ndarray] | None = None,
) -> Path:
    """Write ``model`` as a ``.tflite`` file at ``path`` (atomically) and return the path.

    ``model``: a Keras model with input float32 RGB ``0..255``
    ``(None, S, S, 3)`` and named outputs ``class`` ``(N, 1)`` and ``bbox``
    ``(N, 4)`` normalized ``[x1, y1, x2, y2]``. ``quantize``: ``"dynamic"``
    (default, fast on CPU), ``"none"`` (float32) or ``"int8"`` (see
    :func:`tflite_bytes`). The file's ``serving_default`` signature has input
    ``image`` ``(1, S, S, 3)`` float32 and outputs ``class`` and ``bbox``.
    """
    path = Path(path)
    data = tflite_bytes(model, quantize=quantize, representative_images=representative_images)
    atomic_write_bytes(path, data)
    return path


def _load_keras(path: Path) -> Any:
    from facetrack.model import ModelLoadError, load_model  # registers the custom layers

    try:
        return load_model(path)
    except ModelLoadError as exc:
        raise ExportError(str(exc)) from exc


def _copy_atomic(src: Path, dest: Path) -> Path:
    if dest.exists() and dest.resolve() == src.resolve():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.copy.tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(dest)
    return dest


def export_run(
    run_dir: Path,
    fmt: str = "tflite",
    dest: Path | None = None,
    quantize: str = "dynamic",
    force: bool = False,
    representative_images: Iterable[np.ndarray] | None = None,
) -> Path:
    """Produce the run's model in ``fmt`` (``"keras"`` or ``"tflite"``) and return its path.

    ``run_dir`` holds ``model.keras`` (and maybe ``model.tflite``). For
    ``"tflite"``, ``run_dir/model.tflite`` is (re)built from ``model.keras``
    when missing, older than the ``.keras`` file, or ``force`` is set (an
    existing up-to-date file is reused whatever ``quantize`` says). With
    ``dest`` the file is also copied there (``dest`` may be a folder; the copy
    is then named ``<run name>.<ext>``) and that path is returned.
    ``quantize="int8"`` should come with ``representative_images`` (see
    :func:`tflite_bytes`); ``"dynamic"`` needs none and is as fast here.
    Raises :class:`ExportError` when the run or its model is missing.
    """
    if fmt not in EXPORT_FORMATS:
        raise ExportError(f"format must be one of {EXPORT_FORMATS}, got {fmt!r}")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ExportError(f"run folder {run_dir} does not exist")
    keras_path = run_dir / KERAS_FILE
    tflite_path = run_dir / TFLITE_FILE
    if fmt == "keras":
        if not keras_path.is_file():
            raise ExportError(
                f"run {run_dir.name} has no {KERAS_FILE}: train a model first (or the training failed)"
            )
        out = keras_path
    else:
        fresh = tflite_path.is_file() and (
            not keras_path.is_file() or tflite_path.stat().st_mtime >= keras_path.stat().st_mtime
        )
        if force or not fresh:
            if not keras_path.is_file():
                raise ExportError(
                    f"run {run_dir.name} has no {KERAS_FILE} to convert: train a model first (or the training failed)"
                )
            export_tflite(
                _load_keras(keras_path),
                tflite_path,
                quantize=quantize,
                representative_images=representative_images,
            )
        out = tflite_path
    if dest is None:
        return out
    dest = Path(dest)
    if dest.is_dir():
        dest = dest / f"{run_dir.name}{out.suffix}"
    copied = _copy_atomic(out, dest)
    from facetrack.decode import load_decode_settings, save_decode_settings

    save_decode_settings(copied.parent, load_decode_settings(run_dir))  # usable on its own
    return copied


def labelme_zip(project: Any) -> bytes:
    """All photos of ``project`` and their labelme files, as the labelme app opens them.

    ``<project name>/images/<id>.jpg`` and ``<project name>/labels/<id>.json``
    (a photo without a label file has no JSON); photos deleted meanwhile are skipped.
    """
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for image_id in project.image_ids():
            try:
                data = project.image_path(image_id).read_bytes()
            except OSError:
                continue  # deleted meanwhile
            zf.writestr(f"{project.name}/images/{image_id}.jpg", data)
            with contextlib.suppress(OSError):  # not labelled yet
                zf.writestr(
                    f"{project.name}/labels/{image_id}.json", project.label_path(image_id).read_bytes()
                )
    return buf.getvalue()

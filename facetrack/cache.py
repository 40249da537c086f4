"""Disk caches of what training computes once: backbone features and decoded pixels.

Entries live under ``<project>/cache/features/<key>/`` (``pixels-<key>`` for
pixels): a ``.npy`` array opened memory-mapped and a ``done.json`` written
last. The key (:func:`feature_cache_key`) covers the backbone and its
precision, the weights, the input size and each image file's path, mtime and
size. Only the two newest entries of a kind are kept (caches are disposable).

Also here: the fastest way this machine has to run the frozen feature model
(:class:`LiteRTFeatures`, bfloat16, float32) and the hardware probes it uses.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from facetrack.data import Sample, image_dataset
from facetrack.fileio import atomic_write_json
from facetrack.runs import input_hw

log = logging.getLogger(__name__)


class StopRequested(Exception):
    """Raised inside a cache fill (and the training loop) when a stop was asked for."""


class StageCallbacks(Protocol):
    """What a cache fill reports to (a :class:`facetrack.train.TrainCallbacks` is one)."""

    def on_stage(self, name: str, done: int, total: int) -> None: ...

    def should_stop(self) -> bool: ...


def _file_identity(path: Path) -> list[Any]:
    st = os.stat(path)
    return [str(Path(path).resolve()), st.st_mtime_ns, st.st_size]


def feature_cache_key(
    samples: Sequence[Sample], backbone: str, weights: str, input_size: int | Sequence[int]
) -> str:
    """Key of a feature cache: backbone, weights (and the weights file's identity), size, each file's identity."""
    h = hashlib.sha256()
    wid: Any = weights
    if weights not in ("imagenet", "none") and Path(weights).is_file():
        wid = _file_identity(Path(weights))
    size = list(input_hw(input_size))
    h.update(json.dumps([backbone, wid, size[0] if size[0] == size[1] else size]).encode())
    for s in samples:
        h.update(json.dumps(_file_identity(s.path)).encode())
    return h.hexdigest()[:24]


def cached_array(
    key: str,
    cache_dir: Path,
    n: int,
    shape: tuple[int, ...],
    dtype: Any,
    batches: Any,
    callbacks: StageCallbacks,
    stage: str,
    kind: str,
) -> np.ndarray:
    """A read-only memmap ``(n, *shape)`` under ``cache_dir/key``, filled once from ``batches``.

    ``batches`` yields arrays of consecutive rows. The file is written under a
    temporary name and renamed when complete, so an interrupted fill leaves
    nothing that could be mistaken for a cache. Older entries of the same
    ``kind`` beyond the newest two are deleted (caches are disposable).
    """
    folder = Path(cache_dir) / key
    done_file = folder / "done.json"
    if done_file.is_file():
        callbacks.on_stage(stage, n, n)
        return np.load(folder / f"{kind}.npy", mmap_mode="r")
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{kind}.{os.getpid()}.npy"
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(n, *shape))
    done = 0
    callbacks.on_stage(stage, 0, n)
    try:
        for out in batches:
            arr[done : done + len(out)] = out
            done += len(out)
            callbacks.on_stage(stage, done, n)
            if callbacks.should_stop():
                raise StopRequested()
        arr.flush()
    except BaseException:
        del arr
        tmp.unlink(missing_ok=True)
        raise
    del arr
    os.replace(tmp, folder / f"{kind}.npy")
    atomic_write_json(
        done_file,
        {"kind": kind, "n": n, "shape": list(shape), "dtype": np.dtype(dtype).name, "created": time.time()},
    )
    prune_cache(Path(cache_dir), kind, keep=2)
    return np.load(folder / f"{kind}.npy", mmap_mode="r")


def prune_cache(cache_dir: Path, kind: str, keep: int) -> None:
    """Delete all but the ``keep`` newest complete cache entries of ``kind``."""
    entries = []
    for done in cache_dir.glob("*/done.json"):
        try:
            info = json.loads(done.read_text())
        except (OSError, ValueError):
            continue
        if info.get("kind") == kind:
            entries.append((float(info.get("created", 0)), done.parent))
    for _, folder in sorted(entries, reverse=True)[keep:]:
        shutil.rmtree(folder, ignore_errors=True)


def cached_features(
    feature_model: Any,
    samples: Sequence[Sample],
    settings: Any,
    cache_dir: Path,
    callbacks: StageCallbacks,
    stage: str = "features",
    batch_size: int = 32,
) -> np.ndarray:
    """Features of ``samples`` as a read-only float16 memmap ``(N, h, w, c)``, computed once and cached.

    ``feature_model`` is a Keras model or a :class:`LiteRTFeatures`; its
    ``precision`` (``dtype_policy`` name for Keras) is part of the cache key.
    """
    precision = getattr(feature_model, "precision", None) or getattr(
        getattr(feature_model, "dtype_policy", None), "name", "float32"
    )
    head = getattr(settings, "head", "single")
    kind = f"{settings.backbone}/{precision}" + ("" if head == "single" else f"/{head}")
    key = feature_cache_key(samples, kind, settings.weights, settings.input_size)
    if isinstance(feature_model, LiteRTFeatures):
        shape, fn = feature_model.output_shape, feature_model
    else:
        shape, fn = tuple(int(d) for d in feature_model.output.shape[1:]), _inference_fn(feature_model)

    def batches():
        for images in image_dataset(samples, settings.input_size, batch_size):
            yield np.asarray(fn(images)).astype(np.float16)

    return cached_array(
        key, cache_dir, len(samples), shape, np.float16, batches(), callbacks, stage, "features"
    )


def cached_pixels(
    samples: Sequence[Sample],
    input_size: int | Sequence[int],
    cache_dir: Path,
    callbacks: StageCallbacks,
    stage: str = "images",
    batch_size: int = 64,
) -> np.ndarray:
    """Every image of ``samples`` resized to the input size as a read-only uint8 memmap ``(N, h, w, 3)``.

    ``input_size``: ``S`` or ``(h, w)``. The same resize as
    :func:`facetrack.data.image_dataset` (so training sees what evaluation and
    the detector see), decoded once and cached: epochs then read pixels
    instead of decoding JPEGs, and the per-epoch augmentation works on small
    arrays. ``h * w * 3`` bytes per image (58 kB at 120x160).
    """
    key = "pixels-" + feature_cache_key(samples, "pixels", "none", input_size)
    hw = input_hw(input_size)

    def batches():
        for images in image_dataset(samples, hw, batch_size):
            yield np.clip(np.rint(images.numpy()), 0, 255).astype(np.uint8)

    return cached_array(
        key, cache_dir, len(samples), (*hw, 3), np.uint8, batches(), callbacks, stage, "pixels"
    )


def cpu_has_bfloat16() -> bool:
    """True on a CPU with native bfloat16 arithmetic (AVX512-BF16 or AMX) and no GPU in use."""
    if has_gpu():
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class LiteRTFeatures:
    """A frozen feature model run by LiteRT (XNNPACK) with dynamic-range int8 quantization.

    Call it with float32 RGB ``(n, S, S, 3)`` in ``0..255`` (any ``n``) to get
    float32 features ``(n, *output_shape)``. VGG16 at 120x120 costs about 11 ms
    an image on 2 cores this way, against about 19 ms in bfloat16 and 38 ms in
    float32 with TensorFlow (measured here); the features differ from float32
    by about 1.5% on average, and they are what the exported ``model.tflite``
    computes live with the same kernels.
    """

    precision = "litert-dynamic"

    def __init__(self, feature_model: Any, batch_size: int = 8, num_threads: int | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        from facetrack.export import feature_tflite_bytes

        self.batch_size = int(batch_size)
        self.output_shape = tuple(int(d) for d in feature_model.output.shape[1:])
        self._model = feature_model
        self._threads = num_threads or max(1, min(os.cpu_count() or 1, 8))
        self._it: Any = None
        self._interpreter_class = Interpreter  # fails here, not later, if LiteRT is missing
        self._convert = feature_tflite_bytes

    def _interpreter(self) -> Any:
        """Convert and load on first use (a cache hit needs no conversion)."""
        if self._it is None:
            it = self._interpreter_class(
                model_content=self._convert(self._model, self.batch_size), num_threads=self._threads
            )
            it.allocate_tensors()
            self._in = it.get_input_details()[0]["index"]
            self._out = it.get_output_details()[0]["index"]
            self._it = it
        return self._it

    def __call__(self, images: Any) -> np.ndarray:
        it = self._interpreter()
        x = np.asarray(images, np.float32)
        out = np.empty((len(x), *self.output_shape), np.float32)
        b = self.batch_size
        for i in range(0, len(x), b):
            chunk = x[i : i + b]
            n = len(chunk)
            if n < b:  # the interpreter has a fixed batch: pad the last chunk
                chunk = np.concatenate([chunk, np.zeros((b - n, *chunk.shape[1:]), np.float32)])
            it.set_tensor(self._in, np.ascontiguousarray(chunk))
            it.invoke()
            out[i : i + n] = it.get_tensor(self._out)[:n]
        return out


def fast_feature_model(feature_model: Any, settings: Any) -> Any:
    """The fastest way this machine has to run the frozen feature model once over the cache.

    On a CPU-only machine: :class:`LiteRTFeatures` (int8, about 3.4x float32);
    if that is not available, a bfloat16 copy on CPUs with native bfloat16
    (about 2x; under 1% mean relative difference). With a GPU, or
    ``FACETRACK_FEATURES_FP32`` set, or if anything fails, the float32 model
    itself. The cache key says which precision filled it.
    """
    if os.environ.get("FACETRACK_FEATURES_FP32") or has_gpu():
        return feature_model
    try:
        return LiteRTFeatures(feature_model)
    except Exception as exc:  # noqa: BLE001 - the other paths always work
        log.info("LiteRT features unavailable (%s: %s)", type(exc).__name__, exc)
    if not cpu_has_bfloat16():
        return feature_model
    import keras

    from facetrack.model import build_parts

    previous = keras.mixed_precision.global_policy()
    try:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        fast, _ = build_parts("vgg16", "none", settings.input_size, getattr(settings, "head", "single"))
        fast.set_weights(feature_model.get_weights())
        return fast
    except Exception as exc:  # noqa: BLE001 - the float32 model always works
        log.info("bfloat16 features unavailable (%s: %s)", type(exc).__name__, exc)
        return feature_model
    finally:
        keras.mixed_precision.set_global_policy(previous)


def has_gpu() -> bool:
    try:
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    except Exception as exc:  # noqa: BLE001 - no usable TensorFlow means no GPU
        log.warning("could not list GPUs (%s: %s)", type(exc).__name__, exc)
        return False


def _inference_fn(model: Any):
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def fn(x):
        return model(x, training=False)

    return fn

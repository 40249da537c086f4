"""Training with callbacks, a feature cache and a run folder.

:func:`train` trains a detector (see :mod:`facetrack.model`) on
:class:`~facetrack.data.Sample` lists and writes everything to a run folder:

- ``settings.json``: the :class:`TrainSettings` and sample counts.
- ``history.csv``: one row per epoch (the fields of :class:`EpochRecord`),
  rewritten atomically after every epoch.
- ``model.keras``: the best full model so far (by validation score), saved
  atomically (temporary file in the same folder, then ``os.replace``).
- ``model.tflite``: exported at the end by :mod:`facetrack.export` if available.
- ``train.log``: human-readable log lines.
- ``status.json``: ``{"state": "running"|"finished"|"stopped"|"failed", "epoch",
  "epochs", "best_epoch", "best_val_score", "message", "updated", "pid"}``.

Checkpoints and early stopping follow the validation score
(:func:`facetrack.evaluate.validation_score`): the mean over validation images
of ``[score >= 0.5] * IoU`` for a face image and ``[score < 0.5]`` for a
no-face image. It counts presence and box quality together; the raw loss is
not used because the class loss grows with overconfidence while boxes still
improve.

Backbones:

- ``vgg16`` (frozen, the default): ``block5_pool`` features are computed once
  per image (with LiteRT's int8 kernels on a CPU, :class:`LiteRTFeatures`) and
  cached on disk as float16 (``cache_dir/<key>/``, key = backbone,
  weights, input size and each file's path, mtime and size), then the head is
  trained on the cache. ``fine_tune`` then unfreezes block5 and trains end to
  end on images at a low learning rate.
- ``compact``: trained end to end on its training images, decoded once into a
  pixel cache (``cache_dir/pixels-<key>/``), with a fresh random crop that
  keeps the face (``jitter``) and mirror every epoch; the moving average of
  the weights (``ema_decay``) is validated and kept, and the saved model is
  mirror-averaged (``mirror_average``, see :func:`facetrack.model.with_mirror_average`).

Progress leaves the trainer only through :class:`TrainCallbacks`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from facetrack.data import Sample, targets
from facetrack.evaluate import (
    _unpack_predictions,
    box_iou,
    compute_metrics,
    image_dataset,
    predict_samples,
    validation_score,
)
from facetrack.fileio import (
    DiskFull,
    atomic_write_json,
    atomic_write_text,
    disk_full_error,
    ensure_free_space,
    is_disk_full,
    preallocate,
    write_status_json,
)
from facetrack.limits import TRAIN_LIMITS, range_problems

STRATEGIES = ("default", "mirrored", "multiworker")
_BACKBONE_DEFAULTS = {
    "vgg16": {"epochs": 30, "batch_size": 32, "learning_rate": 1e-3, "patience": 8},
    "compact": {"epochs": 8, "batch_size": 32, "learning_rate": 3e-3, "patience": 6},
}
THRESHOLD = 0.5


@dataclass
class TrainSettings:
    """What the user chose for one training. ``None`` fields take the backbone's default.

    ``weights``: ``"imagenet"``, ``"none"`` (random) or a path to VGG16 notop
    weights (ignored by ``compact``). ``fine_tune`` (vgg16): after the head
    converges, also train block5 for ``fine_tune_epochs`` at
    ``fine_tune_learning_rate``. ``patience``: epochs without a better
    validation score before stopping early. ``strategy``: ``"default"``,
    ``"mirrored"`` (all local devices) or ``"multiworker"`` (``TF_CONFIG``).
    """

    backbone: str = "vgg16"
    weights: str = "imagenet"
    input_size: int = 120
    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    fine_tune: bool = False
    fine_tune_epochs: int = 3
    fine_tune_learning_rate: float = 1e-5
    patience: int | None = None
    seed: int = 42
    name: str = ""
    strategy: str = "default"
    class_loss_weight: float = 0.5
    bbox_loss_weight: float = 1.0
    flip: bool = True
    weight_decay: float = (
        0.05  # compact: AdamW decoupled weight decay (against overfitting a few hundred photos)
    )
    jitter: float = 0.15  # compact: random crop (keeping the face) of up to this share per side, each epoch
    # compact: validate, keep and export the exponential moving average of the weights
    # (Polyak averaging, this decay per batch; 0 = off): steadier than the last batch's weights.
    ema_decay: float = 0.998
    # compact: the saved model also looks at the mirror image and averages (model.with_mirror_average)
    mirror_average: bool = True
    export_tflite: bool = True  # also write model.tflite at the end (facetrack.export)

    def __post_init__(self) -> None:
        if self.backbone not in _BACKBONE_DEFAULTS:
            raise ValueError(
                f"unknown backbone {self.backbone!r}; choose one of {', '.join(_BACKBONE_DEFAULTS)}"
            )
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if self.weights is None:
            self.weights = "none"
        self.weights = str(self.weights)
        for key, value in _BACKBONE_DEFAULTS[self.backbone].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        problems = range_problems(self, TRAIN_LIMITS)  # the ranges the train page offers too
        if problems:
            raise ValueError("; ".join(problems))
        self.input_size = int(self.input_size)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainSettings:
        """Build from a dict; unknown keys are ignored (older/newer files)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class BatchProgress:
    """Progress after one training batch. ``eta_seconds`` is for the whole run (None until known)."""

    epoch: int
    epochs: int
    batch: int
    batches: int
    loss: float
    eta_seconds: float | None
    phase: str = "train"


@dataclass
class EpochRecord:
    """One row of ``history.csv``. Validation values are on the val split; ``val_score`` see module doc."""

    epoch: int
    loss: float
    class_loss: float
    bbox_loss: float
    val_loss: float
    val_class_loss: float
    val_bbox_loss: float
    val_presence_accuracy: float
    val_mean_iou: float
    val_score: float
    seconds: float
    phase: str = "train"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    """What :func:`train` returns. ``state``: ``"finished"`` or ``"stopped"``."""

    run_dir: Path
    state: str
    best_epoch: int | None
    best_val_score: float | None
    history: list[EpochRecord] = field(default_factory=list)
    seconds: float = 0.0


class TrainCallbacks:
    """The one way progress leaves the trainer. Subclass and override what you need.

    Called on the training thread. ``should_stop`` is checked after every
    batch (and every feature-cache batch); returning True ends training after
    the current batch and keeps the best weights so far.
    """

    def on_stage(self, name: str, done: int, total: int) -> None:
        """A non-epoch step (``"features"``: caching progress; ``"export"``, ...)."""

    def on_batch(self, progress: BatchProgress) -> None:
        """After every training batch."""

    def on_epoch(self, record: EpochRecord) -> None:
        """After every epoch's validation."""

    def should_stop(self) -> bool:
        return False


class _Stopped(Exception):
    pass


# --------------------------------------------------------------------------- run folder


class _Run:
    """Writes the run folder's status, log and history."""

    def __init__(self, run_dir: Path, settings: TrainSettings, total_epochs: int) -> None:
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        self.epochs = total_epochs
        self.epoch = 0
        self.best_epoch: int | None = None
        self.best_score: float | None = None
        self.history: list[EpochRecord] = []

    def log(self, message: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')}  {message}\n"
        with open(self.dir / "train.log", "a", encoding="utf-8") as fh:
            fh.write(line)

    def status(self, state: str, message: str = "") -> None:
        write_status_json(
            self.dir / "status.json",
            {
                "state": state,
                "epoch": self.epoch,
                "epochs": self.epochs,
                "best_epoch": self.best_epoch,
                "best_val_score": self.best_score,
                "message": message,
                "updated": time.time(),
                "pid": os.getpid(),
            },
        )

    def add_epoch(self, rec: EpochRecord) -> None:
        self.history.append(rec)
        buf = io.StringIO()
        names = [f.name for f in fields(EpochRecord)]
        writer = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
        writer.writeheader()
        for r in self.history:
            writer.writerow({k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.to_dict().items()})
        atomic_write_text(self.dir / "history.csv", buf.getvalue())


def save_model_atomic(model: Any, path: Path) -> None:
    """Save a Keras model to ``path`` (``.keras``) via a temporary file in the same folder + ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp.keras")
    os.close(fd)
    try:
        model.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------- helpers


def _make_strategy(name: str):
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        plain_reduce = strategy.reduce

        def one(reduce_op, v, axis):  # noqa: ANN001, ANN202
            local = strategy.experimental_local_results(v)[0]
            return plain_reduce(reduce_op, v, axis=None if local.shape.rank == 0 else axis)

        def reduce(reduce_op, value, axis=None):  # noqa: ANN001, ANN202
            # Keras 3's fit() asks this strategy for what it cannot do (keras-team/keras#20585):
            # reduce its first batch, a nest of per-replica values, in one call, and each scalar
            # loss along axis 0. Reduce each value alone, scalars across workers only.
            return tf.nest.map_structure(lambda v: one(reduce_op, v, axis), value)

        strategy.reduce = reduce
        return strategy
    return tf.distribute.get_strategy()


def _np_losses(samples: Sequence[Sample], scores: np.ndarray, boxes: np.ndarray) -> tuple[float, float]:
    """(class BCE, localization loss) of predictions, as the training losses define them."""
    if len(samples) == 0:
        return 0.0, 0.0
    y = np.array([1.0 if s.box is not None else 0.0 for s in samples])
    p = np.clip(np.asarray(scores, np.float64), 1e-7, 1 - 1e-7)
    bce = float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))
    has = y > 0
    if not has.any():
        return bce, 0.0
    t = np.array([s.box.to_list() for s in samples if s.box is not None], np.float64)
    b = np.asarray(boxes, np.float64)[has]
    d = np.sum((t[:, :2] - b[:, :2]) ** 2, 1) + np.sum(
        ((t[:, 2:] - t[:, :2]) - (b[:, 2:] - b[:, :2])) ** 2, 1
    )
    return bce, float(d.mean())


def _file_identity(path: Path) -> list[Any]:
    st = os.stat(path)
    return [str(Path(path).resolve()), st.st_mtime_ns, st.st_size]


def feature_cache_key(samples: Sequence[Sample], backbone: str, weights: str, input_size: int) -> str:
    """Key of a feature cache: backbone, weights (and the weights file's identity), size, each file's identity."""
    h = hashlib.sha256()
    wid: Any = weights
    if weights not in ("imagenet", "none") and Path(weights).is_file():
        wid = _file_identity(Path(weights))
    h.update(json.dumps([backbone, wid, int(input_size)]).encode())
    for s in samples:
        h.update(json.dumps(_file_identity(s.path)).encode())
    return h.hexdigest()[:24]


def _cached_array(
    key: str,
    cache_dir: Path,
    n: int,
    shape: tuple[int, ...],
    dtype: Any,
    batches: Any,
    callbacks: TrainCallbacks,
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
    done = 0
    callbacks.on_stage(stage, 0, n)
    arr = None
    try:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(n, *shape))
        with open(tmp, "r+b") as fh:  # reserve the blocks: a full disk fails here, not by SIGBUS later
            preallocate(fh.fileno(), os.fstat(fh.fileno()).st_size, tmp)
        for out in batches:
            arr[done : done + len(out)] = out
            done += len(out)
            callbacks.on_stage(stage, done, n)
            if callbacks.should_stop():
                raise _Stopped()
        arr.flush()
    except BaseException as exc:
        del arr
        tmp.unlink(missing_ok=True)
        if is_disk_full(exc) and not isinstance(exc, DiskFull):
            raise disk_full_error(folder, exc) from exc
        raise
    del arr
    os.replace(tmp, folder / f"{kind}.npy")
    atomic_write_json(
        done_file,
        {"kind": kind, "n": n, "shape": list(shape), "dtype": np.dtype(dtype).name, "created": time.time()},
    )
    _prune_cache(Path(cache_dir), kind, keep=2)
    return np.load(folder / f"{kind}.npy", mmap_mode="r")


def _prune_cache(cache_dir: Path, kind: str, keep: int) -> None:
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
    settings: TrainSettings,
    cache_dir: Path,
    callbacks: TrainCallbacks,
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
    key = feature_cache_key(
        samples, f"{settings.backbone}/{precision}", settings.weights, settings.input_size
    )
    if isinstance(feature_model, LiteRTFeatures):
        shape, fn = feature_model.output_shape, feature_model
    else:
        shape, fn = tuple(int(d) for d in feature_model.output.shape[1:]), _inference_fn(feature_model)

    def batches():
        for images in image_dataset(samples, settings.input_size, batch_size):
            yield np.asarray(fn(images)).astype(np.float16)

    return _cached_array(
        key, cache_dir, len(samples), shape, np.float16, batches(), callbacks, stage, "features"
    )


def cached_pixels(
    samples: Sequence[Sample],
    input_size: int,
    cache_dir: Path,
    callbacks: TrainCallbacks,
    stage: str = "images",
    batch_size: int = 64,
) -> np.ndarray:
    """Every image of ``samples`` resized to ``input_size`` as a read-only uint8 memmap ``(N, S, S, 3)``.

    The same resize as :func:`facetrack.evaluate.image_dataset` (so training
    sees what evaluation and the detector see), decoded once and cached: epochs
    then read pixels instead of decoding JPEGs, and the per-epoch jitter works
    on small arrays. ``S * S * 3`` bytes per image (43 kB at 120).
    """
    key = "pixels-" + feature_cache_key(samples, "pixels", "none", input_size)
    size = int(input_size)

    def batches():
        for images in image_dataset(samples, size, batch_size):
            yield np.clip(np.rint(images.numpy()), 0, 255).astype(np.uint8)

    return _cached_array(
        key, cache_dir, len(samples), (size, size, 3), np.uint8, batches(), callbacks, stage, "pixels"
    )


def cpu_has_bfloat16() -> bool:
    """True on a CPU with native bfloat16 arithmetic (AVX512-BF16 or AMX) and no GPU in use."""
    if _has_gpu():
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


def _fast_feature_model(feature_model: Any, settings: TrainSettings) -> Any:
    """The fastest way this machine has to run the frozen feature model once over the cache.

    On a CPU-only machine: :class:`LiteRTFeatures` (int8, about 3.4x float32);
    if that is not available, a bfloat16 copy on CPUs with native bfloat16
    (about 2x; under 1% mean relative difference). With a GPU, or
    ``FACETRACK_FEATURES_FP32`` set, or if anything fails, the float32 model
    itself. The cache key says which precision filled it.
    """
    if os.environ.get("FACETRACK_FEATURES_FP32") or _has_gpu():
        return feature_model
    try:
        return LiteRTFeatures(feature_model)
    except Exception:  # noqa: BLE001 - the other paths always work
        pass
    if not cpu_has_bfloat16():
        return feature_model
    import keras

    from facetrack.model import build_parts

    previous = keras.mixed_precision.global_policy()
    try:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        fast, _ = build_parts("vgg16", "none", settings.input_size)
        fast.set_weights(feature_model.get_weights())
        return fast
    except Exception:  # noqa: BLE001 - the float32 model always works
        return feature_model
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _has_gpu() -> bool:
    try:
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    except Exception:  # noqa: BLE001
        return False


def _inference_fn(model: Any):
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def fn(x):
        return model(x, training=False)

    return fn


# Cached features up to this size are trained on from memory (in-graph shuffling and
# batching: a few ms less per step than streaming); larger caches stream from disk.
FEATURES_IN_MEMORY_BYTES = 512 * 2**20


def _streamed_batches(
    samples: Sequence[Sample], batch_size: int, shuffle: bool, seed: int, xshape, make_batch
):
    """A ``tf.data`` pipeline of batches assembled in Python, with their targets.

    Batches are ``batch_size`` samples in a new random order each epoch
    (``shuffle``), sorted within the batch for memmap reads.
    ``make_batch(idx, boxes, rng)`` returns ``(x float32 (B, *xshape), boxes (B, 4))``.
    Elements are ``(x, {"class": (B, 1), "bbox": (B, 4)})``.
    """
    import tensorflow as tf

    n = len(samples)
    cls, box = targets(samples)
    rng = np.random.default_rng(seed)

    def gen():
        order = rng.permutation(n) if shuffle else np.arange(n)
        for i in range(0, n, batch_size):
            idx = np.sort(order[i : i + batch_size])
            x, boxes = make_batch(idx, box[idx], rng)
            yield x, {"class": cls[idx], "bbox": boxes}

    sig = (
        tf.TensorSpec((None, *xshape), tf.float32),
        {"class": tf.TensorSpec((None, 1), tf.float32), "bbox": tf.TensorSpec((None, 4), tf.float32)},
    )
    ds = tf.data.Dataset.from_generator(gen, output_signature=sig)
    return ds.apply(tf.data.experimental.assert_cardinality(-(-n // batch_size))).prefetch(2)


def _feature_dataset(feats: np.ndarray, samples: Sequence[Sample], batch_size: int, shuffle: bool, seed: int):
    """Batches ``(features (B, h, w, c) float32, {"class": (B, 1), "bbox": (B, 4)})`` of cached features."""
    import tensorflow as tf

    if feats.nbytes <= FEATURES_IN_MEMORY_BYTES:
        cls, box = targets(samples)
        ds = tf.data.Dataset.from_tensor_slices((np.asarray(feats), cls, box))
        if shuffle:
            ds = ds.shuffle(len(samples), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size).map(lambda x, c, b: (tf.cast(x, tf.float32), {"class": c, "bbox": b}))
        return ds.prefetch(2)
    return _streamed_batches(
        samples,
        batch_size,
        shuffle,
        seed,
        feats.shape[1:],
        lambda idx, boxes, rng: (np.asarray(feats[idx], np.float32), boxes),
    )


def _jitter_batch(
    images: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, flip: bool, jitter: float
) -> tuple[np.ndarray, np.ndarray]:
    """Augment a uint8 batch ``(B, S, S, 3)`` and its boxes ``(B, 4)``; returns float32 images and boxes.

    ``jitter`` > 0: a random window of ``1 - jitter`` .. 1 of each side that
    keeps the whole face box, resized back to ``S``, and brightness and
    contrast varied slightly. ``flip``: half of the images mirrored
    left-right. A no-face image has box ``[0, 0, 0, 0]``, which stays so.
    """
    import cv2

    k, size = len(images), images.shape[1]
    boxes = boxes.copy()
    has = boxes[:, 2] > boxes[:, 0]
    out = np.empty(images.shape, np.float32)
    if jitter > 0:
        cw = rng.uniform(1.0 - jitter, 1.0, k)
        ch = np.clip(cw * rng.uniform(0.92, 1.08, k), 0.0, 1.0)
        lo_x = np.where(has, np.maximum(0.0, boxes[:, 2] - cw), 0.0)
        hi_x = np.where(has, np.minimum(boxes[:, 0], 1.0 - cw), 1.0 - cw)
        lo_y = np.where(has, np.maximum(0.0, boxes[:, 3] - ch), 0.0)
        hi_y = np.where(has, np.minimum(boxes[:, 1], 1.0 - ch), 1.0 - ch)
        ok = (hi_x >= lo_x) & (hi_y >= lo_y)
        x0 = np.where(ok, lo_x + rng.random(k) * np.maximum(hi_x - lo_x, 0.0), 0.0)
        y0 = np.where(ok, lo_y + rng.random(k) * np.maximum(hi_y - lo_y, 0.0), 0.0)
        cw, ch = np.where(ok, cw, 1.0), np.where(ok, ch, 1.0)
        gain = rng.uniform(0.85, 1.15, k)
        shift = rng.uniform(-20.0, 20.0, k)
        for i in range(k):
            # Output pixel u (centre u + 0.5) samples the window at x0 * S + (u + 0.5) * cw, bilinear.
            m = np.array(
                [
                    [cw[i], 0.0, x0[i] * size + 0.5 * cw[i] - 0.5],
                    [0.0, ch[i], y0[i] * size + 0.5 * ch[i] - 0.5],
                ],
                np.float32,
            )
            out[i] = cv2.warpAffine(
                images[i],
                m,
                (size, size),
                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                borderMode=cv2.BORDER_REPLICATE,
            )
            out[i] *= gain[i]
            out[i] += 128.0 * (1.0 - gain[i]) + shift[i]
        np.clip(out, 0.0, 255.0, out=out)
        moved = np.stack(
            [
                (boxes[:, 0] - x0) / cw,
                (boxes[:, 1] - y0) / ch,
                (boxes[:, 2] - x0) / cw,
                (boxes[:, 3] - y0) / ch,
            ],
            axis=1,
        )
        boxes = np.where(has[:, None], np.clip(moved, 0.0, 1.0), boxes).astype(np.float32)
    else:
        out[:] = images
    if flip:
        do = rng.random(k) < 0.5
        out[do] = out[do, :, ::-1]
        flipped = np.stack([1.0 - boxes[:, 2], boxes[:, 1], 1.0 - boxes[:, 0], boxes[:, 3]], axis=1)
        boxes = np.where((do & has)[:, None], flipped, boxes).astype(np.float32)
    return out, boxes


def _pixel_dataset(
    pixels: np.ndarray,
    samples: Sequence[Sample],
    batch_size: int,
    shuffle: bool,
    seed: int,
    flip: bool = False,
    jitter: float = 0.0,
):
    """Stream training batches from cached pixels (:func:`cached_pixels`), augmented per batch.

    Elements are ``(image (B, S, S, 3) float32 0..255, {"class": (B, 1), "bbox": (B, 4)})``;
    ``flip`` and ``jitter`` as :func:`_jitter_batch` says, new draws every
    epoch, so every epoch sees new variants of the augmented set.
    """
    return _streamed_batches(
        samples,
        batch_size,
        shuffle,
        seed,
        pixels.shape[1:],
        lambda idx, boxes, rng: _jitter_batch(np.asarray(pixels[idx]), boxes, rng, flip, jitter),
    )


# --------------------------------------------------------------------------- the loop


class _WeightAverage:
    """Exponential moving average of a model's weights (all of them, BatchNorm statistics too).

    ``update`` after every batch; the decay ramps up as ``(1 + t) / (10 + t)``
    so that early weights are forgotten quickly.
    """

    def __init__(self, decay: float) -> None:
        self.decay = float(decay)
        self.weights: list[np.ndarray] | None = None
        self.steps = 0

    def update(self, model: Any) -> None:
        current = model.get_weights()
        self.steps += 1
        if self.weights is None:
            self.weights = [w.astype(np.float32, copy=True) for w in current]
            return
        d = min(self.decay, (1.0 + self.steps) / (10.0 + self.steps))
        for avg, w in zip(self.weights, current, strict=True):
            avg *= d
            avg += (1.0 - d) * w


class _Progress:
    """Keras callback adapter: batch progress, ETA, stop requests."""

    def __init__(self, callbacks: TrainCallbacks, total_batches: int) -> None:
        import keras

        outer = self

        class _CB(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                if outer.average is not None:
                    outer.average.update(self.model)
                outer._batch_end(self.model, batch, logs or {})

        self.callback = _CB()
        self.cb = callbacks
        self.total = max(total_batches, 1)
        self.done = 0
        self.t_first: float | None = None
        self.n_timed = 0
        self.epoch = 0
        self.epochs = 0
        self.batches = 0
        self.phase = "train"
        self.stopped = False
        self.extra_per_epoch = 0.0  # seconds of validation per epoch, learnt
        self.average: _WeightAverage | None = None  # set to average the weights

    def _batch_end(self, model: Any, batch: int, logs: dict[str, Any]) -> None:
        self.done += 1
        now = time.time()
        eta = None
        if self.t_first is None:
            self.t_first = now  # the first batch includes tracing; time from here
        else:
            self.n_timed += 1
            per = (now - self.t_first) / self.n_timed
            remaining_epochs = max(self.epochs - self.epoch, 0)
            eta = per * max(self.total - self.done, 0) + self.extra_per_epoch * (remaining_epochs + 1)
        loss = float(logs.get("loss", float("nan")))
        self.cb.on_batch(
            BatchProgress(self.epoch, self.epochs, batch + 1, self.batches, loss, eta, self.phase)
        )
        if self.cb.should_stop():
            self.stopped = True
            model.stop_training = True


class _Trainer:
    def __init__(
        self,
        train_samples: Sequence[Sample],
        val_samples: Sequence[Sample],
        settings: TrainSettings,
        run: _Run,
        callbacks: TrainCallbacks,
        cache_dir: Path,
    ) -> None:
        self.train_samples = list(train_samples)
        self.val_samples = list(val_samples)
        self.s = settings
        self.run = run
        self.cb = callbacks
        self.cache_dir = cache_dir
        self.best_weights: list[np.ndarray] | None = None
        # How to turn the model being fitted into the full model for a checkpoint
        # (vgg16's head phase fits the head alone on cached features).
        self.to_full: Any = lambda m: m
        # What is saved from the full model (compact: its mirror-averaged form).
        self.for_saving: Any = lambda m: m
        self._last_checkpoint = 0.0
        self.best_model: Any = None
        self.epoch = 0
        self.bad_epochs = 0

    # -- validation + checkpoint
    def _validate(self, scores: np.ndarray, boxes: np.ndarray) -> dict[str, float]:
        vs = self.val_samples
        bce, loc = _np_losses(vs, scores, boxes)
        m = compute_metrics(vs, scores, boxes, THRESHOLD)
        return {
            "val_loss": self.s.bbox_loss_weight * loc + self.s.class_loss_weight * bce,
            "val_class_loss": bce,
            "val_bbox_loss": loc,
            "val_presence_accuracy": m.presence_accuracy or 0.0,
            "val_mean_iou": m.mean_iou if m.mean_iou is not None else 0.0,
            "val_score": validation_score(vs, scores, boxes, THRESHOLD),
        }

    def _end_epoch(
        self, logs: dict[str, Any], val: dict[str, float], seconds: float, phase: str, model: Any
    ) -> bool:
        """Record the epoch, checkpoint if best. Returns True when patience ran out."""
        rec = EpochRecord(
            epoch=self.epoch,
            loss=float(logs.get("loss", np.nan)),
            class_loss=float(logs.get("class_loss", np.nan)),
            bbox_loss=float(logs.get("bbox_loss", np.nan)),
            seconds=round(seconds, 3),
            phase=phase,
            **{k: float(v) for k, v in val.items()},
        )
        self.run.epoch = self.epoch
        improved = self.run.best_score is None or rec.val_score > self.run.best_score + 1e-6
        if improved:
            self.run.best_score = rec.val_score
            self.run.best_epoch = self.epoch
            self.best_weights = [w.copy() for w in model.get_weights()]
            self.best_model = model
            self.bad_epochs = 0
            self._checkpoint(model)
        else:
            self.bad_epochs += 1
        self.run.add_epoch(rec)
        self.run.log(
            f"epoch {self.epoch}/{self.run.epochs} [{phase}] loss {rec.loss:.4f} (class {rec.class_loss:.4f}, "
            f"box {rec.bbox_loss:.4f}) val: accuracy {rec.val_presence_accuracy:.3f}, mean IoU "
            f"{rec.val_mean_iou:.3f}, score {rec.val_score:.4f}{' (best)' if improved else ''} in {seconds:.1f}s"
        )
        self.run.status("running", f"epoch {self.epoch} of {self.run.epochs} done")
        self.cb.on_epoch(rec)
        return self.bad_epochs >= int(self.s.patience)

    def _checkpoint(self, model: Any) -> None:
        """Save the best model so far to ``model.keras`` so a crash or a kill loses nothing.

        At most every 10 seconds (a VGG16 file is ~60 MB); the final save at the
        end of training always writes the best weights.
        """
        now = time.time()
        if now - self._last_checkpoint < 10.0:
            return
        try:
            save_model_atomic(self.for_saving(self.to_full(model)), self.run.dir / "model.keras")
            self._last_checkpoint = time.time()
        except Exception as exc:  # noqa: BLE001 - a failed checkpoint must not end the training
            self.run.log(f"checkpoint not saved ({type(exc).__name__}: {exc})")

    def _fit_epochs(self, model: Any, ds: Any, n_batches: int, epochs: int, predict_val, phase: str) -> None:
        prog = self._progress
        prog.phase = phase
        for _ in range(epochs):
            self.epoch += 1
            prog.epoch, prog.batches = self.epoch, n_batches
            t0 = time.time()
            hist = model.fit(ds, epochs=1, verbose=0, shuffle=False, callbacks=[prog.callback])
            logs = {k: v[-1] for k, v in hist.history.items() if v}
            tv = time.time()
            current = None
            if prog.average is not None and prog.average.weights is not None:
                # Validate (and keep, if best) the averaged weights; train on from the current ones.
                current = model.get_weights()
                model.set_weights(prog.average.weights)
            try:
                scores, boxes = predict_val()
                prog.extra_per_epoch = time.time() - tv
                stop_early = self._end_epoch(
                    logs, self._validate(scores, boxes), time.time() - t0, phase, model
                )
            finally:
                if current is not None:
                    model.set_weights(current)
            if prog.stopped:
                raise _Stopped()
            if stop_early:
                self.run.log(f"no better validation score for {self.s.patience} epochs: stopping early")
                return

    # -- backbones
    def run_compact(self, strategy: Any) -> Any:
        import keras

        from facetrack.model import build_model, compile_model, with_mirror_average

        s = self.s
        with strategy.scope():
            model = build_model("compact", None, s.input_size)
            n_batches = -(-len(self.train_samples) // s.batch_size)
            steps = n_batches * s.epochs
            lr = keras.optimizers.schedules.CosineDecay(
                0.0,
                steps,
                alpha=0.02,
                warmup_target=float(s.learning_rate),
                warmup_steps=min(n_batches, steps // 10),
            )
            opt = keras.optimizers.AdamW(lr, weight_decay=float(s.weight_decay))
            compile_model(model, optimizer=opt, loss_weights=self._loss_weights())
        self.run.log(f"compact model: {model.count_params():,} parameters")
        if s.mirror_average:
            self.for_saving = with_mirror_average
        pixels = cached_pixels(self.train_samples, s.input_size, self.cache_dir, self.cb)
        ds = _pixel_dataset(
            pixels, self.train_samples, s.batch_size, True, s.seed, flip=s.flip, jitter=float(s.jitter)
        )
        self._progress = _Progress(self.cb, n_batches * s.epochs)
        self._progress.epochs = s.epochs
        if float(s.ema_decay) > 0:
            self._progress.average = _WeightAverage(float(s.ema_decay))
        try:
            self._fit_epochs(
                model,
                ds,
                n_batches,
                s.epochs,
                lambda: predict_samples(model, self.val_samples, s.input_size, s.batch_size),
                "train",
            )
        finally:
            self.final_model = model
        return model

    def run_vgg16(self, strategy: Any) -> Any:
        import keras

        from facetrack.model import build_parts, compile_model, compose

        s = self.s
        with strategy.scope():
            feature_model, head_model = build_parts("vgg16", s.weights, s.input_size)
            compile_model(head_model, s.learning_rate, loss_weights=self._loss_weights())
        self.final_model = None
        ft_epochs = int(s.fine_tune_epochs) if s.fine_tune else 0
        n_batches = -(-len(self.train_samples) // s.batch_size)
        self._progress = _Progress(self.cb, n_batches * (s.epochs + ft_epochs))
        self._progress.epochs = s.epochs + ft_epochs
        self.run.epochs = s.epochs + ft_epochs
        self.run.log(f"computing VGG16 features of {len(self.train_samples)} training images (cached)")
        t0 = time.time()
        extractor = _fast_feature_model(feature_model, s)
        if isinstance(extractor, LiteRTFeatures):
            self.run.log("computing features with LiteRT int8 kernels (about 3x faster than float32)")
        elif extractor is not feature_model:
            self.run.log("computing features in bfloat16 (this CPU has native bfloat16: about 2x faster)")
        ftrain = cached_features(extractor, self.train_samples, s, self.cache_dir, self.cb, "features")
        fval = cached_features(extractor, self.val_samples, s, self.cache_dir, self.cb, "val_features")
        self.run.log(f"features ready in {time.time() - t0:.1f}s ({ftrain.shape[1:]} per image)")
        ds = _feature_dataset(ftrain, self.train_samples, s.batch_size, shuffle=True, seed=s.seed)

        def predict_val():
            out = head_model.predict(
                _feature_dataset(fval, self.val_samples, s.batch_size, False, 0).map(lambda x, y: x),
                verbose=0,
            )
            return _unpack_predictions(out)

        def finish_head() -> Any:
            if self.best_weights is not None:
                head_model.set_weights(self.best_weights)
            with strategy.scope():
                full = compose(feature_model, head_model)
            return full

        try:
            self.to_full = lambda m: compose(feature_model, m)
            self._fit_epochs(head_model, ds, n_batches, s.epochs, predict_val, "head")
        except _Stopped:
            self.final_model = finish_head()
            self.best_weights = self.final_model.get_weights()
            raise
        full = finish_head()
        self.best_weights = full.get_weights()
        self.final_model = full
        if not s.fine_tune:
            return full
        # Fine-tune block5 end to end on images.
        self.run.log("fine-tuning block5 of VGG16")
        base = [layer for layer in feature_model.layers if isinstance(layer, keras.Model)][0]
        feature_model.trainable = True
        base.trainable = True
        for layer in base.layers:
            layer.trainable = layer.name.startswith("block5")
        with strategy.scope():
            full = compose(feature_model, head_model)
            compile_model(full, s.fine_tune_learning_rate, loss_weights=self._loss_weights())
        self.final_model = full
        self.to_full = lambda m: m
        self.bad_epochs = 0
        pixels = cached_pixels(self.train_samples, s.input_size, self.cache_dir, self.cb)
        ds_img = _pixel_dataset(pixels, self.train_samples, s.batch_size, True, s.seed, flip=s.flip)
        self._fit_epochs(
            full,
            ds_img,
            n_batches,
            ft_epochs,
            lambda: predict_samples(full, self.val_samples, s.input_size, s.batch_size),
            "fine_tune",
        )
        return full

    def _loss_weights(self) -> dict[str, float]:
        return {"class": float(self.s.class_loss_weight), "bbox": float(self.s.bbox_loss_weight)}


def train(
    train_samples: Sequence[Sample],
    val_samples: Sequence[Sample],
    settings: TrainSettings,
    run_dir: Path,
    callbacks: TrainCallbacks | None = None,
    cache_dir: Path | None = None,
) -> TrainResult:
    """Train a detector and fill ``run_dir`` (see the module docstring).

    ``train_samples`` are (augmented) images with normalized
    ``[x1, y1, x2, y2]`` boxes or None (no face); ``val_samples`` choose the
    best epoch (if empty, up to 200 training images are used, with a warning
    in the log). ``cache_dir`` (vgg16 feature cache) defaults to
    ``run_dir/../../cache/features`` (the project's cache folder).
    Returns a :class:`TrainResult` with ``state`` ``"finished"`` or
    ``"stopped"``; on an error the status says ``"failed"`` with the message
    and the exception is raised again (e.g. ``WeightsUnavailable``).
    """
    import keras

    t_start = time.time()
    callbacks = callbacks or TrainCallbacks()
    run_dir = Path(run_dir)
    settings = TrainSettings.from_dict(settings.to_dict())  # defaults resolved, caller's copy untouched
    if cache_dir is None:
        cache_dir = run_dir.resolve().parent.parent / "cache" / "features"
    run = _Run(run_dir, settings, int(settings.epochs))
    train_samples = list(train_samples)
    val_samples = list(val_samples)
    run.status("running", "starting")
    run.log(
        f"training {settings.backbone} ({settings.name or 'unnamed'}) on {len(train_samples)} images, "
        f"validating on {len(val_samples)}"
    )
    if not val_samples and train_samples:
        rng = np.random.default_rng(settings.seed)
        idx = rng.choice(len(train_samples), size=min(200, len(train_samples)), replace=False)
        val_samples = [train_samples[i] for i in sorted(idx)]
        run.log("warning: no validation images; choosing the best epoch on training images instead")
    atomic_write_json(
        run_dir / "settings.json",
        {
            "settings": settings.to_dict(),
            "counts": {
                "train": len(train_samples),
                "train_faces": sum(s.box is not None for s in train_samples),
                "val": len(val_samples),
                "val_faces": sum(s.box is not None for s in val_samples),
            },
            "created": time.time(),
        },
    )
    trainer = _Trainer(train_samples, val_samples, settings, run, callbacks, Path(cache_dir))
    state = "finished"
    message = ""
    try:
        if not train_samples:
            raise ValueError(
                "There are no training images. Label some photos and generate the training set first."
            )
        need = _space_needed(train_samples, val_samples, settings, Path(cache_dir))
        ensure_free_space(Path(cache_dir), need, "training")
        keras.utils.set_random_seed(int(settings.seed))
        strategy = _make_strategy(settings.strategy)
        try:
            if settings.backbone == "compact":
                trainer.run_compact(strategy)
            else:
                trainer.run_vgg16(strategy)
        except _Stopped:
            state = "stopped"
            message = "stopped on request"
            run.log("stop requested: kept the best weights so far")
        model = trainer.final_model
        if model is not None and trainer.best_weights is None and state == "stopped":
            # Stopped before the first validation: validate what we have so that the file exists.
            scores, boxes = predict_samples(model, val_samples, settings.input_size, settings.batch_size)
            run.best_score = validation_score(val_samples, scores, boxes, THRESHOLD)
            run.best_epoch = trainer.epoch
            trainer.best_weights = model.get_weights()
        if model is not None and trainer.best_weights is not None:
            model.set_weights(trainer.best_weights)
            model = trainer.for_saving(model)
            save_model_atomic(model, run_dir / "model.keras")
            run.log(f"saved the best model (epoch {run.best_epoch}, validation score {run.best_score:.4f})")
            if settings.export_tflite:
                _export(model, run_dir, run, callbacks)
        if not message:
            message = f"finished: best epoch {run.best_epoch}, validation score {run.best_score:.4f}"
        run.status(state, message)
    except BaseException as exc:
        msg = str(exc) or type(exc).__name__
        run.log(f"training failed: {msg}")
        with open(run_dir / "train.log", "a", encoding="utf-8") as fh:
            fh.write(traceback.format_exc())
        run.status("failed", msg)
        raise
    seconds = time.time() - t_start
    run.log(f"{state} in {seconds:.1f}s")
    return TrainResult(run_dir, state, run.best_epoch, run.best_score, list(run.history), seconds)


def _space_needed(
    train_samples: Sequence[Sample], val_samples: Sequence[Sample], settings: TrainSettings, cache_dir: Path
) -> int:
    """Bytes a training may write: its caches not yet on disk, and room for the model files."""
    size, n = int(settings.input_size), len(train_samples)
    key = "pixels-" + feature_cache_key(train_samples, "pixels", "none", size)
    pixels = 0 if (cache_dir / key / "done.json").is_file() else n * size * size * 3
    if settings.backbone == "compact":
        return pixels + 50 * 2**20
    features = (n + len(val_samples)) * max(1, size // 32) ** 2 * 512 * 2  # float16 block5 maps
    return features + (pixels if settings.fine_tune else 0) + 300 * 2**20


def _export(model: Any, run_dir: Path, run: _Run, callbacks: TrainCallbacks) -> None:
    callbacks.on_stage("export", 0, 1)
    try:
        from facetrack.export import export_tflite
    except ImportError:
        run.log("TFLite export skipped: the export module is not available yet (model.keras is usable)")
        return
    try:
        export_tflite(model, run_dir / "model.tflite")
        run.log("exported model.tflite")
    except Exception as exc:  # noqa: BLE001 - export failing must not lose the trained model
        run.log(f"TFLite export failed ({type(exc).__name__}: {exc}); model.keras is still usable")
    callbacks.on_stage("export", 1, 1)


def clear_feature_cache(cache_dir: Path) -> None:
    """Delete a feature cache folder (it is rebuilt when needed)."""
    shutil.rmtree(cache_dir, ignore_errors=True)


__all__ = [
    "BatchProgress",
    "EpochRecord",
    "TrainCallbacks",
    "TrainResult",
    "TrainSettings",
    "box_iou",
    "cached_features",
    "feature_cache_key",
    "save_model_atomic",
    "train",
]

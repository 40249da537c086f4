"""Training: what the user chooses, what progress reports, and :func:`train`.

:func:`train` trains a detector (see :mod:`facetrack.model`) on
:class:`~facetrack.data.Sample` lists and writes everything to a run folder
(:mod:`facetrack.runs` names its files): settings, one history row per epoch,
status, the best model so far (atomically), the log, and ``model.tflite`` at
the end (:mod:`facetrack.export`).

Heads (``head``): ``"dense"`` (the default) finds every face: a score and a
box per cell of a feature grid (:mod:`facetrack.dense`), trained on every
box of each sample with a focal score loss and a GIoU box loss; ``"single"``
is the tutorial's one face per photo (runs made before multi-face training).

Checkpoints and early stopping follow the validation score: for the dense
head, AP@0.5 over every face of the validation images (``val_ap50``, also
recorded for the one-box head); for the one-box head,
:func:`facetrack.evaluate.validation_score` (``[score >= 0.5] * IoU`` on a
face image, ``[score < 0.5]`` on a no-face image). After training, the score
threshold that serves faces and photos best on validation
(:func:`facetrack.metrics.best_threshold`) is saved with the NMS overlap in
the run's ``decode.json``.

Backbones (one trainer each in :mod:`facetrack.trainer`, over one loop):

- ``vgg16`` (frozen, the library default): features (``block5_conv3``, a 1/16
  grid, for the dense head; ``block5_pool`` for the one-box head) are
  computed once per image and cached on disk (:mod:`facetrack.cache`), then
  the head is trained on the cache. ``fine_tune`` then unfreezes block5 and
  trains end to end on images at a low learning rate.
- ``compact`` (the command line's default): trained end to end on its
  training images, decoded once into a pixel cache; every epoch mirrors half
  of them and (dense) adds ``mosaic`` 2x2 mosaics, or (one-box) takes a fresh
  random crop that keeps the face (``jitter``); the moving average of the
  weights (``ema_decay``) is validated and kept, and the model is saved
  mirror-averaged (``mirror_average``, see :func:`facetrack.model.with_mirror_average`;
  the score threshold is chosen on validation with the saved model).

Progress leaves the trainer only through :class:`TrainCallbacks`. This module
imports no TensorFlow or Keras until :func:`train` runs.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from facetrack.cache import StopRequested
from facetrack.data import Sample
from facetrack.fileio import ensure_free_space
from facetrack.limits import TRAIN_LIMITS, range_problems
from facetrack.runs import RunWriter, input_hw

log = logging.getLogger(__name__)

STRATEGIES = ("default", "mirrored", "multiworker")
BACKBONES = ("vgg16", "compact")
# The library's default backbone (a TrainSettings() with nothing set); the command line
# defaults to CLI_BACKBONE, which trains offline (no weights to download).
DEFAULT_BACKBONE = "vgg16"
CLI_BACKBONE = "compact"
HEADS = ("dense", "single")
_BACKBONE_DEFAULTS = {
    "vgg16": {"epochs": 30, "batch_size": 32, "learning_rate": 1e-3, "patience": 8},
    "compact": {"epochs": 8, "batch_size": 32, "learning_rate": 3e-3, "patience": 6},
}
# The dense (multi-face) head's defaults, measured with benchmarks/dense_research.py
# (benchmarks/README.md): 4:3 input, focal score loss weighted against the GIoU box loss.
_DENSE_DEFAULTS: dict[str, Any] = {
    "input_size": [120, 160],
    "class_loss_weight": 20.0,
    "ema_decay": 0.995,
}
_DENSE_BACKBONE_DEFAULTS: dict[str, dict[str, Any]] = {
    # lr 1e-2 (not the one-box head's 3e-3): the dense model fits its photos better within 14
    # epochs (benchmarks/README.md, pipeline.py section: rows 11 to 13, 12p and 12v)
    "compact": {"epochs": 14, "mosaic": 0.25, "learning_rate": 1e-2},
    "vgg16": {"mosaic": 0.0},
}
_SINGLE_DEFAULTS: dict[str, Any] = {
    "input_size": 120,
    "class_loss_weight": 0.5,
    "ema_decay": 0.998,
    "mosaic": 0.0,
}
THRESHOLD = 0.5


@dataclass
class TrainSettings:
    """What the user chose for one training. ``None`` fields take the backbone's (and head's) default.

    ``head``: ``"dense"`` (every face: a score and a box per cell, the
    default) or ``"single"`` (the tutorial's one face per photo, as runs
    before the dense head). ``input_size``: ``S`` (square) or ``[h, w]``
    (dense default ``[120, 160]``, the webcam's 4:3; single 120).
    ``weights``: ``"imagenet"``, ``"none"`` (random) or a path to VGG16 notop
    weights (ignored by ``compact``). ``fine_tune`` (vgg16): after the head
    converges, also train block5 for ``fine_tune_epochs`` at
    ``fine_tune_learning_rate``. ``patience``: epochs without a better
    validation score before stopping early. ``strategy``: ``"default"``,
    ``"mirrored"`` (all local devices) or ``"multiworker"`` (``TF_CONFIG``).
    """

    backbone: str = DEFAULT_BACKBONE
    weights: str = "imagenet"
    head: str = "dense"
    input_size: int | list[int] | None = None
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
    class_loss_weight: float | None = None  # dense 20 (focal loss is small), single 0.5 (the tutorial's)
    bbox_loss_weight: float = 1.0
    focal_gamma: float = 1.0  # dense: focal loss exponent of the cell scores (1 measured better than 2)
    positive_weight: float = 4.0  # dense: weight of a face cell against a background cell
    # dense: weight of each photo's presence (its best cell's score) in the score loss; off: 0.1 did
    # not separate the photos beyond the run-to-run spread and cost AP (benchmarks/README, rows 26-27)
    photo_weight: float = 0.0
    nms_iou: float = 0.4  # dense: decoding's non-maximum suppression overlap (saved in decode.json)
    # dense, compact: add this share of 2x2 mosaics of four training images per epoch (small faces)
    mosaic: float | None = None
    flip: bool = True
    weight_decay: float = (
        0.05  # compact: AdamW decoupled weight decay (against overfitting a few hundred photos)
    )
    jitter: float = 0.15  # compact, single head: random crop (keeping the face) of up to this share per side
    # compact: validate, keep and export the exponential moving average of the weights
    # (Polyak averaging, this decay per batch; 0 = off): steadier than the last batch's weights.
    ema_decay: float | None = None
    # compact: the saved model also looks at the mirror image and averages (dense: cell by cell)
    mirror_average: bool = True
    export_tflite: bool = True  # also write model.tflite at the end (facetrack.export)

    def __post_init__(self) -> None:
        if self.backbone not in _BACKBONE_DEFAULTS:
            raise ValueError(
                f"unknown backbone {self.backbone!r}; choose one of {', '.join(_BACKBONE_DEFAULTS)}"
            )
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; choose one of {', '.join(HEADS)}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if self.weights is None:
            self.weights = "none"
        self.weights = str(self.weights)
        defaults = dict(_BACKBONE_DEFAULTS[self.backbone])
        if self.head == "dense":
            defaults.update(_DENSE_DEFAULTS)
            defaults.update(_DENSE_BACKBONE_DEFAULTS[self.backbone])
        else:
            defaults.update(_SINGLE_DEFAULTS)
        for key, value in defaults.items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        h, w = input_hw(self.input_size)
        # the ranges the train page offers too; input_size is checked side by side
        problems = range_problems(SimpleNamespace(**{**asdict(self), "input_size": None}), TRAIN_LIMITS)
        low, high = TRAIN_LIMITS["input_size"]
        if not (low <= h <= high and low <= w <= high):
            problems.append(f"input size must be between {low:g} and {high:g} pixels a side (got {h}x{w})")
        if problems:
            raise ValueError("; ".join(problems))
        if self.head == "single" and h != w:
            raise ValueError(f"the one-face head needs a square input, got {h}x{w}")
        self.input_size = h if h == w else [h, w]

    @property
    def input_hw(self) -> tuple[int, int]:
        """``(h, w)`` of the model input."""
        return input_hw(self.input_size)

    @property
    def dense(self) -> bool:
        return self.head == "dense"

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
    val_ap50: float = float("nan")  # AP@0.5 over every face of the validation images

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def columns(cls) -> list[str]:
        """The ``history.csv`` columns, in order."""
        return [f.name for f in fields(cls)]


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


def _counts(train_samples: Sequence[Sample], val_samples: Sequence[Sample]) -> dict[str, int]:
    return {
        "train": len(train_samples),
        "train_faces": sum(s.has_face for s in train_samples),
        "train_face_boxes": sum(len(s.boxes) for s in train_samples),
        "val": len(val_samples),
        "val_faces": sum(s.has_face for s in val_samples),
        "val_face_boxes": sum(len(s.boxes) for s in val_samples),
    }


def _fallback_validation(train_samples: list[Sample], seed: int, run: RunWriter) -> list[Sample]:
    """Up to 200 training images to choose the best epoch on, when there are no validation images."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(train_samples), size=min(200, len(train_samples)), replace=False)
    run.log("warning: no validation images; choosing the best epoch on training images instead")
    return [train_samples[i] for i in sorted(idx)]


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
    in the log). ``cache_dir`` (the feature and pixel caches) defaults to
    ``run_dir/../../cache/features`` (the project's cache folder).
    Returns a :class:`TrainResult` with ``state`` ``"finished"`` or
    ``"stopped"``; on an error the status says ``"failed"`` with the message
    and the exception is raised again (e.g. ``WeightsUnavailable``).
    """
    from facetrack.runs import project_of
    from facetrack.trainer import run_training

    t_start = time.time()
    callbacks = callbacks or TrainCallbacks()
    run_dir = Path(run_dir)
    settings = TrainSettings.from_dict(settings.to_dict())  # defaults resolved, caller's copy untouched
    if cache_dir is None:
        cache_dir = project_of(run_dir) / "cache" / "features"
    run = RunWriter(run_dir, int(settings.epochs))
    train_samples, val_samples = list(train_samples), list(val_samples)
    run.status("running", "starting")
    run.log(
        f"training {settings.backbone} ({settings.name or 'unnamed'}) on {len(train_samples)} images, "
        f"validating on {len(val_samples)}"
    )
    if not val_samples and train_samples:
        val_samples = _fallback_validation(train_samples, settings.seed, run)
    run.settings(settings.to_dict(), _counts(train_samples, val_samples))
    try:
        if not train_samples:
            raise ValueError(
                "There are no training images. Label some photos and generate the training set first."
            )
        Path(cache_dir).mkdir(parents=True, exist_ok=True)  # later writes create one level at most
        need = _space_needed(train_samples, val_samples, settings, Path(cache_dir))
        ensure_free_space(Path(cache_dir), need, "training")
        state = run_training(train_samples, val_samples, settings, run, callbacks, Path(cache_dir))
    except BaseException as exc:
        msg = str(exc) or type(exc).__name__
        run.log(f"training failed: {msg}", traceback.format_exc())
        run.status("failed", msg)
        raise
    seconds = time.time() - t_start
    run.log(f"{state} in {seconds:.1f}s")
    history = [EpochRecord(**row) for row in run.history]
    return TrainResult(run_dir, state, run.best_epoch, run.best_score, history, seconds)


def _space_needed(
    train_samples: Sequence[Sample], val_samples: Sequence[Sample], settings: TrainSettings, cache_dir: Path
) -> int:
    """Bytes a training may write: its caches not yet on disk, and room for the model files."""
    from facetrack.cache import pixel_cache_key

    (h, w), n = settings.input_hw, len(train_samples)
    pixels = (
        0
        if (cache_dir / pixel_cache_key(train_samples, settings.input_size) / "done.json").is_file()
        else n * h * w * 3
    )
    if settings.backbone == "compact":
        return pixels + 50 * 2**20
    features = (n + len(val_samples)) * max(1, h // 16) * max(1, w // 16) * 512 * 2  # float16 block5 maps
    return features + (pixels if settings.fine_tune else 0) + 300 * 2**20


__all__ = [
    "BACKBONES",
    "CLI_BACKBONE",
    "DEFAULT_BACKBONE",
    "BatchProgress",
    "EpochRecord",
    "StopRequested",
    "TrainCallbacks",
    "TrainResult",
    "TrainSettings",
    "train",
]

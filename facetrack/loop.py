"""The training loop: one :class:`Loop` on Keras callbacks, shared by the backbones' trainers.

Each phase is one ``model.fit`` with these callbacks:

- :class:`WeightAverage`: the exponential moving average of the weights (compact).
- :class:`BatchReporter`: batch progress with a time-left estimate, and stop requests.
- :class:`EpochValidator`: after every epoch, the validation score of the
  weights kept (the average when there is one), the ``history.csv`` row, the
  best checkpoint (``model.keras``) and early stopping.

:class:`Trainer` is what a backbone's trainer (:mod:`facetrack.trainer`) fills in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from facetrack.cache import (
    StopRequested,
)
from facetrack.data import Sample, targets
from facetrack.decode import DecodeSettings
from facetrack.evaluate import (
    AP_THRESHOLD,
    detections_of,
    metrics_from_detections,
    predict_samples,
    validation_score,
)
from facetrack.runs import RunWriter
from facetrack.train import BatchProgress, EpochRecord, TrainCallbacks, TrainSettings

log = logging.getLogger(__name__)

THRESHOLD = 0.5
CHECKPOINT_EVERY_S = 10.0  # a VGG16 file is ~60 MB: checkpoint at most this often (the end always saves)
# No time-left figure before this many timed batches and seconds (the first ones include tracing).
ETA_MIN_BATCHES = 3
ETA_MIN_SECONDS = 1.0


def validation_losses(
    samples: Sequence[Sample],
    scores: np.ndarray,
    boxes: np.ndarray,
    settings: TrainSettings | None = None,
    dense_targets: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[float, float]:
    """(class loss, box loss) of predictions: the training losses of the head that made them.

    Per-cell outputs ``(N, Gh, Gw, ...)``: the dense losses
    (:class:`facetrack.layers.CellScoreLoss`, :class:`facetrack.layers.CellBoxLoss`)
    against ``dense_targets`` (computed from the samples when None); one box
    per image: binary cross-entropy and :class:`facetrack.layers.LocalizationLoss`.
    """
    from facetrack.layers import CellBoxLoss, CellScoreLoss, LocalizationLoss

    if len(samples) == 0:
        return 0.0, 0.0
    scores = np.asarray(scores, np.float32)
    if scores.ndim == 4:
        cls, box = dense_targets or targets(samples, scores.shape[1:3])
        s = settings or TrainSettings()
        score_loss = CellScoreLoss(
            gamma=s.focal_gamma, pos_weight=s.positive_weight, photo_weight=s.photo_weight
        )(cls, scores)
        return float(score_loss), float(CellBoxLoss()(box, np.asarray(boxes, np.float32)))
    cls, box = targets(samples)
    bce = keras.losses.BinaryCrossentropy()(cls, scores.reshape(-1, 1))
    loc = LocalizationLoss()(box, np.asarray(boxes, np.float32).reshape(-1, 4))
    return float(bce), float(loc)


class WeightAverage(keras.callbacks.Callback):
    """Exponential moving average of a model's weights (all of them, BatchNorm statistics too).

    Updated after every batch; the decay ramps up as ``(1 + t) / (10 + t)``
    so that early weights are forgotten quickly.
    """

    def __init__(self, decay: float) -> None:
        super().__init__()
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

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.update(self.model)


class BatchReporter(keras.callbacks.Callback):
    """Reports every batch (:class:`BatchProgress`) with a time-left estimate; honours stop requests."""

    def __init__(self, callbacks: TrainCallbacks, total_batches: int, epochs: int) -> None:
        super().__init__()
        self.cb = callbacks
        self.total = max(total_batches, 1)
        self.epochs = epochs
        self.done = 0
        self.t_first: float | None = None
        self.n_timed = 0
        self.epoch = 0  # of the whole run, 1-based, set by the loop
        self.batches = 0
        self.phase = "train"
        self.stopped = False
        self.extra_per_epoch = 0.0  # seconds of validation per epoch, learnt

    def eta(self, now: float) -> float | None:
        """Seconds left for the whole run, or None while too few batches were timed to say."""
        if self.t_first is None or self.n_timed < ETA_MIN_BATCHES or now - self.t_first < ETA_MIN_SECONDS:
            return None
        per = (now - self.t_first) / self.n_timed
        remaining_epochs = max(self.epochs - self.epoch, 0)
        return per * max(self.total - self.done, 0) + self.extra_per_epoch * (remaining_epochs + 1)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch += 1

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.done += 1
        now = time.time()
        if self.t_first is None:
            self.t_first = now  # the first batch includes tracing; time from here
        else:
            self.n_timed += 1
        loss = float((logs or {}).get("loss", float("nan")))
        self.cb.on_batch(
            BatchProgress(self.epoch, self.epochs, batch + 1, self.batches, loss, self.eta(now), self.phase)
        )
        if self.cb.should_stop():
            self.stopped = True
            self.model.stop_training = True


class EpochValidator(keras.callbacks.Callback):
    """After every epoch: validate, record, checkpoint the best, stop early when patience runs out."""

    def __init__(
        self, loop: Loop, predict_val: Callable[[], tuple[np.ndarray, np.ndarray]], phase: str
    ) -> None:
        super().__init__()
        self.loop = loop
        self.predict_val = predict_val
        self.phase = phase
        self.out_of_patience = False
        self._t0 = time.time()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._t0 = time.time()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        loop = self.loop
        tv = time.time()
        current = None
        if loop.average is not None and loop.average.weights is not None:
            # Validate (and keep, if best) the averaged weights; train on from the current ones.
            current = self.model.get_weights()
            self.model.set_weights(loop.average.weights)
        try:
            scores, boxes = self.predict_val()
            loop.reporter.extra_per_epoch = time.time() - tv
            val = loop.validate(scores, boxes)
            if loop.end_epoch(logs or {}, val, time.time() - self._t0, self.phase, self.model):
                self.out_of_patience = True
                self.model.stop_training = True
        finally:
            if current is not None:
                self.model.set_weights(current)


class Loop:
    """The state shared by the phases of one training: epoch count, best weights, run folder."""

    def __init__(
        self,
        trainer: Trainer,
        val_samples: Sequence[Sample],
        settings: TrainSettings,
        run: RunWriter,
        callbacks: TrainCallbacks,
        total_batches: int,
        epochs: int,
    ) -> None:
        self.trainer = trainer
        self.val_samples = list(val_samples)
        self.s = settings
        self.run = run
        self.cb = callbacks
        self.reporter = BatchReporter(callbacks, total_batches, epochs)
        self.average: WeightAverage | None = None
        self.best_weights: list[np.ndarray] | None = None
        self.epoch = 0
        self.bad_epochs = 0
        self._last_checkpoint = 0.0
        self._val_targets: tuple[np.ndarray, np.ndarray] | None = None

    def validate(self, scores: np.ndarray, boxes: np.ndarray) -> dict[str, float]:
        """Validation figures of raw predictions on the validation samples (a ``history.csv`` row's part).

        ``val_ap50``: AP@0.5 over every face. ``val_score`` (the checkpoint
        score) for the dense head: the mean of that AP and the presence
        accuracy (presence alone when the validation images hold no face).
        The AP alone levels off epochs before presence does, and picked an
        earlier epoch whose photos were 3 points worse (benchmarks/README.md,
        pipeline.py section). The one-box head keeps its own
        (:func:`facetrack.evaluate.validation_score`).
        """
        vs = self.val_samples
        scores = np.asarray(scores, np.float32)
        dense = scores.ndim == 4
        if dense and self._val_targets is None:
            self._val_targets = targets(vs, scores.shape[1:3])
        bce, loc = validation_losses(vs, scores, boxes, self.s, self._val_targets if dense else None)
        dets = detections_of(scores, boxes, DecodeSettings(threshold=AP_THRESHOLD, nms_iou=self.s.nms_iou))
        m = metrics_from_detections(vs, dets, THRESHOLD)
        if dense:
            presence = m.presence_accuracy or 0.0
            score = presence if m.ap50 is None else (m.ap50 + presence) / 2
        else:
            score = validation_score(vs, scores, boxes, THRESHOLD)
        return {
            "val_loss": self.s.bbox_loss_weight * loc + float(self.s.class_loss_weight) * bce,
            "val_class_loss": bce,
            "val_bbox_loss": loc,
            "val_presence_accuracy": m.presence_accuracy or 0.0,
            "val_mean_iou": m.mean_iou if m.mean_iou is not None else 0.0,
            "val_score": score,
            "val_ap50": m.ap50 if m.ap50 is not None else float("nan"),
        }

    def end_epoch(
        self, logs: dict[str, Any], val: dict[str, float], seconds: float, phase: str, model: Any
    ) -> bool:
        """Record the epoch, checkpoint if best. Returns True when patience ran out."""
        self.epoch += 1
        rec = EpochRecord(
            epoch=self.epoch,
            loss=float(logs.get("loss", np.nan)),
            class_loss=float(logs.get("class_loss", np.nan)),
            bbox_loss=float(logs.get("bbox_loss", np.nan)),
            seconds=round(seconds, 3),
            phase=phase,
            **{k: float(v) for k, v in val.items()},
        )
        run = self.run
        run.epoch = self.epoch
        improved = run.best_score is None or rec.val_score > run.best_score + 1e-6
        if improved:
            run.best_score = rec.val_score
            run.best_epoch = self.epoch
            self.best_weights = [w.copy() for w in model.get_weights()]
            self.bad_epochs = 0
            self._checkpoint(model)
        else:
            self.bad_epochs += 1
        run.add_epoch(rec.to_dict(), EpochRecord.columns())
        run.log(
            f"epoch {self.epoch}/{run.epochs} [{phase}] loss {rec.loss:.4f} (class {rec.class_loss:.4f}, "
            f"box {rec.bbox_loss:.4f}) val: AP@0.5 {rec.val_ap50:.3f}, accuracy {rec.val_presence_accuracy:.3f}, mean IoU "
            f"{rec.val_mean_iou:.3f}, score {rec.val_score:.4f}{' (best)' if improved else ''} in {seconds:.1f}s"
        )
        run.status("running", f"epoch {self.epoch} of {run.epochs} done")
        self.cb.on_epoch(rec)
        return self.bad_epochs >= int(self.s.patience)

    def _checkpoint(self, model: Any) -> None:
        """Save the best model so far so a crash or a kill loses nothing (at most every 10 s)."""
        now = time.time()
        if now - self._last_checkpoint < CHECKPOINT_EVERY_S:
            return
        try:
            self.run.save_model(self.trainer.for_saving(self.trainer.full_model(model)))
            self._last_checkpoint = time.time()
        except Exception as exc:  # noqa: BLE001 - a failed checkpoint must not end the training
            log.warning("checkpoint not saved: %s", exc)
            self.run.log(f"checkpoint not saved ({type(exc).__name__}: {exc})")

    def fit(
        self,
        model: Any,
        ds: Any,
        n_batches: int,
        epochs: int,
        predict_val: Callable[[], tuple[np.ndarray, np.ndarray]],
        phase: str,
    ) -> None:
        """Train ``model`` for up to ``epochs`` epochs; raises :class:`StopRequested` on a stop request."""
        if epochs < 1:
            return
        self.reporter.phase, self.reporter.batches = phase, n_batches
        validator = EpochValidator(self, predict_val, phase)
        cbs: list[Any] = [self.average] if self.average is not None else []
        model.fit(ds, epochs=epochs, verbose=0, shuffle=False, callbacks=[*cbs, self.reporter, validator])
        if self.reporter.stopped:
            raise StopRequested()
        if validator.out_of_patience:
            self.run.log(f"no better validation score for {self.s.patience} epochs: stopping early")


class Trainer:
    """What differs between backbones: how to train, and how the fitted model becomes the saved one."""

    def __init__(
        self,
        train_samples: Sequence[Sample],
        val_samples: Sequence[Sample],
        settings: TrainSettings,
        run: RunWriter,
        callbacks: TrainCallbacks,
        cache_dir: Path,
    ) -> None:
        self.train_samples = list(train_samples)
        self.val_samples = list(val_samples)
        self.s = settings
        self.run = run
        self.cb = callbacks
        self.cache_dir = cache_dir
        self.n_batches = -(-len(self.train_samples) // settings.batch_size)
        self.epochs = int(settings.epochs)
        run.epochs = self.epochs
        self.loop = Loop(
            self, val_samples, settings, run, callbacks, self.n_batches * self.epochs, self.epochs
        )
        self.final_model: Any = None  # the full model the best weights belong to

    def train(self, strategy: Any) -> None:
        raise NotImplementedError

    def full_model(self, fitted: Any) -> Any:
        """The full detector for the model being fitted (a checkpoint saves it)."""
        return fitted

    def for_saving(self, full: Any) -> Any:
        """What is saved of the full model."""
        return full

    def loss_weights(self) -> dict[str, float]:
        return {"class": float(self.s.class_loss_weight), "bbox": float(self.s.bbox_loss_weight)}

    def predict_images(self, model: Any) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
        return lambda: predict_samples(model, self.val_samples, self.s.input_hw, self.s.batch_size)

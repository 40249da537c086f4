"""One trainer per backbone over the shared loop (:mod:`facetrack.loop`), and :func:`run_training`.

:class:`CompactTrainer` and :class:`Vgg16Trainer` say how to build, feed and
save their models; :func:`run_training` runs one and saves the best model.
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
    LiteRTFeatures,
    StopRequested,
    cached_features,
    cached_pixels,
    fast_feature_model,
)
from facetrack.data import Sample, dense_pixel_dataset, feature_dataset, pixel_dataset
from facetrack.evaluate import AP_THRESHOLD, detections_of, predict_samples, truths_of, unpack_predictions
from facetrack.loop import THRESHOLD, Trainer, WeightAverage
from facetrack.runs import RunWriter
from facetrack.train import TrainCallbacks, TrainSettings

log = logging.getLogger(__name__)


def _compile(model: Any, s: TrainSettings, loss_weights: dict[str, float], optimizer: Any) -> None:
    """Compile with the losses of ``s.head`` (dense: focal cell scores + GIoU cell boxes)."""
    if s.dense:
        from facetrack.dense import compile_dense

        compile_dense(
            model,
            optimizer,
            loss_weights,
            gamma=s.focal_gamma,
            pos_weight=s.positive_weight,
            photo_weight=s.photo_weight,
        )
    else:
        from facetrack.model import compile_model

        compile_model(model, optimizer=optimizer, loss_weights=loss_weights)


def _grid(model: Any) -> tuple[int, int]:
    """``(Gh, Gw)`` of a dense model's (or head's) ``class`` output."""
    out = model.output["class"] if isinstance(model.output, dict) else model.outputs[0]
    return int(out.shape[1]), int(out.shape[2])


class CompactTrainer(Trainer):
    """The compact backbone, end to end on the pixel cache, with the weight average.

    Dense head: each epoch mirrors half of the images and adds ``mosaic``
    mosaics (:func:`facetrack.data.dense_pixel_dataset`). One-box head: a
    random crop keeping the face (``jitter``) and mirror. Both heads are saved
    mirror-averaged (``mirror_average``; the dense head cell by cell), and
    validated so each epoch.
    """

    def for_saving(self, full: Any) -> Any:
        from facetrack.model import with_mirror_average

        return with_mirror_average(full) if self.s.mirror_average else full

    def predict_images(self, model: Any) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
        # Validate what is saved: the best epoch, its recorded scores and the threshold then
        # belong to the mirror-averaged model (it shares the weights being trained).
        return super().predict_images(self.for_saving(model))

    def train(self, strategy: Any) -> None:
        from facetrack.model import build_model

        s = self.s
        if s.dense and float(s.mosaic) > 0:  # the epoch also holds the mosaics
            n = len(self.train_samples)
            self.n_batches = -(-(n + int(round(float(s.mosaic) * n))) // s.batch_size)
            self.loop.reporter.total = max(self.n_batches * s.epochs, 1)
        with strategy.scope():
            model = build_model("compact", None, s.input_hw, head=s.head)
            steps = self.n_batches * s.epochs
            lr = keras.optimizers.schedules.CosineDecay(
                0.0,
                steps,
                alpha=0.02,
                warmup_target=float(s.learning_rate),
                warmup_steps=min(self.n_batches, steps // 10),
            )
            opt = keras.optimizers.AdamW(lr, weight_decay=float(s.weight_decay))
            _compile(model, s, self.loss_weights(), opt)
        self.run.log(f"compact model ({s.head} head): {model.count_params():,} parameters")
        self.final_model = model
        pixels = cached_pixels(self.train_samples, s.input_hw, self.cache_dir, self.cb)
        if s.dense:
            ds = dense_pixel_dataset(
                pixels, self.train_samples, s.batch_size, _grid(model), s.seed, s.flip, float(s.mosaic)
            )
        else:
            ds = pixel_dataset(
                pixels, self.train_samples, s.batch_size, True, s.seed, flip=s.flip, jitter=float(s.jitter)
            )
        if float(s.ema_decay) > 0:
            self.loop.average = WeightAverage(float(s.ema_decay))
        self.loop.fit(model, ds, self.n_batches, s.epochs, self.predict_images(model), "train")


class Vgg16Trainer(Trainer):
    """VGG16: the head on cached features, then (``fine_tune``) block5 end to end on images."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        s = self.s
        self.ft_epochs = int(s.fine_tune_epochs) if s.fine_tune else 0
        self.epochs = int(s.epochs) + self.ft_epochs
        self.run.epochs = self.epochs
        self.loop.reporter.total = max(self.n_batches * self.epochs, 1)
        self.loop.reporter.epochs = self.epochs
        self.phase = "head"
        self.feature_model: Any = None

    def full_model(self, fitted: Any) -> Any:
        from facetrack.model import compose

        return compose(self.feature_model, fitted) if self.phase == "head" else fitted

    def _features(self, s: TrainSettings) -> tuple[np.ndarray, np.ndarray]:
        self.run.log(f"computing VGG16 features of {len(self.train_samples)} training images (cached)")
        t0 = time.time()
        extractor = fast_feature_model(self.feature_model, s)
        if isinstance(extractor, LiteRTFeatures):
            self.run.log("computing features with LiteRT int8 kernels (about 3x faster than float32)")
        elif extractor is not self.feature_model:
            self.run.log("computing features in bfloat16 (this CPU has native bfloat16: about 2x faster)")
        ftrain = cached_features(extractor, self.train_samples, s, self.cache_dir, self.cb, "features")
        fval = cached_features(extractor, self.val_samples, s, self.cache_dir, self.cb, "val_features")
        self.run.log(f"features ready in {time.time() - t0:.1f}s ({ftrain.shape[1:]} per image)")
        return ftrain, fval

    def _finish_head(self, strategy: Any, head_model: Any) -> None:
        """The full model with the head's best weights; those become the best weights."""
        from facetrack.model import compose

        if self.loop.best_weights is not None:
            head_model.set_weights(self.loop.best_weights)
        with strategy.scope():
            self.final_model = compose(self.feature_model, head_model)
        self.loop.best_weights = self.final_model.get_weights()

    def train(self, strategy: Any) -> None:
        from facetrack.model import build_parts

        s = self.s
        with strategy.scope():
            self.feature_model, head_model = build_parts("vgg16", s.weights, s.input_hw, s.head)
            _compile(head_model, s, self.loss_weights(), keras.optimizers.Adam(float(s.learning_rate)))
        grid = _grid(head_model) if s.dense else None
        ftrain, fval = self._features(s)
        ds = feature_dataset(ftrain, self.train_samples, s.batch_size, shuffle=True, seed=s.seed, grid=grid)

        def predict_val() -> tuple[np.ndarray, np.ndarray]:
            batches = feature_dataset(fval, self.val_samples, s.batch_size, False, 0, grid).map(
                lambda x, y: x
            )
            return unpack_predictions(head_model.predict(batches, verbose=0))

        try:
            self.loop.fit(head_model, ds, self.n_batches, s.epochs, predict_val, "head")
        finally:
            self._finish_head(strategy, head_model)
        if s.fine_tune:
            self._fine_tune(strategy, head_model)

    def _fine_tune(self, strategy: Any, head_model: Any) -> None:
        from facetrack.model import compose

        s = self.s
        self.run.log("fine-tuning block5 of VGG16")
        base = [layer for layer in self.feature_model.layers if isinstance(layer, keras.Model)][0]
        self.feature_model.trainable = True
        base.trainable = True
        for layer in base.layers:
            layer.trainable = layer.name.startswith("block5")
        with strategy.scope():
            full = compose(self.feature_model, head_model)
            opt = keras.optimizers.Adam(float(s.fine_tune_learning_rate))
            _compile(full, s, self.loss_weights(), opt)
        self.final_model = full
        self.phase = "fine_tune"
        self.loop.bad_epochs = 0
        pixels = cached_pixels(self.train_samples, s.input_hw, self.cache_dir, self.cb)
        if s.dense:
            ds_img = dense_pixel_dataset(
                pixels, self.train_samples, s.batch_size, _grid(full), s.seed, s.flip
            )
        else:
            ds_img = pixel_dataset(pixels, self.train_samples, s.batch_size, True, s.seed, flip=s.flip)
        self.loop.fit(full, ds_img, self.n_batches, self.ft_epochs, self.predict_images(full), "fine_tune")


TRAINERS: dict[str, type[Trainer]] = {"compact": CompactTrainer, "vgg16": Vgg16Trainer}


def make_strategy(name: str) -> Any:
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return _multiworker_strategy()
    return tf.distribute.get_strategy()


def _multiworker_strategy() -> Any:
    """``MultiWorkerMirroredStrategy`` that Keras 3's ``fit`` can use (keras-team/keras#20585).

    ``fit`` asks the strategy to reduce its first batch, a nest of per-replica
    values, in one call, and each scalar loss along axis 0; this strategy can
    do neither. Its ``reduce`` here takes each value alone, scalars across
    workers only.
    """
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    plain_reduce = strategy.reduce

    def one(reduce_op: Any, v: Any, axis: Any) -> Any:
        local = strategy.experimental_local_results(v)[0]
        return plain_reduce(reduce_op, v, axis=None if local.shape.rank == 0 else axis)

    def reduce(reduce_op: Any, value: Any, axis: Any = None) -> Any:
        return tf.nest.map_structure(lambda v: one(reduce_op, v, axis), value)

    strategy.reduce = reduce
    return strategy


def _save_best(trainer: Trainer, state: str, callbacks: TrainCallbacks) -> None:
    """Put the best weights in the final model, save it, its decoding settings and its TFLite export."""
    loop, run, s = trainer.loop, trainer.run, trainer.s
    model = trainer.final_model
    if model is None:
        return
    if loop.best_weights is None and state == "stopped":
        # Stopped before the first validation: validate what we have so that the file exists.
        scores, boxes = trainer.predict_images(model)()
        run.best_score = loop.validate(scores, boxes)["val_score"]
        run.best_epoch = loop.epoch
        loop.best_weights = model.get_weights()
    if loop.best_weights is None:
        return
    model.set_weights(loop.best_weights)
    model = trainer.for_saving(model)
    run.save_model(model)
    run.log(f"saved the best model (epoch {run.best_epoch}, validation score {run.best_score:.4f})")
    _save_decode_settings(model, trainer)
    if s.export_tflite:
        _export(model, run, callbacks)


def _save_decode_settings(model: Any, trainer: Trainer) -> None:
    """``decode.json``: the score threshold that serves faces and photos best on validation, and the NMS."""
    from facetrack.decode import DecodeSettings, save_decode_settings
    from facetrack.metrics import best_threshold

    s, run = trainer.s, trainer.run
    settings = DecodeSettings(threshold=THRESHOLD, nms_iou=float(s.nms_iou))
    if trainer.val_samples:
        scores, boxes = predict_samples(model, trainer.val_samples, s.input_hw, s.batch_size)
        dets = detections_of(scores, boxes, settings.replace(threshold=AP_THRESHOLD))
        settings = settings.replace(threshold=best_threshold(dets, truths_of(trainer.val_samples)))
    save_decode_settings(run.dir, settings)
    run.log(
        f"score threshold {settings.threshold:g} (chosen on the validation images), NMS IoU {settings.nms_iou:g}"
    )


def _export(model: Any, run: RunWriter, callbacks: TrainCallbacks) -> None:
    from facetrack.export import export_tflite
    from facetrack.runs import TFLITE_FILE

    callbacks.on_stage("export", 0, 1)
    try:
        export_tflite(model, run.dir / TFLITE_FILE)
        run.log(f"exported {TFLITE_FILE}")
    except Exception as exc:  # noqa: BLE001 - export failing must not lose the trained model
        log.warning("TFLite export failed: %s", exc)
        run.log(f"TFLite export failed ({type(exc).__name__}: {exc}); the Keras model is still usable")
    callbacks.on_stage("export", 1, 1)


def run_training(
    train_samples: Sequence[Sample],
    val_samples: Sequence[Sample],
    settings: TrainSettings,
    run: RunWriter,
    callbacks: TrainCallbacks,
    cache_dir: Path,
) -> str:
    """Train with ``settings.backbone``'s trainer, save the best model; returns "finished" or "stopped"."""
    keras.utils.set_random_seed(int(settings.seed))
    strategy = make_strategy(settings.strategy)
    trainer = TRAINERS[settings.backbone](train_samples, val_samples, settings, run, callbacks, cache_dir)
    state, message = "finished", ""
    try:
        trainer.train(strategy)
    except StopRequested:
        state, message = "stopped", "stopped on request"
        run.log("stop requested: kept the best weights so far")
    _save_best(trainer, state, callbacks)
    if not message:
        message = f"finished: best epoch {run.best_epoch}, validation score {run.best_score:.4f}"
    run.status(state, message)
    return state

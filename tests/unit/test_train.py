"""Tests of facetrack.train: run folder, callbacks, stop, feature cache, strategies."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from facetrack.cache import LiteRTFeatures, cached_pixels, feature_cache_key, prune_cache
from facetrack.data import Sample, jitter_batch, pixel_dataset
from facetrack.labels import Box
from facetrack.loop import WeightAverage, validation_losses
from facetrack.train import (
    CLI_BACKBONE,
    DEFAULT_BACKBONE,
    BatchProgress,
    EpochRecord,
    TrainCallbacks,
    TrainSettings,
    train,
)

REPO = Path(__file__).resolve().parents[2]


def make_synthetic(folder: Path, n: int, seed: int = 0, size: int = 48) -> list[Sample]:
    """Noise images; two of three have a bright ellipse 'face' with its known box."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        img = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
        box = None
        if i % 3:
            w = rng.uniform(0.3, 0.5)
            h = min(w * rng.uniform(0.9, 1.3), 0.6)
            x1, y1 = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
            centre = (int((x1 + w / 2) * size), int((y1 + h / 2) * size))
            cv2.ellipse(img, centre, (int(w * size / 2), int(h * size / 2)), 0, 0, 360, (230, 200, 170), -1)
            box = Box(x1, y1, x1 + w, y1 + h)
        path = folder / f"img{i:04d}.jpg"
        cv2.imwrite(str(path), img)
        out.append(Sample(path, box, f"s{i}"))
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    return make_synthetic(root / "train", 96, 0), make_synthetic(root / "val", 24, 1)


class Recorder(TrainCallbacks):
    def __init__(self, stop_after: int | None = None) -> None:
        self.batches: list[BatchProgress] = []
        self.epochs: list[EpochRecord] = []
        self.stages: list[tuple[str, int, int]] = []
        self.stop_after = stop_after

    def on_stage(self, name, done, total):
        self.stages.append((name, done, total))

    def on_batch(self, progress):
        self.batches.append(progress)

    def on_epoch(self, record):
        self.epochs.append(record)

    def should_stop(self):
        return self.stop_after is not None and len(self.batches) >= self.stop_after


def make_multi_synthetic(folder: Path, n: int, seed: int = 0, hw: tuple[int, int] = (48, 64)) -> list[Sample]:
    """Noise images with 0, 1 or 2 bright ellipse 'faces' (left and right halves) and their boxes."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    h, w = hw
    out = []
    for i in range(n):
        img = rng.integers(0, 80, (h, w, 3), dtype=np.uint8)
        boxes = []
        for half in range(i % 3):
            bw, bh = rng.uniform(0.18, 0.3), rng.uniform(0.3, 0.45)
            x1 = half * 0.5 + rng.uniform(0.02, 0.48 - bw)
            y1 = rng.uniform(0.05, 0.95 - bh)
            centre = (int((x1 + bw / 2) * w), int((y1 + bh / 2) * h))
            cv2.ellipse(img, centre, (int(bw * w / 2), int(bh * h / 2)), 0, 0, 360, (230, 200, 170), -1)
            boxes.append(Box(x1, y1, x1 + bw, y1 + bh))
        path = folder / f"img{i:04d}.jpg"
        cv2.imwrite(str(path), img)
        out.append(Sample(path, source_id=f"m{i}", boxes=tuple(boxes)))
    return out


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi")
    return make_multi_synthetic(root / "train", 96, 0), make_multi_synthetic(root / "val", 24, 1)


def test_dense_is_the_default_head_with_its_own_defaults():
    s = TrainSettings(backbone="compact")
    assert s.head == "dense" and s.input_size == [120, 160] and s.input_hw == (120, 160)
    assert s.class_loss_weight == 20.0 and s.ema_decay == 0.995
    single = TrainSettings(backbone="compact", head="single")
    assert single.input_size == 120 and single.class_loss_weight == 0.5 and single.ema_decay == 0.998
    assert TrainSettings(backbone="vgg16", input_size=96).input_size == 96
    assert TrainSettings.from_dict(s.to_dict()) == s
    with pytest.raises(ValueError, match="square"):
        TrainSettings(head="single", input_size=[96, 128])
    with pytest.raises(ValueError):
        TrainSettings(head="three")


def test_dense_targets_of_samples_mark_every_face(multi):
    from facetrack.data import targets

    tr, _ = multi
    two = [x for x in tr if len(x.boxes) == 2][:3]
    cls, box = targets(two, (6, 8))
    assert cls.shape == (3, 6, 8, 1) and box.shape == (3, 6, 8, 4)
    for i, sample in enumerate(two):
        for b in sample.boxes:  # each face's own cell is positive and holds its box
            r, c = int((b.y1 + b.y2) / 2 * 6), int((b.x1 + b.x2) / 2 * 8)
            assert cls[i, r, c, 0] == 1.0
            assert box[i, r, c] == pytest.approx(b.to_list())


def test_dense_pixel_dataset_targets_mirror_and_mosaic(tmp_path, multi):
    from facetrack.data import dense_pixel_dataset

    tr, _ = multi
    pixels = cached_pixels(tr[:20], (48, 64), tmp_path / "c", Recorder(), batch_size=8)
    assert pixels.shape == (20, 48, 64, 3)
    plain = list(dense_pixel_dataset(pixels, tr[:20], 8, (6, 8), seed=0, flip=False))
    assert [len(x) for x, _ in plain] == [8, 8, 4]
    faces = sum(len(x.boxes) for x in tr[:20])
    # every face has its positive cells (a cell shared by two faces counts once)
    assert sum(int((y["class"].numpy() == 1).any(axis=-1).sum() > 0) for _, y in plain) == 3
    assert sum(int((y["bbox"].numpy()[..., 2] > 0).sum()) for _, y in plain) >= faces
    mixed = list(dense_pixel_dataset(pixels, tr[:20], 8, (6, 8), seed=0, flip=True, mosaic=0.5))
    assert sum(len(x) for x, _ in mixed) == 30  # 20 images + 10 mosaics per epoch
    x, y = mixed[0]
    assert x.shape[1:] == (48, 64, 3) and y["class"].shape[1:] == (6, 8, 1)


def test_dense_compact_end_to_end(tmp_path, multi):
    """The default (dense) compact training: AP over every face on validation, checkpoint, decode.json."""
    from facetrack.decode import load_decode_settings
    from facetrack.evaluate import compute_metrics, predict_samples
    from facetrack.model import load_model

    tr, va = multi
    run = tmp_path / "run"
    s = TrainSettings(backbone="compact", weights="none", input_size=[48, 64], epochs=3, batch_size=16,
                      export_tflite=False, mosaic=0.25)  # fmt: skip
    rec = Recorder()
    result = train(tr, va, s, run, rec)
    assert result.state == "finished"
    assert len(rec.batches) == 3 * 8  # (96 + 24 mosaics) / 16 per epoch
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert {"val_ap50", "val_loss", "val_class_loss", "val_bbox_loss", "class_loss", "bbox_loss"} <= set(
        rows[0]
    )
    best = result.history[result.best_epoch - 1]
    # the checkpoint score: the mean of the faces' AP and the photos' presence accuracy (both matter)
    for r in result.history:
        assert r.val_score == pytest.approx((r.val_ap50 + r.val_presence_accuracy) / 2)
    assert np.isfinite(best.val_ap50)
    assert result.best_val_score == pytest.approx(max(r.val_score for r in result.history))
    model = load_model(run / "model.keras")
    assert model.input_shape == (None, 48, 64, 3) and model.output["class"].shape[1:] == (6, 8, 1)
    scores, boxes = predict_samples(model, va, (48, 64))
    assert compute_metrics(va, scores, boxes).ap50 == pytest.approx(
        best.val_ap50, abs=1e-4
    )  # the kept weights
    decode = load_decode_settings(run)
    assert (run / "decode.json").is_file() and 0.2 <= decode.threshold <= 0.8 and decode.nms_iou == s.nms_iou
    assert "score threshold" in (run / "train.log").read_text()


def test_settings_defaults_and_round_trip():
    assert TrainSettings().backbone == DEFAULT_BACKBONE == "vgg16"
    assert CLI_BACKBONE == "compact"
    c = TrainSettings(backbone="compact")
    v = TrainSettings(backbone="vgg16")
    assert c.epochs and v.epochs and c.learning_rate and c.batch_size and c.patience
    assert TrainSettings.from_dict({**c.to_dict(), "unknown": 1}) == c
    assert TrainSettings(backbone="compact", weights=None).weights == "none"
    with pytest.raises(ValueError):
        TrainSettings(backbone="resnet")
    with pytest.raises(ValueError):
        TrainSettings(strategy="tpu")


def test_compact_end_to_end(tmp_path, data):
    from facetrack.model import load_model

    tr, va = data
    run = tmp_path / "runs" / "r1"
    rec = Recorder()
    s = TrainSettings(
        backbone="compact", head="single", weights="none", input_size=32, epochs=4, batch_size=16, patience=10
    )
    result = train(tr, va, s, run, rec)
    assert result.state == "finished"
    for name in ("settings.json", "history.csv", "model.keras", "train.log", "status.json"):
        assert (run / name).is_file(), name
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert len(rows) == 4 == len(result.history) == len(rec.epochs)
    assert set(rows[0]) >= {
        "epoch",
        "loss",
        "class_loss",
        "bbox_loss",
        "val_loss",
        "val_score",
        "val_mean_iou",
    }
    assert result.history[-1].loss < result.history[0].loss
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished" and status["epoch"] == 4 and status["pid"] == os.getpid()
    assert status["best_epoch"] == result.best_epoch
    assert status["best_val_score"] == pytest.approx(max(r.val_score for r in result.history))
    settings = json.loads((run / "settings.json").read_text())
    assert settings["settings"]["backbone"] == "compact" and settings["counts"]["train"] == len(tr)
    assert len(rec.batches) == 4 * 6  # 96 images / 16
    assert rec.batches[-1].eta_seconds is not None and rec.batches[-1].batches == 6
    model = load_model(run / "model.keras")
    assert model.input_shape == (None, 32, 32, 3)
    assert "mirror_image" in [layer.name for layer in model.layers]  # saved mirror-averaged
    log = (run / "train.log").read_text()
    assert "epoch 4/4" in log and "saved the best model" in log


def test_compact_keeps_the_validated_averaged_weights(tmp_path, data):
    """With weight averaging, the saved model is the one whose validation score was recorded as best."""
    from facetrack.evaluate import compute_metrics, predict_samples, validation_score
    from facetrack.model import load_model

    tr, va = data
    s = TrainSettings(
        backbone="compact", head="single", weights="none", input_size=32, epochs=2, batch_size=16,
        export_tflite=False, mirror_average=False, ema_decay=0.9,
    )  # fmt: skip
    result = train(tr, va, s, tmp_path / "run")
    model = load_model(tmp_path / "run" / "model.keras")
    assert "mirror_image" not in [layer.name for layer in model.layers]
    scores, boxes = predict_samples(model, va, 32)
    best = result.history[result.best_epoch - 1]
    assert validation_score(va, scores, boxes, 0.5) == pytest.approx(best.val_score, abs=1e-4)
    # the validation losses move with every weight, so they tell the averaged weights from the last ones
    bce, loc = validation_losses(va, scores, boxes, s)
    assert (bce, loc) == (
        pytest.approx(best.val_class_loss, abs=1e-4),
        pytest.approx(best.val_bbox_loss, abs=1e-4),
    )
    assert (compute_metrics(va, scores, boxes, 0.5).ap50 or 0.0) == pytest.approx(best.val_ap50, abs=1e-4)


def test_stop_after_one_batch_keeps_a_model(tmp_path, data):
    tr, va = data
    run = tmp_path / "run"
    rec = Recorder(stop_after=1)
    s = TrainSettings(
        backbone="compact", weights="none", input_size=32, export_tflite=False, epochs=3, batch_size=16
    )
    result = train(tr, va, s, run, rec)
    assert result.state == "stopped"
    assert len(rec.batches) == 1
    assert (run / "model.keras").is_file()
    assert json.loads((run / "status.json").read_text())["state"] == "stopped"


def test_vgg16_feature_cache_is_reused(tmp_path, data):
    tr, va = data
    cache = tmp_path / "cache"
    s = TrainSettings(
        backbone="vgg16", weights="none", input_size=32, export_tflite=False, epochs=2, batch_size=16
    )  # the dense head: block5_conv3 features, a 2x2 grid at 32x32
    first = Recorder()
    r1 = train(tr, va, s, tmp_path / "a", first, cache_dir=cache)
    assert r1.state == "finished" and (tmp_path / "a" / "model.keras").is_file()
    key = feature_cache_key(tr, f"vgg16/{LiteRTFeatures.precision}/dense", "none", 32)  # LiteRT fills it
    feats = cache / key / "features.npy"
    assert feats.is_file() and np.load(feats, mmap_mode="r").shape == (len(tr), 2, 2, 512)
    mtime = feats.stat().st_mtime_ns
    assert [st for st in first.stages if st[0] == "features"][0] == ("features", 0, len(tr))
    second = Recorder()
    train(tr, va, s, tmp_path / "b", second, cache_dir=cache)
    assert feats.stat().st_mtime_ns == mtime
    # reused: reported done at once, no incremental progress
    assert [st for st in second.stages if st[0] == "features"] == [("features", len(tr), len(tr))]
    # default cache location is the project's cache folder (runs/<run> -> ../../cache/features)
    proj = tmp_path / "proj"
    train(
        tr,
        va,
        TrainSettings(backbone="vgg16", weights="none", input_size=32, export_tflite=False, epochs=1),
        proj / "runs" / "x",
    )
    assert (proj / "cache" / "features" / key / "done.json").is_file()


def test_cache_key_changes_with_files(tmp_path, data):
    tr, _ = data
    k1 = feature_cache_key(tr, "vgg16", "none", 32)
    assert k1 != feature_cache_key(tr, "vgg16", "none", 64)
    assert k1 != feature_cache_key(tr[:-1], "vgg16", "none", 32)
    copy = make_synthetic(tmp_path / "copy", 3)
    k = feature_cache_key(copy, "vgg16", "none", 32)
    os.utime(copy[0].path, ns=(1, 1))
    assert feature_cache_key(copy, "vgg16", "none", 32) != k


def test_vgg16_fine_tune_runs(tmp_path, data):
    tr, va = data
    s = TrainSettings(
        backbone="vgg16",
        head="single",
        weights="none",
        input_size=32,
        export_tflite=False,
        epochs=1,
        fine_tune=True,
        fine_tune_epochs=1,
        batch_size=32,
    )
    import keras

    from facetrack.evaluate import predict_samples, validation_score
    from facetrack.model import build_parts, load_model

    rec = Recorder()
    result = train(tr[:32], va, s, tmp_path / "ft", rec, cache_dir=tmp_path / "c")
    assert [r.phase for r in result.history] == ["head", "fine_tune"]
    assert result.state == "finished"
    # one batch per epoch, both phases counted in the same run of 2 epochs
    assert [(b.phase, b.epoch, b.epochs) for b in rec.batches] == [("head", 1, 2), ("fine_tune", 2, 2)]
    # the fine-tuning epoch trained on images: a loss of its own, and validated like the head epoch
    assert np.isfinite(result.history[1].loss) and result.history[1].loss != result.history[0].loss
    model = load_model(tmp_path / "ft" / "model.keras")
    scores, boxes = predict_samples(model, va, 32)
    best = result.history[result.best_epoch - 1]
    assert validation_score(va, scores, boxes, 0.5) == pytest.approx(best.val_score, abs=1e-4)
    # only block5 was unfrozen: blocks 1-4 keep their initial weights (same seed, same init)
    keras.utils.set_random_seed(s.seed)
    initial, _ = build_parts("vgg16", "none", 32)
    start, saved = _layer_weights(initial), _layer_weights(model)
    for name in ("block1_conv1", "block4_conv3"):
        assert all(np.array_equal(a, b) for a, b in zip(start[name], saved[name], strict=True)), name
    block5_moved = not all(
        np.array_equal(a, b) for a, b in zip(start["block5_conv3"], saved["block5_conv3"], strict=True)
    )
    assert block5_moved == (result.best_epoch == 2)


def _layer_weights(model) -> dict[str, list[np.ndarray]]:
    """Weights of every layer inside ``model`` and its nested models, by layer name."""
    out: dict[str, list[np.ndarray]] = {}
    for layer in model.layers:
        if hasattr(layer, "layers"):
            out.update(_layer_weights(layer))
        else:
            out[layer.name] = [np.asarray(w) for w in layer.get_weights()]
    return out


def test_failure_is_recorded(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(ValueError, match="no training images"):
        train([], [], TrainSettings(backbone="compact"), run)
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and "no training images" in status["message"]


def test_mirrored_strategy_on_two_cpu_devices(tmp_path, data):
    tr, va = data
    listing = tmp_path / "samples.json"
    listing.write_text(
        json.dumps(
            {
                k: [[str(s.path), s.box.to_list() if s.box else None] for s in v]
                for k, v in (("tr", tr), ("va", va))
            }
        )
    )
    script = textwrap.dedent(
        f"""
        import json, sys
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from pathlib import Path
        from facetrack.data import Sample
        from facetrack.labels import Box
        from facetrack.train import TrainSettings, train
        from facetrack.trainer import make_strategy
        assert make_strategy("mirrored").num_replicas_in_sync == 2
        d = json.loads(Path({str(listing)!r}).read_text())
        mk = lambda rows: [Sample(Path(p), Box(*b) if b else None) for p, b in rows]
        s = TrainSettings(backbone="compact", weights="none", input_size=[32, 48], export_tflite=False, epochs=1, batch_size=16, strategy="mirrored")
        r = train(mk(d["tr"]), mk(d["va"]), s, Path({str(tmp_path / "run")!r}))
        print("STATE", r.state, len(r.history))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=240
    )
    assert "STATE finished 1" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-4000:]


def test_litert_features_match_keras(tmp_path):
    from facetrack.model import build_parts

    feature_model, _ = build_parts("vgg16", "none", 32)
    x = np.random.default_rng(3).uniform(0, 255, (11, 32, 32, 3)).astype(np.float32)
    ref = feature_model(x, training=False).numpy()
    fast = LiteRTFeatures(feature_model, batch_size=4)  # 11 = 4 + 4 + 3 (padded)
    out = fast(x)
    assert out.shape == ref.shape == (11, 1, 1, 512)
    rel = np.abs(out - ref).mean() / np.abs(ref).mean()
    assert rel < 0.05, rel
    # each image's features are its own (padding and batching do not mix images)
    assert np.allclose(fast(x[5:6]), out[5:6], rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_pixel_cache_is_the_evaluation_resize_and_is_reused(tmp_path, data):
    from facetrack.data import image_dataset

    tr, _ = data
    cache = tmp_path / "cache"
    rec = Recorder()
    pixels = cached_pixels(tr[:20], 32, cache, rec, batch_size=8)
    assert pixels.dtype == np.uint8 and pixels.shape == (20, 32, 32, 3)
    ref = np.concatenate([b.numpy() for b in image_dataset(tr[:20], 32, 8)])
    assert np.abs(pixels.astype(np.float32) - ref).max() <= 0.5 + 1e-3
    (folder,) = [d for d in cache.iterdir() if d.is_dir()]
    mtime = (folder / "pixels.npy").stat().st_mtime_ns
    again = Recorder()
    cached_pixels(tr[:20], 32, cache, again, batch_size=8)
    assert (folder / "pixels.npy").stat().st_mtime_ns == mtime
    assert again.stages == [("images", 20, 20)]


def test_interrupted_pixel_cache_leaves_nothing(tmp_path, data):
    from facetrack.cache import StopRequested

    tr, _ = data
    cache = tmp_path / "cache"
    rec = Recorder(stop_after=0)  # asks to stop at the first check
    with pytest.raises(StopRequested):
        cached_pixels(tr[:20], 32, cache, rec, batch_size=8)
    assert not list(cache.rglob("*.npy")) and not list(cache.rglob("done.json"))


def test_cache_keeps_the_two_newest_entries_of_a_kind(tmp_path):
    for i, kind in enumerate(["pixels", "pixels", "features", "pixels"]):
        folder = tmp_path / f"k{i}"
        folder.mkdir()
        (folder / "done.json").write_text(json.dumps({"kind": kind, "created": 100 + i}))
    prune_cache(tmp_path, "pixels", keep=2)
    assert sorted(d.name for d in tmp_path.iterdir()) == ["k1", "k2", "k3"]


def test_jitter_moves_boxes_with_the_face():
    size = 40
    img = np.zeros((size, size, 3), np.uint8)
    img[12:28, 12:24] = 255  # the face: x 12..24, y 12..28 of 40 -> [0.3, 0.3, 0.6, 0.7]
    images = np.stack([img] * 14)
    boxes = np.array([[0.3, 0.3, 0.6, 0.7]] * 12 + [[0, 0, 0, 0]] * 2, np.float32)
    out, moved_boxes = jitter_batch(images, boxes, np.random.default_rng(0), flip=True, jitter=0.3)
    assert out.dtype == np.float32 and out.shape == images.shape
    moved = 0
    for im, b in zip(out[:12], moved_boxes[:12], strict=True):
        x1, y1, x2, y2 = (np.array(b) * size).round().astype(int)
        inside = im[y1 + 2 : y2 - 2, x1 + 2 : x2 - 2].mean()
        mask = np.ones((size, size), bool)
        mask[max(y1 - 2, 0) : y2 + 2, max(x1 - 2, 0) : x2 + 2] = False
        assert inside > 150 and im[mask].mean() < 60, (b, inside, im[mask].mean())
        moved += not np.allclose(b, [0.3, 0.3, 0.6, 0.7], atol=0.01)
    assert moved >= 6
    assert np.all(moved_boxes[12:] == 0)  # no face stays no face
    # without jitter or flip the pixels pass through unchanged
    same, same_boxes = jitter_batch(images, boxes, np.random.default_rng(0), flip=False, jitter=0.0)
    assert np.array_equal(same, images.astype(np.float32)) and np.array_equal(same_boxes, boxes)


def test_pixel_dataset_batches_and_targets(tmp_path, data):
    tr, _ = data
    pixels = cached_pixels(tr[:20], 32, tmp_path / "c", Recorder(), batch_size=8)
    ds = pixel_dataset(pixels, tr[:20], 8, shuffle=False, seed=0)
    batches = list(ds)
    assert [len(x) for x, _ in batches] == [8, 8, 4]
    x, y = batches[0]
    assert np.array_equal(x.numpy(), pixels[:8].astype(np.float32))
    assert y["class"].numpy()[:, 0].tolist() == [1.0 if s.box else 0.0 for s in tr[:8]]


class _Weights:
    def __init__(self, values):
        self.values = values

    def get_weights(self):
        return [np.array(v, np.float32) for v in self.values]


def test_weight_average():
    avg = WeightAverage(0.5)
    avg.update(_Weights([[0.0, 0.0], [4.0]]))  # first update: a copy
    assert [w.tolist() for w in avg.weights] == [[0.0, 0.0], [4.0]]
    avg.update(_Weights([[2.0, 2.0], [0.0]]))  # decay min(0.5, 3/12) = 0.25
    assert np.allclose(avg.weights[0], [1.5, 1.5]) and np.allclose(avg.weights[1], [1.0])


def test_no_time_left_until_it_means_something():
    from facetrack.loop import ETA_MIN_BATCHES, BatchReporter

    class _Model:
        stop_training = False

    reporter = BatchReporter(Recorder(), total_batches=100, epochs=1)
    reporter.set_model(_Model())
    reporter.epoch, reporter.batches = 1, 100
    for i in range(ETA_MIN_BATCHES + 1):  # the first batch (tracing) is not timed
        reporter.on_train_batch_end(i, {"loss": 1.0})
    assert reporter.cb.batches[-1].eta_seconds is None  # a few fast batches are not an estimate yet
    reporter.t_first -= 10.0  # as if those batches had taken 10 s
    assert reporter.eta(time.time()) == pytest.approx(
        10.0 / ETA_MIN_BATCHES * (100 - reporter.done), rel=0.01
    )

"""Training cost: the tutorial's way against FaceTrack's, at the tutorial's scale, in one run.

    python benchmarks/train.py [--photos 90] [--copies 60] [--epochs 10] [--steps 8] [--data DIR]

From ``--photos`` labelled photos of ``../shared/data/faces`` (two thirds with a
face) it builds a project, then times FaceTrack's whole way to an exported
model:

1. split (70/15/15 by photo) and augment the train split (``--copies`` each,
   worker processes);
2. train VGG16 (random weights: no download; the speed is the same as with
   ImageNet weights) frozen: backbone features computed once per image and
   cached, then the heads trained for ``--epochs`` epochs (no early stop, so
   both ways run the same number of epochs);
3. export ``model.tflite``.

The tutorial's way (augment every split in a plain loop, then train VGG16 end
to end with ``model.fit(train, epochs, validation_data=val)`` at batch 8, the
validation photos augmented like the training ones) is measured, not guessed,
on the same machine in the same run: its augmentation loop is timed on part of
the photos, its training step and its validation step over ``--steps`` batches
of 8 each after a warm-up; all are then EXTRAPOLATED linearly to the full data
set and epochs (training the tutorial's way for real takes hours here). It also compares augmentation
throughput: worker processes against a plain loop.

Prints a table and ends with one JSON line:
``{"tutorial_s", "ours_s", "speedup", "peak_rss_mb", ...}``.
``--images N`` instead generates about N augmented training images (for the
memory check: peak RSS while training on 10,000 images).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from facetrack.augment import AugmentSettings, augment_image, generate  # noqa: E402
from facetrack.images import read_rgb  # noqa: E402
from facetrack.importer import import_folder  # noqa: E402
from facetrack.labels import read_labelme  # noqa: E402
from facetrack.tasks import load_samples  # noqa: E402
from facetrack.workspace import create_project  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "faces"


def peak_rss_mb() -> float:
    """Peak resident memory of this process and its finished children, in MiB."""
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(me, kids) / 1024.0


def pick_photos(data: Path, n: int, tmp: Path) -> Path:
    """A folder with ``n`` photos (two thirds with a face) and their labelme files."""
    images = sorted((data / "images").iterdir())
    faces = [p for p in images if p.name.startswith("wf_")]
    others = [p for p in images if not p.name.startswith("wf_")]
    n_faces = round(n * 2 / 3)
    chosen = (
        faces[:: max(1, len(faces) // n_faces)][:n_faces]
        + others[:: max(1, len(others) // (n - n_faces))][: n - n_faces]
    )
    src = tmp / "src"
    (src / "images").mkdir(parents=True)
    (src / "labels").mkdir()
    for p in chosen:
        shutil.copy(p, src / "images" / p.name)
        shutil.copy(data / "labels" / f"{p.stem}.json", src / "labels" / f"{p.stem}.json")
    return src


def tutorial_model():
    """The tutorial's model: VGG16 (no top) + global max pooling + two dense heads, inputs /255."""
    import keras
    from keras import layers

    inp = layers.Input((120, 120, 3))
    vgg = keras.applications.VGG16(include_top=False, weights=None)(inp)
    f1 = layers.GlobalMaxPooling2D()(vgg)
    class1 = layers.Dense(2048, activation="relu")(f1)
    class2 = layers.Dense(1, activation="sigmoid")(class1)
    f2 = layers.GlobalMaxPooling2D()(vgg)
    regress1 = layers.Dense(2048, activation="relu")(f2)
    regress2 = layers.Dense(4, activation="sigmoid")(regress1)
    model = keras.Model(inputs=inp, outputs=[class2, regress2])

    def localization_loss(y_true, yhat):
        import tensorflow as tf

        delta_coord = tf.reduce_sum(tf.square(y_true[:, :2] - yhat[:, :2]))
        h_true = y_true[:, 3] - y_true[:, 1]
        w_true = y_true[:, 2] - y_true[:, 0]
        h_pred = yhat[:, 3] - yhat[:, 1]
        w_pred = yhat[:, 2] - yhat[:, 0]
        delta_size = tf.reduce_sum(tf.square(w_true - w_pred) + tf.square(h_true - h_pred))
        return delta_coord + delta_size

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=1e-4),
        loss=[keras.losses.BinaryCrossentropy(), localization_loss],
        loss_weights=[0.5, 1.0],
    )
    return model


def time_tutorial_step(steps: int) -> tuple[float, float]:
    """Median seconds of one end-to-end training step and of one validation step (batch 8, 120x120).

    The tutorial's ``model.fit(train, epochs=10, validation_data=val)`` runs
    both every epoch: a training step on each train batch, then a forward pass
    with the losses (``test_on_batch``) on each validation batch.
    """
    model = tutorial_model()
    rng = np.random.default_rng(0)
    x = rng.random((8, 120, 120, 3), dtype=np.float32)
    y_class = rng.integers(0, 2, (8, 1)).astype(np.float32)
    y_box = np.sort(rng.random((8, 4), dtype=np.float32), axis=1)

    def median_time(fn) -> float:
        times = []
        for i in range(steps + 2):
            t = time.perf_counter()
            fn(x, [y_class, y_box])
            if i >= 2:  # the first calls build and compile the graph
                times.append(time.perf_counter() - t)
        return statistics.median(times)

    return median_time(model.train_on_batch), median_time(model.test_on_batch)


def time_tutorial_augment(src: Path, settings: AugmentSettings, photos: int) -> float:
    """Seconds per photo for the tutorial's plain loop (load, augment ``copies`` times, write JPEG + JSON)."""
    import cv2

    paths = sorted((src / "images").iterdir())[:photos]
    out = Path(tempfile.mkdtemp(prefix="tutorial-aug-"))
    t = time.perf_counter()
    for p in paths:
        rgb = read_rgb(p)
        label = read_labelme(src / "labels" / f"{p.stem}.json")  # the box goes through the pipeline too
        face = label.boxes[0] if label.boxes else None
        for k, (img, box) in enumerate(augment_image(rgb, face, settings, settings.copies_per_image, seed=1)):
            cv2.imwrite(str(out / f"{p.stem}.{k}.jpg"), img)
            (out / f"{p.stem}.{k}.json").write_text(
                json.dumps({"bbox": None if box is None else box.to_list()})
            )
    seconds = (time.perf_counter() - t) / len(paths)
    shutil.rmtree(out, ignore_errors=True)
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=int, default=90)
    ap.add_argument("--copies", type=int, default=60)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--steps", type=int, default=8, help="tutorial training steps to time")
    ap.add_argument(
        "--images", type=int, default=0, help="about this many augmented images instead (memory check)"
    )
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--keep", action="store_true", help="keep the temporary project")
    args = ap.parse_args()
    if not (args.data / "images").is_dir():
        sys.exit(f"face data not found at {args.data} (needs ../shared/data/faces)")
    if args.images:
        args.photos = min(1200, max(90, args.images // 20))
        args.copies = max(1, round(args.images / (args.photos * 0.7)))

    tmp = Path(tempfile.mkdtemp(prefix="facetrack-bench-"))
    src = pick_photos(args.data, args.photos, tmp)
    project = create_project("bench", root=tmp / "workspace")
    import_folder(project, src)
    settings = AugmentSettings(copies_per_image=args.copies, output_size=120)

    # -- ours ---------------------------------------------------------------------
    # As in the app and the command line, augmentation runs before TensorFlow is
    # loaded (its worker processes are forked; a process holding TensorFlow's
    # threads must spawn them, which costs seconds). The clock includes
    # importing TensorFlow and Keras for training.
    assert "tensorflow" not in sys.modules
    t0 = time.perf_counter()
    t = time.perf_counter()
    generate(project, settings)
    aug_s = time.perf_counter() - t
    from facetrack.train import TrainCallbacks, TrainSettings, train

    class StageClock(TrainCallbacks):
        """Times the export stage, which train() runs at the end (as the app and the CLI do)."""

        def __init__(self) -> None:
            self.started: dict[str, float] = {}
            self.seconds: dict[str, float] = {}

        def on_stage(self, name: str, done: int, total: int) -> None:
            if done == 0:
                self.started[name] = time.perf_counter()
            elif done == total and name in self.started:
                self.seconds[name] = time.perf_counter() - self.started[name]

    train_samples = load_samples(project, "train")
    val_samples = load_samples(project, "val")
    run_dir = project.runs_dir / "bench-vgg16"
    t = time.perf_counter()
    clock = StageClock()
    result = train(
        train_samples,
        val_samples,
        TrainSettings(backbone="vgg16", weights="none", epochs=args.epochs, patience=args.epochs),
        run_dir,
        clock,
        cache_dir=project.cache_dir / "features",
    )
    export_s = clock.seconds.get("export", float("nan"))
    train_s = time.perf_counter() - t - export_s
    if not (run_dir / "model.tflite").is_file():
        sys.exit("the export to model.tflite failed; see " + str(run_dir / "train.log"))
    ours_s = time.perf_counter() - t0
    feature_s = next(
        (
            float(line.split("features ready in ")[1].split("s")[0])
            for line in (run_dir / "train.log").read_text().splitlines()
            if "features ready in " in line
        ),
        None,
    )
    n_train = len(train_samples)
    aug_rate_workers = (n_train + len(val_samples)) / aug_s

    # -- the tutorial's way, measured then extrapolated ---------------------------
    sample_photos = min(10, args.photos)
    per_photo = time_tutorial_augment(src, settings, sample_photos)
    tut_aug_s = per_photo * args.photos  # the tutorial augments every split
    aug_rate_loop = settings.copies_per_image / per_photo
    step_s, val_step_s = time_tutorial_step(args.steps)
    steps_per_epoch = int(np.ceil(n_train / 8))
    # The tutorial augments the validation photos too (the same number of copies each).
    val_photos = len({s.source_id for s in val_samples})
    val_steps_per_epoch = int(np.ceil(val_photos * args.copies / 8))
    tut_train_s = (step_s * steps_per_epoch + val_step_s * val_steps_per_epoch) * args.epochs
    tutorial_s = tut_aug_s + tut_train_s

    rss = peak_rss_mb()
    print(
        f"\nFaceTrack training benchmark: {args.photos} photos, {args.copies} copies each, {args.epochs} epochs"
    )
    print(
        f"train split: {n_train} augmented images, validation {len(val_samples)}; {os.cpu_count()} CPU cores\n"
    )
    print(f"{'step':44s} {'tutorial (s)':>14s} {'FaceTrack (s)':>14s}")
    print(f"{'augment':44s} {tut_aug_s:14.1f} {aug_s:14.1f}")
    print(f"{'train ' + str(args.epochs) + ' epochs':44s} {tut_train_s:14.1f} {train_s:14.1f}")
    if feature_s is not None:
        print(f"{'  of which backbone features (once)':44s} {'':14s} {feature_s:14.1f}")
    print(f"{'export .tflite':44s} {'':14s} {export_s:14.1f}")
    print(f"{'total':44s} {tutorial_s:14.1f} {ours_s:14.1f}")
    print(
        f"\ntutorial: one end-to-end step (batch 8) {step_s:.3f} s x {steps_per_epoch} steps, plus one validation "
        f"step {val_step_s:.3f} s x {val_steps_per_epoch} steps ({val_photos} photos x {args.copies} copies), "
        f"x {args.epochs} epochs (each step measured {args.steps} times after a warm-up; EXTRAPOLATED)"
    )
    print(
        f"augmentation: {aug_rate_workers:.0f} images/s with worker processes vs {aug_rate_loop:.0f} images/s in a plain loop ({aug_rate_workers / aug_rate_loop:.1f}x)"
    )
    print(f"best validation score {result.best_val_score:.3f} (random backbone weights: speed only)")
    print(f"peak RSS {rss:.0f} MiB\n")
    print(json.dumps({
        "tutorial_s": round(tutorial_s, 1), "ours_s": round(ours_s, 1), "speedup": round(tutorial_s / ours_s, 1),
        "peak_rss_mb": round(rss), "train_images": n_train, "epochs": args.epochs,
        "tutorial_step_s": round(step_s, 3), "tutorial_val_step_s": round(val_step_s, 3), "augment_images_per_s": round(aug_rate_workers),
        "augment_loop_images_per_s": round(aug_rate_loop), "features_s": feature_s,
    }))  # fmt: skip
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

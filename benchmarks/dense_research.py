"""Research: the dense (multi-face) compact detector on the reference photos, end to end.

    python benchmarks/dense_research.py [--height 120 --width 160] [--copies 8] [--epochs 10] ...

Reads ``../shared/data/faces`` (800 one-face + 400 no-face photos) and
``../shared/data/multi`` (150 photos with 2+ faces) from their ``boxes.json``,
splits them with :func:`facetrack.split.assign_split` (every photo its own
group; 70/15/15; the same split every time, multi photos on every side),
augments the train side with albumentations (every box follows; a face
keeping less than half its area is dropped), trains the dense compact model
(:mod:`facetrack.dense`) with ``model.fit``, and scores the test side with
:func:`facetrack.decode.decode` and :func:`facetrack.metrics.face_metrics`:
AP@0.5 over every face (all test photos pooled, and the multi photos alone),
presence accuracy, recall/precision at the threshold, mean IoU. With
``--latency`` it also times the LiteRT model on a 640x480 frame (resize,
infer, decode, draw). Ends with one JSON line. The configurations tried and
their figures are in ``benchmarks/README.md`` ("dense_research.py").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"

from facetrack.labels import Box, LabelError  # noqa: E402
from facetrack.split import assign_split  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import albumentations as A


def load_set(folder: Path, kind: str) -> list[dict]:
    """``[{"id", "path", "boxes": (K, 4) normalized, "kind"}]`` from a reference folder's boxes.json."""
    out = []
    for e in json.loads((folder / "boxes.json").read_text()):
        boxes = []
        for f in e["faces"]:
            try:
                boxes.append(Box.from_pixels(f, e["width"], e["height"]).to_list())
            except LabelError:
                continue
        path = folder / e["image"]
        out.append({"id": path.stem, "path": str(path), "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
                    "kind": kind})  # fmt: skip
    return out


def pipeline(h: int, w: int, seed: int, min_visibility: float, crop_min: float) -> A.Compose:
    """Train-side augmentation to ``h x w`` (the webcam's 4:3); boxes in albumentations format."""
    aspect = w / h
    return A.Compose(
        [
            A.Rotate(limit=(-10, 10), rotate_method="ellipse", border_mode=cv2.BORDER_REFLECT_101, p=0.4),
            A.Affine(scale=(0.55, 1.0), keep_ratio=True, border_mode=cv2.BORDER_CONSTANT, fill=114, p=0.3),
            A.OneOf(
                [
                    A.RandomResizedCrop(
                        size=(h, w), scale=(crop_min, 1.0), ratio=(aspect * 0.6, aspect * 1.4), p=0.8
                    ),
                    A.Resize(h, w, p=0.2),
                ],
                p=1.0,
            ),
            A.HorizontalFlip(p=0.5),
            A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
            A.RandomGamma(gamma_limit=(80, 120), p=0.3),
            A.RGBShift(r_shift_limit=15, g_shift_limit=15, b_shift_limit=15, p=0.3),
            A.GaussianBlur(blur_limit=(3, 5), p=0.1),
            A.ToGray(num_output_channels=3, p=0.15),
        ],
        bbox_params=A.BboxParams(
            format="albumentations",
            label_fields=["labels"],
            min_visibility=min_visibility,
            clip=True,
            filter_invalid_bboxes=True,
        ),  # fmt: skip
        seed=seed,
    )


def _read(path: str, h: int) -> np.ndarray:
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    limit = 3 * h
    if min(rgb.shape[:2]) > limit:
        s = limit / min(rgb.shape[:2])
        rgb = cv2.resize(
            rgb, (round(rgb.shape[1] * s), round(rgb.shape[0] * s)), interpolation=cv2.INTER_AREA
        )
    return rgb


def _augment_one(args: tuple) -> tuple[np.ndarray, list[np.ndarray]]:
    path, boxes, copies, h, w, seed, min_vis, crop_min = args
    rgb = _read(path, h)
    pipe = pipeline(h, w, seed, min_vis, crop_min)
    imgs, out_boxes = [], []
    for _ in range(copies):
        r = pipe(image=rgb, bboxes=boxes.reshape(-1, 4), labels=["face"] * len(boxes))
        imgs.append(r["image"])
        out_boxes.append(np.asarray(r["bboxes"], np.float32).reshape(-1, 4))
    return np.stack(imgs), out_boxes


def augment(
    items: list[dict], copies: int, multi_copies: int, h: int, w: int, args
) -> tuple[np.ndarray, list]:
    tasks = [
        (it["path"], it["boxes"], multi_copies if it["kind"] == "multi" else copies, h, w,
         (hash(it["id"]) + args.seed) % 2**31, args.min_visibility, args.crop_min)
        for it in items
    ]  # fmt: skip
    with ProcessPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(_augment_one, tasks, chunksize=8))
    x = np.concatenate([r[0] for r in results])
    boxes = [b for r in results for b in r[1]]
    return x, boxes


def plain(items: list[dict], h: int, w: int) -> np.ndarray:
    """Whole photos resized to ``w x h`` (what the detector does to a frame)."""
    return np.stack([cv2.resize(_read(it["path"], h), (w, h), interpolation=cv2.INTER_AREA) for it in items])


def detections(model, x: np.ndarray, decode_settings) -> list:
    """Every detection (threshold 0.05) of each image, decoded by the library's one function."""
    from facetrack.dense import predict_detections

    return predict_detections(model, x, decode_settings.replace(threshold=0.05))


def evaluate(model, x: np.ndarray, items: list[dict], decode_settings) -> dict:
    from facetrack.metrics import face_metrics

    dets = detections(model, x, decode_settings)
    truths = [it["boxes"] for it in items]
    result = {}
    for name, keep in (
        ("all", [True] * len(items)),
        ("multi", [it["kind"] == "multi" for it in items]),
        ("faces_set", [it["kind"] != "multi" for it in items]),
        ("no_crowd", [len(it["boxes"]) <= 20 for it in items]),
    ):
        d = [a for a, k in zip(dets, keep, strict=True) if k]
        t = [a for a, k in zip(truths, keep, strict=True) if k]
        m = face_metrics(d, t, threshold=decode_settings.threshold)
        result[name] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.to_dict().items()}
        # presence errors: a no-face photo with a detection, a face photo with none
        result[name]["no_face_photos_with_detection"] = sum(
            p.faces == 0 and p.false_alarms > 0 for p in m.per_image
        )
        result[name]["face_photos_without_detection"] = sum(
            p.faces > 0 and p.found + p.false_alarms == 0 for p in m.per_image
        )
    for thr in (0.3, 0.4, 0.5, 0.6, 0.7):
        m = face_metrics(dets, truths, threshold=thr)
        result[f"presence@{thr}"] = round(m.presence_accuracy, 4)
        result[f"recall@{thr}"] = round(m.recall or 0.0, 4)
        result[f"precision@{thr}"] = round(m.precision or 0.0, 4)
    return result


def live_latency(model, h: int, w: int, decode_settings, frames: int = 200) -> dict:
    """Median ms per 640x480 frame: resize, LiteRT invoke (2 threads), decode, draw."""
    import tempfile

    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from facetrack.decode import decode
    from facetrack.export import _saved_model_converter

    spec = tf.TensorSpec([1, h, w, 3], tf.float32, name="image")

    def serve(image):
        return model(image, training=False)

    with _saved_model_converter(model, serve, spec) as conv:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        data = conv.convert()
    path = Path(tempfile.mkdtemp()) / "dense.tflite"
    path.write_bytes(data)
    it = Interpreter(model_path=str(path), num_threads=2)
    it.allocate_tensors()
    inp = it.get_input_details()[0]["index"]
    outs = {tuple(d["shape"])[-1]: d["index"] for d in it.get_output_details()}
    frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), np.uint8)
    buf = np.empty((1, h, w, 3), np.float32)
    parts = {"resize": [], "infer": [], "decode": [], "draw": [], "total": []}
    for _ in range(frames):
        t0 = time.perf_counter()
        small = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
        np.copyto(buf[0], small[:, :, ::-1], casting="unsafe")
        t1 = time.perf_counter()
        it.set_tensor(inp, buf)
        it.invoke()
        sc, bx = it.get_tensor(outs[1]), it.get_tensor(outs[4])
        t2 = time.perf_counter()
        s, b = decode(sc[0], bx[0], decode_settings)
        t3 = time.perf_counter()
        for score, box in zip(s, b, strict=True):
            p = (box * [640, 480, 640, 480]).astype(int)
            cv2.rectangle(frame, (p[0], p[1]), (p[2], p[3]), (0, 255, 0), 2)
            cv2.putText(frame, f"{score:.2f}", (p[0], p[1]), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 255, 0), 1)
        t4 = time.perf_counter()
        for k, a, b_ in (
            ("resize", t0, t1),
            ("infer", t1, t2),
            ("decode", t2, t3),
            ("draw", t3, t4),
            ("total", t0, t4),
        ):
            parts[k].append((b_ - a) * 1000)
    return {k: round(float(np.median(v)), 3) for k, v in parts.items()} | {"tflite_kb": len(data) // 1024}


def main() -> None:  # noqa: C901 - a linear research script
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--height", type=int, default=120)
    ap.add_argument("--width", type=int, default=160)
    ap.add_argument("--copies", type=int, default=8)
    ap.add_argument("--multi-copies", type=int, default=24)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--radius", type=float, default=1.0)
    ap.add_argument("--center-share", type=float, default=0.5)
    ap.add_argument("--ignore-share", type=float, default=0.5)
    ap.add_argument("--gamma", type=float, default=2.0)
    ap.add_argument("--pos-weight", type=float, default=4.0)
    ap.add_argument("--class-weight", type=float, default=20.0)
    ap.add_argument("--min-visibility", type=float, default=0.5)
    ap.add_argument("--crop-min", type=float, default=0.3)
    ap.add_argument("--nms-iou", type=float, default=0.4)
    ap.add_argument("--mosaic", type=float, default=0.0, help="add this share of 2x2 mosaics")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--latency", action="store_true")
    ap.add_argument("--save", type=Path, help="save model.keras and decode.json in this folder")
    args = ap.parse_args()
    t_start = time.perf_counter()
    load0 = os.getloadavg()

    items = load_set(DATA / "faces", "faces") + load_set(DATA / "multi", "multi")
    split = assign_split({}, {it["id"]: it["id"] for it in items})
    train = [it for it in items if split[it["id"]] == "train"]
    test = [it for it in items if split[it["id"]] == "test"]
    h, w = args.height, args.width
    print(f"train {len(train)} photos ({sum(it['kind'] == 'multi' for it in train)} multi), "
          f"test {len(test)} ({sum(it['kind'] == 'multi' for it in test)} multi, "
          f"{sum(len(it['boxes']) for it in test)} faces); load {load0[0]:.1f}", flush=True)  # fmt: skip

    t0 = time.perf_counter()
    x, boxes = augment(train, args.copies, args.multi_copies, h, w, args)
    if args.mosaic > 0:
        from facetrack.dense import mosaic

        xm, bm = mosaic(x, boxes, int(args.mosaic * len(x)), args.seed)
        x, boxes = np.concatenate([x, xm]), boxes + bm
    t_aug = time.perf_counter() - t0
    print(f"augment: {len(x)} images in {t_aug:.0f} s, {sum(len(b) for b in boxes)} faces", flush=True)

    import keras

    from facetrack.data import dense_batches
    from facetrack.decode import DecodeSettings, save_decode_settings
    from facetrack.dense import TargetSettings, compile_dense, output_grid
    from facetrack.metrics import best_threshold
    from facetrack.model import build_model

    keras.utils.set_random_seed(args.seed)
    model = build_model("compact", None, (h, w), head="dense")
    grid = output_grid(model)
    tset = TargetSettings(radius=args.radius, center_share=args.center_share, ignore_share=args.ignore_share)
    steps = len(x) // args.batch
    lr = keras.optimizers.schedules.CosineDecay(
        0.0,
        steps * args.epochs,
        alpha=0.02,
        warmup_target=args.lr,
        warmup_steps=min(steps, steps * args.epochs // 10),
    )
    opt = keras.optimizers.AdamW(lr, weight_decay=0.05, use_ema=True, ema_momentum=0.995)
    compile_dense(
        model, opt, {"class": args.class_weight, "bbox": 1.0}, gamma=args.gamma, pos_weight=args.pos_weight
    )
    ds = dense_batches(x, boxes, args.batch, grid, tset, args.seed, drop_remainder=True)
    t0 = time.perf_counter()
    hist = model.fit(ds, epochs=args.epochs, verbose=2)
    t_train = time.perf_counter() - t0

    t0 = time.perf_counter()
    dset = DecodeSettings(threshold=0.5, nms_iou=args.nms_iou)
    val = [it for it in items if split[it["id"]] == "val"]
    thr = best_threshold(detections(model, plain(val, h, w), dset), [it["boxes"] for it in val])
    dset = dset.replace(threshold=thr)
    print(f"threshold chosen on the validation photos: {thr}", flush=True)
    xt = plain(test, h, w)
    result = evaluate(model, xt, test, dset)
    t_eval = time.perf_counter() - t0
    total = time.perf_counter() - t_start
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        model.save(args.save / "model.keras")
        save_decode_settings(args.save, dset)
    report = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "grid": grid,
        "train_images": len(x),
        "seconds": {
            "augment": round(t_aug, 1),
            "train": round(t_train, 1),
            "evaluate": round(t_eval, 1),
            "total": round(total, 1),
        },  # fmt: skip
        "load": [round(load0[0], 1), round(os.getloadavg()[0], 1)],
        "final_loss": {k: round(float(v[-1]), 4) for k, v in hist.history.items()},
        **result,
    }
    if args.latency:
        report["live_ms"] = live_latency(model, h, w, dset)
    print(f"AP50 all {result['all']['ap50']}, multi {result['multi']['ap50']}, faces-set {result['faces_set']['ap50']}; "
          f"presence {result['all']['presence_accuracy']}; total {total / 60:.1f} min")  # fmt: skip
    print(json.dumps(report))


if __name__ == "__main__":
    main()

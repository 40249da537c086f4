"""Quality of a backbone on the reference face set, through the real pipeline.

    python benchmarks/quality_compact.py [--data /work/shared/data/faces] [--copies 15]
        [--backbone compact] [--epochs N] [--out /tmp/facetrack_quality]

Split 70/15/15 (stratified, seeded), augment the train split with
``facetrack.augment.augment_image`` (``--copies`` per photo, 160x160 JPEGs),
val/test as plain 160x160 copies, train with ``facetrack.train.train``,
evaluate the test split with ``facetrack.evaluate.evaluate_run``. Prints the
metrics and the time of each step. The augmented set is reused when it
already exists for the same arguments (``--fresh`` rebuilds it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facetrack.data import Sample  # noqa: E402
from facetrack.labels import Box  # noqa: E402


def load_reference(data: Path) -> list[tuple[Path, Box | None]]:
    items = json.loads((data / "boxes.json").read_text())
    out = []
    for it in items:
        faces = it.get("faces") or []
        box = Box.from_pixels(faces[0], it["width"], it["height"]) if faces else None
        out.append((data / it["image"], box))
    return out


def split(items, seed=0):
    rng = np.random.default_rng(seed)
    parts = {"train": [], "val": [], "test": []}
    for group in ([x for x in items if x[1] is not None], [x for x in items if x[1] is None]):
        idx = rng.permutation(len(group))
        n_tr, n_va = int(0.7 * len(group)), int(0.15 * len(group))
        parts["train"] += [group[i] for i in idx[:n_tr]]
        parts["val"] += [group[i] for i in idx[n_tr : n_tr + n_va]]
        parts["test"] += [group[i] for i in idx[n_tr + n_va :]]
    return parts


def _augment_one(args):
    path, box, out_dir, copies, seed, size = args
    from facetrack.augment import AugmentSettings, augment_image, plain_copy

    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    res = []
    if copies == 0:
        img = plain_copy(rgb, size)
        p = out_dir / f"{path.stem}_0.jpg"
        cv2.imwrite(str(p), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        return [(str(p), box.to_list() if box else None, path.stem)]
    for k, (img, b) in enumerate(augment_image(rgb, box, AugmentSettings(output_size=size), copies, seed)):
        p = out_dir / f"{path.stem}_{k}.jpg"
        cv2.imwrite(str(p), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        res.append((str(p), b.to_list() if b else None, path.stem))
    return res


def build_sets(data: Path, out: Path, copies: int, fresh: bool, size: int = 160) -> tuple[dict, float]:
    marker = out / f"aug_{copies}_{size}.json"
    if marker.is_file() and not fresh:
        doc = json.loads(marker.read_text())
        return doc, 0.0
    t0 = time.time()
    parts = split(load_reference(data))
    doc = {}
    for name, items in parts.items():
        d = out / f"aug_{copies}_{size}" / name
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        n = copies if name == "train" else 0
        jobs = [(p, b, d, n, i, size) for i, (p, b) in enumerate(items)]
        with ProcessPoolExecutor(os.cpu_count() or 2) as ex:
            doc[name] = [r for rs in ex.map(_augment_one, jobs, chunksize=8) for r in rs]
    seconds = time.time() - t0
    marker.write_text(json.dumps(doc))
    return doc, seconds


def to_samples(rows) -> list[Sample]:
    return [Sample(Path(p), Box(*b) if b else None, sid) for p, b, sid in rows]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/work/shared/data/faces")
    ap.add_argument("--out", default="/tmp/facetrack_quality")
    ap.add_argument("--copies", type=int, default=15)
    ap.add_argument("--backbone", default="compact")
    ap.add_argument("--weights", default="none")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--input-size", type=int, default=120)
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--jitter", type=float, default=0.15)
    ap.add_argument("--tag", default="run")
    args = ap.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.time()
    doc, t_aug = build_sets(Path(args.data), out, args.copies, args.fresh)
    tr, va, te = (to_samples(doc[k]) for k in ("train", "val", "test"))
    print(
        f"augment: {t_aug:.1f}s (0 = reused); train {len(tr)} ({sum(s.has_face for s in tr)} faces), "
        f"val {len(va)}, test {len(te)}",
        flush=True,
    )

    from facetrack.evaluate import evaluate_run
    from facetrack.train import TrainCallbacks, TrainSettings, train

    class Print(TrainCallbacks):
        def on_epoch(self, r):
            print(
                f"  epoch {r.epoch}: loss {r.loss:.4f} cls {r.class_loss:.4f} box {r.bbox_loss:.4f} | val acc "
                f"{r.val_presence_accuracy:.3f} iou {r.val_mean_iou:.3f} score {r.val_score:.4f} "
                f"({r.seconds:.0f}s)",
                flush=True,
            )

    settings = TrainSettings(
        backbone=args.backbone,
        weights=args.weights,
        input_size=args.input_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        name=args.tag,
        jitter=args.jitter,
    )
    run_dir = out / "project" / "runs" / f"{time.strftime('%H%M%S')}-{args.tag}"
    t0 = time.time()
    result = train(tr, va, settings, run_dir, Print())
    t_train = time.time() - t0
    t0 = time.time()
    m = evaluate_run(run_dir, te)
    t_eval = time.time() - t0
    d = m.to_dict()
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}, indent=1))
    print(
        f"train {t_train:.0f}s (best epoch {result.best_epoch}), evaluate {t_eval:.1f}s, "
        f"augment {t_aug:.0f}s, total {time.time() - t_all:.0f}s; run {run_dir}"
    )


if __name__ == "__main__":
    main()

"""Command line: ``python -m facetrack import | augment | train | evaluate | detect | export``.

Each command has ``--help``, defaults that work, a progress bar on the
terminal, exit code 0 only on success and a one-line error otherwise.
``FACETRACK_HOME`` sets the workspace folder (a ``--project`` that is a plain
name is looked up there; a path is used as it is).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


class CliError(Exception):
    """An error reported as one line, exit code 1."""


class Bar:
    """A terminal progress bar on stderr (plain lines when stderr is not a terminal)."""

    def __init__(self, label: str, quiet: bool = False) -> None:
        self.label = label
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.start = time.time()
        self._last = 0.0
        self._last_pct = -1

    def update(self, done: float, total: float, extra: str = "", eta: float | None = None) -> None:
        if self.quiet or total <= 0:
            return
        frac = min(max(done / total, 0.0), 1.0)
        now = time.time()
        if eta is None and 0 < frac < 1:
            eta = (now - self.start) * (1 - frac) / frac
        left = f" {_fmt_seconds(eta)} left" if eta is not None and frac < 1 else ""
        if self.tty:
            if now - self._last < 0.1 and frac < 1:
                return
            self._last = now
            filled = int(frac * 30)
            bar = "#" * filled + "-" * (30 - filled)
            sys.stderr.write(f"\r{self.label} [{bar}] {frac * 100:5.1f}%{left} {extra}".ljust(100)[:140])
            if frac >= 1:
                sys.stderr.write("\n")
            sys.stderr.flush()
        else:
            pct = int(frac * 10) * 10
            if pct != self._last_pct:
                self._last_pct = pct
                print(f"{self.label}: {pct}%{left} {extra}".rstrip(), file=sys.stderr, flush=True)

    def done(self, message: str) -> None:
        if not self.quiet:
            print(f"{self.label}: {message}", file=sys.stderr, flush=True)


def _fmt_seconds(s: float | None) -> str:
    if s is None:
        return "?"
    s = int(round(s))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _project(arg: str, create: bool = False):  # noqa: ANN202
    from facetrack.workspace import WorkspaceError, create_project, open_project, workspace_root

    path = Path(arg)
    looks_like_path = "/" in arg or arg.startswith(".") or path.is_dir()
    if create:
        if looks_like_path:
            return create_project(path.name, root=path.absolute().parent)
        return create_project(arg, root=workspace_root())
    try:
        return open_project(path if looks_like_path else arg, workspace_root())
    except WorkspaceError as exc:
        raise CliError(f"{exc} (create it with: python -m facetrack import SRC_DIR --project {arg})") from exc


# -- commands -----------------------------------------------------------------


def cmd_import(args: argparse.Namespace) -> int:
    from facetrack.importer import ImportError_, import_folder

    src = Path(args.src)
    if not src.is_dir():
        raise CliError(f"{src} is not a folder")
    project = _project(args.project, create=True)
    bar = Bar("import", args.quiet)
    try:
        report = import_folder(project, src, progress=lambda d, t: bar.update(d, t))
    except ImportError_ as exc:
        raise CliError(str(exc)) from exc
    from facetrack.textsafe import terminal_safe

    for line in report.lines():  # file names are data: control characters are written out
        print(terminal_safe(line), file=sys.stderr)
    print(f"{report.summary()} into {terminal_safe(str(project.path))}")
    if not report.added and report.skipped:
        raise CliError("nothing was imported")
    return 0


def cmd_augment(args: argparse.Namespace) -> int:
    from facetrack.augment import AugmentSettings, generate
    from facetrack.fileio import atomic_write_json, read_json

    project = _project(args.project)
    doc: dict[str, Any] = {}
    if args.settings:
        doc = read_json(Path(args.settings))
    else:
        try:
            doc = read_json(project.augmented_dir / "settings.json").get("settings", {})
        except (FileNotFoundError, ValueError):
            doc = {}
    if args.copies is not None:
        doc["copies_per_image"] = args.copies
    if args.size is not None:
        doc["output_size"] = args.size
    try:
        settings = AugmentSettings.from_dict(doc)
    except (TypeError, ValueError) as exc:
        raise CliError(f"augmentation settings: {exc}") from exc
    if not project.labelled_ids():
        raise CliError("no labelled photos in this project: label some photos first")
    bar = Bar("augment", args.quiet)
    progress_file = Path(args.progress_file) if args.progress_file else None
    stop_file = project.path / "augment-STOP"
    started = time.time()

    def progress(done: int, total: int) -> None:
        bar.update(done, total)
        if progress_file:
            atomic_write_json(
                progress_file,
                {"state": "running", "done": done, "total": total, "pid": os.getpid(), "started": started,
                 "updated": time.time()},
            )  # fmt: skip

    try:
        report = generate(
            project, settings, progress=progress, should_stop=stop_file.exists, workers=args.workers
        )
    except Exception as exc:
        if progress_file:
            atomic_write_json(progress_file, {"state": "failed", "message": str(exc), "pid": os.getpid()})
        raise
    state = "stopped" if report.stopped else "finished"
    if progress_file:
        atomic_write_json(
            progress_file,
            {"state": state, "done": report.done + report.skipped, "total": report.done + report.skipped,
             "counts": report.counts, "failed": report.failed[:50], "pid": os.getpid(), "updated": time.time(),
             "seconds": round(time.time() - started, 1)},
        )  # fmt: skip
    stop_file.unlink(missing_ok=True)
    for image_id, reason in report.failed:
        print(f"failed {image_id}: {reason}", file=sys.stderr)
    c = report.counts
    print(
        f"{state}: train {c['train']} images ({c['train_faces']} with a face), "
        f"val {c['val']}, test {c['test']} ({report.skipped} photos already done)"
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from facetrack.augment import load_samples
    from facetrack.fileio import atomic_write_json, read_json
    from facetrack.jobs import FileCallbacks, active_training, new_run_dir
    from facetrack.model import WeightsUnavailable
    from facetrack.train import BatchProgress, EpochRecord, TrainSettings, train

    project = _project(args.project)
    if args.run_dir:
        run_dir = Path(args.run_dir)
        request = run_dir / "request.json"
        doc = read_json(request) if request.exists() else {}
    else:
        running = active_training(project)
        if running is not None:
            raise CliError(f"a training is already running in this project ({running.name})")
        doc = {}
    for key in (
        "backbone",
        "weights",
        "epochs",
        "batch_size",
        "learning_rate",
        "input_size",
        "name",
        "strategy",
    ):
        value = getattr(args, key)
        if value is not None:
            doc[key] = value
    if args.fine_tune:
        doc["fine_tune"] = True
    doc.setdefault("backbone", "compact")
    if doc["backbone"] == "compact":
        doc.setdefault("weights", "none")
    try:
        settings = TrainSettings.from_dict(doc)
    except (TypeError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    train_samples = load_samples(project, "train")
    val_samples = load_samples(project, "val")
    if not train_samples:
        raise CliError("no training set: label photos, then run: python -m facetrack augment --project ...")
    if not args.run_dir:
        run_dir = new_run_dir(project, settings)
        run_dir.mkdir(parents=True)
        atomic_write_json(project.path / "training.json", {"pid": os.getpid(), "run_dir": str(run_dir)})
    bar = Bar("train", args.quiet)

    class Terminal(FileCallbacks):
        def on_stage(self, name: str, done: int, total: int) -> None:
            super().on_stage(name, done, total)
            if name == "features":
                bar.update(done, total, "computing backbone features")

        def on_batch(self, progress: BatchProgress) -> None:
            super().on_batch(progress)
            total = progress.epochs * progress.batches
            done = (progress.epoch - 1) * progress.batches + progress.batch
            bar.update(
                done,
                total,
                f"epoch {progress.epoch}/{progress.epochs} loss {progress.loss:.4f}",
                progress.eta_seconds,
            )

        def on_epoch(self, record: EpochRecord) -> None:
            super().on_epoch(record)
            if not args.quiet:
                print(
                    f"\nepoch {record.epoch}: loss {record.loss:.4f} (class {record.class_loss:.4f}, box "
                    f"{record.bbox_loss:.4f})  val loss {record.val_loss:.4f}  val IoU {record.val_mean_iou:.3f}  "
                    f"val accuracy {record.val_presence_accuracy:.3f}",
                    file=sys.stderr,
                    flush=True,
                )

    try:
        result = train(
            train_samples,
            val_samples,
            settings,
            run_dir,
            Terminal(run_dir),
            cache_dir=project.cache_dir / "features",
        )
    except WeightsUnavailable as exc:
        raise CliError(str(exc)) from exc
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    test_samples = load_samples(project, "test")
    if (run_dir / "model.keras").exists() and test_samples:
        from facetrack.evaluate import evaluate_run

        metrics = evaluate_run(run_dir, test_samples)
        print(
            f"test split: presence accuracy {metrics.presence_accuracy:.3f}, mean IoU {_num(metrics.mean_iou)}",
            file=sys.stderr,
        )
    print(
        f"{result.state}: best epoch {result.best_epoch}, validation score {_num(result.best_val_score)}; run {run_dir}"
    )
    return 0


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _run_dir(project_arg: str | None, run_arg: str | None) -> Path:
    if run_arg:
        run = Path(run_arg)
        if not run.is_dir() and project_arg:
            run = _project(project_arg).runs_dir / run_arg
        if not run.is_dir():
            raise CliError(f"run folder {run_arg} does not exist")
        return run
    if not project_arg:
        raise CliError("give --run RUN_DIR or --project DIR")
    project = _project(project_arg)
    run = project.latest_run()
    if run is None:
        raise CliError("this project has no trained run yet: python -m facetrack train --project ...")
    return run


def cmd_evaluate(args: argparse.Namespace) -> int:
    from facetrack.augment import load_samples
    from facetrack.evaluate import evaluate_run
    from facetrack.model import ModelLoadError

    run = _run_dir(args.project, args.run)
    project = _project(args.project) if args.project else _project(str(run.parent.parent))
    test_samples = load_samples(project, "test")
    if not test_samples:
        raise CliError("the test split is empty: label more photos and run augment")
    try:
        metrics = evaluate_run(run, test_samples, threshold=args.threshold)
    except ModelLoadError as exc:
        raise CliError(str(exc)) from exc
    doc = metrics.to_dict()
    doc["run"] = str(run)
    if args.json:
        print(json.dumps(doc))
    else:
        for key, value in doc.items():
            if not isinstance(value, dict | list):
                print(f"{key:>20}: {value}")
    return 0


def cmd_detect(args: argparse.Namespace) -> int:
    from facetrack.detect import Detector, DetectorError, draw_detections
    from facetrack.images import ImageError, decode_image, encode_jpeg
    from facetrack.model import ModelLoadError

    run = _run_dir(None, args.run)
    try:
        detector = Detector.from_run(run, backend=args.backend, threshold=args.threshold)
    except (DetectorError, ModelLoadError) as exc:
        raise CliError(str(exc)) from exc
    failures = 0
    out_dir = Path(args.save) if args.save else None
    for name in args.images:
        path = Path(name)
        try:
            rgb = decode_image(path.read_bytes(), path.name)
        except FileNotFoundError:
            exc = ImageError(f"{name}: no such file")
        except (OSError, ImageError) as err:
            exc = err
        else:
            exc = None
        if exc is not None:
            failures += 1
            print(json.dumps({"image": name, "error": str(exc)}) if args.json else f"{name}: {exc}")
            continue
        detections = detector.detect(rgb, color="rgb")
        faces = [d.to_dict() for d in detections]
        if args.json:
            print(json.dumps({"image": name, "faces": faces}))
        else:
            text = (
                ", ".join(f"face {f['score']:.2f} at {[round(v) for v in f['box']]}" for f in faces)
                or "no face"
            )
            print(f"{name}: {text}")
        if out_dir:
            out_dir.mkdir(parents=True, exist_ok=True)
            drawn = draw_detections(rgb.copy(), detections, color="rgb")
            (out_dir / f"{path.stem}.jpg").write_bytes(encode_jpeg(drawn))
    return 1 if failures == len(args.images) else 0


def cmd_export(args: argparse.Namespace) -> int:
    from facetrack.export import ExportError, export_run

    run = _run_dir(args.project, args.run)
    try:
        out = export_run(run, args.format, Path(args.output) if args.output else None, quantize=args.quantize)
    except ExportError as exc:
        raise CliError(str(exc)) from exc
    print(out)
    return 0


# -- parser ---------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m facetrack",
        description="FaceTrack: build your own face detector. Workspace: $FACETRACK_HOME (default ./workspace).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        return p

    p = add("import", "import a folder of photos with labelme JSON labels into a project")
    p.add_argument(
        "src", metavar="SRC_DIR", help="folder with images/ and labels/, or images with JSON side by side"
    )
    p.add_argument("--project", required=True, help="project folder or name (created if missing)")
    p.set_defaults(func=cmd_import)

    p = add("augment", "generate the augmented training set (train split only)")
    p.add_argument("--project", required=True, help="project folder or name")
    p.add_argument("--copies", type=int, help="augmented copies per training photo (default 20)")
    p.add_argument("--size", type=int, help="side of the generated square images (default 160)")
    p.add_argument("--settings", help="JSON file of augmentation settings (as the app writes)")
    p.add_argument(
        "--workers", type=int, default=None, help="worker processes (default: one per core, 0 = none)"
    )
    p.add_argument("--progress-file", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_augment)

    p = add("train", "train a detector on the augmented set; evaluates it on the test split")
    p.add_argument("--project", required=True, help="project folder or name")
    p.add_argument("--backbone", choices=["compact", "vgg16"], help="compact (offline, default) or vgg16")
    p.add_argument("--weights", help="vgg16 weights: imagenet (one-time download), none, or a .h5 file")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--learning-rate", dest="learning_rate", type=float)
    p.add_argument(
        "--input-size", dest="input_size", type=int, help="model input side in pixels (default 120)"
    )
    p.add_argument(
        "--fine-tune", dest="fine_tune", action="store_true", help="vgg16: also train the last block"
    )
    p.add_argument("--name", help="a name for the run")
    p.add_argument(
        "--strategy",
        choices=["default", "mirrored", "multiworker"],
        help="tf.distribute: mirrored = all local devices; multiworker = configured by TF_CONFIG",
    )
    p.add_argument("--run-dir", dest="run_dir", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_train)

    p = add("evaluate", "measure a run on its project's test split")
    p.add_argument("--project", help="project folder or name")
    p.add_argument("--run", help="run folder (default: the project's latest run)")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_evaluate)

    p = add("detect", "find the face in photos with a trained run")
    p.add_argument("--run", required=True, help="run folder")
    p.add_argument("--json", action="store_true", help="one JSON line per image")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--backend", choices=["auto", "litert", "keras"], default="auto")
    p.add_argument("--save", help="folder to write the photos with boxes drawn")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.set_defaults(func=cmd_detect)

    p = add("export", "write a run's model as .keras or .tflite")
    p.add_argument("--run", help="run folder")
    p.add_argument("--project", help="project (its latest run, when --run is not given)")
    p.add_argument("--format", choices=["keras", "tflite"], default="tflite")
    p.add_argument("--quantize", choices=["dynamic", "none", "int8"], default="dynamic", help="tflite only")
    p.add_argument("--output", help="file or folder to copy the model to")
    p.set_defaults(func=cmd_export)
    return parser


def quiet_tensorflow_import() -> None:
    """Import TensorFlow with the C++ start-up chatter (oneDNN, CUDA probes) kept off the terminal.

    Those lines are printed before TensorFlow's logging is set up, so no
    environment variable hides them; stderr is pointed at /dev/null for the
    import only. An import error is still raised as usual.
    """
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command in ("train", "evaluate", "detect", "export"):
            quiet_tensorflow_import()
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one clear line, never a traceback
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        if os.environ.get("FACETRACK_DEBUG"):
            raise
        return 1


if __name__ == "__main__":
    sys.exit(main())

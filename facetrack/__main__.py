"""Command line: ``python -m facetrack import | augment | train | evaluate | detect | export``.

Each command has ``--help``, defaults that work, a progress bar on the
terminal, exit code 0 only on success and a one-line error otherwise.
``FACETRACK_HOME`` sets the workspace folder (a ``--project`` that is a plain
name is looked up there; a path is used as it is).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from facetrack.limits import DEFAULT_COPIES, DEFAULT_MULTI_FACE_COPIES
from facetrack.progress import RateEstimate, format_time_left
from facetrack.train import BACKBONES, CLI_BACKBONE, STRATEGIES


class CliError(Exception):
    """An error reported as one line, exit code 1."""


class Bar:
    """A tqdm progress bar on stderr; no time-left figure until it means something."""

    def __init__(self, label: str, quiet: bool = False) -> None:
        self.label = label
        self.quiet = quiet
        self._bar: Any = None
        self._estimate = RateEstimate()

    def update(self, done: float, total: float, extra: str = "", eta: float | None = None) -> None:
        if self.quiet or total <= 0:
            return
        from tqdm import tqdm

        if self._bar is None or self._bar.total != total:
            if self._bar is not None:
                self._bar.close()
            fmt = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {postfix}"
            self._bar = tqdm(total=total, desc=self.label, bar_format=fmt, file=sys.stderr, leave=False)
            self._estimate = RateEstimate()
        if eta is None:
            eta = self._estimate.update(int(done), int(total))
        self._bar.n = done
        left = format_time_left(eta) if done < total else ""
        self._bar.set_postfix_str(" ".join(t for t in (extra, left) if t), refresh=False)
        self._bar.refresh()

    def done(self, message: str) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if not self.quiet:
            print(f"{self.label}: {message}", file=sys.stderr, flush=True)


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
    if not report.added and not report.already and report.skipped:
        raise CliError("nothing was imported")
    return 0


def _augment_settings(args: argparse.Namespace, project: Any) -> Any:
    from facetrack.augment import AugmentSettings
    from facetrack.data import AUGMENTED_SETTINGS_FILE
    from facetrack.fileio import read_json

    doc: dict[str, Any] = {}
    if args.settings:
        doc = read_json(Path(args.settings))
    else:
        try:
            doc = read_json(project.augmented_dir / AUGMENTED_SETTINGS_FILE).get("settings", {})
        except (FileNotFoundError, ValueError):
            doc = {}
    if args.copies is not None:
        doc["copies_per_image"] = args.copies
    if args.size is not None:
        doc["output_size"] = args.size
        doc["output_height"] = round(args.size * 3 / 4)  # 4:3, as webcam frames
    try:
        return AugmentSettings.from_dict(doc)
    except (TypeError, ValueError) as exc:
        raise CliError(f"augmentation settings: {exc}") from exc


def cmd_augment(args: argparse.Namespace) -> int:
    from facetrack.tasks import generate_training_set

    project = _project(args.project)
    settings = _augment_settings(args, project)
    if not project.labelled_ids():
        raise CliError("no labelled photos in this project: label some photos first")
    bar = Bar("augment", args.quiet)
    report = generate_training_set(project, settings, workers=args.workers, on_progress=bar.update)
    state = "stopped" if report.stopped else "finished"
    bar.done(state)
    for image_id, reason in report.failed:
        print(f"failed {image_id}: {reason}", file=sys.stderr)
    c = report.counts
    print(
        f"{state}: train {c['train']} images ({c['train_faces']} with a face), "
        f"val {c['val']}, test {c['test']} ({report.skipped} photos already done)"
    )
    return 0


def _input_size(text: str) -> int | list[int]:
    """``S`` or ``HxW`` (e.g. ``120x160``) from the command line."""
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not S or HxW (e.g. 120x160)") from None
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return parts
    raise argparse.ArgumentTypeError(f"{text!r} is not S or HxW (e.g. 120x160)")


def _train_settings(args: argparse.Namespace) -> Any:
    """The command line's TrainSettings: what was given, else the CLI's backbone and the library's defaults."""
    from facetrack.train import TrainSettings

    keys = ("backbone", "head", "weights", "epochs", "batch_size", "learning_rate", "input_size", "name",
            "strategy")  # fmt: skip
    doc = {key: getattr(args, key) for key in keys if getattr(args, key) is not None}
    if args.fine_tune:
        doc["fine_tune"] = True
    doc.setdefault("backbone", CLI_BACKBONE)
    if doc["backbone"] == "compact":
        doc.setdefault("weights", "none")
    try:
        return TrainSettings.from_dict(doc)
    except (TypeError, ValueError) as exc:
        raise CliError(str(exc)) from exc


def _terminal_callbacks(quiet: bool) -> Any:
    from facetrack.tasks import FileCallbacks
    from facetrack.train import BatchProgress, EpochRecord

    bar = Bar("train", quiet)

    class Terminal(FileCallbacks):
        def on_stage(self, name: str, done: int, total: int) -> None:
            super().on_stage(name, done, total)
            if name == "features":
                bar.update(done, total, "computing backbone features")

        def on_batch(self, progress: BatchProgress) -> None:
            super().on_batch(progress)
            total = progress.epochs * progress.batches
            done = (progress.epoch - 1) * progress.batches + progress.batch
            extra = f"epoch {progress.epoch}/{progress.epochs} loss {progress.loss:.4f}"
            bar.update(done, total, extra, progress.eta_seconds)

        def on_epoch(self, record: EpochRecord) -> None:
            super().on_epoch(record)
            if not quiet:
                from tqdm import tqdm

                tqdm.write(
                    f"epoch {record.epoch}: loss {record.loss:.4f} (class {record.class_loss:.4f}, box "
                    f"{record.bbox_loss:.4f})  val loss {record.val_loss:.4f}  val IoU {record.val_mean_iou:.3f}  "
                    f"val accuracy {record.val_presence_accuracy:.3f}",
                    file=sys.stderr,
                )

    return Terminal


def cmd_train(args: argparse.Namespace) -> int:
    from facetrack.cluster import writes_run
    from facetrack.model import WeightsUnavailable
    from facetrack.runs import active_training
    from facetrack.tasks import train_project

    project = _project(args.project)
    settings = _train_settings(args)
    running = active_training(project.path) if writes_run(settings) else None  # other workers: see cluster
    if running is not None:
        raise CliError(f"a training is already running in this project ({running.name})")
    try:
        outcome = train_project(project, settings, callbacks=_terminal_callbacks(args.quiet))
    except (WeightsUnavailable, ValueError) as exc:
        raise CliError(str(exc)) from exc
    if outcome.metrics is not None:
        m = outcome.metrics
        print(
            f"test split: AP@0.5 over {m.faces} faces {_num(m.ap50)}, presence accuracy "
            f"{_num(m.presence_accuracy)}, mean IoU {_num(m.mean_iou)}",
            file=sys.stderr,
        )
    result = outcome.result
    where = f"run {result.run_dir}" if writes_run(settings) else "the chief writes the run"
    print(
        f"{result.state}: best epoch {result.best_epoch}, validation score {_num(result.best_val_score)}; {where}"
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
    from facetrack.data import list_samples
    from facetrack.evaluate import evaluate_run
    from facetrack.model import ModelLoadError
    from facetrack.runs import project_of

    run = _run_dir(args.project, args.run)
    project = _project(args.project) if args.project else _project(str(project_of(run)))
    test_samples = list_samples(project.augmented_dir, "test", project.stored_split())
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
    from facetrack.images import ImageError, decode_image, encode_jpeg, read_image_file
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
            rgb = decode_image(read_image_file(path), path.name)
        except ImageError as err:
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
        p.add_argument("--verbose", action="store_true", help="show TensorFlow's own log messages")
        return p

    p = add("import", "import a folder of photos with labelme JSON labels into a project")
    p.add_argument(
        "src", metavar="SRC_DIR", help="folder with images/ and labels/, or images with JSON side by side"
    )
    p.add_argument("--project", required=True, help="project folder or name (created if missing)")
    p.set_defaults(func=cmd_import)

    p = add("augment", "generate the augmented training set (train split only)")
    p.add_argument("--project", required=True, help="project folder or name")
    p.add_argument(
        "--copies",
        type=int,
        help="augmented copies per training photo (default: the project's last choice, first time "
        f"{DEFAULT_COPIES}; {DEFAULT_MULTI_FACE_COPIES} for photos with two faces or more, "
        "which --settings can change)",
    )
    p.add_argument("--size", type=int, help="width of the generated 4:3 images (default 160)")
    p.add_argument("--settings", help="JSON file of augmentation settings (as the app writes)")
    p.add_argument(
        "--workers", type=int, default=None, help="worker processes (default: one per core, 0 = none)"
    )
    p.set_defaults(func=cmd_augment)

    p = add("train", "train a detector on the augmented set; evaluates it on the test split")
    p.add_argument("--project", required=True, help="project folder or name")
    p.add_argument(
        "--backbone", choices=list(BACKBONES), help=f"{CLI_BACKBONE} (offline, default) or another backbone"
    )
    p.add_argument("--weights", help="vgg16 weights: imagenet (one-time download), none, or a .h5 file")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--learning-rate", dest="learning_rate", type=float)
    p.add_argument(
        "--input-size",
        dest="input_size",
        type=_input_size,
        help="model input in pixels: S (square) or HxW (default 120x160 for the dense head, 120 for single)",
    )
    p.add_argument(
        "--head",
        choices=["dense", "single"],
        help="dense: every face (default); single: one face per photo, as runs before multi-face",
    )
    p.add_argument(
        "--fine-tune", dest="fine_tune", action="store_true", help="vgg16: also train the last block"
    )
    p.add_argument("--name", help="a name for the run")
    p.add_argument(
        "--strategy",
        choices=list(STRATEGIES),
        help="tf.distribute: mirrored = all local devices; multiworker = configured by TF_CONFIG",
    )
    p.set_defaults(func=cmd_train)

    p = add("evaluate", "measure a run on its project's test split")
    p.add_argument("--project", help="project folder or name")
    p.add_argument("--run", help="run folder (default: the project's latest run)")
    p.add_argument(
        "--threshold", type=float, help="score threshold (default: the run's, chosen on validation)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_evaluate)

    p = add("detect", "find every face in photos with a trained run (highest score first)")
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
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s"
    )
    if not args.verbose:
        # Before TensorFlow loads: its C++ log lines (e.g. "failed call to cuInit" on a machine without
        # a GPU, logged as an error) stay off the terminal. --verbose shows them.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    try:
        if args.command in ("train", "evaluate", "detect", "export") and not args.verbose:
            quiet_tensorflow_import()
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one clear line, never a traceback
        from facetrack.fileio import DiskFull, is_disk_full

        if is_disk_full(exc) and not isinstance(exc, DiskFull):
            exc = DiskFull(
                f"the disk is full ({exc.strerror}: {exc.filename or ''}); free some space and try again"
            )
        print(
            f"error: {exc if isinstance(exc, DiskFull) else f'{type(exc).__name__}: {exc}'}", file=sys.stderr
        )
        if os.environ.get("FACETRACK_DEBUG"):
            raise
        return 1


if __name__ == "__main__":
    sys.exit(main())

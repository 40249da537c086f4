"""Background jobs that :mod:`facetrack.jobs` starts: ``python -m facetrack.worker train RUN_DIR``
or ``python -m facetrack.worker augment PROJECT_DIR``.

``train``: trains the run folder's ``request.json`` settings on its project
(``RUN_DIR/../..``), reporting through :class:`facetrack.tasks.FileCallbacks`
and stopping when the run's stop file appears. ``augment``: generates the
project's training set from ``augment-request.json``, reporting to its
progress file (:func:`facetrack.tasks.generate_training_set`). Errors are
logged and recorded in those files; the exit code is 0 only on success.
Nothing imports this module.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

log = logging.getLogger("facetrack.worker")


def run_train(run_dir: Path) -> int:
    from facetrack.runs import project_of, read_request
    from facetrack.tasks import FileCallbacks, train_project
    from facetrack.train import TrainSettings
    from facetrack.workspace import Project

    settings = TrainSettings.from_dict(read_request(run_dir))
    outcome = train_project(Project(project_of(run_dir)), settings, run_dir, FileCallbacks)
    log.info("%s: %s", run_dir.name, outcome.result.state)
    return 0


def run_augment(project_dir: Path) -> int:
    from facetrack.augment import AugmentSettings
    from facetrack.fileio import read_json
    from facetrack.tasks import AUGMENT_REQUEST_FILE, augment_progress_path, generate_training_set
    from facetrack.workspace import Project

    project = Project(project_dir)
    settings = AugmentSettings.from_dict(read_json(project.path / AUGMENT_REQUEST_FILE))
    report = generate_training_set(project, settings, progress_file=augment_progress_path(project))
    log.info("augment: %d done, %d skipped, %d failed", report.done, report.skipped, len(report.failed))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m facetrack.worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("job", choices=["train", "augment"])
    parser.add_argument("folder", help="train: the run folder; augment: the project folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    folder = Path(args.folder)
    from facetrack.tasks import ProjectGone

    try:
        return run_train(folder) if args.job == "train" else run_augment(folder)
    except ProjectGone as exc:
        log.info("%s job ended: %s", args.job, exc)
        return 0
    except Exception:
        log.exception("%s job failed", args.job)
        return 1


if __name__ == "__main__":
    sys.exit(main())

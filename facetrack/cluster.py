"""Training on several machines: this process's role in a ``TF_CONFIG`` cluster.

``python -m facetrack train --strategy multiworker`` runs one process per
machine (a "worker"), all started with the same ``TF_CONFIG`` cluster and each
with its own ``task``. TensorFlow keeps their weights identical; one of them,
the chief, owns the run folder (settings, history, model, log). The others
train just the same but write nothing in the project: their copies of the run
files go to a temporary folder that is removed when they finish (as
TensorFlow's multi-worker guide does for non-chief checkpoints).

The chief is the task of type ``"chief"`` when the cluster has one, otherwise
``"worker"`` number 0. Without ``TF_CONFIG`` this process is alone, so chief.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class ClusterConfigError(ValueError):
    """``TF_CONFIG`` is not valid JSON or does not name this task; the message says what is wrong."""


@dataclass(frozen=True)
class WorkerRole:
    """``task_type`` and ``index`` of this process; ``workers``: processes in the cluster (1 alone)."""

    task_type: str
    index: int
    workers: int
    is_chief: bool


def worker_role(env: Mapping[str, str] | None = None) -> WorkerRole:
    """This process's role from ``TF_CONFIG`` in ``env`` (default ``os.environ``)."""
    text = (os.environ if env is None else env).get("TF_CONFIG", "").strip()
    if not text:
        return WorkerRole("worker", 0, 1, True)
    try:
        doc = json.loads(text)
        cluster = doc.get("cluster") or {}
        task = doc.get("task") or {}
        task_type, index = str(task.get("type", "worker")), int(task.get("index", 0))
        workers = sum(len(v) for k, v in cluster.items() if k in ("chief", "worker"))
    except (ValueError, TypeError, AttributeError) as exc:
        raise ClusterConfigError(f"TF_CONFIG is not valid: {exc}") from None
    if task_type not in cluster or not 0 <= index < len(cluster[task_type]):
        raise ClusterConfigError(f"TF_CONFIG's task {task_type} {index} is not in its cluster")
    chief = task_type == "chief" or ("chief" not in cluster and task_type == "worker" and index == 0)
    return WorkerRole(task_type, index, max(workers, 1), chief)


def writes_run(settings: Any, env: Mapping[str, str] | None = None) -> bool:
    """True when this process writes the run folder of a training with ``settings``.

    Every training but a multi-worker one's non-chief workers.
    """
    return getattr(settings, "strategy", "default") != "multiworker" or worker_role(env).is_chief

"""The one table of allowed ranges for every number a user sets, in the app or on the command line.

:class:`facetrack.augment.AugmentSettings` and
:class:`facetrack.train.TrainSettings` refuse values outside these ranges
(whatever wrote them: a slider, ``--copies``, a settings file), and the pages
build their sliders from the same numbers, so a setting the command line
accepts can always be shown by the app.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

# Augmented copies of each training photo (the tutorial made 60), and of a photo with two faces
# or more (few such photos, many faces). AugmentSettings' defaults; here so that the command
# line's help can state them without importing albumentations.
DEFAULT_COPIES = 5
DEFAULT_MULTI_FACE_COPIES = 16

# field -> (smallest, largest), inclusive
AUGMENT_LIMITS: dict[str, tuple[float, float]] = {
    "copies_per_image": (1, 200),
    "multi_face_copies": (0, 200),
    "output_size": (32, 1024),
    "output_height": (0, 1024),  # 0: square; else at least 32 (checked by AugmentSettings)
    "crop_probability": (0.0, 1.0),
    "crop_scale_min": (0.05, 1.0),
    "zoom_out": (0.0, 0.9),
    "zoom_out_probability": (0.0, 1.0),
    "brightness": (0.0, 0.5),
    "contrast": (0.0, 0.5),
    "color_probability": (0.0, 1.0),
    "gamma": (0, 90),
    "rgb_shift": (0, 60),
    "blur_probability": (0.0, 1.0),
    "grayscale_probability": (0.0, 1.0),
    "rotation": (0, 45),
    "rotation_probability": (0.0, 1.0),
    "min_visibility": (0.0, 1.0),
    "seed": (0, 2**31 - 1),
}

TRAIN_LIMITS: dict[str, tuple[float, float]] = {
    "epochs": (1, 500),
    "batch_size": (1, 512),
    "learning_rate": (1e-6, 1.0),
    "input_size": (32, 512),
    "fine_tune_epochs": (0, 100),
    "patience": (1, 500),
    "focal_gamma": (0.0, 5.0),
    "positive_weight": (0.1, 100.0),
    "photo_weight": (0.0, 10.0),
    "nms_iou": (0.05, 0.95),
    "mosaic": (0.0, 1.0),
}


def range_problems(values: Any, limits: Mapping[str, tuple[float, float]]) -> list[str]:
    """One plain sentence per attribute of ``values`` that is not a number within ``limits``.

    Integer ranges (both ends ``int``) also refuse fractions; ``bool`` is never
    a number here. ``None`` (a default still to be resolved) is skipped.
    """
    problems = []
    for name, (low, high) in limits.items():
        value = getattr(values, name, None)
        if value is None:
            continue
        whole = isinstance(low, int) and isinstance(high, int)
        label = name.replace("_", " ")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            problems.append(f"{label} must be a number, not {value!r}")
        elif whole and value != int(value):
            problems.append(f"{label} must be a whole number, not {value!r}")
        elif not low <= value <= high:
            problems.append(f"{label} must be between {low:g} and {high:g} (got {value:g})")
    return problems

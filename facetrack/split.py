"""The leakage-free train / validation / test split.

Rules:

* The split is made on original images, before any augmentation; only the
  train side is ever augmented, so no copy of a test image is trained on.
* Images are grouped: all photos of one capture burst form one group (they
  are near-identical frames), any other photo is a group of its own. A group
  is never divided between splits.
* Assignment is stored and stable: images already assigned never move; new
  images join their burst's side, or new groups are placed where the split is
  furthest below its target share (70/15/15 by default).
* Deterministic: the same images always give the same split (groups are
  visited largest first, then by a hash of their key, never by chance).
* With few groups, validation and test each get at least one group as soon as
  there are three groups or more.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

from facetrack.data import SPLITS


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def assign_split(
    current: dict[str, str],
    groups: dict[str, str],
    ratios: tuple[float, float, float] = (0.70, 0.15, 0.15),
) -> dict[str, str]:
    """Return ``current`` extended with a split for every image in ``groups``.

    ``current`` maps image id -> split for images already assigned (kept as
    they are); ``groups`` maps every image id to assign -> its group key
    (burst).
    """
    if len(ratios) != 3 or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise ValueError(f"split ratios {ratios} must be three non-negative numbers")
    total_ratio = sum(ratios)
    share = {s: r / total_ratio for s, r in zip(SPLITS, ratios, strict=True)}
    result = {k: v for k, v in current.items() if v in SPLITS}

    group_side: dict[str, str] = {}
    for image_id, key in groups.items():
        if image_id in result:
            group_side.setdefault(key, result[image_id])
    pending: dict[str, list[str]] = defaultdict(list)
    for image_id, key in groups.items():
        if image_id in result:
            continue
        if key in group_side:
            result[image_id] = group_side[key]
        else:
            pending[key].append(image_id)

    counts = {s: 0 for s in SPLITS}
    for image_id in groups:
        if image_id in result:
            counts[result[image_id]] += 1
    total = len(groups)
    keys = sorted(pending, key=lambda k: (-len(pending[k]), _hash(k)))
    for n, key in enumerate(keys):
        remaining = len(keys) - n
        empty = [s for s in ("test", "val") if counts[s] == 0 and share[s] > 0]
        if empty and remaining <= len(empty) and (counts["train"] > 0 or share["train"] == 0):
            side = empty[0]
        else:
            side = max(SPLITS, key=lambda s: (share[s] * total - counts[s], share[s]))
        for image_id in pending[key]:
            result[image_id] = side
        counts[side] += len(pending[key])
    return result

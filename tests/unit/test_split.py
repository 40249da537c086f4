from collections import Counter

import pytest

from facetrack.split import assign_split


def test_single_photos_follow_the_ratios():
    groups = {f"i{n:03d}": f"i{n:03d}" for n in range(200)}
    split = assign_split({}, groups)
    assert Counter(split.values()) == {"train": 140, "val": 30, "test": 30}


def test_bursts_are_never_divided():
    groups = {f"b{b}-{n}": f"burst{b}" for b in range(12) for n in range(10)}
    groups.update({f"single{n}": f"single{n}" for n in range(30)})
    split = assign_split({}, groups)
    for b in range(12):
        assert len({split[f"b{b}-{n}"] for n in range(10)}) == 1


def test_three_bursts_give_every_split_one():
    groups = {f"b{b}-{n}": f"burst{b}" for b in range(3) for n in range(30)}
    split = assign_split({}, groups)
    assert set(split.values()) == {"train", "val", "test"}


def test_deterministic_and_stable_when_images_are_added():
    groups = {f"i{n:03d}": f"i{n:03d}" for n in range(100)}
    first = assign_split({}, groups)
    assert assign_split({}, groups) == first
    more = dict(groups)
    more.update({f"j{n:03d}": f"j{n:03d}" for n in range(40)})
    second = assign_split(first, more)
    assert all(second[k] == v for k, v in first.items())
    assert Counter(second.values()) == {"train": 98, "val": 21, "test": 21}


def test_new_member_of_an_assigned_burst_joins_its_side():
    first = assign_split({}, {"a1": "burstA", "x": "x", "y": "y"})
    second = assign_split(first, {"a1": "burstA", "a2": "burstA", "x": "x", "y": "y"})
    assert second["a2"] == first["a1"]


def test_bad_ratios():
    with pytest.raises(ValueError):
        assign_split({}, {"a": "a"}, (0.5, 0.5))  # type: ignore[arg-type]

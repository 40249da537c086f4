"""Label page helpers: suggestions remembered for every session and fetched ahead, photo navigation.

Suggestions (the pretrained face finder or the user's own model) take most of
the time of opening a photo. They are kept in one process-wide store, keyed
by the photo file (and its modification time) and the source, and the next
photos' suggestions are computed in a background thread while the user looks
at the current one, so Next is quick.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import streamlit as st

from facetrack import runs as run_files
from facetrack import suggest
from facetrack.images import ImageError, read_rgb
from facetrack.suggest import MTCNN_SOURCE, MtcnnSuggester, RunSuggester, SuggestError, Suggestion
from facetrack.workspace import Project

logger = logging.getLogger(__name__)

STORE_SIZE = 2000
PREFETCH_AHEAD = 2


class SuggestionStore:
    """Suggestions by (photo path, mtime, source); thread-safe, oldest dropped beyond ``size``."""

    def __init__(self, size: int = STORE_SIZE) -> None:
        self._data: OrderedDict[tuple, list[Suggestion]] = OrderedDict()
        self._lock = threading.Condition()
        self._busy: set[tuple] = set()
        self.size = size

    def get(self, key: tuple) -> list[Suggestion] | None:
        with self._lock:
            return self._data.get(key)

    def put(self, key: tuple, value: list[Suggestion]) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def claim(self, key: tuple) -> bool:
        """True when nobody has the key nor is computing it (the caller computes it)."""
        with self._lock:
            if key in self._data or key in self._busy:
                return False
            self._busy.add(key)
            return True

    def release(self, key: tuple) -> None:
        with self._lock:
            self._busy.discard(key)
            self._lock.notify_all()

    def wait(self, key: tuple, timeout: float) -> list[Suggestion] | None:
        """The value of ``key`` once a thread computing it is done (None if nobody is, or too slow)."""
        with self._lock:
            self._lock.wait_for(lambda: key not in self._busy, timeout)
            return self._data.get(key)


@st.cache_resource
def suggestion_store() -> SuggestionStore:
    return SuggestionStore()


@st.cache_resource(show_spinner="Loading the face finder (a few seconds, once)...")
def mtcnn_suggester() -> MtcnnSuggester:
    return suggest.mtcnn_suggester()  # the process-wide one (the Evaluate page's comparison shares it)


@st.cache_resource(show_spinner="Loading your model...", max_entries=3)
def run_suggester(run_dir: str, mtime: float) -> RunSuggester:
    del mtime  # in the key only: a retrained run reloads
    return RunSuggester(run_dir)


def suggester_for(source: str) -> Callable[[np.ndarray], list[Suggestion]]:
    if source == MTCNN_SOURCE:
        return mtcnn_suggester()
    model = Path(source) / run_files.KERAS_FILE
    return run_suggester(source, model.stat().st_mtime if model.exists() else 0.0)


def _key(path: Path, source: str) -> tuple:
    try:
        mtime = path.stat().st_mtime
    except OSError:
        mtime = 0.0
    return (str(path), mtime, source)


def suggestions_for(project: Project, image_id: str, source: str) -> list[Suggestion]:
    """Suggestions for one photo (computed now unless already known). Raises SuggestError/ImageError."""
    path = project.image_path(image_id)
    key = _key(path, source)
    store = suggestion_store()
    found = store.get(key)
    if found is None:  # perhaps being fetched ahead right now: wait for it rather than compute it twice
        with st.spinner("Looking for faces..."):
            found = store.wait(key, timeout=30.0)
    if found is None:
        suggester = suggester_for(source)
        with st.spinner("Looking for faces..."):
            found = suggester(read_rgb(path))
        store.put(key, found)
    return found


def prefetch(project: Project, image_ids: Sequence[str], source: str) -> None:
    """Compute the face finder's suggestions of ``image_ids`` in a background thread (skipping known ones)."""
    if source != MTCNN_SOURCE or not image_ids:
        return  # only the face finder is known to be thread-safe (it holds a lock)
    try:
        suggester = suggester_for(source)
    except (SuggestError, OSError) as exc:
        logger.info("no prefetch: %s", exc)
        return
    store = suggestion_store()
    jobs = []
    for image_id in image_ids:
        path = project.image_path(image_id)
        key = _key(path, source)
        if store.claim(key):
            jobs.append((path, key))
    if not jobs:
        return

    def work() -> None:
        for path, key in jobs:
            try:
                store.put(key, suggester(read_rgb(path)))
            except (SuggestError, ImageError, OSError) as exc:
                logger.info("prefetching suggestions for %s failed: %s", path.name, exc)
            finally:
                store.release(key)

    threading.Thread(target=work, name="label-prefetch", daemon=True).start()


def neighbours(ids: Sequence[str], index: int, count: int) -> list[int]:
    """Up to ``count`` indexes of ``ids`` around ``index`` (it included), as centred as the ends allow."""
    count = min(count, len(ids))
    start = min(max(0, index - count // 2), len(ids) - count)
    return list(range(start, start + count))

"""WebRTC helpers shared by the camera pages (Capture, Live).

``rtc_configuration()`` builds the ``RTCConfiguration`` dict for
``streamlit_webrtc.webrtc_streamer`` from ``.streamlit/secrets.toml``::

    [[ice_servers]]
    urls = ["stun:stun.example.org:3478"]
    [[ice_servers]]
    urls = ["turn:turn.example.org:3478"]
    username = "user"
    credential = "secret"

Without that section the list of ICE servers is empty: nothing is needed when
the browser and the server run on the same computer (localhost), and FaceTrack
then makes no network request for the camera at all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import streamlit as st

from facetrack.workspace import Project

FRAME_MAX_AGE_S = 2.0  # a frame older than this means the camera stopped


def _ice_servers_from(raw: Any) -> list[dict[str, Any]]:
    """Normalise the ``ice_servers`` secrets entry into RTCIceServer dicts (bad entries skipped)."""
    if raw is None:
        return []
    if isinstance(raw, Mapping):  # a single [ice_servers] table instead of [[ice_servers]]
        raw = [raw]
    servers: list[dict[str, Any]] = []
    for entry in raw if isinstance(raw, list | tuple) else []:
        if not isinstance(entry, Mapping):
            continue
        urls = entry.get("urls")
        if isinstance(urls, str):
            urls = [urls]
        if not urls:
            continue
        server: dict[str, Any] = {"urls": [str(u) for u in urls]}
        for key in ("username", "credential"):
            if entry.get(key):
                server[key] = str(entry[key])
        servers.append(server)
    return servers


def rtc_configuration() -> dict[str, Any]:
    """The ``rtc_configuration`` for ``webrtc_streamer``: ICE servers from secrets, else none."""
    try:
        raw = st.secrets.get("ice_servers")
    except Exception:  # no secrets.toml at all
        raw = None
    return {"iceServers": _ice_servers_from(raw)}


CONNECTION_HINT = """
1. **Allow the camera.** When the browser asks, click *Allow*. If you clicked *Block*
   before, click the camera or lock icon in the address bar and allow it, then reload.
2. **Use `localhost` or `https://`.** Browsers only give the camera to pages on
   `http://localhost` or on `https://` addresses. Opening FaceTrack as
   `http://192.168.x.x:8501` from another computer will not work without https.
3. **On a network or in the cloud, add a STUN/TURN server.** Copy
   `.streamlit/secrets.toml.example` to `.streamlit/secrets.toml`, fill in the
   `[[ice_servers]]` entries, and restart FaceTrack. Nothing is needed on localhost.
4. **Close other apps using the camera** (video calls, other tabs), then press *START* again.
5. **Still stuck?** To collect photos, use *Take a photo* on the Capture page (under the
   live preview): it uses the browser's ordinary photo capture and needs no streaming
   connection.
"""


def connection_hint(expanded: bool = False) -> None:
    """Show, in an expander, what to try when the camera does not connect (text: CONNECTION_HINT)."""
    with st.expander("Camera not connecting? What to try", expanded=expanded, icon=":material/help:"):
        st.markdown(CONNECTION_HINT)


# -- the frame grabber: shared by the WebRTC thread and the page ------------------------
@dataclass
class FrameGrabber:
    """The newest camera frame, written by the WebRTC worker thread, read by the page.

    ``put`` runs on streamlit-webrtc's frame thread (never calls ``st.*``);
    ``latest`` runs on the script thread. Both hold ``lock``.
    """

    lock: threading.Lock = field(default_factory=threading.Lock)
    frame: np.ndarray | None = None  # BGR, the camera's own resolution
    at: float = 0.0
    count: int = 0

    def put(self, bgr: np.ndarray) -> None:
        with self.lock:
            self.frame = bgr
            self.at = time.monotonic()
            self.count += 1

    def latest(self, max_age: float = FRAME_MAX_AGE_S) -> np.ndarray | None:
        """A copy of the newest frame, or None when there is none this fresh."""
        with self.lock:
            if self.frame is None or time.monotonic() - self.at > max_age:
                return None
            return self.frame.copy()


# -- keeping a playing stream alive across reruns -----------------------------------------
PAGE_KEY = "_facetrack_page"
VISIT_KEY = "_facetrack_page_visit"


def count_full_run(page: str) -> None:
    """Note the page of this full run (``app.py`` calls it on every run; fragment runs skip ``app.py``).

    A new *visit* starts whenever the page differs from the previous run's:
    the browser then unmounts the old page's components.
    """
    if st.session_state.get(PAGE_KEY) != page:
        st.session_state[PAGE_KEY] = page
        st.session_state[VISIT_KEY] = st.session_state.get(VISIT_KEY, 0) + 1


def keep_stream_alive(key: str) -> None:
    """Call right before ``webrtc_streamer(key=key, ...)``, on every run that draws it.

    streamlit-webrtc 0.79 resets (stops) a stream whose component "was not
    rendered" in the previous script run: it compares Streamlit's count of
    finished runs now with the count it read when it last drew the component.
    That count is raised by the server's event loop when it *sends* a run's
    "finished" message, while the next run may already have started on the
    script thread. On a busy machine a run that follows another closely (the
    camera's own signalling reruns, a slider dragged, a burst ending) reads
    the count before the previous run's message went out; a later run then
    sees a gap of two and the playing camera is stopped: the page is back at
    "Start camera". That was the flaky capture browser test, and the camera
    that stopped after an import.

    FaceTrack knows exactly when the component can have been unmounted: when
    the user went to another page (:func:`count_full_run`, kept on the script
    thread). While the component has been drawn before in this same visit of
    the page, the library's guess is skipped for this run (its
    ``_last_rendered_run_count`` is cleared; the library sets it again as it
    draws). After a visit to another page its check runs, as it intends.
    """
    visit = st.session_state.get(VISIT_KEY)
    marker = f"_facetrack_stream_drawn_{key}"
    drawn_in = st.session_state.get(marker)
    st.session_state[marker] = visit
    if visit is None or drawn_in != visit:
        return
    context = st.session_state.get(key)
    if context is not None and hasattr(context, "_last_rendered_run_count"):
        context._last_rendered_run_count = None


def grabber_for(project: Project) -> FrameGrabber:
    """This browser session's grabber for ``project`` (kept in session state across reruns)."""
    key = f"capture_grabber_{project.name}"
    if key not in st.session_state:
        st.session_state[key] = FrameGrabber()
    return st.session_state[key]


def save_frame(project: Project, bgr: np.ndarray, burst: str | None = None) -> str:
    """Store one camera frame (BGR, full resolution) and return its image id."""
    return project.add_image(bgr, color="bgr", origin="camera", burst=burst).id


# -- burst: N photos, one every T seconds, one burst id ----------------------------------
@dataclass
class Burst:
    burst_id: str
    total: int
    interval: float
    taken: int = 0
    next_at: float = 0.0
    missed: int = 0  # ticks with no fresh frame

    @property
    def done(self) -> bool:
        return self.taken >= self.total


def new_burst(total: int, interval: float, now: float | None = None) -> Burst:
    now = time.time() if now is None else now
    return Burst(
        burst_id=time.strftime("burst-%Y%m%d-%H%M%S", time.localtime(now)) + f"-{int(now * 1000) % 1000:03d}",
        total=int(total),
        interval=float(interval),
        next_at=time.monotonic(),
    )


def burst_tick(project: Project, burst: Burst, grabber: FrameGrabber, now: float | None = None) -> bool:
    """Take the burst's next photo when it is due; True when one was saved."""
    now = time.monotonic() if now is None else now
    if burst.done or now < burst.next_at:
        return False
    frame = grabber.latest()
    if frame is None:
        burst.missed += 1
        return False
    save_frame(project, frame, burst=burst.burst_id)
    burst.taken += 1
    burst.next_at = max(burst.next_at + burst.interval, now + burst.interval * 0.5)
    return True

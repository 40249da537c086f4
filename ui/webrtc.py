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

from collections.abc import Mapping
from typing import Any

import streamlit as st


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

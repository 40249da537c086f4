"""``streamlit run app.py`` as a user starts it prints no file-watcher noise while photos are written.

Streamlit's default file watcher (watchdog, on Linux inotify) watches the app's
folder recursively, so a workspace inside it (the default ``./workspace``)
sent every photo, label and folder FaceTrack writes to the watcher; creating
and removing project folders flooded the terminal with multi-KB
``RuntimeWarning: Callback with id ... already exists for watch`` messages.
The app's ``.streamlit/config.toml`` turns the watcher off (and names the
address to print, so that the server does not ask checkip.amazonaws.com for
its public address at every start: "Did not auto detect external IP", or an
"External URL" line, in the output). This test starts
the server exactly as the README says (no ``--server.fileWatcherType`` flag,
unlike the other browser tests), with the workspace inside the app folder,
keeps a browser session open (watchers live per session) and writes photos
and project folders through the library.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import urllib.request

import cv2
import numpy as np
import pytest
from conftest import ARTIFACTS, REPO_ROOT, free_port, open_page, stop_streamlit
from playwright.sync_api import expect

from facetrack.workspace import create_project

NOISE = ("warning", "traceback", "error", "watch", "external")  # "external": asked a public host for its IP


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_no_watcher_noise_while_photos_are_written(browser):
    home = ARTIFACTS / f"quiet-workspace-{os.getpid()}"  # inside the app folder, like ./workspace
    shutil.rmtree(home, ignore_errors=True)
    log_path = ARTIFACTS / "streamlit-quiet.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = dict(os.environ, FACETRACK_HOME=str(home), TF_CPP_MIN_LOG_LEVEL="2")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(  # the README's command (plus a free port), from the app folder
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        context = browser.new_context()
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 90
            while True:
                with (
                    contextlib.suppress(OSError),
                    urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r,
                ):
                    if r.status == 200:
                        break
                assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
                time.sleep(0.3)
            page = context.new_page()
            create_project("quiet", home)
            open_page(page, url, "capture", "quiet")
            expect(page.get_by_role("heading", name="1. Capture")).to_be_visible()

            rng = np.random.default_rng(0)
            photo = cv2.imencode(".jpg", rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))[1].tobytes()
            for round_ in range(8):  # projects made, filled and deleted, as a user (and augment) would
                project = create_project(f"quiet-{round_}", home)
                for _ in range(10):
                    project.add_image(photo, origin="import")
                for folder in range(10):
                    (project.path / "augmented" / f"part{folder}" / "images").mkdir(parents=True)
                project.delete()
            page.wait_for_timeout(3000)
            page.reload()
            open_page(page, url, "capture", "quiet")
        finally:
            context.close()
            stop_streamlit(proc)
            shutil.rmtree(home, ignore_errors=True)
    text = log_path.read_text(errors="replace")
    noisy = [line for line in text.splitlines() if any(word in line.lower() for word in NOISE)]
    assert not noisy, f"{len(text)} bytes of server output:\n" + "\n".join(noisy[:5])[:3000]

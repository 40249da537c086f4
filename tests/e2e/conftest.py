"""End-to-end fixtures: a real ``streamlit run app.py``, Debian chromium driven by Playwright, a fake camera.

The whole folder is skipped (with the reason) when ``/usr/bin/chromium`` or
the ``playwright`` package is missing. Facts this relies on are in
DESIGN.md, "Browser tests with a fake camera".

Fixtures:

- ``e2e_workspace``: the FACETRACK_HOME folder the server uses (session).
- ``app_server``: base URL of the running app (session); stopped at the end.
- ``fake_camera``: the Y4M file chromium plays as its webcam (two different
  people side by side, from the shared face photos when present, else a plain
  colour video), and the true face boxes in each of its frames.
- ``browser`` (session) and ``page`` (per test, fresh context; a screenshot
  is saved to ``artifacts/e2e/<test>.png`` when the test ends).

Helpers: :func:`open_page`, :func:`wait_idle`, :func:`webrtc_frame`,
:func:`click_start`, :func:`click_stop`, :func:`screenshot`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import fakecam  # tests/e2e is on sys.path (pytest's rootdir-relative import)
import pytest

CHROMIUM = Path("/usr/bin/chromium")
REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
ARTIFACTS = REPO_ROOT / "artifacts" / "e2e"
SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"
SERVER_START_TIMEOUT = 90.0

_MISSING = []
if not CHROMIUM.exists():
    _MISSING.append(f"{CHROMIUM} is not installed (apt-get install chromium)")
if importlib.util.find_spec("playwright") is None:
    _MISSING.append("the playwright package is not installed (pip install playwright)")


LIVE_PROJECT = "e2e-live"
# The multi-face (dense) live model: 215-256 s measured at load 15-18 on 2 cores (about half idle).
LIVE_TRAIN_TIMEOUT = 360.0


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).resolve().parent
    # the live test's model trains in the background from the session's start (2 to 4 minutes)
    config._e2e_wants_live_model = not _MISSING and any(
        "live_run" in getattr(i, "fixturenames", ()) for i in items
    )
    for item in items:
        if Path(str(item.fspath)).resolve().is_relative_to(here):
            item.add_marker(pytest.mark.e2e)
            if _MISSING:
                item.add_marker(pytest.mark.skip(reason="e2e skipped: " + "; ".join(_MISSING)))


def require_shared_faces() -> Path:
    """The shared face folder, or skip the test naming the folder."""
    faces = SHARED_DATA / "faces"
    if not (faces / "boxes.json").is_file():
        pytest.skip(f"needs the shared face photos in {faces} (absent)")
    return faces


# -- the server ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_streamlit(script: str | Path, cwd: Path, env_extra: dict[str, str], log_path: Path):
    """Start ``streamlit run script`` on a free port; returns (process, base URL, log file)."""
    port = free_port()
    env = dict(os.environ)
    env.update(env_extra)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO_ROOT), env.get("PYTHONPATH", "")] if p)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "wb")  # noqa: SIM115 - closed by stop_streamlit
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(script),
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.close()
            raise RuntimeError(f"streamlit exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url, log
        except OSError:
            pass
        time.sleep(0.3)
    stop_streamlit(proc, log)
    raise RuntimeError(f"streamlit did not answer on {url} in {SERVER_START_TIMEOUT:.0f}s")


def stop_streamlit(proc: subprocess.Popen, log=None) -> None:
    """Stop the server and everything it started (its process group: training jobs too)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    if log is not None:
        log.close()


@pytest.fixture(scope="session")
def e2e_workspace(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("facetrack_home")


@pytest.fixture(scope="session")
def app_server(e2e_workspace, browser):
    """Base URL of ``streamlit run app.py`` with FACETRACK_HOME = ``e2e_workspace``.

    The app's root page is opened once before the tests (it warms the
    router; a first visit by deep link is tested on its own server in
    test_capture_browser.py).
    """
    proc, url, log = start_streamlit(
        "app.py", REPO_ROOT, {"FACETRACK_HOME": str(e2e_workspace)}, ARTIFACTS / "streamlit.log"
    )
    try:
        context = browser.new_context()
        warm = context.new_page()
        warm.goto(url + "/")
        wait_idle(warm, 90)
        context.close()
    except BaseException:
        stop_streamlit(proc, log)
        raise
    yield url
    stop_streamlit(proc, log)
    # training jobs run in their own sessions (start_new_session): end those this run started
    for training in e2e_workspace.glob("*/training.json"):
        with contextlib.suppress(Exception):
            pid = int(json.loads(training.read_text()).get("pid"))
            os.killpg(pid, signal.SIGTERM)


@pytest.fixture(scope="session", autouse=True)
def _live_training(request, e2e_workspace):
    """Start training the Live page's model in a child process as the session starts (when needed)."""
    job = {}
    if (
        getattr(request.config, "_e2e_wants_live_model", False)
        and (SHARED_DATA / "faces" / "boxes.json").is_file()
    ):
        log_path = ARTIFACTS / "live-training.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "wb")  # noqa: SIM115 - closed below
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", FACETRACK_HOME=str(e2e_workspace))
        job["proc"] = subprocess.Popen(
            [
                sys.executable,
                str(Path(fakecam.__file__).resolve()),
                "train-live",
                str(e2e_workspace),
                LIVE_PROJECT,
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        job["log"], job["log_path"] = log, log_path
    request.config._e2e_live_job = job
    yield job
    if "proc" in job:
        if job["proc"].poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job["proc"].pid, signal.SIGKILL)
            job["proc"].wait(timeout=10)
        job["log"].close()


@pytest.fixture(scope="session")
def live_run(_live_training, e2e_workspace) -> dict:
    """``{"project": name, "run_dir": Path}``: a compact multi-face model trained to find the fake camera's faces."""
    require_shared_faces()
    job = _live_training
    if "proc" not in job:
        pytest.skip("the live model was not started (see conftest._live_training)")
    try:
        rc = job["proc"].wait(timeout=LIVE_TRAIN_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"training the live model took over {LIVE_TRAIN_TIMEOUT:.0f}s; see {job['log_path']}")
    if rc != 0:
        job["log"].flush()
        pytest.fail(f"training the live model failed ({rc}):\n{job['log_path'].read_text()[-3000:]}")
    run_dir = e2e_workspace / LIVE_PROJECT / "runs" / "20260101-000000-e2e-live"
    assert (run_dir / "model.tflite").is_file() or (run_dir / "model.keras").is_file(), run_dir
    return {"project": LIVE_PROJECT, "run_dir": run_dir}


# -- the browser ---------------------------------------------------------------


@pytest.fixture(scope="session")
def fake_camera(tmp_path_factory) -> dict:
    """``{"path": Path, "boxes": per frame, its true face boxes (two), or None, "size": (640, 480)}``."""
    folder = tmp_path_factory.mktemp("fakecam")
    path = folder / "camera.y4m"
    try:
        boxes = fakecam.two_face_video(path, size=(640, 480), seconds=4.0, fps=30, hold_frames=60)
    except FileNotFoundError:
        fakecam.solid_video(path, size=(640, 480), frames=60)
        boxes = None
    return {"path": path, "boxes": boxes, "size": (640, 480)}


def chromium_args(y4m: Path) -> list[str]:
    return [
        "--headless=new",
        "--no-sandbox",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={y4m}",
        "--allow-loopback-in-peer-connection",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--autoplay-policy=no-user-gesture-required",
    ]


@pytest.fixture(scope="session")
def browser(fake_camera):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=chromium_args(fake_camera["path"])
        )
        yield b
        b.close()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, permissions=["camera"])
    context.set_default_timeout(30_000)
    pg = context.new_page()
    pg.console_errors = []  # type: ignore[attr-defined]
    pg.on("console", lambda m: pg.console_errors.append(m.text) if m.type == "error" else None)
    yield pg
    with contextlib.suppress(Exception):
        screenshot(pg, request.node.name)
    context.close()


# -- helpers -------------------------------------------------------------------


def wait_idle(page, timeout: float = 60.0) -> None:
    """Wait until Streamlit is connected and its script is not running (the "Running..." widget gone)."""
    page.wait_for_selector(
        '[data-testid="stApp"][data-test-connection-state="CONNECTED"]', timeout=timeout * 1000
    )
    page.wait_for_function(
        """() => {
            const app = document.querySelector('[data-testid="stApp"]');
            if (!app) return false;
            const state = app.getAttribute('data-test-script-state');
            const running = document.querySelector('[data-testid="stStatusWidget"]');
            return state === 'notRunning' && !(running && /Running/i.test(running.innerText));
        }""",
        timeout=timeout * 1000,
        polling=200,
    )


def open_page(page, base_url: str, path: str, project: str | None = None, timeout: float = 60.0):
    """Go to ``base_url/path?project=...`` and wait for the script to finish."""
    url = f"{base_url}/{path.strip('/')}"
    if project:
        url += f"?project={project}"
    page.goto(url)
    wait_idle(page, timeout)
    return page


def webrtc_frame(page):
    """The streamlit-webrtc component's iframe (a FrameLocator)."""
    page.wait_for_selector('iframe[title*="streamlit_webrtc"]', timeout=60_000)
    return page.frame_locator('iframe[title*="streamlit_webrtc"]').first


START_RE = re.compile(r"^\s*start", re.I)  # "START", or a page's translation like "Start camera"
STOP_RE = re.compile(r"^\s*stop", re.I)


def click_start(page, timeout: float = 60.0) -> None:
    """Press START in the webrtc component and wait for the video to play."""
    frame = webrtc_frame(page)
    frame.get_by_role("button", name=START_RE).click(timeout=timeout * 1000)
    frame.get_by_role("button", name=STOP_RE).wait_for(timeout=timeout * 1000)
    wait_video_playing(page, timeout)


def wait_video_playing(page, timeout: float = 60.0) -> None:
    """Wait until the component's <video> shows decoded frames (readyState >= 2, a size, time moving)."""
    inner = webrtc_inner_frame(page)
    inner.wait_for_function(
        """() => {
            const v = document.querySelector('video');
            return v && v.readyState >= 2 && v.videoWidth > 0 && v.currentTime > 0.3;
        }""",
        timeout=timeout * 1000,
        polling=200,
    )


def click_stop(page, timeout: float = 30.0) -> None:
    frame = webrtc_frame(page)
    frame.get_by_role("button", name=STOP_RE).click(timeout=timeout * 1000)
    frame.get_by_role("button", name=START_RE).wait_for(timeout=timeout * 1000)


def webrtc_inner_frame(page):
    """The webrtc iframe as a Playwright Frame (for evaluate)."""
    el = page.wait_for_selector('iframe[title*="streamlit_webrtc"]', timeout=60_000)
    return el.content_frame()


def screenshot(page, name: str, docs_name: str | None = None, full_page: bool = True) -> Path:
    """Save ``artifacts/e2e/<name>.png``; with ``docs_name`` also copy it to ``docs/screenshots/``.

    The README's screenshots are only rewritten when ``FACETRACK_UPDATE_SCREENSHOTS=1``
    (so a test run does not change tracked files).
    """
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    path = ARTIFACTS / f"{safe}.png"
    page.screenshot(path=str(path), full_page=full_page)
    if docs_name and os.environ.get("FACETRACK_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SCREENSHOTS / f"{docs_name}.png")
    return path


def wait_until(predicate, timeout: float, interval: float = 0.25, message: str = "condition"):
    """Poll ``predicate()`` until truthy (returns it) or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {message} (last: {last!r})")

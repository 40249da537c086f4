"""Live: your own face detector on the webcam, every face frame by frame, with a photo fallback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

# Load WebRTC's native libraries before anything loads TensorFlow (a SIGSEGV otherwise).
import streamlit_webrtc  # noqa: F401 - before TensorFlow (see above)

from facetrack import runs as run_files
from facetrack.decode import load_decode_settings
from facetrack.detect import Detection, Detector, DetectorError, draw_detections
from facetrack.evaluate import is_face
from facetrack.images import ImageError, decode_image, encode_jpeg
from ui.common import header, page_link, pick_run, require_project
from ui.live import LiveProcessor
from ui.webrtc import connection_hint, keep_stream_alive, rtc_configuration

ENGINES = {"auto": "Fastest available", "litert": "LiteRT (.tflite, fast)", "keras": "Keras (.keras)"}
BACKEND_NAMES = {"litert": "LiteRT (the fast .tflite model)", "keras": "Keras (the .keras model)"}

project = require_project()
header(
    "6. Live",
    "Watch your own face detector find faces in your webcam, live, frame by frame.",
)


@st.cache_resource(max_entries=4, show_spinner="Loading the model…")
def load_detector(run_dir: str, model_file: str, mtime: float, backend: str) -> Detector:
    """One detector per model file and version (the key holds the file's path and mtime)."""
    del model_file, mtime  # cache key only
    return Detector.from_run(Path(run_dir), backend=backend)


def get_detector(run: Path, engine: str) -> Detector:
    tflite, keras_file = run / run_files.TFLITE_FILE, run / run_files.KERAS_FILE
    use_tflite = engine == "litert" or (engine == "auto" and tflite.is_file())
    model_file = tflite if use_tflite else keras_file
    try:
        mtime = model_file.stat().st_mtime
    except OSError:
        mtime = 0.0
    return load_detector(str(run), str(model_file), mtime, engine)


def processor() -> LiveProcessor:
    """This browser session's processor (the frame callback and this page share it)."""
    key = "live_processor"
    if key not in st.session_state:
        st.session_state[key] = LiveProcessor()
    return st.session_state[key]


def show_stats(proc: LiveProcessor) -> None:
    s = proc.snapshot()
    c1, c2, c3, c4, c5 = st.columns(5)
    c1.metric("Frames per second", f"{s.fps:.1f}" if s.fps is not None else "–")
    c2.metric("Model time per frame", f"{s.model_ms:.0f} ms" if s.model_ms is not None else "–")
    c3.metric("Frame size", f"{s.frame_size[0]}×{s.frame_size[1]}" if s.frame_size else "–")
    c4.metric(
        "Faces in frame",
        str(s.faces_in_frame) if s.frames else "–",
        help=f"Faces drawn on the last frame; the most on one frame so far: {s.most_faces}.",
    )
    c5.metric("Frames with a face", f"{s.faces} of {s.frames}" if s.frames else "–")
    if s.error:
        st.error(f"The detector failed on a frame: {s.error}")


@st.fragment(run_every=1.0)
def live_stats(proc: LiveProcessor) -> None:
    """Refreshes the measured numbers every second while the camera streams."""
    show_stats(proc)


def show_photo_result(found: list[Detection], candidates: list[Detection]) -> None:
    """How many faces the photo has above the threshold, with their scores."""
    if found:
        scores = ", ".join(f"{d.score:.2f}" for d in found)
        n = len(found)
        st.success(f"Found {n} face{'s' if n != 1 else ''} (score{'s' if n != 1 else ''} {scores}).")
    elif candidates:
        st.info(f"No face above the threshold (the best score was {candidates[0].score:.2f}).")
    else:
        st.info("No face above the threshold.")


def start_threshold(run: Path) -> float:
    """The run's own threshold (``decode.json``); the slider starts there each time another run is chosen."""
    value = load_decode_settings(run).threshold
    if st.session_state.get("live_threshold_run") != str(run):
        st.session_state["live_threshold_run"] = str(run)
        st.session_state["live_threshold"] = round(value, 2)
    return value


# -- choose a model ---------------------------------------------------------------

runs = [r for r in project.runs() if run_files.has_model(r) or run_files.has_tflite(r)]
if not runs:
    st.info(
        "There is no trained model yet, so there is nothing to run on the camera. "
        "Train one first; it appears here as soon as a training saves a model."
    )
    page_link("pages/train.py", label="Go to 4. Train", icon=":material/model_training:")
    st.stop()

left, right = st.columns([2, 1])
run, _ = pick_run(runs, "live_run", "The newest training is first.", container=left)
engine = right.selectbox(
    "Engine",
    list(ENGINES),
    format_func=ENGINES.get,
    key="live_engine",
    help="LiteRT runs the .tflite file and is several times faster on a CPU; Keras is the fallback.",
)
run_threshold = start_threshold(run)
c1, c2 = st.columns([2, 1])
threshold = c1.slider(
    "Confidence threshold",
    0.0,
    1.0,
    step=0.05,
    key="live_threshold",
    help=(
        "A face is shown when the model's score is at least this. Higher: fewer false alarms, more misses. "
        f"This model's own threshold (picked on validation) is {run_threshold:.2f}."
    ),
)
smoothing = c2.toggle(
    "Smooth the boxes",
    value=True,
    key="live_smoothing",
    help=(
        "Follows each face on its own from frame to frame and averages its box so it does not jitter; "
        "a face is drawn once seen in two frames running, and kept for a short dropout."
    ),
)

try:
    detector = get_detector(run, engine)
except (DetectorError, ValueError, OSError) as exc:
    st.error(f"This model cannot be loaded: {exc}")
    if not run_files.has_tflite(run) and engine == "litert":
        st.caption("Choose the Keras engine, or make the .tflite file on the Train page.")
    page_link("pages/train.py", label="Go to 4. Train", icon=":material/model_training:")
    st.stop()

proc = processor()
proc.configure(detector, threshold, smoothing)
backend_text = BACKEND_NAMES.get(detector.backend, detector.backend)
st.caption(f"Running with **{backend_text}**, input {detector.input_hw[1]}×{detector.input_hw[0]} pixels.")
if detector.backend == "keras" and engine == "auto":
    st.caption("Tip: make the .tflite file on the Train page for a faster live view.")

# -- the webcam ---------------------------------------------------------------------

camera_tab, photo_tab = st.tabs(
    [":material/videocam: Webcam", ":material/photo_camera: Photo (no streaming)"]
)

with camera_tab:
    playing = False
    try:
        import av
        from streamlit_webrtc import WebRtcMode, webrtc_streamer

        def video_frame_callback(frame: av.VideoFrame) -> av.VideoFrame:
            # Runs on streamlit-webrtc's worker thread: no st.* here, only the shared processor.
            bgr = frame.to_ndarray(format="bgr24")
            out = proc.process(bgr)
            return av.VideoFrame.from_ndarray(out, format="bgr24")

        keep_stream_alive(f"live-{project.name}")  # a busy server must not stop the camera (ui.webrtc)
        ctx = webrtc_streamer(
            key=f"live-{project.name}",
            mode=WebRtcMode.SENDRECV,
            rtc_configuration=rtc_configuration(),
            # Ask for the camera's own full picture: a large ideal size, no crop or rescale by the browser.
            media_stream_constraints={
                "video": {"width": {"ideal": 1920}, "height": {"ideal": 1080}, "resizeMode": "none"},
                "audio": False,
            },
            video_frame_callback=video_frame_callback,
            async_processing=True,
            translations={"start": "Start camera", "stop": "Stop camera"},
        )
        playing = bool(ctx.state.playing)
    except Exception as exc:  # noqa: BLE001 - the component must never take the page down
        st.warning(f"The live camera is not available here ({exc}). Use the Photo tab instead.")
    if playing:
        live_stats(proc)
    else:
        st.caption(
            "Press **Start camera** and allow the camera. Every face found gets a box with its score, "
            "and the FPS is drawn on the video."
        )
        show_stats(proc)
    connection_hint()

# -- fallback: one photo ------------------------------------------------------------

with photo_tab:
    st.caption("No live video? Take a photo or upload one, and the same model finds the faces in it.")
    shot = st.camera_input("Take a photo", key="live_camera_photo")
    upload = st.file_uploader(
        "…or upload a photo", type=["jpg", "jpeg", "png", "webp", "bmp"], key="live_upload"
    )
    source = shot or upload
    if source is not None:
        try:
            rgb = decode_image(source.getvalue(), getattr(source, "name", "photo"))
        except (ImageError, ValueError) as exc:
            st.error(f"This photo cannot be read: {exc}")
        else:
            try:
                candidates = detector.detect(rgb, "rgb", threshold=0.0)  # best first
            except (DetectorError, ValueError) as exc:
                st.error(f"The detector failed on this photo: {exc}")
            else:
                h, w = rgb.shape[:2]
                found = [d for d in candidates if is_face(d.score, threshold)]
                drawn = draw_detections(np.array(rgb), found, color="rgb", copy=True)
                st.image(encode_jpeg(drawn), caption=f"{w}×{h} photo")
                show_photo_result(found, candidates)

st.divider()
page_link(
    "pages/capture.py",
    label="Not good enough? Add more photos and train again",
    icon=":material/photo_camera:",
)

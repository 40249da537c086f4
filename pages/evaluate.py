"""Evaluate: measure a trained model on the test photos it never saw, photo by photo."""

from __future__ import annotations

import functools
import importlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import streamlit as st

# Load WebRTC's native libraries before anything loads TensorFlow (a SIGSEGV otherwise).
import streamlit_webrtc  # noqa: F401 - before TensorFlow (see above)

from facetrack import runs as run_files
from facetrack.data import Sample, list_samples
from facetrack.evaluate import (
    compare_with_reference,
    is_face,
    metrics_from_detections,
    reference_metrics,
    suggestions_as_detections,
)
from facetrack.export import labelme_zip
from facetrack.images import ImageError, encode_jpeg, read_rgb
from facetrack.labels import Box, LabelError
from facetrack.testset import MIN_TEST_FACES, MIN_TEST_MOMENTS, TestSetSummary, summarize_test_set
from facetrack.workspace import Project
from ui.common import header, model_download, page_link, pick_run, require_project
from ui.images import BOX_RGB, draw_boxes, shrink

PRED_RGB = (255, 140, 0)  # orange: what a model predicted
PRETRAINED_RGB = (66, 133, 244)  # blue: the ready-made detector
GALLERY_SIZE = 12
METRICS = [
    ("presence_accuracy", "Face / no face right", "Share of test photos where the model was right about whether there is a face."),
    ("ap50", "Overall box score (AP@0.5)", "Finding every face and placing its box well, over every score threshold at once: 1 is perfect. Experts call it average precision at IoU 0.5, over every face."),
    ("recall", "Faces found", "Of all the faces in the test photos, the share the model found (box overlapping at least half)."),
    ("precision", "Boxes right", "Of the boxes the model drew, the share on a real face (a second box on the same face is wrong)."),
    ("f1", "F1", "Faces found and boxes right in one number (their harmonic mean)."),
    ("fp_rate", "False alarms", "Share of photos without a face where the model still drew a box. Lower is better."),
    ("mean_iou", "Mean box overlap (IoU)", "How well the boxes of the faces found cover them: 0 = miss, 1 = perfect."),
    ("hit_rate", "Faces found at any score", "Share of faces the model finds with some box, however unsure: what a lower threshold could reach."),
]  # fmt: skip

project = require_project()
header(
    "5. Evaluate",
    "See how well a trained model does on the test photos it never saw during training, "
    "and compare it with a ready-made face detector.",
)


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, int | float) and not isinstance(v, bool) else "–"


def _box(values: Any) -> Box | None:
    try:
        return Box(*(float(v) for v in values))
    except (TypeError, ValueError, LabelError):
        return None


def _photo_path(project: Project, item: dict[str, Any]) -> Path:
    """The original photo when it still exists (real aspect ratio), else the evaluated copy."""
    source = item.get("source_id") or ""
    try:
        original = project.image_path(source)
        if original.is_file():
            return original
    except ValueError:
        pass
    return Path(item.get("path", ""))


@st.cache_data(max_entries=500, show_spinner=False)
def _annotated(path: str, mtime: float, true_boxes: tuple, boxes: tuple, side: int = 360) -> bytes | None:
    """JPEG of the photo with every true box (green) and ``boxes`` ((box, rgb, label), ...) drawn."""
    del mtime
    try:
        rgb = read_rgb(Path(path))
    except (ImageError, OSError, ValueError):
        return None
    rgb = shrink(rgb, side)
    rgb = draw_boxes(rgb, [Box(*b) for b in true_boxes], BOX_RGB)
    for box, colour, label in boxes:
        rgb = draw_boxes(rgb, [Box(*box)], tuple(colour), [label])
    return encode_jpeg(rgb, quality=85)


def annotated(path: Path, true_boxes: list[Box], boxes: list[tuple[Box, tuple, str]]) -> bytes | None:
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return None
    return _annotated(
        str(path),
        mtime,
        tuple(tuple(b.to_list()) for b in true_boxes),
        tuple((tuple(b.to_list()), c, label) for b, c, label in boxes),
    )


def item_truth(item: dict[str, Any]) -> list[Box]:
    """Every true face of a per-image result (older results: the one ``true_box``)."""
    raw = item.get("true_boxes")
    if raw is None:
        raw = [item["true_box"]] if item.get("true_box") else []
    return [b for b in (_box(v) for v in raw) if b is not None]


def item_detections(item: dict[str, Any]) -> list[tuple[Box, float]]:
    """Every detection of a per-image result, best first (older results: the one ``pred_box``)."""
    if item.get("pred_boxes") is not None:
        pairs = zip(item["pred_boxes"], item.get("pred_scores") or [], strict=False)
    else:
        pairs = [(item.get("pred_box") or [], item.get("score", 0.0))]
    return [(b, float(sc)) for v, sc in pairs if (b := _box(v)) is not None]


@st.cache_data(max_entries=2000, show_spinner=False)
def _pretrained(path: str, mtime: float) -> list[tuple[tuple[float, ...], float]] | str:
    """The ready-made detector's faces (normalized box, score) on one photo; str = why it could not run."""
    del mtime
    suggest = importlib.import_module("facetrack.suggest")
    try:
        found = suggest.suggest_boxes(read_rgb(Path(path)))
    except Exception as exc:  # noqa: BLE001 - shown as a plain message, never a traceback
        return f"{type(exc).__name__}: {exc}"
    return [(tuple(f.box.to_list()), float(f.score)) for f in found]


def pretrained_available() -> str | None:
    """None when the ready-made detector can be used, else why not."""
    try:
        suggest = importlib.import_module("facetrack.suggest")
    except ImportError as exc:
        return f"the ready-made detector is not installed ({exc})"
    if not hasattr(suggest, "suggest_boxes"):
        return "the ready-made detector is not available in this version"
    return None


def show_test_set(summary: TestSetSummary) -> None:
    """How many test photos and faces, from how many moments; a warning when too few to trust."""
    st.markdown(
        f"**Test set:** {summary.photos} photo(s) the model never saw: {summary.faces} with a face, "
        f"{summary.no_face} without, taken at {summary.moments} separate moment(s) "
        "(a burst counts as one moment: its photos are near copies)."
    )
    if not summary.too_few:
        return
    spread = (
        f"With {summary.faces} test photo(s) with a face, one photo more or less right moves a score by "
        f"{100 / summary.faces:.0f} points"
        if summary.faces
        else "There is no test photo with a face, so nothing says how well boxes are placed"
    )
    st.warning(
        f"**Too few test photos to trust these figures much.** {spread}; FaceTrack wants at least "
        f"{MIN_TEST_FACES} test photos with a face, from at least {MIN_TEST_MOMENTS} separate moments. "
        "What to do: take more bursts (or single photos), ideally on other days, in other light, in other "
        "clothes or rooms; label them, then generate the training set again (about one group in seven "
        "goes to the test set by itself) and evaluate again.",
        icon=":material/warning:",
    )


def comparison_caveat(summary: TestSetSummary) -> None:
    """Warn when the true boxes are the ready-made face finder's own accepted suggestions."""
    if summary.suggested_faces:
        st.warning(
            f"{summary.suggested_faces} of the {summary.faces} test face(s) have boxes you accepted from "
            "this same ready-made face finder's suggestions on the Label page. On those photos it is "
            "compared with itself, so it looks almost perfect there: the comparison means little. "
            "For a fair one, draw the boxes of some test photos by hand.",
            icon=":material/balance:",
        )
    elif summary.unknown_faces:
        st.caption(
            "If you accepted the ready-made face finder's suggestions on the Label page, those photos' "
            "true boxes are its own, and it looks better than it is on them."
        )


def show_metrics(m: dict[str, Any]) -> None:
    counts = m.get("counts") or m
    faces = counts.get("faces", m.get("faces", counts.get("n_faces", "?")))
    st.markdown(
        f"**On {counts.get('n_images', '?')} test photos** "
        f"({faces} faces in {counts.get('n_faces', '?')} photos, {counts.get('n_no_face', '?')} photos without), "
        f"counting a face when the score is at least {m.get('threshold', 0.5):g}."
    )
    for row in (METRICS[:4], METRICS[4:]):
        cols = st.columns(4)
        for col, (key, label, help_text) in zip(cols, row, strict=True):
            with col:
                st.metric(label, _fmt(m.get(key)))
                st.caption(help_text)
    for note in m.get("notes") or []:
        st.caption(f"Note: {note}.")


VERDICTS = {"model": "Your model wins", "reference": "The ready-made detector wins", "tie": "A tie"}


def counts_text(who: str, truth: list[Box], found: list[tuple[Box, float]], threshold: float) -> str:
    """``"yours: 2 of 3 faces, 1 false alarm"`` for one photo at ``threshold``."""
    sample = Sample(Path("photo"), boxes=tuple(truth))
    scores = np.array([sc for _, sc in found], np.float64)
    boxes = np.array([b.to_list() for b, _ in found], np.float64).reshape(-1, 4)
    r = metrics_from_detections([sample], [(scores, boxes)], threshold).per_image[0]
    text = f"{who}: {r.found} of {r.faces} faces" if r.faces else f"{who}: no face to find"
    if r.false_alarms:
        text += f", {r.false_alarms} false alarm" + ("s" if r.false_alarms > 1 else "")
    return text + (" ✓" if r.correct else " ✗")


def pretrained_found(path: Path, errors: list[str]) -> list[tuple[Box, float]] | None:
    try:
        mtime = path.stat().st_mtime
    except OSError:
        mtime = 0.0
    found = _pretrained(str(path), mtime)
    if isinstance(found, str):
        errors.append(found)
        return None
    return [(Box(*b), sc) for b, sc in found]


def compare_summary(
    items: list[dict[str, Any]], theirs: list[list[tuple[Box, float]]], threshold: float
) -> None:
    """Both detectors scored the same way (AP@0.5 over every face) on the photos shown."""
    samples = [Sample(Path(str(i)), boxes=tuple(item_truth(it))) for i, it in enumerate(items)]
    if not sum(len(s.boxes) for s in samples):
        return
    ours = [suggestions_as_detections([SimpleNamespace(box=b, score=sc) for b, sc in item_detections(it)])
            for it in items]  # fmt: skip
    mine = metrics_from_detections(samples, ours, threshold)
    ref = reference_metrics(samples, [[SimpleNamespace(box=b, score=sc) for b, sc in t] for t in theirs], 0.5)
    verdict = VERDICTS[compare_with_reference([mine.ap50 or 0.0], [ref.ap50 or 0.0])]
    st.info(
        f"On these {len(items)} photos ({mine.faces} faces), scored the same way: your model's AP@0.5 "
        f"{_fmt(mine.ap50)} (found {mine.recall or 0:.0%} of the faces), the ready-made detector's "
        f"{_fmt(ref.ap50)} (found {ref.recall or 0:.0%}). {verdict}."
    )


def show_gallery(items: list[dict[str, Any]], compare: bool) -> None:
    st.caption(
        "Green: the boxes you drew. Orange: your model's boxes and scores."
        + (" Blue: the ready-made face finder (MTCNN)." if compare else "")
    )
    theirs_all: list[list[tuple[Box, float]]] = []
    errors: list[str] = []
    cols = st.columns(3)
    for i, item in enumerate(items):
        path = _photo_path(project, item)
        threshold = float(item.get("threshold", 0.5))
        truth = item_truth(item)
        found = [(b, sc) for b, sc in item_detections(item) if is_face(sc, threshold)]
        boxes = [(b, PRED_RGB, f"{sc:.2f}") for b, sc in found]
        caption = counts_text("yours", truth, found, threshold)
        if compare:
            theirs = pretrained_found(path, errors)
            if theirs is not None:
                theirs_all.append(theirs)
                boxes += [(b, PRETRAINED_RGB, "MTCNN") for b, _ in theirs]
                caption += " · " + counts_text("ready-made", truth, theirs, 0.5)
        with cols[i % 3]:
            data = annotated(path, truth, boxes)
            if data is None:
                st.caption("(photo no longer available)")
                continue
            st.image(data, caption=caption)
    if errors:
        st.error(f"The ready-made detector could not run: {errors[0]}")
    if compare and len(theirs_all) == len(items) and items:
        compare_summary(items, theirs_all, float(items[0].get("threshold", 0.5)))


def model_downloads(run_dir: Path) -> None:
    keras_path, tflite_path = run_dir / run_files.KERAS_FILE, run_dir / run_files.TFLITE_FILE
    c1, c2, c3 = st.columns(3)
    model_download(c1, keras_path, "Model (.keras)", key="eval-dl-keras")
    if tflite_path.is_file():
        model_download(c2, tflite_path, "Model for phones and live use (.tflite)", key="eval-dl-tflite")
    else:
        c2.caption("No .tflite file yet: make one on the Train page.")
    c3.download_button(
        "Labelled photos (.zip for the labelme app)",
        data=functools.partial(labelme_zip, project),
        file_name=f"{project.name}-labelme.zip",
        mime="application/zip",
        icon=":material/folder_zip:",
        on_click="ignore",
        key="eval-dl-zip",
        help="Every photo with its box file. The box files are in the format of labelme, a free "
        "labelling program (JSON files): labelme opens them unchanged.",
    )


# -- the page ---------------------------------------------------------------------

runs = [r for r in project.runs() if run_files.has_model(r)]
if not runs:
    st.info("There is no trained model yet. Train one first; it appears here when a training saves a model.")
    page_link("pages/train.py", label="Go to 4. Train", icon=":material/model_training:")
    st.stop()

run, state = pick_run(runs, "eval_run", "Each training run saves its best model. The newest is first.")
if state.active:
    st.caption("This training is still running: the model shown is its best so far.")

test = list_samples(project.augmented_dir, "test", project.stored_split())
summary = summarize_test_set(project, test)
metrics = run_files.read_metrics(run)
per_image = run_files.read_per_image(run)

if not test:
    st.warning(
        "There are no test photos in the generated set, so the model cannot be measured. "
        "Label more photos (some are kept aside for testing automatically), then generate the set again."
    )
    page_link("pages/augment.py", label="Go to 3. Augment", icon=":material/auto_awesome:")
else:
    show_test_set(summary)
    label = "Evaluate again on the test photos" if metrics else "Evaluate on the test photos"
    if st.button(
        label, type="secondary" if metrics else "primary", icon=":material/fact_check:", key="evaluate"
    ):
        from facetrack.evaluate import evaluate_run
        from facetrack.model import ModelLoadError

        with st.spinner(f"Running the model on {len(test)} test photos…"):
            try:
                evaluate_run(run, test)
            except (ModelLoadError, ValueError, OSError) as exc:
                st.error(f"Could not evaluate this model: {exc}")
            else:
                st.rerun()

if metrics:
    show_metrics(metrics)
    if isinstance(per_image, list) and per_image:
        st.subheader("Test photos, worst first (missed faces and false alarms)")
        for item in per_image:
            item.setdefault("threshold", metrics.get("threshold", 0.5))
        reason = pretrained_available()
        compare = st.toggle(
            "Compare with a ready-made face finder (MTCNN, works offline; slower the first time)",
            value=False,
            disabled=reason is not None,
            key="eval_compare",
            help=reason
            or "Runs a pretrained face detector on the same photos so you can see if yours beats it.",
        )
        if compare:
            comparison_caveat(summary)
            with st.spinner("Running the ready-made detector on these photos…"):
                show_gallery(per_image[:GALLERY_SIZE], True)
        else:
            show_gallery(per_image[:GALLERY_SIZE], False)
elif test:
    st.caption("Not evaluated yet: press the button to measure this model on the test photos.")

st.divider()
st.subheader("Downloads")
model_downloads(run)
page_link(
    "pages/live.py", label="Next: 6. Live — watch it find faces on your camera", icon=":material/videocam:"
)

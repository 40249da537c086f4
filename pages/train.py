"""Train: choose a backbone and settings, start a training in the background, watch it live."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

# Load WebRTC's native libraries before anything loads TensorFlow (a SIGSEGV otherwise).
import streamlit_webrtc  # noqa: F401 - before TensorFlow (see above)

from facetrack import jobs, runs
from facetrack.progress import format_time_left
from facetrack.train import TrainSettings
from facetrack.weights import vgg16_weights_cached
from ui.charts import loss_figure, score_figure
from ui.common import (
    header,
    model_download,
    require_project,
    run_label,
    training_set_counts,
    training_set_stale,
)

BACKBONES = {
    "vgg16": "VGG16 with ImageNet weights (as in the tutorial; best results)",
    "compact": "Compact (works offline, trained from scratch)",
}
STATE_TEXT = {
    "starting": ("Starting", ":material/hourglass_top:"),
    "running": ("Training", ":material/progress_activity:"),
    "finished": ("Finished", ":material/check_circle:"),
    "stopped": ("Stopped", ":material/stop_circle:"),
    "failed": ("Failed", ":material/error:"),
    "interrupted": ("Interrupted", ":material/warning:"),
}
LEARNING_RATES = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
BATCH_SIZES = [8, 16, 32, 64, 128]
PHASES = {"head": "training the head", "fine_tune": "fine-tuning VGG16", "train": "training"}

project = require_project()
header(
    "4. Train",
    "Teach your own face detector on the training set; it trains in the background, "
    "so you can leave this page or reload it and come back.",
)


def progress_text(state: runs.RunState) -> tuple[float, str]:
    """(fraction 0..1, plain sentence) for the progress bar."""
    p = state.progress
    stage = p.get("stage")
    if state.state == "starting" or not p:
        return 0.0, "Starting: loading TensorFlow and the photos…"
    if stage == "features":
        done, total = int(p.get("done", 0)), int(p.get("total", 0))
        frac = done / total if total else 0.0
        return frac, f"Preparing: VGG16 looks at each training photo once ({done} of {total})"
    if stage == "export":
        return 1.0, "Saving the model for live use…"
    epochs = p.get("epochs") or state.epochs
    if stage == "epoch":
        return state.fraction, f"Epoch {p.get('epoch')} of {epochs} done; checking on the validation photos…"
    phase = PHASES.get(stage, "training")
    text = (
        f"Epoch {p.get('epoch')} of {epochs}, batch {p.get('batch')} of {p.get('batches')} "
        f"({phase}) — {format_time_left(p.get('eta_seconds'))}"
    )
    return state.fraction, text


def show_scores(state: runs.RunState) -> None:
    last = state.history[-1] if state.history else {}
    c1, c2, c3 = st.columns(3)
    c1.metric(
        "Epochs done",
        f"{state.epoch or int(last.get('epoch', 0) or 0)} / {state.epochs}" if state.epochs else "–",
    )
    c2.metric(
        "Best validation score",
        f"{state.best_val_score:.3f}" if state.best_val_score is not None else "–",
        help="0 to 1, higher is better: the AP@0.5 over every face of the validation photos "
        "(finding each face and placing its box). Runs of the older one-face kind: for a photo with a "
        "face, how well the box overlaps; for a photo without one, 1 if the model says so.",
    )
    iou = last.get("val_mean_iou")
    c3.metric(
        "Last validation box overlap (IoU)",
        f"{iou:.3f}" if isinstance(iou, float) else "–",
        help="How much the predicted box overlaps the true box on validation photos, 0 to 1.",
    )


def show_curves(state: runs.RunState, key: str) -> None:
    if not state.history:
        st.caption("The curves appear after the first epoch.")
        return
    left, right = st.columns(2)
    left.plotly_chart(loss_figure(state.history), key=f"loss-{key}")
    right.plotly_chart(score_figure(state.history), key=f"score-{key}")


@st.fragment(run_every=1.0)
def live_training(run_dir: str) -> None:
    """Polls the run folder every second (the training itself runs in another process)."""
    state = runs.run_state(Path(run_dir))
    if not state.active:
        st.rerun()  # it ended: redraw the whole page (form and run list)
    frac, text = progress_text(state)
    st.progress(min(max(frac, 0.0), 1.0), text=text)
    stopping = runs.stop_requested(Path(run_dir))
    if not stopping and st.button("Stop training", icon=":material/stop:", key="stop_training"):
        jobs.request_stop(Path(run_dir))
        stopping = True
    if stopping:
        st.info("Stopping after the current batch; the best model so far is kept.")
    show_scores(state)
    show_curves(state, "live")


def settings_form() -> None:
    n = training_set_counts(project)
    st.subheader("New training")
    if n["train"] == 0:
        st.warning(
            "There is no training set yet, so there is nothing to train on. "
            "Label some photos, then generate the training set on the Augment page."
        )
        st.page_link("pages/augment.py", label="Go to 3. Augment", icon=":material/auto_awesome:")
        return
    if n["train_faces"] == 0:
        st.warning(
            "The training set has no face in it, so the model could not learn what a face looks like. "
            "Draw face boxes on some photos, then generate the training set again."
        )
        st.page_link("pages/label.py", label="Go to 2. Label", icon=":material/crop_free:")
        return
    st.caption(
        f"Training set: {n['train']} images ({n['train_faces']} with a face). "
        f"Validation: {n['val']} photos. Test: {n['test']} photos (kept for the Evaluate page)."
    )
    if training_set_stale(project):
        st.info("Some labelled photos are not in the training set yet. Generate it again to include them.")
        st.page_link("pages/augment.py", label="Update the training set", icon=":material/auto_awesome:")
    if n["val"] == 0:
        st.caption("No validation photos: the best epoch will be chosen on training images instead.")

    backbone = st.radio(
        "Backbone (the part of the model that sees the picture)",
        list(BACKBONES),
        format_func=BACKBONES.get,
        key="train_backbone",
    )
    if backbone == "vgg16":
        if vgg16_weights_cached():
            st.caption("The VGG16 ImageNet weights are downloaded already.")
        else:
            st.info(
                "VGG16 needs its ImageNet weights: a one-time download of about 58 MB when the training "
                "starts. Without internet the training stops at once with a message saying where to put "
                "the file by hand; the Compact backbone works offline.",
                icon=":material/download:",
            )
    defaults = TrainSettings(backbone=backbone)
    c1, c2, c3 = st.columns(3)
    epochs = c1.number_input(
        "Epochs",
        min_value=1,
        max_value=500,
        value=int(defaults.epochs),
        key=f"train_epochs_{backbone}",
        help="How many times the model goes over the whole training set. "
        "It stops early when the validation score stops improving.",
    )
    batch_size = c2.selectbox(
        "Batch size",
        BATCH_SIZES,
        index=BATCH_SIZES.index(int(defaults.batch_size)),
        key=f"train_batch_{backbone}",
        help="Images per learning step. Smaller uses less memory.",
    )
    learning_rate = c3.select_slider(
        "Learning rate",
        LEARNING_RATES,
        value=float(defaults.learning_rate),
        format_func=lambda v: f"{v:g}",
        key=f"train_lr_{backbone}",
        help="How big each learning step is. Too high: the curves jump around; too low: slow progress.",
    )
    fine_tune = st.toggle(
        "Fine-tune the top of VGG16 afterwards (slower, sometimes better boxes)",
        value=False,
        disabled=backbone != "vgg16",
        key="train_fine_tune",
        help="After the head has learnt, also adjust VGG16's last block for a few epochs at a low "
        "learning rate. Only for VGG16.",
    )
    name = st.text_input("Run name (optional)", placeholder=backbone, max_chars=40, key="train_run_name")
    if st.button("Start training", type="primary", icon=":material/play_arrow:", key="start_training"):
        try:
            settings = TrainSettings(
                backbone=backbone,
                weights="imagenet" if backbone == "vgg16" else "none",
                epochs=int(epochs),
                batch_size=int(batch_size),
                learning_rate=float(learning_rate),
                fine_tune=bool(fine_tune) and backbone == "vgg16",
                name=name.strip(),
            )
            jobs.start_training(project, settings)
        except (jobs.JobError, ValueError, OSError) as exc:
            st.error(str(exc))
            return
        st.rerun()


def model_downloads(run_dir: Path, key: str) -> None:
    keras_path = run_dir / runs.KERAS_FILE
    tflite_path = run_dir / runs.TFLITE_FILE
    if not keras_path.is_file():
        return
    c1, c2 = st.columns(2)
    model_download(c1, keras_path, f"Download {runs.KERAS_FILE}", key=f"dl-keras-{key}")
    if tflite_path.is_file() and tflite_path.stat().st_mtime >= keras_path.stat().st_mtime:
        model_download(
            c2, tflite_path, f"Download {runs.TFLITE_FILE} (for phones and live use)", key=f"dl-tflite-{key}"
        )
    elif c2.button(f"Make {runs.TFLITE_FILE}", icon=":material/build:", key=f"export-{key}"):
        from facetrack.export import ExportError, export_run

        with st.spinner("Converting the model to TFLite (a few seconds)…"):
            try:
                export_run(run_dir, "tflite")
            except (ExportError, ValueError, OSError) as exc:
                st.error(f"Could not make the .tflite file: {exc}")
                return
        st.rerun()


METRIC_LABELS = {
    "presence_accuracy": "Face / no face right",
    "f1": "F1",
    "mean_iou": "Mean box overlap (IoU)",
    "ap50": "AP@0.5",
}


def show_run(state: runs.RunState, key: str) -> None:
    s = state.settings
    if s:
        parts = [
            BACKBONES.get(s.get("backbone"), str(s.get("backbone"))).split(" (")[0],
            f"{s.get('epochs')} epochs",
            f"batch {s.get('batch_size')}",
            f"learning rate {s.get('learning_rate'):g}" if s.get("learning_rate") else "",
            "fine-tuned" if s.get("fine_tune") else "",
        ]
        st.caption(" · ".join(p for p in parts if p))
    if state.state == "failed":
        st.error(state.message or "The training failed; see train.log in the run folder.")
        if "weights" in (state.message or "").lower() and s.get("backbone") == "vgg16":
            st.caption("Tip: choose “Compact (works offline)” above and start again.")
    elif state.state == "interrupted":
        if state.has_model:
            st.warning(
                "The training process ended unexpectedly (the computer or the app was restarted?). "
                "The best model so far is saved and usable."
            )
        else:
            st.warning("The training process ended unexpectedly before a model was saved.")
    elif state.state == "stopped":
        st.info("Stopped on request. The best model so far is saved and usable.")
    elif state.message:
        st.caption(state.message.capitalize())
    show_scores(state)
    if state.metrics:
        st.markdown("**On the test photos** (from the Evaluate page)")
        cols = st.columns(len(METRIC_LABELS))
        for col, (k, label) in zip(cols, METRIC_LABELS.items(), strict=True):
            v = state.metrics.get(k)
            col.metric(label, f"{v:.3f}" if isinstance(v, int | float) else "–")
    show_curves(state, key)
    model_downloads(state.run_dir, key)


# -- the page ---------------------------------------------------------------------

active = runs.active_training(project.path)
if active is not None:
    st.subheader(f"Training now: {run_label(active)}")
    live_training(str(active))
else:
    settings_form()

project_runs = [r for r in project.runs() if r != active]
st.divider()
st.subheader("Past trainings")
if not project_runs:
    st.caption("None yet. Your trainings will be listed here, newest first.")
else:
    if any(runs.has_model(r) for r in project_runs):
        st.page_link("pages/evaluate.py", label="Next: 5. Evaluate a model", icon=":material/fact_check:")
    for i, run in enumerate(project_runs):
        state = runs.run_state(run)
        label, icon = STATE_TEXT.get(state.state, (state.state, ":material/help:"))
        with st.expander(f"{run_label(run)} — {label}", icon=icon, expanded=i == 0):
            show_run(state, key=run.name)

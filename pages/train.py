"""Train: choose a backbone and settings, start a training in the background, watch it live."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

# Load WebRTC's native libraries before anything loads TensorFlow (a SIGSEGV otherwise).
import streamlit_webrtc  # noqa: F401 - before TensorFlow (see above)

from facetrack import jobs, runs
from facetrack.limits import TRAIN_LIMITS
from facetrack.progress import format_time_left
from facetrack.train import TrainSettings
from facetrack.weights import (
    VGG16_NOTOP_FILE,
    offline_requested,
    vgg16_availability,
    vgg16_weights_cached,
    vgg16_weights_path,
)
from ui.charts import loss_figure, score_figure
from ui.common import (
    header,
    model_download,
    page_link,
    require_project,
    run_label,
    training_set_counts,
    training_set_stale,
)

BACKBONES = {
    "compact": "Compact (small and fast, works offline)",
    "vgg16": "VGG16 (big, pre-trained on ImageNet photos; as in the tutorial)",
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


@st.cache_data(ttl=300, show_spinner=False)
def _vgg16_state(cache_dir: str, cached: bool, offline: bool) -> str:
    del cache_dir, cached, offline  # in the key only: a changed Keras cache is looked at again
    return vgg16_availability()


def vgg16_state() -> str:
    """``"cached"``, ``"downloadable"`` or ``"offline"``; the internet is asked at most every 5 minutes."""
    return _vgg16_state(str(vgg16_weights_path()), vgg16_weights_cached(), offline_requested())


def last_run_settings() -> dict:
    """The settings of the project's newest training ({} when none)."""
    for run in project.runs():
        settings = runs.run_state(run).settings
        if settings.get("backbone") in BACKBONES:
            return settings
    return {}


def remembered(key: str, default: object) -> str:
    """Fill widget ``key`` before it is drawn: this session's choice, else ``default`` (the last run's).

    The widget's own value is dropped by Streamlit while the form is hidden (during a
    training); the copy in ``train_prefs`` survives, so the page never jumps back to VGG16.
    """
    if key not in st.session_state:
        prefs = st.session_state.setdefault("train_prefs", {})
        if key in prefs:
            st.session_state[key] = prefs[key]
        else:
            st.session_state[key] = default
    return key


def remember(key: str) -> None:
    st.session_state.setdefault("train_prefs", {})[key] = st.session_state[key]


def last_run_values(settings: dict) -> dict[str, object]:
    """Widget values of the last run (for its backbone only), ``{}`` when there is none."""
    backbone = settings.get("backbone")
    if backbone not in BACKBONES:
        return {}
    values: dict[str, object] = {
        "train_backbone": backbone,
        "train_fine_tune": bool(settings.get("fine_tune")),
    }
    for key, field, kind, allowed in (
        ("epochs", "epochs", int, None),
        ("batch", "batch_size", int, BATCH_SIZES),
        ("lr", "learning_rate", float, LEARNING_RATES),
    ):
        try:
            value = kind(settings[field])
        except (KeyError, TypeError, ValueError):
            continue
        if allowed is None or value in allowed:
            values[f"train_{key}_{backbone}"] = value
    return values


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
        help="0 to 1, higher is better, on the validation photos: the mean of the AP@0.5 over every "
        "face (finding each face and placing its box) and the face / no face accuracy of the photos. "
        "The best epoch by this score is the model kept. Runs of the older one-face kind: for a photo "
        "with a face, how well the box overlaps; for a photo without one, 1 if the model says so.",
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
        page_link("pages/augment.py", label="Go to 3. Augment", icon=":material/auto_awesome:")
        return
    if n["train_faces"] == 0:
        st.warning(
            "The training set has no face in it, so the model could not learn what a face looks like. "
            "Draw face boxes on some photos, then generate the training set again."
        )
        page_link("pages/label.py", label="Go to 2. Label", icon=":material/crop_free:")
        return
    st.caption(
        f"Training set: {n['train']} images ({n['train_faces']} with a face). "
        f"Validation: {n['val']} photos. Test: {n['test']} photos (kept for the Evaluate page)."
    )
    if training_set_stale(project):
        st.info("Some labelled photos are not in the training set yet. Generate it again to include them.")
        page_link("pages/augment.py", label="Update the training set", icon=":material/auto_awesome:")
    if n["val"] == 0:
        st.caption("No validation photos: the best epoch will be chosen on training images instead.")

    availability = vgg16_state()
    last = last_run_values(last_run_settings())
    default_backbone = last.get("train_backbone") or ("compact" if availability == "offline" else "vgg16")
    if default_backbone == "vgg16" and availability == "offline":
        default_backbone = "compact"  # a VGG16 run would fail at once
    backbone = st.radio(
        "Backbone (the part of the model that sees the picture)",
        list(BACKBONES),
        format_func=BACKBONES.get,
        key=remembered("train_backbone", default_backbone),
        on_change=remember,
        args=("train_backbone",),
    )
    st.caption(
        "**Backbone**: the part that turns the picture into features (edges, eyes, shapes). "
        "*VGG16* comes already trained on a million photos, so it knows faces well, but it is big "
        "(58 MB) and slow on a laptop. *Compact* is small and learns from your photos only: "
        "a model in about a minute, and no internet needed."
    )
    if backbone == "vgg16":
        if availability == "cached":
            st.caption("The VGG16 ImageNet weights are downloaded already.")
        elif availability == "downloadable":
            st.info(
                "VGG16 needs its ImageNet weights: a one-time download of about 58 MB when the training "
                "starts.",
                icon=":material/download:",
            )
        else:
            st.warning(
                "VGG16 needs its ImageNet weights (58 MB), and they are not on this computer and the "
                "internet cannot be reached: a VGG16 training would stop at once. Choose **Compact**, "
                f"or put the file `{VGG16_NOTOP_FILE}` in `{vgg16_weights_path().parent}` by hand.",
                icon=":material/cloud_off:",
            )
    defaults = TrainSettings(backbone=backbone)
    epochs_key = remembered(f"train_epochs_{backbone}", last.get(f"train_epochs_{backbone}", defaults.epochs))
    batch_key = remembered(
        f"train_batch_{backbone}", last.get(f"train_batch_{backbone}", defaults.batch_size)
    )
    lr_key = remembered(f"train_lr_{backbone}", last.get(f"train_lr_{backbone}", defaults.learning_rate))
    c1, c2, c3 = st.columns(3)
    epochs = c1.number_input(
        "Epochs (rounds)",
        min_value=TRAIN_LIMITS["epochs"][0],
        max_value=TRAIN_LIMITS["epochs"][1],
        key=epochs_key,
        on_change=remember,
        args=(epochs_key,),
        help="How many times the model goes over the whole training set.",
    )
    batch_size = c2.selectbox(
        "Batch size (photos per step)",
        BATCH_SIZES,
        key=batch_key,
        on_change=remember,
        args=(batch_key,),
        help="Images per learning step. Smaller uses less memory.",
    )
    learning_rate = c3.select_slider(
        "Learning rate (step size)",
        LEARNING_RATES,
        format_func=lambda v: f"{v:g}",
        key=lr_key,
        on_change=remember,
        args=(lr_key,),
        help="How big each learning step is.",
    )
    c1.caption(
        "**Epochs**: how many times the model looks at every training image. More rounds can learn "
        "more; it stops by itself when the validation photos stop getting better."
    )
    c2.caption(
        "**Batch size**: how many images it looks at before each small correction. "
        "Smaller needs less memory; the default suits most computers."
    )
    c3.caption(
        "**Learning rate**: how big each correction is. Too big and the curves jump about; "
        "too small and it learns slowly. Keep the default unless the curves look wrong."
    )
    fine_tune = st.toggle(
        "Fine-tune the top of VGG16 afterwards (slower, sometimes better boxes)",
        disabled=backbone != "vgg16",
        key=remembered("train_fine_tune", bool(last.get("train_fine_tune", False))),
        on_change=remember,
        args=("train_fine_tune",),
        help="Only for VGG16.",
    )
    st.caption(
        "**Fine-tune** (VGG16 only): once the model has learnt, also adjust the top of VGG16 itself "
        "a little for a few more rounds, very gently. Slower; sometimes the boxes sit better."
    )
    name = st.text_input("Run name (optional)", placeholder=backbone, max_chars=40, key="train_run_name")
    cannot_start = backbone == "vgg16" and availability == "offline"  # it would fail at once
    if st.button(
        "Start training",
        type="primary",
        icon=":material/play_arrow:",
        key="start_training",
        disabled=cannot_start,
        help="VGG16's weights are missing and cannot be downloaded: choose Compact."
        if cannot_start
        else None,
    ):
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
            c2,
            tflite_path,
            f"Download the fast model ({runs.TFLITE_FILE}, for phones and live use)",
            key=f"dl-tflite-{key}",
        )
    elif c2.button("Make the fast model (.tflite)", icon=":material/build:", key=f"export-{key}"):
        from facetrack.export import ExportError, export_run

        with st.spinner("Making the fast model file (.tflite, run by LiteRT; a few seconds)…"):
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
    "ap50": "Overall box score (AP@0.5)",
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
        page_link("pages/evaluate.py", label="Next: 5. Evaluate a model", icon=":material/fact_check:")
    for i, run in enumerate(project_runs):
        state = runs.run_state(run)
        label, icon = STATE_TEXT.get(state.state, (state.state, ":material/help:"))
        with st.expander(f"{run_label(run)} — {label}", icon=icon, expanded=i == 0):
            show_run(state, key=run.name)

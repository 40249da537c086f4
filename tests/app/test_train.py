"""Train page: empty project, no training set, past runs (finished, interrupted, failed), Start/Stop."""

from __future__ import annotations

from pathlib import Path

import pytest

from facetrack import runs as run_files
from facetrack.workspace import create_project
from tests.app.conftest import no_exception
from tests.app.helpers_runs import (
    add_photos,
    dead_pid,
    make_training_set,
    stop_training_processes,
    tiny_model_file,
    write_run,
)
from ui.charts import loss_figure, score_figure

TRAIN = "pages/train.py"


def _texts(at) -> str:
    parts = []
    for kind in ("markdown", "caption", "info", "warning", "error", "success", "subheader", "title"):
        parts += [str(e.value) for e in getattr(at, kind)]
    return "\n".join(parts)


def _links(at) -> list[str]:
    return [str(link.proto.page) for link in at.get("page_link")]


def test_loss_figure_has_six_traces_with_train_and_val() -> None:
    rows = [
        {"epoch": 1.0, "loss": 1.0, "class_loss": 0.6, "bbox_loss": 0.4, "val_loss": 1.1,
         "val_class_loss": 0.7, "val_bbox_loss": 0.4},
        {"epoch": 2.0, "loss": 0.8, "class_loss": 0.5, "bbox_loss": 0.3, "val_loss": 0.9,
         "val_class_loss": 0.6, "val_bbox_loss": 0.3},
    ]  # fmt: skip
    fig = loss_figure(rows)
    assert len(fig.data) == 6
    names = [t.name for t in fig.data]
    assert "total (train)" in names and "box (validation)" in names
    assert list(fig.data[0].x) == [1.0, 2.0]
    # train columns only -> 3 traces; nothing -> none
    assert len(loss_figure([{k: v for k, v in r.items() if not k.startswith("val")} for r in rows]).data) == 3
    assert len(loss_figure([]).data) == 0
    assert len(score_figure([{"epoch": 1, "val_score": 0.3, "val_mean_iou": 0.4}]).data) == 2


def test_score_figure_shows_validation_ap_once() -> None:
    rows = [
        {"epoch": 1, "val_ap50": 0.4, "val_score": 0.4, "val_mean_iou": 0.5, "val_presence_accuracy": 0.8}
    ]
    names = [t.name for t in score_figure(rows).data]
    assert names == ["AP@0.5 over every face", "mean box overlap (IoU)", "face / no face accuracy"]
    old = [{"epoch": 1, "val_ap50": float("nan"), "val_score": 0.4}]  # a run of the one-face kind
    assert [t.name for t in score_figure(old).data] == ["validation score"]


def test_no_project_points_home(app, workspace: Path) -> None:
    at = app(TRAIN)
    no_exception(at)
    assert _links(at) == ["home"]


def test_empty_project_says_no_training_set_and_links_to_augment(app, workspace: Path) -> None:
    create_project("empty", workspace)
    at = app(TRAIN, project="empty")
    no_exception(at)
    assert at.title[0].value.endswith("Train")
    assert at.caption[0].value  # the one-sentence explanation
    assert any("no training set" in w.value for w in at.warning)
    assert "augment" in _links(at)
    assert not [b for b in at.button if b.key == "start_training"]
    assert "None yet" in _texts(at)


def test_training_set_without_faces_says_so(app, workspace: Path) -> None:
    project = create_project("nofaces", workspace)
    add_photos(project, n_face=0, n_no_face=6)
    make_training_set(project, copies=1)
    at = app(TRAIN, project="nofaces")
    no_exception(at)
    assert any("no face" in w.value for w in at.warning)
    assert "label" in _links(at)
    assert not [b for b in at.button if b.key == "start_training"]
    assert not project.runs()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return tiny_model_file(tmp_path_factory.mktemp("model"))


def test_past_runs_finished_interrupted_failed(app, workspace: Path, model_file: Path) -> None:
    project = create_project("runs", workspace)
    write_run(project, "20260101-100000-good", "finished", model_from=model_file)
    write_run(project, "20260101-110000-cut", "running", model_from=model_file, pid=dead_pid(), metrics=False)
    write_run(
        project,
        "20260101-120000-offline",
        "failed",
        metrics=False,
        message="The VGG16 backbone needs its ImageNet weights, a one-time download of about 58 MB",
    )
    at = app(TRAIN, project="runs")
    no_exception(at)
    labels = [e.label for e in at.expander]
    assert labels == [
        "2026-01-01 12:00 offline — Failed",
        "2026-01-01 11:00 cut — Interrupted",
        "2026-01-01 10:00 good — Finished",
    ]
    text = _texts(at)
    assert "best model so far is saved and usable" in text
    assert "58 MB" in text
    # curves of every run with a history, metrics of the evaluated one
    assert len(at.get("plotly_chart")) == 6
    assert any(m.label == "AP@0.5" and m.value == "0.660" for m in at.metric)
    # downloads for runs with a model: keras; tflite is offered as a "Make" button
    downloads = [d for d in at.get("download_button")]
    assert len(downloads) == 2
    assert [b.key for b in at.button if b.key and b.key.startswith("export-")] == [
        "export-20260101-110000-cut",
        "export-20260101-100000-good",
    ]
    assert "evaluate" in _links(at)


def test_make_tflite_button_exports(
    app, workspace: Path, model_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import facetrack.export

    project = create_project("export", workspace)
    run = write_run(project, "20260101-100000-good", "finished", model_from=model_file)
    calls = []

    def fake_export(run_dir, fmt="tflite", **kwargs):  # the real conversion is tested in tests/unit
        calls.append((Path(run_dir), fmt))
        (Path(run_dir) / "model.tflite").write_bytes(b"tflite")
        return Path(run_dir) / "model.tflite"

    monkeypatch.setattr(facetrack.export, "export_run", fake_export)
    at = app(TRAIN, project="export")
    at.button(key="export-20260101-100000-good").click().run()
    no_exception(at)
    assert calls == [(run, "tflite")]
    assert not at.error
    assert not [b for b in at.button if b.key == "export-20260101-100000-good"]
    assert len(at.get("download_button")) == 2


def test_make_tflite_failure_is_a_message(
    app, workspace: Path, model_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import facetrack.export

    def broken(run_dir, fmt="tflite", **kwargs):
        raise facetrack.export.ExportError("the converter ran out of memory")

    monkeypatch.setattr(facetrack.export, "export_run", broken)
    project = create_project("export", workspace)
    write_run(project, "20260101-100000-good", "finished", model_from=model_file)
    at = app(TRAIN, project="export")
    at.button(key="export-20260101-100000-good").click().run()
    no_exception(at)
    assert any("ran out of memory" in e.value for e in at.error)


def test_start_trains_in_background_and_stop(app, workspace: Path) -> None:
    project = create_project("tiny", workspace)
    add_photos(project, n_face=10, n_no_face=4)
    n = make_training_set(project, copies=2)
    assert n["train"] > 0 and n["train_faces"] > 0
    at = app(TRAIN, project="tiny")
    no_exception(at)
    at.radio(key="train_backbone").set_value("compact").run()
    at.number_input(key="train_epochs_compact").set_value(50).run()
    at.text_input(key="train_run_name").input("my first").run()
    try:
        at.button(key="start_training").click().run()
        no_exception(at)
        runs = project.runs()
        assert len(runs) == 1 and runs[0].name.endswith("-my-first")
        assert run_files.active_training(project.path) == runs[0]
        assert run_files.run_state(runs[0]).settings["epochs"] == 50
        assert any("Training now" in s.value for s in at.subheader)
        assert at.get("progress")
        # a second page load (another tab, a reload) shows the same run live, no form
        again = app(TRAIN, project="tiny")
        no_exception(again)
        assert not [b for b in again.button if b.key == "start_training"]
        again.button(key="stop_training").click().run()
        no_exception(again)
        assert (runs[0] / run_files.STOP_FILE).exists()
        assert any("Stopping after the current batch" in i.value for i in again.info)
    finally:
        stop_training_processes(project, timeout=0)  # don't wait for TensorFlow to load: kill it
    # the killed process leaves a run that is shown as interrupted, and the form is back
    at = app(TRAIN, project="tiny")
    no_exception(at)
    assert [b for b in at.button if b.key == "start_training"]
    assert at.expander[0].label.endswith(("Interrupted", "Stopped", "Finished"))

"""The command-line contract, end to end on tiny generated images (well under a minute)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from facetrack.labels import Box, Label, labelme_dict
from tests.conftest import REPO, jpeg_bytes, synthetic_face


def run_cli(*args: str, home: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as in a user's shell
    env.update(FACETRACK_HOME=str(home), PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "facetrack", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def _make_source(folder: Path, n: int = 40) -> None:
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    for i in range(n):
        face = i % 3 != 0
        x = 0.15 + 0.4 * ((i * 7) % 10) / 10
        box = (x, 0.2, x + 0.35, 0.75) if face else None
        name = f"photo_{i:02d}"
        (folder / "images" / f"{name}.jpg").write_bytes(jpeg_bytes(synthetic_face(96, 80, box=box, seed=i)))
        boxes = (Box(*box),) if box else ()
        label = Label(f"../images/{name}.jpg", 96, 80, boxes)
        (folder / "labels" / f"{name}.json").write_text(json.dumps(labelme_dict(label)))


def test_importing_a_folder_again_adds_nothing_and_is_not_an_error(tmp_path):
    home, src = tmp_path / "home", tmp_path / "src"
    _make_source(src, n=4)
    (src / "notes.txt").write_text("not a photo")  # a skipped file, as boxes.json is in ../shared/data
    run_cli("import", str(src), "--project", "demo", "--quiet", home=home)
    out = run_cli("import", str(src), "--project", "demo", "--quiet", home=home)  # exit 0
    assert "0 photo(s) added (0 with labels), 4 already in the project (not added again)" in out.stdout
    assert len(list((home / "demo" / "images").glob("*.jpg"))) == 4


@pytest.mark.timeout(240)
def test_import_augment_train_evaluate_detect_export(tmp_path):
    home = tmp_path / "home"
    src = tmp_path / "src"
    _make_source(src)
    out = run_cli("import", str(src), "--project", "demo", "--quiet", home=home)
    assert "40 photo(s) added (40 with labels)" in out.stdout
    run_cli(
        "augment",
        "--project",
        "demo",
        "--copies",
        "4",
        "--size",
        "48",
        "--workers",
        "0",
        "--quiet",
        home=home,
    )
    out = run_cli(
        "train", "--project", "demo", "--epochs", "2", "--input-size", "48", "--batch-size", "16", home=home,
    )  # fmt: skip
    assert "finished" in out.stdout
    assert "E0000" not in out.stderr and "cuInit" not in out.stderr  # TensorFlow's C++ noise stays off
    assert "epoch 2:" in out.stderr  # progress on the terminal
    runs = sorted((home / "demo" / "runs").iterdir())
    assert len(runs) == 1
    run = runs[0]
    for name in ("settings.json", "history.csv", "model.keras", "model.tflite", "metrics.json", "train.log"):
        assert (run / name).is_file(), name
    assert len((run / "history.csv").read_text().strip().splitlines()) == 3  # header + 2 epochs
    assert json.loads((run / "settings.json").read_text())["settings"]["backbone"] == "compact"  # CLI default
    trained = json.loads((run / "metrics.json").read_text())  # train evaluated the test split

    out = run_cli("evaluate", "--project", "demo", "--json", home=home)
    metrics = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("presence_accuracy", "precision", "recall", "f1", "fp_rate", "mean_iou", "hit_rate", "ap50"):
        assert key in metrics
    # evaluate measures the same model on the same test split as train did (a reading, no new split)
    for key in ("presence_accuracy", "mean_iou", "ap50", "n_images", "n_faces"):
        expected = trained[key]
        assert metrics[key] == (expected if expected is None else pytest.approx(expected, abs=1e-6)), key
    assert metrics["n_images"] == sum(
        v == "test" for v in json.loads((home / "demo" / "split.json").read_text()).values()
    )

    image = next((home / "demo" / "images").glob("*.jpg"))
    out = run_cli("detect", "--run", str(run), "--json", "--threshold", "0", str(image), home=home)
    line = json.loads(out.stdout.strip().splitlines()[-1])
    assert line["image"] == str(image)
    faces = line["faces"]  # threshold 0: every cell's face that survives NMS, best first
    assert faces and [f["score"] for f in faces] == sorted((f["score"] for f in faces), reverse=True)
    for face in faces:
        x1, y1, x2, y2 = face["box"]
        assert 0 <= x1 < x2 <= 96 and 0 <= y1 < y2 <= 80  # in the image's pixels
    assert (run / "decode.json").is_file()  # the threshold chosen on validation travels with the model
    assert metrics["faces"] == sum(
        len(json.loads(p.read_text())["shapes"]) for p in (home / "demo" / "labels").glob("*.json")
        if json.loads((home / "demo" / "split.json").read_text()).get(p.stem) == "test"
    )  # fmt: skip

    for fmt, suffix in (("keras", ".keras"), ("tflite", ".tflite")):
        dest = tmp_path / f"exported{suffix}"
        out = run_cli("export", "--run", str(run), "--format", fmt, "--output", str(dest), home=home)
        assert dest.is_file() and dest.stat().st_size > 1000


def test_detect_json_returns_every_face_above_the_threshold(tmp_path):
    from facetrack.export import export_tflite
    from tests.standin import dense_standin_model

    run = tmp_path / "20260101-000000-dense"
    run.mkdir()
    faces = [(0.9, [0.1, 0.2, 0.3, 0.6]), (0.7, [0.6, 0.25, 0.85, 0.7]), (0.3, [0.4, 0.7, 0.5, 0.9])]
    # a .tflite only: the command line cannot load the test stand-in's own Keras layer
    export_tflite(dense_standin_model((36, 48), (6, 8), faces), run / "model.tflite", quantize="none")
    image = tmp_path / "group.jpg"
    image.write_bytes(jpeg_bytes(synthetic_face(200, 150, seed=1)))
    out = run_cli(
        "detect", "--run", str(run), "--json", "--backend", "litert", str(image), home=tmp_path / "h"
    )
    line = json.loads(out.stdout.strip().splitlines()[-1])
    assert [f["score"] for f in line["faces"]] == [0.9, 0.7]  # default threshold 0.5, highest first
    assert line["faces"][1]["box"] == [120, 38, 170, 105]  # [0.6, 0.25, 0.85, 0.7] of 200x150
    out = run_cli(
        "detect", "--run", str(run), "--json", "--threshold", "0.2", str(image), home=tmp_path / "h"
    )
    assert len(json.loads(out.stdout.strip().splitlines()[-1])["faces"]) == 3


def test_errors_are_one_line_with_exit_code_1(tmp_path):
    home = tmp_path / "home"
    for args in (
        ("evaluate", "--project", "missing", "--json"),
        ("train", "--project", "missing"),
        ("import", str(tmp_path / "nope"), "--project", "x"),
        ("detect", "--run", str(tmp_path / "norun"), "x.jpg"),
        ("export", "--run", str(tmp_path / "norun")),
    ):
        proc = run_cli(*args, home=home, check=False)
        assert proc.returncode == 1, args
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
        assert "Traceback" not in proc.stderr


def test_train_without_labels_is_a_clear_error(tmp_path):
    home = tmp_path / "home"
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.jpg").write_bytes(jpeg_bytes(synthetic_face()))
    run_cli("import", str(src), "--project", "p", "--quiet", home=home)
    proc = run_cli("augment", "--project", "p", home=home, check=False)
    assert proc.returncode == 1 and "no labelled photos" in proc.stderr
    proc = run_cli("train", "--project", "p", home=home, check=False)
    assert proc.returncode == 1 and "no training set" in proc.stderr


def test_the_job_protocol_is_not_part_of_the_cli(tmp_path):
    """Background jobs run through facetrack.worker; the CLI has no hidden flags for them."""
    for args in (
        ("train", "--project", "p", "--run-dir", "x"),
        ("augment", "--project", "p", "--progress-file", "x"),
    ):
        proc = run_cli(*args, home=tmp_path, check=False)
        assert proc.returncode == 2 and "unrecognized arguments" in proc.stderr, args


@pytest.mark.parametrize("command", ["import", "augment", "train", "evaluate", "detect", "export"])
def test_help(command, tmp_path):
    out = run_cli(command, "--help", home=tmp_path)
    assert "usage: python -m facetrack" in out.stdout


def test_augment_help_states_the_real_default_copies(tmp_path):
    """The help's default is the one a project without settings gets (it said 20 while 5 was used)."""
    from facetrack.augment import AugmentSettings

    out = " ".join(run_cli("augment", "--help", home=tmp_path).stdout.split())
    defaults = AugmentSettings()
    assert f"first time {defaults.copies_per_image}" in out
    assert f"{defaults.multi_face_copies} for photos with two faces or more" in out

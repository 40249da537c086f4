"""Reads are bounded before they start: image files, .keras members, and a damaged .tflite is a plain error."""

from __future__ import annotations

import logging
import os
import threading
import zipfile
from pathlib import Path

import flatbuffers
import pytest
from ai_edge_litert import schema_py_generated as schema

from facetrack.__main__ import main
from facetrack.detect import Detector, DetectorError
from facetrack.export import export_tflite
from facetrack.fileio import FileTooLarge, read_capped
from facetrack.images import MAX_FILE_BYTES, ImageError, read_image_file
from facetrack.model import ModelLoadError, load_model
from tests.conftest import jpeg_bytes, synthetic_face
from tests.standin import standin_model

SIZE = 32


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder with a stand-in model.keras and its float32 model.tflite."""
    folder = tmp_path_factory.mktemp("run")
    model = standin_model(SIZE, box=(0.2, 0.2, 0.6, 0.7))
    model.save(folder / "model.keras")
    export_tflite(model, folder / "model.tflite", "none")
    return folder


def test_devices_pipes_and_folders_are_refused_without_reading(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="not a regular file"):
        read_image_file("/dev/zero")
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    result: list[BaseException] = []

    def read() -> None:
        try:
            read_image_file(fifo)
        except ImageError as exc:
            result.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(5)  # an open() that waited for a writer would still be blocked
    assert not reader.is_alive() and "not a regular file" in str(result[0])
    with pytest.raises(ImageError, match="not a regular file"):
        read_image_file(tmp_path)
    with pytest.raises(ImageError, match="no such file"):
        read_image_file(tmp_path / "missing.jpg")


def test_a_file_over_the_cap_is_refused_before_it_is_read(tmp_path: Path) -> None:
    big = tmp_path / "huge.jpg"
    with open(big, "wb") as fh:  # sparse: costs no disk
        fh.truncate(MAX_FILE_BYTES + 1)
    with pytest.raises(ImageError, match="over the limit"):
        read_image_file(big)
    small = tmp_path / "ok.jpg"
    small.write_bytes(b"x" * 100)
    assert read_capped(small, 100) == b"x" * 100
    with pytest.raises(FileTooLarge):
        read_capped(small, 99)


def test_detect_reports_dev_zero_and_a_huge_file_in_one_line_each(run_dir, tmp_path, capsys) -> None:
    big = tmp_path / "huge.jpg"
    with open(big, "wb") as fh:
        fh.truncate(MAX_FILE_BYTES + 1)
    photo = tmp_path / "face.jpg"
    photo.write_bytes(jpeg_bytes(synthetic_face(96, 80)))
    code = main(["detect", "--run", str(run_dir), "--backend", "keras", "/dev/zero", str(big), str(photo)])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0  # one photo worked
    assert out[0] == "/dev/zero: /dev/zero: not a regular file"
    assert out[1].startswith(f"{big}: {big}: ") and "over the limit" in out[1]
    assert out[2].startswith(f"{photo}: ")


def _inflated_copy(src: Path, dest: Path, member: str, extra: int) -> None:
    """``src`` with ``member`` padded by ``extra`` spaces (still valid JSON; compresses to almost nothing)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename == member:
                data = data + b" " * extra
            zout.writestr(info.filename, data)


@pytest.mark.parametrize(("member", "extra"), [("config.json", 20 * 2**20), ("metadata.json", 3 * 2**20)])
def test_a_keras_file_that_inflates_is_refused_before_keras_reads_it(
    run_dir, tmp_path, member, extra
) -> None:
    bomb = tmp_path / "bomb.keras"
    _inflated_copy(run_dir / "model.keras", bomb, member, extra)
    assert bomb.stat().st_size < 200_000
    with pytest.raises(ModelLoadError, match=f"{member} unpacks to"):
        load_model(bomb)
    ok = tmp_path / "ok.keras"
    _inflated_copy(run_dir / "model.keras", ok, member, 1000)
    assert load_model(ok) is not None  # a little padding is still a model


def _damaged_tflite(src: Path, dest: Path) -> None:
    """A .tflite that opens but whose first dense layer's weights no longer fit its input.

    The file stays a valid flatbuffer with enough weight bytes, so the
    interpreter is created; preparing the graph (``allocate_tensors``) fails.
    """
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(src.read_bytes(), 0))
    graph = model.subgraphs[0]
    dense = schema.BuiltinOperator.FULLY_CONNECTED
    op = next(o for o in graph.operators if model.operatorCodes[o.opcodeIndex].builtinCode == dense)
    weights = graph.tensors[op.inputs[1]]
    weights.shape = [weights.shape[0], weights.shape[1] - 1]
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    dest.write_bytes(bytes(builder.Output()))


def test_a_tflite_that_fails_to_allocate_is_a_detector_error(run_dir, tmp_path) -> None:
    broken = tmp_path / "model.tflite"
    _damaged_tflite(run_dir / "model.tflite", broken)
    with pytest.raises(DetectorError, match="model.tflite is damaged and cannot be used"):
        Detector.from_tflite(broken)


def test_auto_falls_back_to_keras_with_a_warning(run_dir, tmp_path, caplog) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_bytes((run_dir / "model.keras").read_bytes())
    _damaged_tflite(run_dir / "model.tflite", run / "model.tflite")
    with caplog.at_level(logging.WARNING, logger="facetrack.detect"):
        det = Detector.from_run(run, backend="auto")
    assert det.backend == "keras" and "damaged" in det.fallback_reason
    assert any("using model.keras instead" in r.getMessage() for r in caplog.records)
    with pytest.raises(DetectorError, match="damaged"):
        Detector.from_run(run, backend="litert")

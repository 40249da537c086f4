"""The layout rules of docs/architecture.md, checked on the source."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CODE = sorted(p for d in ("facetrack", "ui", "pages") for p in (REPO / d).glob("*.py"))
RUN_FILES = ('"model.keras"', '"model.tflite"', '"history.csv"', '"settings.json"', '"status.json"',
             '"metrics.json"', '"train.log"', '"training.json"', '"progress.json"', '"STOP"', '"decode.json"')  # fmt: skip


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", CODE, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_module_over_500_lines(path):
    assert len(path.read_text(encoding="utf-8").splitlines()) <= 500


def test_run_file_names_are_spelled_only_in_runs_py():
    for path in CODE:
        if path != REPO / "facetrack" / "runs.py":
            text = path.read_text(encoding="utf-8")
            assert not [n for n in RUN_FILES if n in text], path


def test_layers_import_downwards_only():
    for path in CODE:
        imports = _imports(path)
        if path.parent.name == "facetrack":
            assert not {i for i in imports if i.split(".")[0] in ("streamlit", "ui", "pages")}, path
            assert not imports & {"facetrack.__main__", "facetrack.worker"}, path
        if path.parent.name == "ui":
            assert not {i for i in imports if i.split(".")[0] == "pages"}, path


def test_light_modules_load_no_keras_tensorflow_or_albumentations():
    """Pages that count samples or show runs stay fast: these modules import no heavy library."""
    code = (
        "import sys\n"
        "import facetrack.data, facetrack.runs, facetrack.train, facetrack.jobs, facetrack.tasks\n"
        "import facetrack.progress, facetrack.weights, facetrack.evaluate\n"
        "print(sorted(m for m in ('keras', 'tensorflow', 'albumentations') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"

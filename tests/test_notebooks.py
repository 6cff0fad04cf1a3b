"""The notebooks run top to bottom (their checks are asserted in cells), outputs cleared in the repo."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def test_the_walkthrough_notebooks_are_there():
    names = {path.name for path in notebooks()}
    assert {"process_streaming_data.ipynb", "parallel_replay.ipynb"} <= names


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.name)
def test_outputs_are_cleared_in_the_repo(path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name}: clear the outputs"


@pytest.mark.slow
@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("NOTEBOOK_CATALOG", str(tmp_path / "catalog"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    images = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
              if "image/png" in output.get("data", {}) or "image/svg+xml" in output.get("data", {})]
    assert len(images) >= 2, "the figures and the graph picture are shown in the notebook"

"""Every notebook runs top to bottom at smoke size (TFDEFAKEQ_SMOKE=1), in a fresh kernel."""

from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.heavy
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_at_smoke_size(path, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("TFDEFAKEQ_SMOKE", "1")
    monkeypatch.setenv("TFDEFAKEQ_WORK", str(tmp_path / "work"))
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", []) if o.output_type == "error"]
    assert not errors


def test_notebooks_have_a_colab_badge_and_install_cell():
    import nbformat

    assert NOTEBOOKS
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        assert "colab.research.google.com" in nb.cells[0].source, path.name
        assert "google.colab" in nb.cells[1].source and "pip install" in nb.cells[1].source, path.name

"""notebooks/tour.ipynb runs top to bottom in a real Jupyter kernel (nbclient, ipykernel), with smaller settings
put after its `parameters` cell the way papermill does, so that it cannot rot; and it is stored without outputs."""
from pathlib import Path

import pytest

# make venv installs both; a machine without them (the GPU machine's own python3) skips the notebook
nbformat = pytest.importorskip("nbformat")
NotebookClient = pytest.importorskip("nbclient").NotebookClient

ROOT = Path(__file__).resolve().parent.parent
TOUR = ROOT / "notebooks" / "tour.ipynb"


def test_the_tour_is_stored_without_outputs():
    nb = nbformat.read(TOUR, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1


def test_the_tour_runs_and_shows_its_pictures_and_figures(tmp_path, cache_dir):
    nb = nbformat.read(TOUR, as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(
        f"STEPS, EVAL_EVERY, EVAL_NUM, WIDTH, CACHE = 20, 10, 200, 8, {cache_dir!r}  # the test's settings"))
    # timeout: a guard against a hung kernel only, far above what a cell takes on a loaded 2-core machine
    NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    pictures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pictures) == 5  # the first and last grid, the curves, the sevens, the walk
    text = "".join(o.get("text", "") for o in outputs)
    assert "step 10" in text and "step 20" in text and "class_accuracy" in text and "real data" in text
    assert (tmp_path / "tour" / "checkpoints" / "ckpt_0000020.pt").is_file()  # it trained where it said

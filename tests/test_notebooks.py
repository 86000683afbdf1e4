"""Every tutorial notebook executes from top to bottom (its own asserts included), in the small
configuration: the same code path and asserts as the full run the documentation shows, with fewer
steps and chains and tolerances that follow from them."""

import importlib.util
from pathlib import Path

import pytest

NOTEBOOK_DIR = Path(__file__).parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))

_spec = importlib.util.spec_from_file_location("notebook_execute", NOTEBOOK_DIR / "execute.py")
notebook_execute = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(notebook_execute)


def test_there_are_notebooks():
    names = {p.name for p in NOTEBOOKS}
    for part in ("sampling", "flows", "autoregressive", "flows_meet_mcmc"):
        assert any(part in name for name in names), f"notebooks/ has no tutorial on {part}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path):
    notebook_execute.execute(path, size="small")


def test_notebooks_read_their_size():
    # A notebook that ignores the size would run its full configuration inside make test.
    for path in NOTEBOOKS:
        assert notebook_execute.SIZE_VARIABLE in path.read_text(), f"{path.name} ignores its size"

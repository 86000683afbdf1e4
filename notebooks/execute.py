"""Execute the tutorial notebooks top to bottom, in the full or the small configuration.

Every notebook reads its size from the ``NFLOWS_NOTEBOOK_SIZE`` environment variable in its first
code cell (``"full"`` unless told otherwise): ``make test`` runs them ``small`` (fewer steps and
chains, same code path, same asserts with tolerances that follow the sample size), and ``make
notebooks`` runs them ``full`` and writes the outputs and figures back into the files, which is
what the documentation site shows. A failing assert in any cell fails the run.

    .venv/bin/python notebooks/execute.py --size full --write notebooks/*.ipynb
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

SIZES = ("full", "small")
SIZE_VARIABLE = "NFLOWS_NOTEBOOK_SIZE"


def execute(path: Path, size: str = "full", write: bool = False, timeout: int = 900) -> float:
    """Run the notebook at ``path`` with ``NFLOWS_NOTEBOOK_SIZE=size``; returns seconds taken.

    The kernel gets this process's environment plus the size, which its first cell reads.
    With ``write`` the executed notebook (outputs, figures, no execution timestamps) replaces the
    file. Raises ``nbclient.exceptions.CellExecutionError`` naming the failing cell.
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    notebook = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        record_timing=False,
        resources={"metadata": {"path": str(path.parent)}},
    ).execute(env={**os.environ, SIZE_VARIABLE: size})
    seconds = time.perf_counter() - start
    if write:
        nbformat.write(notebook, path)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--size", choices=SIZES, default="full")
    parser.add_argument("--write", action="store_true", help="save outputs into the notebooks")
    args = parser.parse_args()
    for path in args.paths:
        seconds = execute(path, args.size, args.write)
        print(f"{path}: ran ({args.size}) in {seconds:.0f} s")


if __name__ == "__main__":
    main()

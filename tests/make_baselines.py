"""Regenerate the nbval baselines: the papermill output of the ``smoke`` profile.

Run with ``make baselines`` (or ``python tests/make_baselines.py --only 01``) when a notebook's
behaviour changes on purpose. The notebooks are executed with ``tests/baselines`` as their
working folder and ``out_dir = "_work"``, so the committed baselines hold only relative paths
and re-run anywhere under nbval.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import nbformat

from lfhelpers.pipeline import run_pipeline

HERE = Path(__file__).resolve().parent / "baselines"


def strip_images(cell) -> None:
    """Drop embedded pictures: nbval never compares them, and they would bloat the repository."""
    for output in cell.get("outputs", []):
        for mime in ("image/png", "image/jpeg", "image/svg+xml"):
            output.get("data", {}).pop(mime, None)


def main(argv: list[str]) -> int:
    """Execute the notebooks (all, or ``--only 01,03``) with the smoke profile."""
    only = argv[argv.index("--only") + 1] if "--only" in argv else None
    # every notebook runs (no fingerprints read or written: the baselines are always fresh)
    result = run_pipeline("smoke", only=only, out_dir=HERE, out_param="tests/baselines/_work",
                          html=False, use_cache=False)
    for run in result.notebooks:
        path = HERE / f"{run.stem}.ipynb"
        nb = nbformat.read(path, as_version=4)
        nb.metadata.pop("papermill", None)
        for cell in nb.cells:
            cell.metadata.pop("papermill", None)
            cell.metadata.pop("execution", None)
            strip_images(cell)
        nbformat.write(nb, path)
        print(f"baseline {path.relative_to(HERE.parent.parent)} ({run.seconds:.0f} s)")
    (HERE / "run.json").unlink(missing_ok=True)
    shutil.rmtree(HERE / "logs", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

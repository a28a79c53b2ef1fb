"""The notebooks' regression check: the committed baselines against this session's smoke run.

Every notebook is executed once per test session, by the ``smoke_run`` fixture (the pipeline
runner with the ``smoke`` profile). Here, for each cell marked ``# NBVAL_CHECK_OUTPUT``, its
standard output and its shown results (``text/plain``) are compared with the baseline's, after
the volatile text is masked with ``tests/baselines/sanitize.cfg``: what ``pytest --nbval-lax``
compares, without executing the notebooks a second time. ``make nbval`` still runs nbval itself
on the baselines. ``make baselines`` regenerates them when behaviour changes on purpose.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import nbformat
import pytest

BASELINES = Path(__file__).resolve().parent / "baselines"
MARK = "# NBVAL_CHECK_OUTPUT"
#: The output folder the baselines were made in (``tests/make_baselines.py``).
BASELINE_OUT = "tests/baselines/_work"
STEMS = sorted(p.stem for p in BASELINES.glob("[0-9][0-9]_*.ipynb"))


def _sanitizers() -> list[tuple[re.Pattern, str]]:
    config = configparser.ConfigParser(interpolation=None)
    config.read(BASELINES / "sanitize.cfg", encoding="utf-8")
    return [(re.compile(config[s]["regex"]), config[s]["replace"]) for s in config.sections()]


def _shown(cell: nbformat.NotebookNode, out_dir: str, sanitizers: list) -> list[str]:
    """The compared outputs of a cell: stdout text and text/plain results, masked."""
    shown = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream" and output.get("name") == "stdout":
            text = output.text
        elif output.output_type in ("execute_result", "display_data"):
            text = output.get("data", {}).get("text/plain", "")
        else:
            continue
        text = text.replace(out_dir, "<RUN>")
        for pattern, replacement in sanitizers:
            text = pattern.sub(replacement, text)
        shown.append(text)
    # consecutive stdout chunks are one text whatever the kernel's buffering
    return ["".join(shown)] if shown else []


def _checked(path: Path) -> list[nbformat.NotebookNode]:
    nb = nbformat.read(path, as_version=4)
    return [c for c in nb.cells if c.cell_type == "code" and c.source.startswith(MARK)]


def test_every_notebook_has_a_baseline():
    notebooks = sorted(p.stem for p in (BASELINES.parent.parent / "notebooks").glob("*.ipynb"))
    assert STEMS == notebooks


@pytest.mark.slow
@pytest.mark.parametrize("stem", STEMS)
def test_checked_cells_match_the_baseline(stem, smoke_run):
    sanitizers = _sanitizers()
    expected = _checked(BASELINES / f"{stem}.ipynb")
    got = _checked(smoke_run / f"{stem}.ipynb")
    assert expected, f"{stem}: the baseline has no {MARK} cell"
    assert [c.source.strip() for c in got] == [c.source.strip() for c in expected], (
        f"{stem}: the notebook's checked cells changed since the baseline was made; "
        "regenerate it with `make baselines`")
    for n, (old, new) in enumerate(zip(expected, got, strict=True), start=1):
        got_text = _shown(new, str(smoke_run), sanitizers)
        assert got_text == _shown(old, BASELINE_OUT, sanitizers), \
            f"{stem}: checked cell {n} differs:\n{new.source}"

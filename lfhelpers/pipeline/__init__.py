"""The pipeline runner: execute the numbered notebooks with papermill, reusing what is unchanged.

``python -m lfhelpers run [--profile smoke|cpu|full] [--only 01,03] [-p name=value ...]
[--out DIR] [--jobs N] [--force [02,06]] [--dry-run]``

For each notebook ``notebooks/NN_name.ipynb`` the runner takes the profile's parameters
(``profiles.yaml``: the profile's ``all`` entry, then the notebook's own entry), then the ``-p``
overrides (a name no selected notebook declares stops the run before it starts), keeps those the
notebook declares in its ``parameters`` cell, and executes it with the Python of the current
environment into ``DIR``, with an HTML export and a log (``DIR/logs/<stem>.log``) beside it.
Each notebook merges its key figures into ``DIR/metrics.json``; ``DIR/run.json`` records per
notebook its status (``ok``, ``cached``, ``failed`` or ``skipped``), reasons and seconds.

The order comes from the notebook graph (``graph.yaml``, see :mod:`.graph`): what each notebook
reads and writes. A notebook whose source, parameters, ``lfhelpers`` code and inputs are
unchanged since its last successful run into ``DIR`` is not run again (see :mod:`.cache`); a
change reruns it and everything downstream. With ``jobs`` > 1, notebooks whose inputs are ready
run side by side: the one with the longest chain of notebooks left behind it at normal CPU
priority, the others at a lower one (``execute.BACKGROUND_NICE``). On a failure the runner
starts nothing new, names the notebook and the cell, and leaves the partial outputs on disk.

Before any notebook runs, the declared inputs of the selected notebooks must exist (or be made
by a selected notebook); otherwise the runner stops and names the notebook that makes them. One
run at a time writes into a folder: a second one stops at once (:mod:`.lock`).

Modules: :mod:`.config` (profiles, parameters), :mod:`.graph`, :mod:`.cache` (fingerprints),
:mod:`.lock` (one writer per run folder),
:mod:`.execute` (papermill, progress, HTML), :mod:`.runner` and :mod:`.report` (``run.json``,
summary, ``publish``).
"""

from __future__ import annotations

from .config import (
    GRAPH_FILE,
    NOTEBOOK_DIR,
    PROFILES_FILE,
    ROOT,
    check_overrides,
    discover_notebooks,
    load_profiles,
    notebook_parameters,
    parse_overrides,
    parse_value,
    select_notebooks,
)
from .execute import KERNEL_NAME, collapse_progress, export_html
from .report import (
    NotebookRun,
    RunResult,
    format_plan,
    format_summary,
    publish,
    summary_table,
)
from .runner import default_out_dir, run_pipeline

__all__ = [
    "GRAPH_FILE", "KERNEL_NAME", "NOTEBOOK_DIR", "PROFILES_FILE", "ROOT", "NotebookRun",
    "RunResult", "check_overrides", "collapse_progress", "default_out_dir",
    "discover_notebooks", "export_html", "format_plan", "format_summary", "load_profiles",
    "notebook_parameters", "parse_overrides", "parse_value", "publish", "run_pipeline",
    "select_notebooks", "summary_table",
]

"""The pipeline runner: execute the numbered notebooks in order with papermill.

``python -m lfhelpers run [--profile smoke|cpu|full] [--only 01,03] [-p name=value ...]
[--out DIR]``

For each notebook ``notebooks/NN_name.ipynb`` (in number order) the runner takes the profile's
parameters (``profiles.yaml``: the profile's ``all`` entry, then the notebook's own entry), then
the ``-p`` overrides, keeps those the notebook declares in its ``parameters`` cell, and executes
it with the Python of the current environment into ``DIR``; it writes an HTML export next to it.
Each notebook merges its key figures into ``DIR/metrics.json``. On a failure the runner stops,
names the notebook and the cell, and leaves the partial outputs on disk.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from lfhelpers.errors import ConfigError, PipelineError
from lfhelpers.fsutil import write_json

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
PROFILES_FILE = Path(__file__).resolve().parent / "profiles.yaml"
KERNEL_NAME = "lfhelpers-python"
NOTEBOOK_PATTERN = re.compile(r"^(\d\d)_[^/]+\.ipynb$")


@dataclass
class NotebookRun:
    """Outcome of one executed notebook."""

    stem: str
    parameters: dict[str, Any]
    seconds: float = 0.0
    status: str = "pending"
    error: str = ""


@dataclass
class RunResult:
    """Outcome of a pipeline run."""

    profile: str
    out_dir: Path
    notebooks: list[NotebookRun] = field(default_factory=list)

    @property
    def metrics(self) -> dict:
        """The merged ``metrics.json`` of the run."""
        path = self.out_dir / "metrics.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def parse_value(text: str) -> Any:
    """Parse a ``-p`` value: ``true``/``false`` to bool, then int, then float, else str.

    Parameters
    ----------
    text : str
        The text after ``name=``.

    Returns
    -------
    bool, int, float or str
    """
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """Turn ``["name=value", ...]`` into a dict of parsed values.

    Raises
    ------
    ConfigError
        When an item has no ``=`` or an empty name.
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"-p expects name=value, got {pair!r}.")
        out[name.strip()] = parse_value(value)
    return out


def load_profiles(path: str | os.PathLike[str] = PROFILES_FILE) -> dict[str, dict]:
    """Read the profiles file: ``{profile: {"all" | notebook stem: {param: value}}}``."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must map profile names to settings.")
    return data


def discover_notebooks(notebook_dir: str | os.PathLike[str] = NOTEBOOK_DIR) -> list[Path]:
    """The numbered notebooks ``NN_name.ipynb`` of a folder, in number order."""
    folder = Path(notebook_dir)
    found = sorted(p for p in folder.glob("*.ipynb") if NOTEBOOK_PATTERN.match(p.name))
    if not found:
        raise ConfigError(f"No numbered notebooks (NN_name.ipynb) in {folder}.")
    return found


def select_notebooks(notebooks: Sequence[Path], only: str | Iterable[str] | None) -> list[Path]:
    """Keep the notebooks whose number or stem is listed in ``only`` (``"01,03"``)."""
    if not only:
        return list(notebooks)
    wanted = [w.strip() for w in (only.split(",") if isinstance(only, str) else only) if w.strip()]
    chosen = [nb for nb in notebooks if any(nb.stem == w or nb.stem.split("_")[0] == w.zfill(2)
                                            for w in wanted)]
    missing = [w for w in wanted if not any(nb.stem == w or nb.stem.split("_")[0] == w.zfill(2)
                                            for nb in notebooks)]
    if missing:
        names = ", ".join(nb.stem for nb in notebooks)
        raise ConfigError(f"--only names no notebook: {', '.join(missing)} (have: {names}).")
    return chosen


def _substitute(value: Any, mapping: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        for key, repl in mapping.items():
            value = value.replace("{" + key + "}", repl)
    return value


def notebook_parameters(
    stem: str,
    declared: Iterable[str],
    profile: Mapping[str, Any],
    overrides: Mapping[str, Any],
    out_param: str,
    root: str | os.PathLike[str] = ROOT,
) -> dict[str, Any]:
    """The parameters one notebook gets: profile ``all``, profile entry, ``-p``, ``out_dir``.

    Only parameters the notebook declares are passed. ``{out}`` and ``{root}`` in string values
    are replaced by the run's output folder and the project folder.
    """
    declared = set(declared)
    merged: dict[str, Any] = {}
    merged.update(profile.get("all") or {})
    merged.update(profile.get(stem) or {})
    merged.update(overrides)
    merged["out_dir"] = out_param
    mapping = {"out": out_param, "root": str(root)}
    return {k: _substitute(v, mapping) for k, v in merged.items() if k in declared}


def _kernel_env() -> tempfile.TemporaryDirectory:
    """A kernelspec that starts this very Python, put first on ``JUPYTER_PATH``."""
    tmp = tempfile.TemporaryDirectory(prefix="lfhelpers-kernel-")
    spec_dir = Path(tmp.name) / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                     "--log-level=ERROR"],
            "display_name": "Python (lfhelpers)", "language": "python",
            "env": {"TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")},
            "metadata": {"debugger": False}}
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    paths = [tmp.name, *filter(None, os.environ.get("JUPYTER_PATH", "").split(os.pathsep))]
    os.environ["JUPYTER_PATH"] = os.pathsep.join(paths)
    return tmp


def collapse_progress(text: str) -> str:
    """Keep what a terminal would show of text with carriage returns (progress bars).

    Each line keeps only what follows its last ``\\r``, so a tqdm bar shows as its final state
    instead of one line per update.
    """
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))


def export_html(notebook: str | os.PathLike[str]) -> Path:
    """Write ``<notebook>.html`` next to an executed notebook and return its path."""
    import nbformat
    from nbconvert import HTMLExporter

    notebook = Path(notebook)
    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        merged: list = []
        for output in cell.get("outputs", []):
            if (output.get("output_type") == "stream" and merged
                    and merged[-1].get("output_type") == "stream"
                    and merged[-1].get("name") == output.get("name")):
                merged[-1]["text"] += output["text"]
            else:
                merged.append(output)
        for output in merged:
            if output.get("output_type") == "stream":
                output["text"] = collapse_progress(output["text"])
        if "outputs" in cell:
            cell["outputs"] = merged
    exporter = HTMLExporter()
    exporter.log.setLevel(logging.ERROR)  # not the accessibility notes on figure alt text
    body, _ = exporter.from_notebook_node(nb)
    target = notebook.with_suffix(".html")
    from lfhelpers.fsutil import atomic_write

    with atomic_write(target) as fh:
        fh.write(body)
    return target


def default_out_dir(profile: str) -> Path:
    """``reports/runs/<profile>-<UTC time>`` under the project folder."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return ROOT / "reports" / "runs" / f"{profile}-{stamp}"


def run_pipeline(
    profile: str = "cpu",
    only: str | Iterable[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    notebook_dir: str | os.PathLike[str] = NOTEBOOK_DIR,
    profiles_file: str | os.PathLike[str] = PROFILES_FILE,
    cwd: str | os.PathLike[str] | None = None,
    out_param: str | None = None,
    html: bool = True,
    echo: bool = True,
) -> RunResult:
    """Execute the numbered notebooks with papermill (see the module docstring).

    Parameters
    ----------
    profile : str
        A profile of ``profiles.yaml`` (``smoke``, ``cpu`` or ``full``).
    only : str or iterable, optional
        Notebook numbers or stems to run, e.g. ``"01,03"``; default all.
    overrides : mapping, optional
        Parameter values that replace the profile's for every notebook that has them.
    out_dir : path-like, optional
        Where executed notebooks, HTML and ``metrics.json`` go; default
        ``reports/runs/<profile>-<UTC time>``.
    notebook_dir : path-like
        Folder of the source notebooks.
    profiles_file : path-like
        The profiles file.
    cwd : path-like, optional
        Working folder of the notebooks' kernel (default: the project folder, so relative paths
        in profiles such as ``data/raw`` are relative to it).
    out_param : str, optional
        Value given to the notebooks as ``out_dir`` and for ``{out}`` (default: the absolute
        ``out_dir``). The nbval baselines use a relative value so they run anywhere.
    html : bool
        Export each executed notebook to HTML.
    echo : bool
        Print a progress line per notebook.

    Returns
    -------
    RunResult
        Per-notebook status and timings; ``metrics`` reads the merged figures.

    Raises
    ------
    PipelineError
        When a notebook fails: the message names it, the failing cell and the error.
    ConfigError
        For an unknown profile or an ``--only`` that names no notebook.
    """
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    profiles = load_profiles(profiles_file)
    if profile not in profiles:
        raise ConfigError(f"Unknown profile {profile!r}; choose one of {', '.join(profiles)}.")
    settings = profiles[profile] or {}
    notebooks = select_notebooks(discover_notebooks(notebook_dir), only)
    out = Path(out_dir).resolve() if out_dir else default_out_dir(profile)
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(cwd or ROOT).resolve()
    if out_param is None:
        # relative to the kernel's folder when inside it: executed notebooks and reports then
        # hold no machine-specific paths
        out_param = os.path.relpath(out, workdir) if out.is_relative_to(workdir) else str(out)
    overrides = dict(overrides or {})
    unused = set(overrides)
    result = RunResult(profile=profile, out_dir=out)
    kernel_tmp = _kernel_env()
    try:
        for i, nb in enumerate(notebooks, 1):
            declared = pm.inspect_notebook(str(nb))
            unused -= set(declared)
            params = notebook_parameters(nb.stem, declared, settings, overrides, out_param,
                                         root=os.path.relpath(ROOT, workdir))
            run = NotebookRun(stem=nb.stem, parameters=params)
            result.notebooks.append(run)
            target = out / nb.name
            if echo:
                print(f"[{i}/{len(notebooks)}] {nb.stem} ...", flush=True)
            start = time.perf_counter()
            try:
                pm.execute_notebook(
                    str(nb), str(target), parameters=params, kernel_name=KERNEL_NAME,
                    cwd=str(workdir), progress_bar=echo and sys.stderr.isatty(),
                    log_output=False, request_save_on_cell_execute=True,
                )
            except PapermillExecutionError as exc:
                run.seconds = time.perf_counter() - start
                run.status = "failed"
                run.error = (f"cell {exc.cell_index} (execution count {exc.exec_count}): "
                             f"{exc.ename}: {exc.evalue}")
                if html and target.exists():
                    export_html(target)
                _write_summary(result)
                raise PipelineError(
                    f"Notebook {nb.stem} failed at {run.error}\n"
                    f"Partial outputs are in {out} (open {target.name} to see the failing cell)."
                ) from None
            run.seconds = time.perf_counter() - start
            run.status = "ok"
            if html:
                export_html(target)
            if echo:
                print(f"[{i}/{len(notebooks)}] {nb.stem} done in {run.seconds:.1f} s",
                      flush=True)
    finally:
        kernel_tmp.cleanup()
    for name in sorted(unused):
        log.warning("-p %s: no selected notebook has this parameter.", name)
    _write_summary(result)
    return result


def summary_table(metrics: Mapping[str, Mapping[str, Any]]) -> str:
    """A Markdown table of the scalar figures of a ``metrics.json`` (one row per figure).

    Parameters
    ----------
    metrics : mapping
        ``{notebook stem: {metric: value}}``.

    Returns
    -------
    str
        Markdown with columns notebook, metric, value; floats rounded to 4 digits.
    """
    lines = ["| notebook | metric | value |", "|---|---|---|"]
    for stem, figures in metrics.items():
        for name, value in figures.items():
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                continue
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            lines.append(f"| {stem} | {name} | {shown} |")
    return "\n".join(lines) + "\n"


def publish(result: RunResult, target: str | os.PathLike[str]) -> Path:
    """Copy a run's HTML reports, ``metrics.json`` and ``run.json`` to ``target``.

    ``target`` (e.g. ``reports/latest``) is replaced as a whole, through a temporary folder, and
    gets a ``README.md`` with the run's figures as a table.

    Parameters
    ----------
    result : RunResult
        A finished run.
    target : path-like
        Folder to (re)create.

    Returns
    -------
    pathlib.Path
        The target folder.
    """
    import shutil

    target = Path(target)
    staging = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for run in result.notebooks:
        html = result.out_dir / f"{run.stem}.html"
        if html.exists():
            shutil.copy2(html, staging / html.name)
    for name in ("metrics.json", "run.json"):
        if (result.out_dir / name).exists():
            shutil.copy2(result.out_dir / name, staging / name)
    seconds = sum(r.seconds for r in result.notebooks)
    (staging / "README.md").write_text(
        f"# Latest `{result.profile}` run\n\n"
        f"{len(result.notebooks)} notebook(s), {seconds / 60:.1f} minutes in all "
        "(per notebook in `run.json`). Open the HTML files in a browser.\n\n"
        + summary_table(result.metrics), encoding="utf-8")
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def _write_summary(result: RunResult) -> None:
    write_json(result.out_dir / "run.json", {
        "profile": result.profile,
        "finished_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "notebooks": [{"stem": r.stem, "status": r.status, "seconds": round(r.seconds, 1),
                       "error": r.error, "parameters": r.parameters}
                      for r in result.notebooks],
    })

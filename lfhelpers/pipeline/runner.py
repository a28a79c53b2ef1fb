"""``run_pipeline``: plan (what is cached, what runs and why), then execute in graph order."""

from __future__ import annotations

import os
import queue
import re
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError, PipelineError
from ..metrics import read_metrics
from . import cache
from .config import (
    NOTEBOOK_DIR,
    PACKAGE_DIR,
    PROFILES_FILE,
    ROOT,
    check_overrides,
    declared_parameters,
    discover_notebooks,
    load_profiles,
    match_stems,
    notebook_parameters,
    select_notebooks,
)
from .execute import Console, execute, export_html, format_seconds, kernel_env
from .graph import (
    Node,
    build_graph,
    chain_lengths,
    load_graph,
    missing_inputs,
    selection_with_makers,
    topological_order,
)
from .lock import run_lock
from .report import NotebookRun, RunResult, write_summary


def default_out_dir(profile: str) -> Path:
    """``reports/runs/<profile>-<UTC time>`` under the project folder."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return ROOT / "reports" / "runs" / f"{profile}-{stamp}"


class _Plan:
    """The resolved notebooks of a run and the cache decisions for them."""

    def __init__(self, out: Path, workdir: Path, nodes: Mapping[str, Node],
                 sources: Mapping[str, Path], params: Mapping[str, dict[str, Any]],
                 defaults: Mapping[str, dict[str, Any]]) -> None:
        self.out, self.workdir, self.nodes = out, workdir, nodes
        self.sources, self.params, self.defaults = sources, params, defaults

    def show(self, path: str | os.PathLike[str]) -> str:
        """A path as the user wants to read it: relative to the project when inside it."""
        path = Path(path)
        return os.path.relpath(path, self.workdir) if path.is_relative_to(self.workdir) \
            else str(path)

    def fingerprint(self, stem: str) -> dict[str, Any]:
        """The fingerprint of ``stem`` as things stand now."""
        node = self.nodes[stem]
        ups = {d: (cache.load_record(self.out, d) or {}).get("stamp") for d in sorted(node.deps)}
        # parameters as the notebook sees them: its defaults, then what it is given
        values = {**self.defaults[stem], **self.params[stem]}
        return cache.fingerprint(self.sources[stem], values, node.reads,
                                 node.writes, ups, PACKAGE_DIR)

    def reasons(self, stem: str, forced: bool, rerunning: Iterable[str]) -> list[str]:
        """Why ``stem`` must run; empty when its cached outputs can be kept."""
        reasons = ["forced"] if forced else []
        reasons += [f"upstream {d} reruns" for d in sorted(self.nodes[stem].deps)
                    if d in rerunning]
        record = cache.load_record(self.out, stem)
        if record is None:
            damaged = cache.damaged_reason(self.out, stem)
            return reasons + [f"its fingerprint is damaged ({damaged}), ignored" if damaged
                              else "no earlier successful run in this folder"]
        reasons += cache.changes(record, self.fingerprint(stem), self.show)
        reasons += [f"output {self.show(p)} missing" for p in cache.missing_outputs(record)]
        if not (self.out / f"{stem}.ipynb").is_file():
            reasons.append("executed notebook missing")
        if record.get("metrics") and stem not in read_metrics(self.out):
            reasons.append("its figures are missing from metrics.json")
        return reasons


def run_pipeline(
    profile: str = "cpu",
    only: str | Iterable[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    notebook_dir: str | os.PathLike[str] = NOTEBOOK_DIR,
    profiles_file: str | os.PathLike[str] = PROFILES_FILE,
    graph_file: str | os.PathLike[str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    out_param: str | None = None,
    html: bool = True,
    echo: bool = True,
    force: bool | str | Iterable[str] | None = None,
    use_cache: bool = True,
    jobs: int = 1,
    dry_run: bool = False,
) -> RunResult:
    """Execute the numbered notebooks with papermill, reusing unchanged results.

    Parameters
    ----------
    profile : str
        A profile of ``profiles.yaml`` (``smoke``, ``cpu`` or ``full``).
    only : str or iterable, optional
        Notebook numbers or stems to run, e.g. ``"01,03"``; default all.
    overrides : mapping, optional
        Parameter values that replace the profile's for every notebook that has them; a name
        no selected notebook has is an error, raised before anything runs.
    out_dir : path-like, optional
        Where executed notebooks, HTML, logs, ``metrics.json`` and ``run.json`` go; default
        ``reports/runs/<profile>-<UTC time>``. Reruns into the same folder reuse what is
        unchanged.
    notebook_dir : path-like
        Folder of the source notebooks.
    profiles_file : path-like
        The profiles file.
    graph_file : path-like, optional
        The notebook graph (default: ``graph.yaml`` beside the profiles file; without one every
        notebook depends on all before it).
    cwd : path-like, optional
        Working folder of the notebooks' kernel (default: the project folder, so relative paths
        in profiles such as ``data/raw`` are relative to it).
    out_param : str, optional
        Value given to the notebooks as ``out_dir`` and for ``{out}`` (default: ``out_dir``,
        relative to ``cwd`` when inside it). The nbval baselines use ``"_work"``.
    html : bool
        Export each executed notebook to HTML.
    echo : bool
        Print progress: a line per notebook, and a line per cell when stdout is no terminal
        (or notebooks run side by side), else papermill's progress bar.
    force : bool, str or iterable of str, optional
        ``True`` (or ``"all"``) runs every selected notebook; ``"02,06"`` runs those (and so
        everything downstream of them) whatever the cache says.
    use_cache : bool
        ``False`` runs everything and neither reads nor writes fingerprints (the baselines).
    jobs : int
        Notebooks run side by side when their inputs are ready.
    dry_run : bool
        Only decide: each notebook's status is ``would run`` or ``cached``, with reasons.

    Returns
    -------
    RunResult
        Per-notebook status (``ok``, ``cached``, ``failed``, ``skipped``), reasons and timings.

    Raises
    ------
    PipelineError
        When a notebook fails: the message names it, the failing cell and the error.
    ConfigError
        For an unknown profile, ``--only``/``--force`` name or ``-p`` name, or a bad graph.
    DataError
        Before anything runs, when a declared input (``reads`` in the graph) of a selected
        notebook is missing and no selected notebook makes it; the message names its maker.
    BusyError
        At once, when another run is writing into ``out_dir`` (see :mod:`.lock`).
    """
    started = time.monotonic()
    profiles = load_profiles(profiles_file)
    if profile not in profiles:
        raise ConfigError(f"Unknown profile {profile!r}; choose one of {', '.join(profiles)}.")
    if jobs < 1:
        raise ConfigError(f"--jobs must be 1 or more, got {jobs}.")
    settings = profiles[profile] or {}
    notebooks = discover_notebooks(notebook_dir)
    selected = [nb.stem for nb in select_notebooks(notebooks, only)]
    declared: dict[str, dict[str, Any]] = {}
    for nb in notebooks:
        try:
            declared[nb.stem] = declared_parameters(nb)
        except Exception as exc:  # a broken notebook that is not run only loses its graph paths
            if nb.stem in selected:
                raise ConfigError(f"Cannot read the parameters of {nb}: {exc}") from exc
            declared[nb.stem] = {}
    overrides = dict(overrides or {})
    check_overrides(overrides, {s: declared[s] for s in selected})

    out = Path(out_dir).resolve() if out_dir else default_out_dir(profile)
    workdir = Path(cwd or ROOT).resolve()
    if out_param is None:
        # relative to the kernel's folder when inside it: executed notebooks and reports then
        # hold no machine-specific paths
        out_param = os.path.relpath(out, workdir) if out.is_relative_to(workdir) else str(out)
    root = os.path.relpath(ROOT, workdir)
    params = {nb.stem: notebook_parameters(nb.stem, declared[nb.stem], settings, overrides,
                                           out_param, root=root) for nb in notebooks}
    graph = load_graph(graph_file if graph_file is not None
                       else Path(profiles_file).with_name("graph.yaml"))
    nodes = build_graph([nb.stem for nb in notebooks],
                        {s: {**declared[s], **params[s]} for s in params}, graph, workdir)
    order = topological_order(nodes, selected)
    if force is True or force == "all" or not use_cache:
        forced = set(order)
    else:
        forced = match_stems(order, force, "--force") if force else set()

    plan = _Plan(out, workdir, nodes, {nb.stem: nb for nb in notebooks}, params, declared)
    _check_inputs(plan, order)
    if dry_run:
        return _decide(plan, order, forced, params, profile, dry_run, use_cache, started)
    with run_lock(out):  # one writer per run folder; a second run stops here at once
        result = _decide(plan, order, forced, params, profile, dry_run, use_cache, started)
        try:
            _execute_all(result, plan, workdir, html=html, echo=echo, jobs=jobs,
                         use_cache=use_cache)
        finally:
            result.seconds = time.monotonic() - started
            write_summary(result)
    failed = [r for r in result.notebooks if r.status == "failed"]
    if failed:
        target = out / f"{failed[0].stem}.ipynb"
        raise PipelineError(
            f"Notebook {failed[0].stem} failed at {failed[0].error}\n"
            f"Partial outputs are in {out} (open {target.name} to see the failing cell; "
            f"its log: {os.path.relpath(failed[0].log, out) if failed[0].log else '-'}).")
    return result


def _check_inputs(plan: _Plan, order: list[str]) -> None:
    """Stop before anything runs when a selected notebook's declared input is missing.

    An input made by a notebook selected in this run is fine; otherwise the message names the
    notebook that makes it and the ``--only`` that includes it.
    """
    missing = missing_inputs(plan.nodes, order)
    if not missing:
        return
    lines = []
    for miss in missing:
        name = miss.template.strip("{}") if re.fullmatch(r"\{\w+\}", miss.template) \
            else miss.template
        made = (f"made by {' or '.join(miss.makers)}" if miss.makers
                else "no notebook makes it: check the path (-p) or the profile")
        lines.append(f"  {miss.stem} needs {name} = {plan.show(miss.path)}, which does not "
                     f"exist; {made}")
    wanted = selection_with_makers(plan.nodes, order)
    numbers = ",".join(s.split("_")[0] for s in wanted)
    hint = (f"Run the notebooks that make them too: --only {numbers}"
            if len(wanted) > len(order) else "Make them first, or point the parameters at "
            "existing paths with -p name=value")
    raise DataError("Missing inputs; nothing was run:\n" + "\n".join(lines) + f"\n{hint}.")


def _decide(plan: _Plan, order: list[str], forced: set[str],
            params: Mapping[str, dict[str, Any]], profile: str, dry_run: bool, use_cache: bool,
            started: float) -> RunResult:
    """Each selected notebook: cached, or to run with the reasons."""
    result = RunResult(profile=profile, out_dir=plan.out, dry_run=dry_run)
    rerun: set[str] = set()
    for stem in order:
        reasons = plan.reasons(stem, stem in forced, rerun) if use_cache else ["cache off"]
        run = NotebookRun(stem=stem, parameters=params[stem], reasons=reasons,
                          log=plan.out / "logs" / f"{stem}.log")
        if reasons:
            rerun.add(stem)
            run.status = "would run" if dry_run else "pending"
        else:
            run.status = "cached"
        result.notebooks.append(run)
    result.seconds = time.monotonic() - started
    return result


def _execute_all(result: RunResult, plan: _Plan, workdir: Path, *, html: bool, echo: bool,
                 jobs: int, use_cache: bool) -> None:
    """Run the notebooks whose status is ``pending``, side by side when ``jobs`` > 1."""
    from papermill.exceptions import PapermillExecutionError

    out = result.out_dir
    runs = {r.stem: r for r in result.notebooks}
    number = {r.stem: i for i, r in enumerate(result.notebooks, 1)}
    total = len(result.notebooks)
    tty = sys.stdout.isatty()
    console = Console(echo, cell_lines=not tty or jobs > 1)
    for run in result.notebooks:
        if run.status != "cached":
            continue
        target = out / f"{run.stem}.ipynb"
        if html and not target.with_suffix(".html").exists():
            export_html(target)
        run.html = target.with_suffix(".html") if target.with_suffix(".html").exists() else None
        record = cache.load_record(out, run.stem) or {}
        console.say(f"[{number[run.stem]}/{total}] {run.stem} cached "
                    f"(unchanged since its run of {record.get('finished_utc', '?')})")

    def one(stem: str, background: bool = False) -> bool:
        run = runs[stem]
        cache.forget(out, stem)
        target = out / f"{stem}.ipynb"
        aside = "; in the background (lower CPU priority)" if background else ""
        console.say(f"[{number[stem]}/{total}] {stem} ... ({'; '.join(run.reasons[:3])}{aside})")
        start = time.perf_counter()
        try:
            execute(plan.sources[stem], target, run.parameters, workdir, run.log, console,
                    progress_bar=echo and tty and jobs == 1, background=background)
        except PapermillExecutionError as exc:
            run.error = (f"cell {exc.cell_index} (execution count {exc.exec_count}): "
                         f"{exc.ename}: {exc.evalue}")
        except Exception as exc:  # the kernel died, a timeout, an unreadable notebook
            run.error = f"{type(exc).__name__}: {exc}"
        run.seconds = time.perf_counter() - start
        if run.error:
            run.status = "failed"
            if html and target.exists():
                run.html = export_html(target)
            console.say(f"[{number[stem]}/{total}] {stem} FAILED after "
                        f"{format_seconds(run.seconds)}: {run.error}")
            return False
        if html:
            run.html = export_html(target)
        if use_cache:
            record = plan.fingerprint(stem)
            record["metrics"] = stem in read_metrics(out)
            cache.save_record(out, stem, record, run.seconds)
        run.status = "ok"
        console.say(f"[{number[stem]}/{total}] {stem} done in {run.seconds:.1f} s")
        return True

    todo = [r.stem for r in result.notebooks if r.status == "pending"]
    deps = {s: plan.nodes[s].deps & set(todo) for s in todo}
    # side by side, the notebook on the longest chain of what is left sets the run's length:
    # it starts first, and the others run at a lower CPU priority beside it (they take the
    # cores it leaves idle, not half of them)
    chain = chain_lengths(plan.nodes, todo)
    done: set[str] = set()
    failed: list[str] = []
    kernel_tmp = kernel_env(out / "logs" / "kernel-native.log")
    try:
        if jobs == 1:
            for stem in todo:
                if failed:
                    break
                (done.add if one(stem) else failed.append)(stem)
        else:
            # daemon threads, not a pool: Ctrl-C ends the run at once (the kernels notice that
            # their parent is gone) instead of waiting for every running notebook
            finished: queue.Queue[tuple[str, bool | BaseException]] = queue.Queue()

            def worker(stem: str, background: bool) -> None:
                try:
                    finished.put((stem, one(stem, background)))
                except BaseException as exc:  # handed to the main thread, raised there
                    finished.put((stem, exc))

            running: set[str] = set()
            while todo or running:
                ready = [s for s in todo if not failed and deps[s] <= done]
                for stem in sorted(ready, key=lambda s: -chain[s]):  # stable: number order
                    if len(running) < jobs:
                        longest = max(chain[s] for s in [*todo, *running])
                        todo.remove(stem)
                        running.add(stem)
                        threading.Thread(target=worker, args=(stem, chain[stem] < longest),
                                         daemon=True, name=f"notebook-{stem}").start()
                if not running:
                    break
                stem, outcome = finished.get()
                running.discard(stem)
                if isinstance(outcome, BaseException):
                    raise outcome
                (done.add if outcome else failed.append)(stem)
    finally:
        console.close()
        kernel_tmp.cleanup()
        for run in result.notebooks:
            if run.status == "pending":
                run.status = "skipped"
                if failed:
                    run.reasons = [f"not run: {failed[0]} failed", *run.reasons]

"""Executing one notebook with papermill: kernel, progress lines, log file, HTML export."""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..fsutil import atomic_write

KERNEL_NAME = "lfhelpers-python"
#: The same kernel at a lower CPU priority (see :func:`kernel_env`).
BACKGROUND_KERNEL_NAME = "lfhelpers-python-background"
#: ``os.nice`` steps of the background kernel: it gets any core that is idle and next to
#: nothing of one that a normal process wants (at 10, a tenth of it: enough to slow TensorFlow's
#: training beside it by half, as its threads wait for each other at every layer).
BACKGROUND_NICE = 19
#: Seconds between two progress lines of a notebook whose cell runs long (no terminal).
HEARTBEAT_SECONDS = 60.0


def kernel_env(native_log: str | os.PathLike[str] | None = None) -> tempfile.TemporaryDirectory:
    """Kernelspecs that start this very Python, put first on ``JUPYTER_PATH``.

    The kernel is :mod:`lfhelpers.pipeline.kernel`: native stderr (TensorFlow's C++ start-up
    lines) goes to ``native_log`` (default: discarded) instead of the notebook. Two specs:
    ``KERNEL_NAME``, and ``BACKGROUND_KERNEL_NAME``, the same at a lower CPU priority
    (``BACKGROUND_NICE`` steps) for notebooks that run beside the one the run waits for.
    """
    tmp = tempfile.TemporaryDirectory(prefix="lfhelpers-kernel-")
    env = {"TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")}
    if native_log is not None:
        Path(native_log).parent.mkdir(parents=True, exist_ok=True)
        env["LF_KERNEL_NATIVE_LOG"] = str(Path(native_log).resolve())
    for name, extra in ((KERNEL_NAME, {}),
                        (BACKGROUND_KERNEL_NAME, {"LF_KERNEL_NICE": str(BACKGROUND_NICE)})):
        spec_dir = Path(tmp.name) / "kernels" / name
        spec_dir.mkdir(parents=True)
        spec = {"argv": [sys.executable, "-m", "lfhelpers.pipeline.kernel", "-f",
                         "{connection_file}", "--log-level=ERROR"],
                "display_name": "Python (lfhelpers)", "language": "python",
                "env": {**env, **extra},
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
    """Write ``<notebook>.html`` next to an executed notebook and return its path.

    Progress bars show their last state, and the embedded figures are re-encoded for the
    screen (photo grids as JPEG, plots as palette PNG: :func:`lighten.lighten_html`), so that
    a report is a few hundred kilobytes to a megabyte or two rather than several megabytes.
    """
    import nbformat
    from nbconvert import HTMLExporter

    from .lighten import lighten_html

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
    body, _ = lighten_html(body)
    target = notebook.with_suffix(".html")
    with atomic_write(target) as fh:
        fh.write(body)
    return target


def format_seconds(seconds: float) -> str:
    """``"4 min 10 s"``, ``"1 h 2 min"`` or ``"12.3 s"``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    return f"{minutes // 60} h {minutes % 60} min"


class Console:
    """Thread-safe printing of progress lines, and a heartbeat for cells that run long.

    Parameters
    ----------
    echo : bool
        Print at all.
    cell_lines : bool
        Print a line per executed cell (when stdout is no terminal, or notebooks run side by
        side); otherwise papermill's progress bar shows.
    """

    def __init__(self, echo: bool, cell_lines: bool) -> None:
        self.echo = echo
        self.cell_lines = echo and cell_lines
        self._lock = threading.Lock()
        self._active: dict[str, CellProgress] = {}
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def say(self, line: str) -> None:
        """Print one line (when echoing)."""
        if self.echo:
            with self._lock:
                print(line, flush=True)

    def start(self, progress: CellProgress) -> None:
        """Watch a running notebook; start the heartbeat when the first one starts."""
        with self._lock:
            self._active[progress.stem] = progress
            if self.cell_lines and self._ticker is None:
                self._ticker = threading.Thread(target=self._beat, daemon=True,
                                                name="lfhelpers-progress")
                self._ticker.start()

    def stop(self, progress: CellProgress) -> None:
        """Stop watching a notebook."""
        with self._lock:
            self._active.pop(progress.stem, None)

    def close(self) -> None:
        """End the heartbeat."""
        self._stop.set()

    def _beat(self) -> None:
        while not self._stop.wait(min(HEARTBEAT_SECONDS, 5.0)):
            with self._lock:
                active = list(self._active.values())
            for progress in active:
                if time.monotonic() - progress.last_line >= HEARTBEAT_SECONDS:
                    progress.line(running=True)


@dataclass
class CellProgress:
    """Progress of one running notebook: the nbclient cell hooks end here."""

    stem: str
    n_cells: int
    console: Console
    log: IO[str]
    started: float = 0.0
    last_line: float = 0.0
    cell: int = 0

    def __post_init__(self) -> None:
        self.started = self.last_line = time.monotonic()

    def line(self, running: bool = False) -> None:
        """Write ``stem: cell k/n, 4 min 10 s`` to the log, and to stdout when asked."""
        elapsed = format_seconds(time.monotonic() - self.started)
        state = f"cell {self.cell + running}/{self.n_cells} running" if running \
            else f"cell {self.cell}/{self.n_cells}"
        text = f"{self.stem}: {state}, {elapsed}"
        self.last_line = time.monotonic()
        self.log.write(text + "\n")
        self.log.flush()
        if self.console.cell_lines:
            self.console.say(text)

    def on_cell_executed(self, cell: Any = None, cell_index: int = 0, **_: Any) -> None:
        """nbclient hook: a code cell finished (with or without an error)."""
        self.cell += 1
        self.line()


def code_cells(nb_path: Path) -> int:
    """Code cells with source in a notebook (papermill's injected cell counts as one more)."""
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    return sum(1 for c in nb.get("cells", [])
               if c.get("cell_type") == "code" and "".join(c.get("source", "")).strip())


def execute(
    source: Path,
    target: Path,
    parameters: dict[str, Any],
    workdir: Path,
    log_path: Path,
    console: Console,
    progress_bar: bool,
    background: bool = False,
) -> None:
    """Execute one notebook into ``target``; its progress and output go to ``log_path``.

    ``background`` runs its kernel at a lower CPU priority (``BACKGROUND_KERNEL_NAME``).

    Raises
    ------
    papermill.exceptions.PapermillExecutionError
        When a cell fails (``target`` then holds the outputs up to it).
    """
    import papermill as pm

    injected = 1 if parameters else 0
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8") as log:
        log.write(f"{source.stem}: parameters {json.dumps(parameters, default=str)}\n")
        log.flush()
        progress = CellProgress(source.stem, code_cells(source) + injected, console, log)
        console.start(progress)
        try:
            # `resources` gives the kernel its working folder without papermill's chdir, which
            # would change the folder of the whole process (and of notebooks running beside)
            pm.execute_notebook(
                str(source), str(target), parameters=parameters,
                kernel_name=BACKGROUND_KERNEL_NAME if background else KERNEL_NAME,
                progress_bar=progress_bar, log_output=False, request_save_on_cell_execute=True,
                stdout_file=log, stderr_file=log,
                resources={"metadata": {"path": str(workdir)}},
                on_cell_executed=progress.on_cell_executed,
            )
        finally:
            console.stop(progress)
            log.write(f"{source.stem}: ended after "
                      f"{format_seconds(time.monotonic() - progress.started)}\n")

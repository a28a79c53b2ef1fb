"""What a run leaves behind: ``run.json``, the end-of-run summary and published reports."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..fsutil import write_json
from .execute import format_seconds
from .lighten import lighten_file


@dataclass
class NotebookRun:
    """Outcome of one notebook: ``ok`` (ran), ``cached``, ``failed``, ``skipped`` or, in a dry
    run, ``would run``."""

    stem: str
    parameters: dict[str, Any]
    seconds: float = 0.0
    status: str = "pending"
    error: str = ""
    reasons: list[str] = field(default_factory=list)
    html: Path | None = None
    log: Path | None = None


@dataclass
class RunResult:
    """Outcome of a pipeline run."""

    profile: str
    out_dir: Path
    notebooks: list[NotebookRun] = field(default_factory=list)
    seconds: float = 0.0
    dry_run: bool = False

    @property
    def metrics(self) -> dict:
        """The merged ``metrics.json`` of the run."""
        path = self.out_dir / "metrics.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def write_summary(result: RunResult) -> None:
    """Write ``<out>/run.json``: per notebook its status, seconds, reasons and parameters."""
    def rel(path: Path | None) -> str | None:
        return os.path.relpath(path, result.out_dir) if path else None

    write_json(result.out_dir / "run.json", {
        "profile": result.profile,
        "finished_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(result.seconds, 1),
        "notebooks": [{"stem": r.stem, "status": r.status, "seconds": round(r.seconds, 1),
                       "error": r.error, "reasons": r.reasons, "html": rel(r.html),
                       "log": rel(r.log), "parameters": r.parameters}
                      for r in result.notebooks],
    })


def compact(value: Any, width: int = 100) -> str:
    """A short one-line rendering of a metric: floats to 4 digits, long lists cut.

    Parameters
    ----------
    value : Any
        A number, string, list or nested mapping from ``metrics.json``.
    width : int
        Longer renderings end in ``…``.

    Returns
    -------
    str
    """
    def show(v: Any, depth: int) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, Mapping):
            if depth > 2:
                return "{…}"
            return "{" + ", ".join(f"{k}: {show(x, depth + 1)}" for k, x in v.items()) + "}"
        if isinstance(v, list | tuple):
            head = ", ".join(show(x, depth + 1) for x in v[:6])
            return f"[{head}{f', … +{len(v) - 6}' if len(v) > 6 else ''}]"
        return str(v)

    text = show(value, 0)
    return text if len(text) <= width else text[:width - 1] + "…"


def format_summary(result: RunResult) -> str:
    """The end-of-run summary: status, seconds and HTML per notebook, total time, figures."""
    width = max((len(r.stem) for r in result.notebooks), default=10)
    lines = []
    for r in result.notebooks:
        where = r.html if r.html and r.html.exists() else (r.log if r.status == "failed" else "")
        why = f"  ({'; '.join(r.reasons)})" if r.reasons and r.status in ("ok", "would run") \
            else ""
        lines.append(f"  {r.stem:<{width}}  {r.status:<9} {r.seconds:8.1f} s  {where or '-'}"
                     f"{why}")
    counts = {s: sum(r.status == s for r in result.notebooks)
              for s in ("ok", "cached", "failed", "skipped")}
    shown = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    lines.append(f"Total: {format_seconds(result.seconds)} ({shown or 'nothing to do'}), "
                 f"in {result.out_dir}")
    metrics = result.metrics
    if metrics:
        lines.append("Figures:")
    for stem, figures in metrics.items():
        if isinstance(figures, Mapping):
            lines.append(f"  {stem}: " + ", ".join(
                f"{k}={compact(v, 60)}" for k, v in figures.items()))
    return "\n".join(lines)


def format_plan(result: RunResult) -> str:
    """What a dry run found: per notebook ``runs (why)`` or ``cached``."""
    lines = [f"Dry run into {result.out_dir} (nothing is executed):"]
    for run in result.notebooks:
        if run.status == "cached":
            lines.append(f"  {run.stem}: cached")
        else:
            lines.append(f"  {run.stem}: runs ({'; '.join(run.reasons)})")
    return "\n".join(lines)


def _flatten(figures: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for name, value in figures.items():
        if isinstance(value, Mapping):
            rows.extend(_flatten(value, f"{prefix}{name}."))
        else:
            rows.append((f"{prefix}{name}", value))
    return rows


def summary_table(metrics: Mapping[str, Mapping[str, Any]]) -> str:
    """A Markdown table of the scalar figures of a ``metrics.json`` (one row per figure).

    Nested mappings give one row per leaf, named with dots (``per_class.bag``); lists are left
    out.

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
        for name, value in _flatten(figures):
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                continue
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            lines.append(f"| {stem} | {name} | {shown} |")
    return "\n".join(lines) + "\n"


#: The figures a published run shows as pictures, with a one-line caption each (first found
#: wins; missing ones are skipped).
KEY_FIGURES: dict[str, str] = {
    "01_counts_before_after": "01 - photos per class before and after cleaning",
    "01_rejects": "01 - quarantined files with the reason",
    "02_counts_before_after": "02 - train photos per class before and after balancing",
    "02_augmented_examples": "02 - originals beside their augmented copies",
    "03_confusion_matrix": "03 - test confusion matrix of the kept classifier",
    "03_mistakes": "03 - the most confident mistakes, with the top 3",
    "04_color_decision_regions": "04 - what each color model calls every hue and lightness",
    "04_color_palette_gallery": "04 - item photos, the item found in them, and their palettes",
    "05_method_comparison": "05 - texture, color and both, on product photos and on scenes",
    "05_similar_photos": "05 - query photos and their most similar photos by texture",
    "05_distance_heatmap": "05 - pairwise distances of haralick features, ordered by class",
    "06_query_matches": "06 - lost photos and their most similar found items",
    "06_matcher_explained": "06 - the matcher's proposals with their reasons",
    "06_projection": "06 - t-SNE of the embeddings, by label and by cluster",
}
#: Published pictures are shrunk to this width (pixels) to keep the repository small.
FIGURE_WIDTH = 1400


def _publish_figures(out_dir: Path, staging: Path) -> list[tuple[str, str]]:
    """Shrunk copies of the key figures in ``staging/figures``; returns (file, caption)."""
    from PIL import Image

    shown = []
    for name, caption in KEY_FIGURES.items():
        source = out_dir / "figures" / f"{name}.png"
        if not source.is_file():
            continue
        target = staging / "figures" / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(source) as im:
            im = im.convert("RGB")
            if im.width > FIGURE_WIDTH:
                im = im.resize((FIGURE_WIDTH, round(im.height * FIGURE_WIDTH / im.width)),
                               Image.Resampling.LANCZOS)
            im.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)
        shown.append((f"figures/{source.name}", caption))
    return shown


def publish(result: RunResult, target: str | os.PathLike[str]) -> Path:
    """Copy a run's HTML reports, key figures, ``metrics.json`` and ``run.json`` to ``target``.

    ``target`` (e.g. ``reports/latest``) is replaced as a whole, through a temporary folder, and
    gets a ``README.md`` that shows the key figures as pictures (the HTML files do not render on
    a code host) and the run's figures as a table.

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
    target = Path(target)
    staging = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for run in result.notebooks:
        html = result.out_dir / f"{run.stem}.html"
        if html.exists():
            shutil.copy2(html, staging / html.name)
            lighten_file(staging / html.name)  # an export made before figures were re-encoded
    for name in ("metrics.json", "run.json"):
        if (result.out_dir / name).exists():
            shutil.copy2(result.out_dir / name, staging / name)
    pictures = _publish_figures(result.out_dir, staging)
    seconds = sum(r.seconds for r in result.notebooks)
    cached = sum(r.status == "cached" for r in result.notebooks)
    gallery = "".join(f"**{caption}**\n\n![{caption}]({path})\n\n" for path, caption in pictures)
    (staging / "README.md").write_text(
        f"# Latest `{result.profile}` run\n\n"
        f"{len(result.notebooks)} notebook(s), {seconds / 60:.1f} minutes in all "
        + (f"({cached} reused from an earlier run into the same folder; " if cached else "(")
        + "per notebook in `run.json`). The full reports are the HTML files (open them in a "
        "browser); the key figures are below.\n\n"
        + gallery + "## Figures\n\n" + summary_table(result.metrics), encoding="utf-8")
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return target

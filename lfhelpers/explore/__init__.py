"""The interactive explorer of notebook 07 (served by Voilà with ``make explore``).

sources   the public functions of the other stages that the explorer uses (one adapter)
inputs    which run to show, what is missing, checks of uploaded photos
shared    the read-only state of a run (vectors, probabilities, palettes, thumbnails, map):
          prepared once in a separate process, memory-mapped by every visitor's kernel
state     :class:`Explorer`: notebook 06's search engine over the shared state
render    HTML pieces: thumbnails, query card, match cards, galleries, confusion matrix
app       the ipywidgets panels: match, classifier mistakes, cleanup review, embedding map

>>> view = open_explorer("data/clean/lostnet", index_dir="models/search/lostnet",
...                      classifier_model="models/xception_lostnet.keras")
>>> view.show()        # the widgets (and, outside Voilà, a static copy of the first state)
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lfhelpers.explore import render
from lfhelpers.explore.app import build_app, in_voila
from lfhelpers.explore.inputs import (
    UPLOAD_MAX_BYTES,
    MissingInput,
    RunInfo,
    check_upload,
    newest_run,
    read_run,
    save_upload,
)
from lfhelpers.explore.sources import LFError, record_metrics
from lfhelpers.explore.state import Explorer, MatchSettings

__all__ = ["Explorer", "ExplorerView", "MatchSettings", "MissingInput", "check_upload",
           "newest_run", "open_explorer", "read_run", "save_upload"]

log = logging.getLogger(__name__)


@dataclass
class ExplorerView:
    """What notebook 07 shows: the explorer, or one line saying what to run first.

    Attributes
    ----------
    explorer : Explorer or None
        ``None`` when loading failed (see ``problem``).
    run : RunInfo
        The run folder whose outputs are shown.
    problem : str
        The one-line message shown instead of the explorer.
    settings : MatchSettings
        Initial matcher settings.
    projection : str
        ``tsne`` or ``pca`` for the embedding map.
    load_seconds : float
        Time taken by :func:`open_explorer`.
    """

    explorer: Explorer | None
    run: RunInfo
    problem: str = ""
    settings: MatchSettings = field(default_factory=MatchSettings)
    projection: str = "tsne"
    load_seconds: float = 0.0
    app: Any = None

    def widget(self) -> Any:
        """The explorer's widget (built once), or ``None`` when it could not load."""
        if self.explorer is None:
            return None
        if self.app is None:
            self.app = build_app(self.explorer, self.run, self.settings, self.projection)
        return self.app

    def show(self, snapshot: bool | None = None) -> None:
        """Display the explorer; outside Voilà also a static copy of its first state.

        Parameters
        ----------
        snapshot : bool, optional
            Also display :meth:`snapshot_html` (default: unless running under Voilà), so that
            a headless run's HTML report shows the first match and mistakes.
        """
        from IPython.display import HTML, display

        if self.explorer is None:
            display(HTML(render.message(self.problem)))
            return
        if in_voila():
            display(HTML(render.page_script(UPLOAD_MAX_BYTES)))
        try:
            display(self.widget())
        except Exception as exc:  # noqa: BLE001 - one line, never a traceback
            log.debug("building the explorer failed", exc_info=True)
            display(HTML(render.message(f"The explorer could not be built: {exc}")))
            return
        if snapshot if snapshot is not None else not in_voila():
            display(HTML(self.snapshot_html()))

    def snapshot_html(self) -> str:
        """The first state as static HTML: the first match, the confusion matrix and the
        photos of the most frequent mistake (for reports; no kernel needed to view it)."""
        ex = self.explorer
        if ex is None:
            return render.message(self.problem)
        parts = [render.STYLE, '<details open><summary class="lf-note">Static copy of the '
                 "explorer's first state (for reports; the widgets above are live)</summary>"]
        if not ex.ready:
            parts.append(render.message(ex.missing.get("model", "")))
        else:
            options = ex.query_options()
            query = ex.query(options[0][1])
            table = ex.match(query, self.settings)
            parts += ["<h3>Match a lost item</h3>", render.query_card(query),
                      render.match_cards(table, query, self.settings)]
            if len(table):
                first = table[table["same_item"]]["path"].tolist() or [table["path"].iloc[0]]
                rank = int(table.set_index("path").loc[first[0], "rank"])
                parts.append(render.correspondences_html(
                    ex.correspondences_png(query, first[0]), query, first[0], rank))
            if ex.has_classifier:
                parts += ["<h3>Classifier mistakes</h3>",
                          f'<div class="lf-note">test accuracy {ex.accuracy():.1%}</div>',
                          render.confusion_html(ex.confusion())]
                pair = ex.worst_pair()
                parts.append(render.mistakes_html(ex.mistakes(*pair), *pair) if pair else
                             render.message("The classifier makes no mistake on the test "
                                            "photos."))
        rejects = ex.rejects()
        counts = ", ".join(f"{r}: {n}" for r, n in rejects["reason"].value_counts().items())
        parts.append(f"<h3>Cleanup review</h3><div class='lf-note'>{len(rejects)} quarantined "
                     f"({render.esc(counts) or 'none'}); {len(ex.duplicate_groups())} "
                     "near-duplicate groups</div></details>")
        return "".join(parts)

    def figures(self) -> dict[str, Any]:
        """Key figures for ``metrics.json``."""
        if self.explorer is None:
            return {"ready": False, "problem": self.problem}
        ex = self.explorer
        figures: dict[str, Any] = {"ready": ex.ready, "n_gallery": len(ex.gallery),
                                   "n_queries": len(ex.queries),
                                   "n_rejects": len(ex.rejects()),
                                   "n_duplicate_groups": len(ex.duplicate_groups()),
                                   "colors": bool(ex.color_names),
                                   "load_seconds": round(self.load_seconds, 2)}
        if ex.ready:
            query = ex.query(ex.query_options()[0][1])
            start = time.perf_counter()
            table = ex.match(query, self.settings)
            figures["first_match_seconds"] = round(time.perf_counter() - start, 4)
            start = time.perf_counter()
            ex.match(query, self.settings)
            figures["update_seconds"] = round(time.perf_counter() - start, 4)
            figures["first_match_same_items"] = int(table["same_item"].sum())
            if ex.has_classifier:
                figures["test_accuracy"] = ex.accuracy()
        return figures

    def record(self, out_dir: str | os.PathLike[str], stem: str = "07_explore") -> dict:
        """Merge :meth:`figures` into ``<out_dir>/metrics.json``; returns the figures."""
        figures = self.figures()
        record_metrics(out_dir, stem, figures)
        return figures


def open_explorer(data_dir: str | os.PathLike[str], run_dir: str | os.PathLike[str] = "",
                  classifier_model: str | os.PathLike[str] = "models/xception_lostnet.keras",
                  index_dir: str | os.PathLike[str] = "models/search/lostnet",
                  color_model: str | os.PathLike[str] = "models/color_names.joblib",
                  color_source: str = "", cache_dir: str | os.PathLike[str] | None = "data/cache",
                  seed: int = 42, settings: MatchSettings | None = None,
                  projection: str = "tsne") -> ExplorerView:
    """Load the explorer over the outputs of notebooks 01-06; never raises.

    Parameters
    ----------
    data_dir : path-like
        Clean data set of notebook 01; empty: the ``clean_dir`` of ``run_dir``'s notebook 01.
    run_dir : path-like
        Run folder to describe (default: ``reports/latest`` or the newest ``reports/runs/*``).
    classifier_model, color_model : path-like
        Notebook 03's classifier and notebook 04's color-name model.
    index_dir : path-like
        The search engine notebook 06 saved (its ``index_dir``); missing: the page says to run
        notebook 06 (a visitor's page never builds one: minutes and gigabytes).
    color_source : str
        Color data to train a namer on when ``color_model`` is missing (``""``: no colors).
    cache_dir : path-like, optional
        The engine's caches (shared with notebook 06) and the explorer's shared state.
    seed : int
    settings : MatchSettings, optional
        Initial matcher weights, ``k`` and modes.
    projection : {"tsne", "pca", "umap"}
        The embedding map's projection.

    Returns
    -------
    ExplorerView
        With ``problem`` set to one line saying what to run first when loading failed.
    """
    start = time.perf_counter()
    run = read_run(run_dir)
    if not data_dir and run.folder is not None:
        data_dir = _run_parameter(run.folder, "01_crawl_cleanup", "clean_dir") or ""
    view = ExplorerView(explorer=None, run=run, settings=settings or MatchSettings(),
                        projection=projection)
    try:
        if not data_dir:
            raise MissingInput("No data set given and no run found: run notebook 01 "
                               "(01_crawl_cleanup) first, or set data_dir.")
        view.explorer = Explorer.load(data_dir, index_dir=index_dir,
                                      classifier_model=classifier_model,
                                      color_model=color_model, color_source=color_source,
                                      cache_dir=cache_dir, seed=seed, projection=projection)
        if view.explorer.shared is not None:
            render.use_thumbnails(view.explorer.shared.thumbnail)
    except LFError as exc:
        view.problem = str(exc).splitlines()[0]
    except Exception as exc:  # noqa: BLE001 - the explorer shows one line, never a traceback
        log.debug("loading the explorer failed", exc_info=True)
        view.problem = f"The explorer could not load its data: {type(exc).__name__}: {exc}"
    view.load_seconds = time.perf_counter() - start
    return view


def _run_parameter(folder: Path, stem: str, name: str) -> Any:
    import json

    try:
        run = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for entry in run.get("notebooks", []):
        if entry.get("stem") == stem:
            return entry.get("parameters", {}).get(name)
    return None

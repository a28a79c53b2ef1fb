"""The explorer's widgets: four panels over an :class:`~lfhelpers.explore.state.Explorer`.

* **Match a lost item**: a test photo (dropdown) or an uploaded photo as the query; its top-3
  categories and colors; the ranked found items with why they matched; sliders and toggles for
  the matcher's weights, ``k`` and filter/rerank, results updating as they move.
* **Classifier mistakes**: the test confusion matrix as buttons; a cell shows its photos.
* **Cleanup review**: notebook 01's quarantine by reason, and the near-duplicate groups.
* **Embedding map**: a 2-D projection of the embeddings (bqplot); a click shows the photo and
  its nearest found items.

Every callback reports a problem as one line in the panel, never as a traceback.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lfhelpers.explore import render
from lfhelpers.explore.inputs import (
    UPLOAD_DIR,
    UPLOAD_MAX_BYTES,
    RunInfo,
    check_upload,
    read_upload_value,
    save_upload,
)
from lfhelpers.explore.sources import LFError, project_root
from lfhelpers.explore.state import Explorer, MatchSettings, Query

log = logging.getLogger(__name__)

#: Marker colors of the map (one per label, repeating).
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
          "#7f7f7f", "#bcbd22", "#17becf"]


def in_voila() -> bool:
    """True inside a kernel started by Voilà (it sets ``VOILA_*`` variables)."""
    return any(name.startswith("VOILA_") for name in os.environ)


def shown_path(path: Path) -> str:
    """A path for display: relative to the project folder when inside it."""
    try:
        return Path(path).resolve().relative_to(project_root()).as_posix()
    except ValueError:
        return str(path)


def guarded(status: Any) -> Callable:
    """Decorator: a callback's error becomes one line in ``status`` (an HTML widget)."""
    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            try:
                status.value = ""
                return fn(*args, **kwargs)
            except LFError as exc:
                status.value = render.message(str(exc))
            except Exception as exc:  # noqa: BLE001 - shown as one line, details in the log
                log.debug("explorer callback failed", exc_info=True)
                status.value = render.message(f"Something went wrong: {type(exc).__name__}: "
                                              f"{exc}")
            return None
        return inner
    return wrap


class MatchPanel:
    """Query photo, matcher controls and ranked found items."""

    def __init__(self, explorer: Explorer, settings: MatchSettings,
                 upload_dir: str | os.PathLike[str] = UPLOAD_DIR):
        import ipywidgets as w

        self.explorer = explorer
        self.settings = settings
        self.upload_dir = upload_dir
        self.upload = None
        self.status = w.HTML()
        self.status.add_class("lf-status")
        options = explorer.query_options()
        self.picker = w.Dropdown(options=options, value=options[0][1] if options else None,
                                 description="Lost photo", layout=w.Layout(width="420px"))
        self.picker.add_class("lf-query-picker")
        self.uploader = w.FileUpload(accept="image/*", multiple=False,
                                     description="Upload a photo",
                                     tooltip=f"at most {UPLOAD_MAX_BYTES / 1e6:.0f} MB")
        self.uploader.add_class("lf-uploader")
        self.save = w.Button(description="Save upload to data/uploads", disabled=True,
                             icon="save", layout=w.Layout(width="250px"),
                             tooltip="Uploaded photos stay in memory unless you save them")
        style = {"description_width": "150px"}
        lay = w.Layout(width="420px")
        self.k = w.IntSlider(settings.k, 1, 20, description="found items shown (k)",
                             style=style, layout=lay)
        self.k.add_class("lf-k")
        self.w_embedding = w.FloatSlider(settings.w_embedding, min=0, max=2, step=0.05,
                                         description="weight: similarity", style=style,
                                         layout=lay)
        self.w_category = w.FloatSlider(settings.w_category, min=0, max=2, step=0.05,
                                        description="weight: category", style=style,
                                        layout=lay)
        self.w_color = w.FloatSlider(settings.w_color, min=0, max=2, step=0.05,
                                     description="weight: color", style=style, layout=lay)
        self.category_mode = w.ToggleButtons(options=["rerank", "filter"],
                                             value=settings.category_mode,
                                             description="category", style=style)
        self.color_mode = w.ToggleButtons(options=["rerank", "filter"],
                                          value=settings.color_mode, description="color",
                                          style=style)
        if not explorer.color_names:
            self.w_color.disabled = self.color_mode.disabled = True
        if not explorer.has_classifier:
            self.w_category.disabled = self.category_mode.disabled = True
        self.query_view = w.HTML()
        self.results = w.HTML()
        self.results.add_class("lf-results-view")
        self.timing = w.HTML()
        self.timing.add_class("lf-timing")
        self.compare = w.Dropdown(description="Compare with", layout=w.Layout(width="520px"),
                                  style={"description_width": "100px"})
        self.compare.add_class("lf-compare")
        self.pairing = w.HTML()
        self.pairing.add_class("lf-pairing")
        self.table = None
        safe = guarded(self.status)
        self.compare.observe(safe(lambda _: self.draw_pair()), names="value")
        self.picker.observe(safe(lambda _: self.pick()), names="value")
        for control in (self.k, self.w_embedding, self.w_category, self.w_color,
                        self.category_mode, self.color_mode):
            control.observe(safe(lambda _: self.refresh()), names="value")
        self.uploader.observe(safe(self.on_upload), names="value")
        self.save.on_click(safe(lambda _: self.save_current()))
        controls = w.VBox([self.k, self.w_embedding, self.w_category, self.w_color,
                           self.category_mode, self.color_mode])
        source = w.VBox([self.picker, w.HBox([self.uploader, self.save]), self.status,
                         self.query_view])
        self.widget = w.VBox([w.HBox([source, controls],
                                     layout=w.Layout(justify_content="space-between")),
                              self.timing, self.results, self.compare, self.pairing])
        self.current: Query | None = None
        if options:
            safe(self.pick)()

    def read_settings(self) -> MatchSettings:
        """The settings the controls show now."""
        return MatchSettings(k=self.k.value, w_embedding=self.w_embedding.value,
                             w_category=self.w_category.value, w_color=self.w_color.value,
                             category_mode=self.category_mode.value,
                             color_mode=self.color_mode.value)

    def pick(self) -> None:
        """Use the test photo chosen in the dropdown as the query."""
        if self.picker.value is None:
            return
        self.upload = None
        self.save.disabled = True
        self.current = self.explorer.query(self.picker.value)
        self.query_view.value = render.query_card(self.current)
        self.refresh()

    def on_upload(self, change: dict) -> None:
        """Check an uploaded photo and use it as the query (kept in memory only)."""
        got = read_upload_value(change.get("new"))
        if got is None:
            return
        content, name = got
        self.uploader.value = ()  # the same file can be chosen again; the bytes live below
        self.upload = check_upload(content, name, max_bytes=UPLOAD_MAX_BYTES)
        self.current = self.explorer.upload_query(self.upload)
        self.save.disabled = False
        self.query_view.value = render.query_card(self.current)
        self.refresh()

    def save_current(self) -> None:
        """Write the current upload to ``data/uploads`` (only on the analyst's click)."""
        if self.upload is None:
            return
        target = save_upload(self.upload, self.upload_dir)
        self.save.disabled = True
        self.status.value = (f'<div class="lf-note">saved to '
                             f"{render.esc(Path(self.upload_dir) / target.name)}</div>")

    def refresh(self) -> None:
        """Match the current query with the current settings and show the found items."""
        if self.current is None:
            return
        start = time.perf_counter()
        settings = self.read_settings()
        table = self.explorer.match(self.current, settings)
        self.results.value = render.match_cards(table, self.current, settings)
        self.timing.value = (f'<div class="lf-note">updated in '
                             f"{time.perf_counter() - start:.2f} s</div>")
        self.table = table
        options = [(f"#{r.rank} {r.label} · {Path(r.path).name}"
                    + (f" · same item, {r.inliers} inliers" if r.same_item else ""), r.path)
                   for r in table.itertuples()]
        same = [r.path for r in table.itertuples() if r.same_item]
        keep = self.compare.value if self.compare.value in {p for _, p in options} else None
        chosen = keep or (same[0] if same else options[0][1] if options else None)
        if [o for o in self.compare.options] != options:
            with self.compare.hold_trait_notifications():
                self.compare.options = options
        if self.compare.value != chosen:
            self.compare.value = chosen  # draws through the observer
        elif keep is None or not self.pairing.value:
            self.draw_pair()

    def draw_pair(self) -> None:
        """The lost photo and the chosen found item side by side with the verified
        correspondences (the engine's geometric verification), as a PNG."""
        if self.current is None or self.compare.value is None or self.table is None:
            self.pairing.value = ""
            return
        ranks = dict(zip(self.table["path"], self.table["rank"], strict=True))
        found = self.compare.value
        png = self.explorer.correspondences_png(self.current, found)
        self.pairing.value = render.correspondences_html(png, self.current, found,
                                                         int(ranks.get(found, 0)))


class MistakesPanel:
    """The confusion matrix as buttons; a cell shows its test photos with their top-3."""

    def __init__(self, explorer: Explorer):
        import ipywidgets as w

        self.explorer = explorer
        self.status = w.HTML()
        self.gallery = w.HTML()
        self.gallery.add_class("lf-mistakes-view")
        matrix = explorer.confusion()
        top = max(1, int(matrix.to_numpy().max(initial=0)))
        n = len(matrix)
        cells: list[Any] = [w.HTML("<b>true \\ predicted</b>")]
        cells += [w.HTML(f"<b>{render.esc(c)}</b>") for c in matrix.columns]
        safe = guarded(self.status)
        for true, row in matrix.iterrows():
            cells.append(w.HTML(f"<b>{render.esc(true)}</b>"))
            for pred, count in row.items():
                button = w.Button(description=str(int(count)),
                                  tooltip=f"true {true}, predicted {pred}",
                                  layout=w.Layout(width="auto", height="30px"))
                shade = 0.15 + 0.85 * count / top if count else 0.0
                rgb = "46,157,73" if true == pred else "214,69,65"
                button.style.button_color = f"rgba({rgb},{shade:.2f})" if count else "#f7f7f7"
                button.on_click(safe(functools.partial(self.show, str(true), str(pred))))
                cells.append(button)
        self.grid = w.GridBox(cells, layout=w.Layout(
            grid_template_columns=f"140px repeat({n}, minmax(56px, 90px))", grid_gap="2px"))
        note = w.HTML(f'<div class="lf-note">Test accuracy {explorer.accuracy():.1%} on '
                      f"{len(explorer.queries)} photos. Rows: true label; columns: predicted "
                      "label. Click a cell to see its photos.</div>")
        self.widget = w.VBox([note, self.grid, self.status, self.gallery])
        pair = explorer.worst_pair()
        if pair:
            self.show(*pair)
        else:
            self.gallery.value = render.message("The classifier makes no mistake on the "
                                                "test photos.")

    def show(self, true: str, predicted: str, *_: Any) -> None:
        """Show the test photos of ``true`` predicted as ``predicted``."""
        self.gallery.value = render.mistakes_html(self.explorer.mistakes(true, predicted),
                                                  true, predicted)


class CleanupPanel:
    """Quarantined files by reason, and near-duplicate groups of the clean set."""

    def __init__(self, explorer: Explorer):
        import ipywidgets as w

        self.explorer = explorer
        self.rejects = explorer.rejects()
        self.groups = explorer.duplicate_groups()
        counts = self.rejects["reason"].value_counts()
        # reasons whose files are images to look at first (duplicates, sizes), then the rest
        unreadable = {"empty_file", "not_an_image", "decode_error", "truncated"}
        counts = counts.sort_index(key=lambda r: r.isin(unreadable), kind="stable")
        self.reason = w.Dropdown(options=[(f"{r} ({n})", r) for r, n in counts.items()],
                                 description="Rejected as", layout=w.Layout(width="360px"))
        self.reject_view = w.HTML()
        self.group = w.Dropdown(
            options=[(f"group {g['group'].iloc[0]}: {len(g)} photos, "
                      f"{', '.join(sorted(set(g['split'])))}", i)
                     for i, g in enumerate(self.groups)],
            description="Near duplicates", layout=w.Layout(width="420px"),
            style={"description_width": "110px"})
        self.group_view = w.HTML()
        self.status = w.HTML()
        safe = guarded(self.status)
        self.reason.observe(safe(lambda _: self.show_reason()), names="value")
        self.group.observe(safe(lambda _: self.show_group()), names="value")
        intro = w.HTML(f'<div class="lf-note">{len(self.rejects)} file(s) quarantined by '
                       f"notebook 01 (copies under {render.esc(explorer.clean_dir.name)}/"
                       "_quarantine/&lt;reason&gt;/); near-duplicate groups are kept in one "
                       "split.</div>")
        self.widget = w.VBox([intro, self.reason, self.reject_view, self.group,
                              self.group_view, self.status])
        self.show_reason()
        self.show_group()

    def show_reason(self) -> None:
        """Thumbnails of the files quarantined for the chosen reason."""
        if self.reason.value is None:
            self.reject_view.value = render.message("Nothing was quarantined.")
            return
        self.reject_view.value = render.rejects_html(self.rejects, self.reason.value)

    def show_group(self) -> None:
        """Thumbnails of the chosen near-duplicate group."""
        if self.group.value is None:
            self.group_view.value = render.message("No near-duplicate groups in the clean set.")
            return
        self.group_view.value = render.group_html(self.groups[self.group.value],
                                                  self.explorer.clean_dir)


class MapPanel:
    """A 2-D map of the embeddings; clicking a point shows the photo and its neighbours."""

    def __init__(self, explorer: Explorer, method: str = "tsne"):
        import ipywidgets as w

        self.explorer = explorer
        self.method = method
        self.status = w.HTML()
        self.detail = w.HTML('<div class="lf-note">Click a point to see its photo and its '
                             "nearest found items.</div>")
        self.holder = w.VBox([w.HTML('<div class="lf-note">The map is computed when this tab '
                                     "is first opened.</div>")])
        self.widget = w.VBox([self.holder, self.status, self.detail])
        self.built = False

    def build(self) -> None:
        """Compute the projection (cached) and draw the scatter."""
        if self.built:
            return
        import bqplot as bq

        table = self.explorer.map_table(self.method)
        xs, ys = bq.LinearScale(), bq.LinearScale()
        safe = guarded(self.status)
        marks = []
        for i, (label, group) in enumerate(table.groupby("label", sort=True)):
            mark = bq.Scatter(x=group["x"].to_numpy(), y=group["y"].to_numpy(),
                              scales={"x": xs, "y": ys}, colors=[COLORS[i % len(COLORS)]],
                              default_size=28, labels=[str(label)], display_legend=True,
                              names=[Path(p).name for p in group["path"]], display_names=False,
                              tooltip=bq.Tooltip(fields=["name"]), opacities=[0.8],
                              interactions={"click": "select"},
                              selected_style={"stroke": "black", "stroke-width": 2})
            paths = list(group["path"])
            mark.on_element_click(safe(functools.partial(self.show, paths, str(label))))
            marks.append(mark)
        fig = bq.Figure(marks=marks, axes=[bq.Axis(scale=xs, label=f"{self.method} 1"),
                                           bq.Axis(scale=ys, label=f"{self.method} 2",
                                                   orientation="vertical")],
                        title=f"{len(table)} photos, colored by label",
                        legend_location="top-right", fig_margin={"top": 50, "bottom": 40,
                                                                 "left": 50, "right": 120})
        fig.layout.width, fig.layout.height = "760px", "520px"
        self.holder.children = [fig]
        self.built = True

    def show(self, paths: list[str], label: str, _mark: Any, event: dict) -> None:
        """Show a clicked point's photo and its nearest found items."""
        path = paths[int(event["data"]["index"])]
        self.detail.value = render.neighbours_html(path, label,
                                                   self.explorer.neighbours(path, k=6))


def engine_line(explorer: Explorer) -> str:
    """`` · search engine: <recipe>`` of the loaded engine (empty without one)."""
    if explorer.engine is None:
        return ""
    r = explorer.engine.recipe_
    same = "same-item verification" if explorer.engine.store_ is not None else \
        "no local features"
    return (f" · ranked by notebook 06's search engine ({r.backbone} {r.pooling}, "
            f"{r.postprocess}, {same})")


def build_app(explorer: Explorer, run: RunInfo, settings: MatchSettings | None = None,
              projection: str = "tsne", upload_dir: str | os.PathLike[str] = UPLOAD_DIR) -> Any:
    """The whole explorer as one widget (a header and four tabs)."""
    import ipywidgets as w

    data = render.esc(shown_path(explorer.clean_dir))
    header = w.HTML(render.STYLE + f'<div class="lf-note"><b>Lost &amp; Found explorer</b> · '
                    f"{render.esc(run.describe())} · data set {data}: "
                    f"{len(explorer.gallery)} found items, {len(explorer.queries)} "
                    f"lost photos (test){render.esc(engine_line(explorer))}</div>")
    notes = w.HTML("".join(f'<div class="lf-note">{render.esc(n)}</div>'
                           for n in explorer.notes[:5]))
    cleanup = CleanupPanel(explorer)
    if not explorer.ready:
        note = w.HTML(render.message(explorer.missing.get("model", "")))
        return w.VBox([header, note, cleanup.widget])
    match = MatchPanel(explorer, settings or MatchSettings(), upload_dir)
    mistakes = MistakesPanel(explorer) if explorer.has_classifier else None
    mapping = MapPanel(explorer, projection)
    panels = [("Match a lost item", match.widget)]
    if mistakes is not None:
        panels.append(("Classifier mistakes", mistakes.widget))
    panels += [("Cleanup review", cleanup.widget), ("Embedding map", mapping.widget)]
    tabs = w.Tab(children=[widget for _, widget in panels])
    for i, (title, _) in enumerate(panels):
        tabs.set_title(i, title)
    map_tab = len(panels) - 1
    safe = guarded(mapping.status)
    tabs.observe(safe(lambda change: mapping.build() if change["new"] == map_tab else None),
                 names="selected_index")
    extra = [w.HTML(render.message(text)) for key, text in explorer.missing.items()
             if key != "model"]
    app = w.VBox([header, *extra, notes, tabs])
    app.panels = {"match": match, "mistakes": mistakes, "cleanup": cleanup, "map": mapping}
    return app

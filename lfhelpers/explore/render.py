"""HTML pieces of the explorer: thumbnails, the query card, match cards, galleries, messages.

Everything is plain HTML with inline JPEG thumbnails, so the same pieces serve the live widgets
(one ``ipywidgets.HTML`` update per change) and the static snapshot that a headless run leaves in
its HTML report.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from lfhelpers.explore.sources import DataError, open_image

#: Styles of every piece (classes start with ``lf-``).
STYLE = """<style>
.lf-card{display:inline-block;vertical-align:top;width:172px;margin:4px;padding:6px;
  border:3px solid #d0d0d0;border-radius:6px;font:12px/1.35 sans-serif;background:#fff;
  color:#222}
.lf-card img{width:160px;height:160px;object-fit:contain;background:#f2f2f2;display:block}
.lf-card.lf-same{border-color:#2e9d49}.lf-card.lf-other{border-color:#d64541}
.lf-card b{font-size:13px}.lf-why{color:#555;margin-top:2px}
.lf-grid{display:flex;flex-wrap:wrap;align-items:flex-start}
.lf-query{display:flex;gap:16px;align-items:flex-start;font:13px/1.4 sans-serif;color:#222}
.lf-query img{width:220px;height:220px;object-fit:contain;background:#f2f2f2;
  border:1px solid #ccc}
.lf-bar{display:flex;align-items:center;gap:6px;margin:2px 0}
.lf-bar span.lf-fill{display:inline-block;height:12px;background:#4a7fc1;border-radius:2px}
.lf-swatch{display:inline-block;width:18px;height:18px;border:1px solid #888;
  border-radius:3px;vertical-align:middle;margin-right:4px}
.lf-note{font:13px/1.4 sans-serif;color:#444;margin:4px 0}
.lf-message{font:14px/1.4 sans-serif;padding:8px 12px;border-radius:4px;
  background:#fff4e5;border:1px solid #f0b429;color:#5c3c00}
.lf-tile{width:160px;height:160px;display:flex;align-items:center;justify-content:center;
  text-align:center;background:#eee;color:#666;font-size:12px}
.lf-matrix{border-collapse:collapse;font:12px sans-serif}
.lf-matrix td,.lf-matrix th{border:1px solid #ccc;padding:3px 6px;text-align:center}
</style>"""

_PLACEHOLDER = "__unreadable__"


def esc(text: Any) -> str:
    """HTML-escape any value."""
    return html.escape(str(text), quote=True)


@lru_cache(maxsize=4096)
def _thumb_file(path: str, size: int) -> str:
    try:
        return _encode(open_image(path, max_side=size * 2), size)
    except DataError:
        return _PLACEHOLDER


def _encode(image: Any, size: int) -> str:
    image = image.copy()
    image.thumbnail((size, size))
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "JPEG", quality=82)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def thumb_uri(source: Any, size: int = 160) -> str | None:
    """A ``data:`` URI of a JPEG thumbnail of a file or a PIL image; ``None`` when unreadable.

    File thumbnails are cached in memory, so showing a photo a second time costs nothing.
    """
    if isinstance(source, str | Path):
        uri = _thumb_file(str(source), int(size))
        return None if uri == _PLACEHOLDER else uri
    return _encode(source, int(size))


def img_tag(source: Any, size: int = 160, alt: str = "", reason: str = "cannot be shown") -> str:
    """An ``<img>`` of a thumbnail, or a grey tile with ``reason`` when it cannot be read."""
    uri = thumb_uri(source, size)
    if uri is None:
        return f'<div class="lf-tile">{esc(reason)}</div>'
    return f'<img src="{uri}" alt="{esc(alt)}" title="{esc(alt)}">'


def message(text: str) -> str:
    """A one-line notice (what to run first, a rejected upload)."""
    return f'{STYLE}<div class="lf-message lf-notice">{esc(text)}</div>'


def bars(top: Sequence[tuple[str, float]]) -> str:
    """Horizontal bars of ``(label, probability)`` pairs."""
    rows = []
    for label, p in top:
        width = max(2, int(round(140 * float(p))))
        rows.append(f'<div class="lf-bar"><span style="width:110px">{esc(label)}</span>'
                    f'<span class="lf-fill" style="width:{width}px"></span>'
                    f'<span>{float(p):.0%}</span></div>')
    return "".join(rows)


def palette_html(palette: Sequence[tuple[str, float, str]]) -> str:
    """Color swatches with names and shares."""
    if not palette:
        return '<span class="lf-note">no color names (run notebook 04)</span>'
    return " ".join(f'<span style="white-space:nowrap"><span class="lf-swatch" '
                    f'style="background:{esc(hx)}"></span>{esc(name)} {share:.0%}</span>'
                    for name, share, hx in palette)


def query_card(query: Any) -> str:
    """The lost item: its photo, the classifier's top-3 categories and its colors."""
    label = f" · true label <b>{esc(query.label)}</b>" if query.label else ""
    return (f'{STYLE}<div class="lf-query">{img_tag(query.source, 220, query.name)}'
            f'<div><div><b>{esc(query.name)}</b>{label}</div>'
            f'<div style="margin-top:6px"><b>Top-3 categories</b> (classifier)</div>'
            f'{bars(query.top3)}<div style="margin-top:6px"><b>Colors</b></div>'
            f'<div>{palette_html(query.palette)}</div></div></div>')


def match_cards(table: pd.DataFrame, query: Any, settings: Any = None) -> str:
    """The ranked found items as cards: photo, label, score and why it matched.

    A green frame: the found item has the query's true label (test photos); red: it has not.
    """
    if table.empty:
        return message("No found item passes the filters; switch a filter to rerank.")
    cards = []
    for row in table.itertuples():
        frame = ""
        if query.label:
            frame = " lf-same" if row.label == query.label else " lf-other"
        why = "<br>".join(esc(part) for part in str(row.why).split("; "))
        cards.append(f'<div class="lf-card lf-result{frame}">'
                     f'{img_tag(row.path, 160, Path(row.path).name)}'
                     f'<b>#{row.rank} {esc(row.label)}</b> · score {row.score:.2f}'
                     f'<div class="lf-why">{why}</div></div>')
    head = f'<div class="lf-note">{len(table)} found items for <b>{esc(query.name)}</b>'
    if settings is not None:
        head += (f" (weights: similarity {settings.w_embedding:g}, category "
                 f"{settings.w_category:g}, color {settings.w_color:g}; category "
                 f"{settings.category_mode}, color {settings.color_mode})")
    head += "; green frame = same label as the lost item</div>" if query.label else "</div>"
    return f'{STYLE}{head}<div class="lf-grid lf-results">{"".join(cards)}</div>'


def photo_cards(rows: Iterable[dict], size: int = 160) -> str:
    """Cards of photos with a title and caption lines (``path``, ``title``, ``lines``)."""
    cards = []
    for row in rows:
        lines = "<br>".join(esc(x) for x in row.get("lines", ()))
        cards.append(f'<div class="lf-card">{img_tag(row["path"], size, row.get("title", ""), row.get("reason", "cannot be shown"))}'  # noqa: E501
                     f'<b>{esc(row.get("title", ""))}</b><div class="lf-why">{lines}</div>'
                     "</div>")
    return f'{STYLE}<div class="lf-grid">{"".join(cards)}</div>'


def mistakes_html(table: pd.DataFrame, true: str, predicted: str, limit: int = 24) -> str:
    """Photos of label ``true`` predicted as ``predicted``, each with its top-3."""
    if table.empty:
        return message(f"No test photo of {true} is predicted as {predicted}.")
    head = (f'<div class="lf-note">{len(table)} test photo(s) of <b>{esc(true)}</b> predicted '
            f'as <b>{esc(predicted)}</b>' + (f" (first {limit})" if len(table) > limit else "")
            + "</div>")
    rows = [{"path": r.path, "title": Path(r.path).name,
             "lines": [f"{lab} {p:.0%}" for lab, p in r.top3]}
            for r in table.head(limit).itertuples()]
    return head + photo_cards(rows)


def confusion_html(matrix: pd.DataFrame) -> str:
    """The confusion matrix as a table, diagonal green, mistakes shaded red by count."""
    top = max(1, int(matrix.to_numpy().max(initial=0)))
    head = "".join(f"<th>{esc(c)}</th>" for c in matrix.columns)
    body = []
    for true, row in matrix.iterrows():
        cells = []
        for pred, n in row.items():
            alpha = 0.15 + 0.85 * n / top if n else 0
            color = (f"rgba(46,157,73,{alpha:.2f})" if true == pred
                     else f"rgba(214,69,65,{alpha:.2f})")
            cells.append(f'<td style="background:{color}">{int(n)}</td>')
        body.append(f"<tr><th>{esc(true)}</th>{''.join(cells)}</tr>")
    return (f'{STYLE}<table class="lf-matrix"><tr><th>true \\ predicted</th>{head}</tr>'
            f'{"".join(body)}</table>')


def rejects_html(rejects: pd.DataFrame, reason: str, limit: int = 40) -> str:
    """Quarantined files of one reason, as thumbnails with the detail."""
    chosen = rejects[rejects["reason"] == reason]
    if chosen.empty:
        return message(f"No file was rejected as {reason}.")
    rows = [{"path": r.file, "title": f"{r.label}/{Path(r.source).name}",
             "lines": [r.detail], "reason": f"{reason}: not viewable"}
            for r in chosen.head(limit).itertuples()]
    more = f" (first {limit})" if len(chosen) > limit else ""
    return (f'<div class="lf-note">{len(chosen)} file(s) quarantined as <b>{esc(reason)}</b>'
            f"{more}</div>" + photo_cards(rows))


def group_html(group: pd.DataFrame, clean_dir: Path) -> str:
    """One near-duplicate group of the clean set (kept together in one split)."""
    rows = [{"path": str(clean_dir / r.path), "title": Path(r.path).name,
             "lines": [f"{r.label} · {r.split}", f"phash {r.phash}"]}
            for r in group.itertuples()]
    return photo_cards(rows, size=140)


def neighbours_html(path: str, label: str, table: pd.DataFrame) -> str:
    """A photo of the map and its nearest found items."""
    rows = [{"path": r.path, "title": f"#{r.rank} {r.label}",
             "lines": [f"similarity {r.similarity:.2f}"]} for r in table.itertuples()]
    return (f'{STYLE}<div class="lf-query">{img_tag(path, 220, Path(path).name)}'
            f"<div><b>{esc(Path(path).name)}</b> · {esc(label)}<div class='lf-note'>nearest "
            f"found items:</div></div></div>" + photo_cards(rows, size=120))

"""HTML pieces of the explorer: thumbnails, the query card, match cards, galleries, messages.

Everything is plain HTML with inline JPEG thumbnails, so the same pieces serve the live widgets
(one ``ipywidgets.HTML`` update per change) and the static snapshot that a headless run leaves in
its HTML report.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
from collections.abc import Callable, Iterable, Sequence
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
.lf-badge{display:inline-block;margin:3px 0;padding:1px 6px;border-radius:9px;
  background:#1b7f3b;color:#fff;font-weight:bold;font-size:11px}
.lf-card.lf-verified{box-shadow:0 0 0 3px #1b7f3b}
.lf-correspondences img{max-width:100%;border:1px solid #ccc}
</style>"""

#: Where stored thumbnails come from first (``path -> JPEG bytes or None``); see
#: :func:`use_thumbnails`.
_STORES: list[Callable[[str], bytes | None]] = []


def use_thumbnails(store: Callable[[str], bytes | None]) -> None:
    """Serve thumbnails from ``store`` (the shared state's) before reading a photo file."""
    if store not in _STORES:
        _STORES.insert(0, store)

_PLACEHOLDER = "__unreadable__"


def esc(text: Any) -> str:
    """HTML-escape any value."""
    return html.escape(str(text), quote=True)


@lru_cache(maxsize=256)
def _thumb_file(path: str, size: int) -> str:
    for store in _STORES:
        stored = store(path)
        if stored:
            return "data:image/jpeg;base64," + base64.b64encode(stored).decode("ascii")
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

    Data-set photos come from the run's stored thumbnails (:func:`use_thumbnails`); others
    are read and kept in a small in-memory cache.
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
        same = bool(getattr(row, "same_item", False))
        inliers = getattr(row, "inliers", None)
        badge = ""
        if same:
            badge = (f'<div class="lf-badge lf-same-item" title="geometric verification: '
                     f'{esc(inliers)} matching points agree on one transformation">same item'
                     f" · {esc(inliers)} inliers</div>")
        elif inliers is not None and not pd.isna(inliers):  # verified, not the same item
            frame += " lf-checked"
        cards.append(f'<div class="lf-card lf-result{frame}{" lf-verified" if same else ""}" '
                     f'data-path="{esc(Path(row.path).name)}">'
                     f'{img_tag(row.path, 160, Path(row.path).name)}'
                     f'<b>#{row.rank} {esc(row.label)}</b> · score {row.score:.2f}{badge}'
                     f'<div class="lf-why">{why}</div></div>')
    head = f'<div class="lf-note">{len(table)} found items for <b>{esc(query.name)}</b>'
    if settings is not None:
        head += (f" (weights: similarity {settings.w_embedding:g}, category "
                 f"{settings.w_category:g}, color {settings.w_color:g}; category "
                 f"{settings.category_mode}, color {settings.color_mode})")
    n_same = int(table["same_item"].fillna(False).astype(bool).sum()) if "same_item" in table \
        else 0
    head += (f"; <b>{n_same}</b> verified as the same item (badge)" if n_same
             else "; none verified as the same item")
    head += "; green frame = same label as the lost item</div>" if query.label else "</div>"
    return (f'{STYLE}{head}<div class="lf-grid lf-results" data-seq="{next(_SEQ)}">'
            f'{"".join(cards)}</div>')


_SEQ = itertools.count(1)


def correspondences_html(png: bytes, query: Any, found: str, rank: int) -> str:
    """The correspondence picture (PNG) of the lost photo and one found item."""
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return (f'{STYLE}<div class="lf-correspondences"><div class="lf-note">Verified '
            f"correspondences of <b>{esc(query.name)}</b> (left) and found item #{rank} "
            f"<b>{esc(Path(found).name)}</b> (right): each line joins two points that the "
            "fitted geometric transformation maps onto each other.</div>"
            f'<img src="{uri}" alt="correspondences"></div>')


#: The page's own script (shown once, under Voilà): (1) when its kernel is gone (culled after the
#: idle timeout, or the server restarted) the visitor gets a fresh page, not a dead one: it asks
#: the server about its own kernel every 20 s while the page is visible and when the tab comes
#: back, says so in a banner, and reloads at the visitor's next click, key or return to the tab
#: (an open but untouched tab does not start kernels by itself); (2) refuses
#: an upload over the limit (``%d``) with a message, before its bytes are sent.
PAGE_SCRIPT = """<script>
(function () {
  var LIMIT = %d;
  if (window.__lfReload) return; window.__lfReload = true;
  function kernelId() {
    var el = document.getElementById('jupyter-config-data');
    try {
      var c = JSON.parse(el.textContent);
      if (c.kernelId) return [c.baseUrl || '/', c.kernelId];
    } catch (e) {}
    return null;
  }
  var gone = false;
  function revive() { if (gone) location.reload(); }
  function check() {
    if (gone || document.visibilityState !== 'visible') return;
    var k = kernelId(); if (!k) return;
    fetch(k[0].replace(/\\/?$/, '/') + 'api/kernels/' + k[1], {credentials: 'same-origin'})
      .then(function (r) {
        if (r.status !== 404) return;
        gone = true;  // a fresh page (and kernel) at the visitor's next touch, not before
        var note = document.createElement('div');
        note.className = 'lf-message lf-notice lf-expired';
        note.style.cssText = 'position:fixed;top:0;left:0;right:0;z-index:9999;cursor:pointer';
        note.textContent = 'This page was idle and its session was closed to save memory; '
          + 'click anywhere (or come back to the tab) for a fresh page.';
        document.body.appendChild(note);
      })
      .catch(function () {});
  }
  ['pointerdown', 'keydown'].forEach(function (n) {
    document.addEventListener(n, revive, true); });
  window.addEventListener('focus', function () { revive(); check(); });
  document.addEventListener('visibilitychange', function () { revive(); check(); });
  // an upload larger than the limit: a message in the page, the file is never sent. The upload
  // widget's file input is not in the page, so the guard is put on the input when the widget
  // opens it (a capturing listener on the target runs before the widget's own).
  function guard(e) {
    var input = e.target;
    var big = Array.from(input.files || []).filter(function (f) { return f.size > LIMIT; });
    if (!big.length) return;
    e.stopImmediatePropagation(); input.value = '';
    var box = document.querySelector('.lf-status');
    var text = big[0].name + ' is too large (' + (big[0].size / 1e6).toFixed(1)
      + ' MB, more than ' + (LIMIT / 1e6).toFixed(0) + ' MB); choose a smaller photo.';
    if (box) {
      box.innerHTML = '';
      var div = document.createElement('div');
      div.className = 'lf-message lf-notice lf-upload-refused'; div.textContent = text;
      box.appendChild(div);
    } else { alert(text); }
  }
  var click = HTMLInputElement.prototype.click;
  HTMLInputElement.prototype.click = function () {
    if (this.type === 'file' && !this.__lfGuard) {
      this.__lfGuard = true; this.addEventListener('change', guard, true);
    }
    if (this.type === 'file') window.__lfFileInput = this;
    return click.apply(this, arguments);
  };
  setInterval(check, 20000);
})();
</script>"""


def page_script(limit: int) -> str:
    """:data:`PAGE_SCRIPT` with the upload limit in bytes."""
    return PAGE_SCRIPT % int(limit)


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

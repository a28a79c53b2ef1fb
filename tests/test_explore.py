"""The explorer (notebook 07) and the notebooks' working folder."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lfhelpers import explore
from lfhelpers.errors import DataError
from lfhelpers.explore import render
from lfhelpers.explore.app import MatchPanel
from lfhelpers.explore.inputs import check_upload, save_upload
from lfhelpers.explore.state import MatchSettings

ROOT = Path(__file__).resolve().parent.parent


def _png(size: tuple[int, int], mode: str = "RGB", color: int | tuple = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, "PNG")
    return buf.getvalue()


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()


def smoke_index_dir(smoke_run: Path) -> Path:
    """Notebook 06's search engine of the smoke run (``index_dir`` of the smoke profile); a
    small one (random MobileNet, 96 px) is built beside it when that notebook saved none."""
    saved = smoke_run / "models" / "search"
    if (saved / "recipe.json").is_file():
        return saved
    from lfhelpers.data import read_manifest
    from lfhelpers.similarity.search.engine import SearchEngine
    from lfhelpers.similarity.search.recipe import Recipe

    built = smoke_run / "models" / "search-explore-test"
    if not (built / "recipe.json").is_file():
        m = read_manifest(smoke_run / "data" / "clean")
        g = m[m["split"].isin(["train", "val"])]
        SearchEngine(Recipe(backbone="mobilenet", weights="none", image_size=96),
                     cache_dir=smoke_run / "cache").fit_files(
            list(g["file"]), list(g["label"])).save(built)
    return built


@pytest.fixture(scope="module")
def params(explore_params, smoke_run):
    return {**explore_params, "index_dir": str(smoke_index_dir(smoke_run))}


@pytest.fixture(scope="module")
def view(params):
    return explore.open_explorer(params["data_dir"], params["run_dir"],
                                 params["classifier_model"], params["index_dir"],
                                 params["color_model"], cache_dir=params["cache_dir"],
                                 seed=params["seed"], projection="pca")



@pytest.mark.slow
def test_notebook_01_run_from_notebooks_folder_writes_at_project_root():
    """Relative paths mean the project folder even when papermill runs in ``notebooks/``."""
    import papermill as pm

    name = f"wd-test-{uuid.uuid4().hex[:8]}"
    raw, clean, out = f"data/{name}/raw", f"data/{name}/clean", f"reports/runs/{name}"
    before = _files(ROOT / "notebooks")
    try:
        (ROOT / out).mkdir(parents=True)
        pm.execute_notebook(
            str(ROOT / "notebooks" / "01_crawl_cleanup.ipynb"), str(ROOT / out / "01.ipynb"),
            parameters={"source": "synthetic", "raw_dir": raw, "clean_dir": clean,
                        "out_dir": out, "synthetic_per_class": 8, "min_per_class": 4,
                        "n_jobs": 1},
            cwd=str(ROOT / "notebooks"), progress_bar=False, log_output=False,
            kernel_name="python3")
        assert (ROOT / clean / "manifest.csv").is_file()
        assert any((ROOT / raw).iterdir())
        assert "01_crawl_cleanup" in json.loads((ROOT / out / "metrics.json").read_text())
        assert _files(ROOT / "notebooks") == before
        assert not (ROOT / "notebooks" / "data").exists()
        assert not (ROOT / "notebooks" / "reports").exists()
    finally:
        shutil.rmtree(ROOT / "data" / name, ignore_errors=True)
        shutil.rmtree(ROOT / out, ignore_errors=True)
        with contextlib.suppress(OSError):  # only when this test made it
            (ROOT / "reports" / "runs").rmdir()



def test_upload_of_a_photo_is_decoded_and_named_safely():
    upload = check_upload(_png((64, 48)), "../../etc/my wallet.png")
    assert upload.image.size == (64, 48) and upload.image.mode == "RGB"
    assert upload.name == "my_wallet.png"
    assert upload.key.startswith("upload:")


@pytest.mark.parametrize(("content", "needle"), [
    (b"", "is empty"),
    (b"<html><body>not found</body></html>", "not a readable image"),
    (_png((64, 64))[:60], "not a readable image"),
    (_png((10, 12)), "too small"),
])
def test_bad_uploads_get_one_clear_line(content, needle):
    with pytest.raises(DataError, match=needle) as err:
        check_upload(content, "photo.png")
    assert "\n" not in str(err.value) and "Traceback" not in str(err.value)
    assert "photo.png" in str(err.value)


def test_upload_limits_guard_size_and_decompression_bombs():
    from lfhelpers.data.checks import CleanOptions

    with pytest.raises(DataError, match="too large"):
        check_upload(_png((64, 64)), "big.png", CleanOptions(max_bytes=100))
    bomb = _png((9000, 9000), mode="1", color=0)  # 81 M pixels in a few kB
    assert len(bomb) < 200_000
    with pytest.raises(DataError, match="too large"):
        check_upload(bomb, "bomb.png")


def test_uploads_are_written_only_when_saved(tmp_path):
    upload = check_upload(_png((40, 40)), "keys.png")
    target = save_upload(upload, tmp_path / "uploads")
    assert target.parent == tmp_path / "uploads" and target.read_bytes() == upload.content
    assert target.name.endswith("-keys.png")



def test_without_a_data_set_it_says_what_to_run_first(tmp_path):
    view = explore.open_explorer(tmp_path / "nothing", run_dir=tmp_path / "no-run")
    assert view.explorer is None
    assert "notebook 01" in view.problem and "\n" not in view.problem
    assert "notebook 01" in view.snapshot_html()
    assert view.figures()["ready"] is False


def test_without_a_search_engine_it_says_to_run_notebook_06(params, tmp_path):
    view = explore.open_explorer(params["data_dir"], classifier_model=params["classifier_model"],
                                 index_dir=tmp_path / "no-engine", cache_dir=None)
    ex = view.explorer
    assert not ex.ready and "notebook 06" in ex.missing["model"]
    assert str(tmp_path / "no-engine") in ex.missing["model"]
    assert set(ex.rejects()["reason"]) >= {"not_an_image", "near_duplicate"}
    html = view.snapshot_html()
    assert "notebook 06" in html and "quarantined" in html
    shown = " ".join(getattr(c, "value", "") for c in view.widget().children)
    assert "notebook 06" in shown and "lf-notice" in shown


def test_without_a_classifier_matching_still_ranks_through_the_engine(params, tmp_path):
    view = explore.open_explorer(params["data_dir"], classifier_model=tmp_path / "none.keras",
                                 index_dir=params["index_dir"], color_model="",
                                 cache_dir=params["cache_dir"], projection="pca")
    ex = view.explorer
    assert ex.ready and not ex.has_classifier and "notebook 03" in ex.missing["classifier"]
    query = ex.query(ex.query_options()[0][1])
    assert query.top3 == []
    table = ex.match(query, MatchSettings(k=4))
    assert len(table) == 4 and (table["category"] == 0).all() and (table["color"] == 0).all()
    app = view.widget()
    assert "mistakes" not in app.panels or app.panels["mistakes"] is None
    assert app.panels["match"].w_category.disabled


def test_explorer_loads_the_smoke_outputs(view):
    ex = view.explorer
    assert view.problem == "" and ex.ready, view.problem
    assert set(ex.gallery["split"]) <= {"train", "val"} and set(ex.queries["split"]) == {"test"}
    assert len(ex.query_options()) == len(ex.queries) > 0
    assert ex.color_names, "notebook 04's color model gives color names"
    assert ex.confusion().to_numpy().sum() == len(ex.queries)


def test_match_is_ranked_explained_and_follows_the_settings(view):
    ex = view.explorer
    query = ex.query(ex.query_options()[0][1])
    assert len(query.top3) == 3 and abs(sum(p for _, p in query.top3)) <= 1.0 + 1e-5
    assert query.palette and all(h.startswith("#") for _, _, h in query.palette)
    table = ex.match(query, MatchSettings(k=5))
    assert list(table["rank"]) == [1, 2, 3, 4, 5]
    assert table["score"].is_monotonic_decreasing
    assert table["why"].str.contains("similarity").all()
    assert table["why"].str.contains("color").all()
    only_sim = ex.match(query, MatchSettings(k=5, w_category=0, w_color=0))
    assert np.allclose(only_sim["score"], only_sim["similarity"])
    filtered = ex.match(query, MatchSettings(k=20, category_mode="filter"))
    top = {label for label, _ in query.top3}
    assert set(filtered["label"]) <= top


def test_found_items_are_the_engines_answer(view, params):
    """The explorer serves notebook 06's engine: its neighbours, scores, inliers and same-item
    decisions, ordered as the matcher orders them (verified same items first)."""
    from lfhelpers.similarity.search.engine import SearchEngine

    ex = view.explorer
    saved = SearchEngine.load(params["index_dir"], cache_dir=params["cache_dir"])
    for path in [p for _, p in ex.query_options()[:3]]:
        query = ex.query(path)
        table = ex.match(query, MatchSettings(k=6, w_category=0, w_color=0))
        found = saved.search([path], 50, vectors=query.vector[None])[0]  # the matcher's depth
        assert found and all(n["inliers"] is not None for n in found[:5]), "verified"
        by_path = {str(Path(n["path"]).resolve()): n for n in found}
        expected = sorted(by_path, key=lambda p: (not by_path[p]["same_item"],
                                                  -by_path[p]["score"]))[:6]
        assert list(table["path"]) == expected
        for row in table.itertuples():
            n = by_path[row.path]
            assert row.similarity == pytest.approx(n["score"], abs=1e-5)
            assert (pd.isna(row.inliers) if n["inliers"] is None
                    else row.inliers == n["inliers"])  # <NA> in the table: not verified
            assert row.same_item == bool(n["same_item"])
        assert ex.search(query, 6) == [{**n, "path": str(Path(n["path"]).resolve())}
                                       for n in saved.search([path], 6,
                                                             vectors=query.vector[None])[0]]


def test_a_verified_same_item_shows_a_badge_and_stays_above_category_and_color(
        view, monkeypatch):
    ex = view.explorer
    query = ex.query(ex.query_options()[0][1])
    real = ex.engine.search
    answer = real([query.key], 50, vectors=query.vector[None])[0]
    last = dict(answer[-1], inliers=42, same_item=True)
    monkeypatch.setattr(ex.engine, "search", lambda *a, **kw: [
        [dict(n, inliers=3, same_item=False) for n in answer[:-1]] + [last]])
    settings = MatchSettings(k=5, w_category=2, w_color=2)
    table = ex.match(query, settings)
    assert table["path"].iloc[0] == str(Path(last["path"]).resolve())
    assert table["same_item"].tolist() == [True, False, False, False, False]
    assert "same item (42 matching points)" in table["why"].iloc[0]
    html = render.match_cards(table, query, settings)
    assert html.count("lf-same-item") == 1 and "42 inliers" in html
    first_card = html.split('class="lf-card lf-result')[1]
    assert "lf-same-item" in first_card and "lf-verified" in first_card
    panel = MatchPanel(ex, settings)
    assert panel.compare.value == table["path"].iloc[0]  # the same item is drawn first
    assert "lf-same-item" in panel.results.value
    assert "data:image/png;base64," in panel.pairing.value


def test_the_correspondence_picture_is_drawn_for_the_chosen_found_item(view):
    ex = view.explorer
    app = view.widget()
    match = app.panels["match"]
    assert match.compare.options and match.compare.value == match.table["path"].iloc[0]
    assert "lf-correspondences" in match.pairing.value
    assert 'src="data:image/png;base64,' in match.pairing.value
    second = match.compare.options[1][1]
    match.compare.value = second
    assert Path(second).name in match.pairing.value
    png = ex.correspondences_png(match.current, second)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    v = ex.verification(match.current, second)
    assert v is not None and len(v.query_points) == v.inliers == len(v.found_points)


def test_upload_query_is_private_and_writes_only_under_data_uploads(params, view, smoke_run):
    ex = view.explorer
    other = explore.open_explorer(params["data_dir"], params["run_dir"],
                                  params["classifier_model"], params["index_dir"],
                                  params["color_model"], cache_dir=params["cache_dir"],
                                  seed=params["seed"], projection="pca").explorer
    photo = Path(ex.query_options()[0][1])
    uploads = ROOT / "data" / "uploads"
    before = (_files(smoke_run) | _files(ROOT / "data")) - _files(uploads)
    try:
        query = ex.upload_query(check_upload(photo.read_bytes(), photo.name))
        same = ex.query(str(photo))
        assert float(query.vector @ same.vector) > 0.99  # the same photo, the same vector
        assert [lab for lab, _ in query.top3] == [lab for lab, _ in same.top3]
        table = ex.match(query, MatchSettings(k=4))
        assert len(table) == 4 and table["inliers"].notna().all()
        assert Path(query.key).parent == ex.session_dir()
        assert ex.session_dir().parent == uploads / ".sessions"
        # a second visitor: another private folder, and it never sees the first one's upload
        assert other.session_dir() != ex.session_dir()
        assert query.key not in other._uploads and other.top3(query.key) == []
        after = (_files(smoke_run) | _files(ROOT / "data")) - _files(uploads)
        assert after == before, after ^ before
    finally:
        ex.end_session()
        other.end_session()
    assert not Path(query.key).exists()


def test_an_upload_over_the_limit_gets_a_message(view, monkeypatch):
    from lfhelpers.explore import app as app_module

    monkeypatch.setattr(app_module, "UPLOAD_MAX_BYTES", 1000)
    match = MatchPanel(view.explorer, MatchSettings())
    match.uploader.value = ({"name": "big.png", "type": "image/png", "size": 5000,
                             "content": memoryview(_png((64, 64)) + b"\0" * 5000),
                             "last_modified": datetime.now(UTC)},)
    assert "too large" in match.status.value and "big.png" in match.status.value
    assert match.save.disabled and "lf-notice" in match.status.value
    assert "1000" not in render.page_script(20_000_000)
    assert "var LIMIT = 20000000;" in render.page_script(20_000_000)


def test_a_visitors_kernel_never_imports_tensorflow(params):
    """The page's code in a fresh process: engine, shared state, a match, a picture; the
    heavy work was prepared once (child process) and is memory-mapped."""
    code = (
        "import json, sys, psutil\n"
        "from lfhelpers import explore\n"
        "from lfhelpers.explore.state import MatchSettings\n"
        f"p = json.loads({json.dumps(json.dumps(params))})\n"
        "v = explore.open_explorer(p['data_dir'], p['run_dir'], p['classifier_model'],"
        " p['index_dir'], p['color_model'], cache_dir=p['cache_dir'], projection='pca')\n"
        "ex = v.explorer; q = ex.query(ex.query_options()[0][1])\n"
        "t = ex.match(q, MatchSettings()); v.widget()\n"
        "print(json.dumps({'tf': 'tensorflow' in sys.modules, 'keras': 'keras' in sys.modules,"
        " 'n': len(t), 'mmap': type(ex.shared.vectors).__name__,"
        " 'rss_mb': psutil.Process().memory_info().rss // 2**20}))\n")
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["n"] == MatchSettings().k and got["mmap"] == "memmap"
    assert not got["tf"] and not got["keras"], got
    assert got["rss_mb"] < 500, got  # about 290 MB on the smoke run (ru_maxrss would report
    # the forking parent's peak: it is kept across exec)


def test_mistakes_cleanup_and_map(view):
    ex = view.explorer
    pair = ex.worst_pair()
    if pair is not None:
        shown = ex.mistakes(*pair)
        assert len(shown) == ex.confusion().loc[pair[0], pair[1]] > 0
        assert all(top[0][0] == pair[1] for top in shown["top3"])
    groups = ex.duplicate_groups()
    assert all(len(g) > 1 and g["group"].nunique() == 1 for g in groups)
    table = ex.map_table("pca")
    assert len(table) == len(ex.gallery) + len(ex.queries)
    assert np.isfinite(table[["x", "y"]].to_numpy()).all()
    first = ex.query_options()[0][1]
    near = ex.neighbours(first, k=3)
    assert len(near) == 3 and first not in set(near["path"])


def test_widgets_update_on_query_slider_and_upload(view):
    app = view.widget()
    match = app.panels["match"]
    options = match.picker.options
    match.k.value = 3
    assert match.results.value.count('class="lf-card lf-result') == 3
    if len(options) > 1:
        match.picker.value = options[1][1]
        assert Path(options[1][1]).name in match.query_view.value
    match.category_mode.value = "filter"
    assert "lf-result" in match.results.value or "No found item" in match.results.value
    assert "updated in" in match.timing.value
    assert [p for _, p in match.compare.options] == list(match.table["path"])
    match.uploader.value = ({"name": "notes.txt", "type": "text/plain", "size": 9,
                             "content": memoryview(b"just text"),
                             "last_modified": datetime.now(UTC)},)
    assert "not a readable image" in match.status.value and "Traceback" not in (
        match.status.value)
    assert match.save.disabled
    mistakes = app.panels["mistakes"]
    assert "lf-card" in mistakes.gallery.value or "no mistake" in mistakes.gallery.value
    cleanup = app.panels["cleanup"]
    assert "quarantined" in cleanup.reject_view.value


def test_snapshot_shows_a_first_match_and_a_mistake_gallery(view):
    html = view.snapshot_html()
    assert "lf-result" in html and "lf-matrix" in html
    assert "data:image/jpeg;base64," in html
    assert "lf-correspondences" in html and "data:image/png;base64," in html


def test_notebook_07_in_the_smoke_run_reports_its_first_state(smoke_run):
    report = (smoke_run / "07_explore.html").read_text(encoding="utf-8")
    assert "lf-result" in report and "lf-matrix" in report
    assert "Traceback" not in report
    figures = json.loads((smoke_run / "metrics.json").read_text())["07_explore"]
    assert figures["ready"] is True and figures["n_queries"] > 0


def test_a_small_upright_jpeg_is_its_own_thumbnail_and_others_are_made(tmp_path):
    """A cleaned photo (a small JPEG) is shown from its own bytes; a rotated, large or PNG
    photo gets a made thumbnail that shows it upright and within the thumbnail side."""
    from lfhelpers.explore.shared import THUMB_SIDE, _thumbnail, small_jpeg
    from lfhelpers.store import ContentStore

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (200, 300, 3), np.uint8)
    small = tmp_path / "small.jpg"
    Image.fromarray(pixels).save(small, quality=90)
    assert small_jpeg(str(small)) == small.read_bytes()

    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # EXIF orientation: shown turned by 90 degrees
    Image.fromarray(pixels).save(rotated, quality=90, exif=exif)
    large = tmp_path / "large.jpg"
    Image.fromarray(np.repeat(np.repeat(pixels, 3, 0), 3, 1)).save(large, quality=90)
    png = tmp_path / "small.png"
    Image.fromarray(pixels).save(png)
    store = ContentStore.under(tmp_path / "cache", {"test": 1})
    for path, upright in ((rotated, True), (large, False), (png, False)):
        assert small_jpeg(str(path)) is None
        made = Image.open(io.BytesIO(_thumbnail(str(path), store)))
        assert made.format == "JPEG" and max(made.size) == THUMB_SIDE, path.name
        assert (made.height > made.width) == upright, path.name
    assert small_jpeg(str(tmp_path / "missing.jpg")) is None

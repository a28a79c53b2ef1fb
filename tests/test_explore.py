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
import pytest
from PIL import Image

from lfhelpers import explore
from lfhelpers.errors import DataError
from lfhelpers.explore.inputs import check_upload, save_upload
from lfhelpers.explore.state import MatchSettings

ROOT = Path(__file__).resolve().parent.parent


def _png(size: tuple[int, int], mode: str = "RGB", color: int | tuple = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, "PNG")
    return buf.getvalue()


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()


@pytest.fixture(scope="module")
def view(explore_params):
    params = explore_params
    return explore.open_explorer(params["data_dir"], params["run_dir"],
                                 params["classifier_model"], params["color_model"],
                                 cache_dir=params["cache_dir"], seed=params["seed"],
                                 projection="pca")



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
    from lfhelpers.data.clean import CleanOptions

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


def test_without_a_classifier_the_cleanup_review_still_works(explore_params, tmp_path):
    params = explore_params
    view = explore.open_explorer(params["data_dir"], classifier_model=tmp_path / "none.keras",
                                 cache_dir=None)
    ex = view.explorer
    assert not ex.ready and "notebook 03" in ex.missing["model"]
    assert set(ex.rejects()["reason"]) >= {"not_an_image", "near_duplicate"}
    html = view.snapshot_html()
    assert "notebook 03" in html and "quarantined" in html
    assert view.widget() is not None



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


def test_upload_query_embeds_in_memory_and_writes_nothing(view, smoke_run):
    ex = view.explorer
    photo = Path(ex.query_options()[0][1])
    before = _files(smoke_run / "cache") | _files(ROOT / "data")
    upload = check_upload(photo.read_bytes(), photo.name)
    query = ex.upload_query(upload)
    same = ex.query(str(photo))
    assert float(query.vector @ same.vector) > 0.99  # the same photo, the same vector
    assert [lab for lab, _ in query.top3] == [lab for lab, _ in same.top3]
    assert len(ex.match(query, MatchSettings(k=4))) == 4
    assert _files(smoke_run / "cache") | _files(ROOT / "data") == before


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


def test_notebook_07_in_the_smoke_run_reports_its_first_state(smoke_run):
    report = (smoke_run / "07_explore.html").read_text(encoding="utf-8")
    assert "lf-result" in report and "lf-matrix" in report
    assert "Traceback" not in report
    figures = json.loads((smoke_run / "metrics.json").read_text())["07_explore"]
    assert figures["ready"] is True and figures["n_queries"] > 0

"""Same-item matching: local features, visual words, geometric verification, the packed store.

Synthetic photos only: a random textured picture, a perspective-warped, cropped, brightened
copy of it (the same item from elsewhere) and an unrelated random picture.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from lfhelpers.errors import DataError
from lfhelpers.similarity.features.keypoints import Keypoints
from lfhelpers.similarity.features.local import FORMAT_VERSION, LocalFeatures
from lfhelpers.similarity.search.same_item import LocalStore, find_same_item, fuse, rerank
from lfhelpers.similarity.search.verify import (
    SAME_ITEM_MIN_INLIERS,
    is_same_item,
    match_descriptors,
    plot_correspondences,
    verify,
)
from lfhelpers.similarity.search.words import VisualWords

LOCAL_LOGGER = "lfhelpers.similarity.features.local"


def _texture(seed: int, width: int = 900, height: int = 700) -> np.ndarray:
    """A random picture with many corners: shapes, lines and text of random colours."""
    rng = np.random.default_rng(seed)
    img = np.full((height, width, 3), 200, np.uint8)
    img[:] = rng.integers(60, 200, 3)
    for _ in range(120):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        kind = rng.integers(0, 4)
        if kind == 0:
            cv2.rectangle(img, (x, y), (x + int(rng.integers(10, 90)),
                                        y + int(rng.integers(10, 90))), colour, -1)
        elif kind == 1:
            cv2.circle(img, (x, y), int(rng.integers(5, 45)), colour, -1)
        elif kind == 2:
            cv2.line(img, (x, y), (int(rng.integers(0, width)), int(rng.integers(0, height))),
                     colour, int(rng.integers(1, 5)))
        else:
            cv2.putText(img, f"{rng.integers(0, 10**6)}", (x, y), cv2.FONT_HERSHEY_SIMPLEX,
                        float(rng.uniform(0.5, 1.6)), colour, 2)
    return cv2.GaussianBlur(img, (3, 3), 0)


#: Maps the original picture's pixels to the warped copy's pixels (before its crop).
WARP = np.array([[0.85, 0.12, 40.0], [-0.08, 0.9, 60.0], [0.00012, -0.00008, 1.0]])
CROP = (30, 20)  # (x, y) cut from the warped copy's top-left corner


def _write(path: Path, rgb: np.ndarray) -> Path:
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("photos")
    item = _texture(1)
    h, w = item.shape[:2]
    warped = cv2.warpPerspective(item, WARP, (w, h), borderValue=(90, 90, 90))
    warped = np.clip(warped[CROP[1]:, CROP[0]:].astype(np.float32) * 1.25 + 10, 0, 255)
    return {
        "item": _write(folder / "item.jpg", item),
        "copy": _write(folder / "copy.jpg", warped.astype(np.uint8)),
        "other": _write(folder / "other.jpg", _texture(2)),
        "third": _write(folder / "third.jpg", _texture(3, 700, 500)),
        "uniform": _write(folder / "uniform.jpg", np.full((300, 400, 3), 128, np.uint8)),
    }


@pytest.fixture(scope="module")
def kps(photos) -> dict[str, Keypoints]:
    lf = LocalFeatures(max_side=640, n_features=800)
    return dict(zip(photos, lf.extract(list(photos.values())), strict=True))


def test_same_item_found_unrelated_rejected(kps):
    same = verify(kps["copy"], kps["item"])
    assert same.inliers >= SAME_ITEM_MIN_INLIERS
    assert same.plausible and is_same_item(same)
    assert same.inlier_ratio > 0.5
    other = verify(kps["copy"], kps["other"])
    assert not is_same_item(other)
    assert other.inliers < SAME_ITEM_MIN_INLIERS


def test_inlier_points_are_in_original_pixels(kps):
    v = verify(kps["copy"], kps["item"])
    # the copy's pixel p is the original's WARP^-1 (p + crop): check the returned pairs
    p = v.query_points.astype(np.float64) + np.array(CROP)
    back = np.c_[p, np.ones(len(p))] @ np.linalg.inv(WARP).T
    back = back[:, :2] / back[:, 2:]
    err = np.linalg.norm(back - v.found_points, axis=1)
    assert np.median(err) < 3.0  # original pixels (the photos were shrunk 900 -> 640)
    # the model maps query points onto found points in original pixels too
    proj = np.c_[v.query_points, np.ones(len(p))] @ v.model.T
    assert np.median(np.linalg.norm(proj[:, :2] / proj[:, 2:] - v.found_points, axis=1)) < 3
    assert kps["item"].scale == pytest.approx(900 / 640, rel=0.01)
    assert max(kps["item"].image_size) == 640


def test_match_descriptors_one_to_one(kps):
    q, g = kps["copy"].matching_descriptors(), kps["item"].matching_descriptors()
    m = match_descriptors(q, g)
    assert len(m) > 50
    assert len(np.unique(m[:, 1])) == len(m)
    mutual = match_descriptors(q, g, mutual=True)
    assert 0 < len(mutual) <= len(m)
    assert match_descriptors(q[:0], g).shape == (0, 2)


def test_uniform_photo_gives_empty_keypoints(photos, kps, caplog):
    caplog.set_level(logging.INFO, logger=LOCAL_LOGGER)
    kp = LocalFeatures().describe(photos["uniform"])
    assert len(kp) == 0 and kp.descriptors.shape == (0, 128) and kp.error == ""
    assert any("No keypoints" in r.getMessage() for r in caplog.records)
    v = verify(kp, kps["item"])
    assert v.inliers == 0 and not is_same_item(v)


def test_huge_photo_is_downscaled(tmp_path):
    path = _write(tmp_path / "huge.jpg", cv2.resize(_texture(4, 600, 400), (3000, 2000)))
    kp = LocalFeatures(max_side=512, n_features=300).extract([path])[0]
    assert kp.image_size == (512, 341) or kp.image_size == (512, 342)
    assert kp.scale == pytest.approx(3000 / 512, rel=0.01)
    assert 0 < len(kp) <= 300
    assert kp.original_xy[:, 0].max() <= 3000


def test_unreadable_photo(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a photo")
    with pytest.raises(DataError, match="bad.jpg"):
        LocalFeatures().extract([bad])
    lf = LocalFeatures(on_error="record")
    kp = lf.extract([bad, tmp_path / "missing.jpg"])
    assert len(kp[0]) == 0 and kp[0].error and kp[1].error
    assert set(lf.errors_) == {str(bad), str(tmp_path / "missing.jpg")}


def test_cache_hit_and_truncated_file_recomputed(photos, tmp_path, caplog):
    lf = LocalFeatures(max_side=480, n_features=300, cache_dir=tmp_path / "cache")
    first = lf.extract([photos["item"]])[0]
    assert lf.n_cached_ == 0
    files = list((tmp_path / "cache").rglob("*.npz"))
    assert len(files) == 1
    again = lf.extract([photos["item"]])[0]
    assert lf.n_cached_ == 1
    np.testing.assert_array_equal(again.descriptors, first.descriptors)
    np.testing.assert_array_equal(again.xy, first.xy)
    assert again.scale == first.scale and again.image_size == first.image_size
    data = files[0].read_bytes()
    files[0].write_bytes(data[: len(data) // 2])
    caplog.set_level(logging.WARNING)
    redone = lf.extract([photos["item"]])[0]
    assert lf.n_cached_ == 0
    assert any("damaged" in r.getMessage() for r in caplog.records)
    assert files[0].with_name(files[0].name + ".damaged").is_file()  # set aside, not lost
    np.testing.assert_array_equal(redone.descriptors, first.descriptors)
    assert files[0].stat().st_size == len(data)  # rewritten
    # an outdated format version is recomputed too
    with np.load(files[0]) as z:
        arrays = dict(z)
    meta = json.loads(bytes(arrays["meta"]).decode())
    meta["version"] = FORMAT_VERSION - 1
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    with open(files[0], "wb") as fh:
        np.savez(fh, **arrays)
    caplog.clear()
    lf.extract([photos["item"]])
    assert lf.n_cached_ == 0
    assert any("outdated" in r.getMessage() for r in caplog.records)


def test_single_photo_gallery(photos, kps):
    store = LocalStore().build([photos["item"]], LocalFeatures(max_side=640, n_features=800))
    words = VisualWords(n_words=64).fit(store.keypoints())
    words.add(store.keypoints())
    ranked = find_same_item(kps["copy"], store, words)
    assert [r.id for r in ranked] == [0]
    assert ranked[0].same_item and ranked[0].inliers >= SAME_ITEM_MIN_INLIERS
    ranked = find_same_item(kps["other"], store, words)
    assert all(not r.same_item for r in ranked)


def test_rerank_puts_verified_first_then_incoming_order(photos, kps):
    store = LocalStore()
    store.add_keypoints([kps["other"], kps["third"], kps["item"], kps["uniform"]],
                        [str(photos[k]) for k in ("other", "third", "item", "uniform")])
    ranked = rerank(kps["copy"], [3, 0, 2, 1], store)
    assert [r.id for r in ranked] == [2, 3, 0, 1]
    assert ranked[0].same_item and not any(r.same_item for r in ranked[1:])
    limited = rerank(kps["copy"], [0, 1, 2], store, max_verify=2)
    assert [r.id for r in limited] == [0, 1, 2] and limited[2].verification is None
    # candidates verified on several threads: the same answer, inliers and all
    one = rerank(kps["copy"], [3, 0, 2, 1], store, n_jobs=1)
    assert [(r.id, r.inliers, r.same_item) for r in one] == \
        [(r.id, r.inliers, r.same_item) for r in rerank(kps["copy"], [3, 0, 2, 1], store,
                                                        n_jobs=4)]


def test_photos_described_on_several_threads_give_the_same_keypoints(photos):
    files = [photos[k] for k in ("item", "copy", "other", "third")]
    one = LocalFeatures(max_side=640, n_features=800, n_jobs=1).extract(files)
    many = LocalFeatures(max_side=640, n_features=800, n_jobs=3).extract(files)
    for a, b in zip(one, many, strict=True):
        assert np.array_equal(a.xy, b.xy) and np.array_equal(a.descriptors, b.descriptors)


def test_fuse_interleaves_without_duplicates():
    assert fuse([5, 6, 7], [8, 5, 9]).tolist()[:2] == [5, 8]
    fused = fuse([5, 6, 7], [8, 5, 9])
    assert sorted(fused.tolist()) == [5, 6, 7, 8, 9] and len(fused) == 5
    assert fuse([1, 2, 3], [4, 5, 6], k=4).tolist() == [1, 4, 2, 5]
    assert fuse([], [3, 2]).tolist() == [3, 2]


def test_visual_words_save_load_and_incremental_add(photos, kps, tmp_path):
    gallery = [kps["item"], kps["other"]]
    words = VisualWords(n_words=256, seed=0).fit(gallery + [kps["third"]])
    words.add(gallery)
    ids, scores = words.shortlist(kps["copy"], 2)
    assert ids.tolist()[0] == 0 and scores[0] > scores[-1]
    words.save(tmp_path / "words")
    loaded = VisualWords.load(tmp_path / "words")
    ids2, scores2 = loaded.shortlist(kps["copy"], 2)
    np.testing.assert_array_equal(ids, ids2)
    np.testing.assert_allclose(scores, scores2, rtol=1e-5)
    new = loaded.add([kps["third"]])
    assert new.tolist() == [2] and len(loaded) == 3
    third_q = Keypoints(kps["third"].xy, kps["third"].descriptors, kps["third"].image_size)
    assert loaded.shortlist(third_q, 1)[0].tolist() == [2]
    with pytest.raises(DataError):
        loaded.add([kps["item"]], ids=[0])


def test_queries_shortlisted_together_get_their_own_shortlists(kps, monkeypatch):
    # batches of photos share the words' nearest-neighbour searches: the answers of each
    # query are those it gets alone, an empty query included, across a batch boundary
    from lfhelpers.similarity.search import words as words_module

    words = VisualWords(n_words=256, seed=0).fit([kps["item"], kps["other"], kps["third"]])
    words.add([kps["item"], kps["other"], kps["third"]])
    queries = [kps["copy"], kps["uniform"], kps["other"], kps["item"], kps["third"]]
    alone = [words.shortlist(q, 3) for q in queries]
    monkeypatch.setattr(words_module, "ASSIGN_BATCH", 2)
    together = words.shortlists(queries, 3)
    assert len(together) == len(queries) and together[1][0].size == 0
    for (ids_a, s_a), (ids_b, s_b) in zip(alone, together, strict=True):
        np.testing.assert_array_equal(ids_a, ids_b)
        np.testing.assert_allclose(s_a, s_b, rtol=1e-6)
    assert together[0][0][0] == 0  # the copy of the item finds the item
    for q, w in zip(queries, words.assign_each(queries, 2), strict=True):
        np.testing.assert_array_equal(w, words.assign(q, 2))


def test_local_store_save_load_mmap_and_add(photos, kps, tmp_path):
    lf = LocalFeatures(max_side=640, n_features=800)
    store = LocalStore().build([photos["item"], photos["uniform"]], lf)
    assert len(store) == 2 and len(store[1]) == 0
    assert store.offsets_[-1] == len(store.descriptors_)
    store.save(tmp_path / "store")
    loaded = LocalStore.load(tmp_path / "store")
    assert isinstance(loaded.descriptors_, np.memmap)
    np.testing.assert_array_equal(loaded[0].descriptors, store[0].descriptors)
    assert loaded[0].scale == store[0].scale and loaded.paths_ == store.paths_
    assert loaded.add([photos["other"]], lf).tolist() == [2]
    np.testing.assert_array_equal(loaded[2].descriptors, kps["other"].descriptors)
    np.testing.assert_array_equal(loaded[0].xy, store[0].xy)
    with pytest.raises(IndexError):
        loaded[3]
    (tmp_path / "store" / "offsets.npy").write_bytes(b"broken")
    with pytest.raises(DataError):
        LocalStore.load(tmp_path / "store")


def test_plot_correspondences(photos, kps):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    v = verify(kps["copy"], kps["item"])
    ax = plot_correspondences(photos["copy"], photos["item"], v, max_lines=20)
    assert f"{v.inliers} inliers" in ax.get_title() and "same item" in ax.get_title()
    assert len(ax.lines) == 2 * min(v.inliers, 20)
    plt.close(ax.figure)


@pytest.mark.parametrize("model", ["affine", "fundamental"])
def test_other_geometric_models(kps, model):
    same = verify(kps["copy"], kps["item"], model=model)
    assert same.kind == model and same.inliers >= SAME_ITEM_MIN_INLIERS
    assert same.model is not None and len(same.query_points) == same.inliers
    assert verify(kps["copy"], kps["other"], model=model).inliers < same.inliers


def test_empty_copy_and_add_words(kps):
    words = VisualWords(n_words=256).fit([kps["item"], kps["other"]])
    words.add([kps["item"]])
    copy = words.empty_copy()
    assert len(copy) == 0 and len(words) == 1 and copy.coarse_ is words.coarse_
    assigned = [words.assign(kps["other"])[:, 0], words.assign(kps["item"])[:, 0]]
    assert copy.add_words(assigned, ids=[10, 20]).tolist() == [10, 20]
    assert copy.shortlist(kps["copy"], 1)[0].tolist() == [20]


# --------------------------------------------------------------------------- the engine


def _engine(tmp_path, gallery, recipe=None):
    """A search engine over ``gallery`` photos with given (random) global vectors: no network."""
    from lfhelpers.similarity.search.engine import SearchEngine
    from lfhelpers.similarity.search.recipe import Recipe

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(gallery), 16)).astype(np.float32)
    engine = SearchEngine(recipe or Recipe(postprocess="center"), cache_dir=tmp_path / "cache")
    return engine.fit(vectors, [str(p) for p in gallery], [p.stem for p in gallery]), vectors


def test_engine_puts_the_verified_same_item_first_whatever_the_global_score(photos, tmp_path):
    gallery = [photos["other"], photos["third"], photos["item"]]
    engine, vectors = _engine(tmp_path, gallery)
    # the query's global vector is closest to "other": the global ranking alone misses the item
    query_vector = vectors[:1] + 0.01
    plain = engine.search([str(photos["copy"])], k=3, verify=False, vectors=query_vector)[0]
    assert plain[0]["path"] == str(photos["other"])
    assert plain[0]["inliers"] is None and plain[0]["same_item"] is None
    found = engine.search([str(photos["copy"])], k=3, vectors=query_vector)[0]
    assert found[0]["path"] == str(photos["item"]) and found[0]["same_item"] is True
    assert found[0]["inliers"] >= SAME_ITEM_MIN_INLIERS
    assert not any(n["same_item"] for n in found[1:])


def test_matchers_on_one_engine_rank_one_shared_search_as_their_own(photos, tmp_path):
    from lfhelpers.similarity.matcher import LostFoundMatcher

    gallery = [photos["other"], photos["third"], photos["item"]]
    engine, vectors = _engine(tmp_path, gallery)
    queries, qv = [str(photos["copy"]), str(photos["other"])], vectors[:2] + 0.01
    categories = {str(p): [(p.stem, 1.0)] for p in gallery} | {queries[0]: [("item", 0.9)],
                                                               queries[1]: [("other", 0.8)]}
    matchers = [LostFoundMatcher(engine), LostFoundMatcher(engine, categories.get,
                                                           category_mode="filter")]
    found = matchers[0].searched(queries, qv, k=2)
    for m in matchers:
        for i, q in enumerate(queries):
            assert m.match(q, 2, vector=qv[i], found=found[i]).equals(
                m.match(q, 2, vector=qv[i]))
        assert m.evaluate(queries, ["item", "other"], qv, k=2, found=found) == \
            m.evaluate(queries, ["item", "other"], qv, k=2)
    assert matchers[0].match(queries[0], 2, vector=qv[0], found=found[0])["same_item"].iloc[0]


def test_engine_saved_and_loaded_serves_the_same_answers(photos, tmp_path):
    from lfhelpers.similarity.search.engine import SearchEngine

    engine, vectors = _engine(tmp_path, [photos["other"], photos["item"], photos["third"]])
    before = engine.search([str(photos["copy"])], k=3, vectors=vectors[:1])
    loaded = SearchEngine.load(engine.save(tmp_path / "index"), cache_dir=tmp_path / "cache")
    assert loaded.recipe_ == engine.recipe_
    assert loaded.search([str(photos["copy"])], k=3, vectors=vectors[:1]) == before


def test_engine_with_one_photo_and_a_query_without_keypoints(photos, tmp_path, caplog):
    engine, vectors = _engine(tmp_path, [photos["item"]])
    found = engine.search([str(photos["copy"])], k=5, vectors=vectors)[0]
    assert len(found) == 1 and found[0]["same_item"] is True
    with caplog.at_level(logging.INFO, logger="lfhelpers.similarity.search.engine"):
        blank = engine.search([str(photos["uniform"])], k=5, vectors=vectors)[0]
    assert len(blank) == 1 and blank[0]["inliers"] is None
    assert "no local features" in caplog.text


def test_engine_over_photos_without_any_keypoints_ranks_globally(photos, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="lfhelpers.similarity.search.engine"):
        engine, vectors = _engine(tmp_path, [photos["uniform"]])
    assert engine.store_ is None and "same-item verification is off" in caplog.text
    found = engine.search([str(photos["copy"])], k=2, vectors=vectors)[0]
    assert [n["path"] for n in found] == [str(photos["uniform"])]


# --------------------------------------------------------------------------- kept evaluation


def _instances_folder(root: Path) -> tuple[Path, list[str]]:
    """A tiny ``instances_dev``: 2 DVD covers with one camera photo each, 2 UKBench objects
    with 2 photos each, and 2 distractor photos beside it."""
    folder = root / "instances"

    def pair(obj: Path, seed: int, first: str, second: str) -> None:
        obj.mkdir(parents=True)
        item = _texture(seed, 480, 360)
        warped = cv2.warpPerspective(item, WARP, (480, 360), borderValue=(90, 90, 90))
        _write(obj / first, item)
        _write(obj / second, warped[CROP[1]:, CROP[0]:])

    pair(folder / "smvs_dvd_covers" / "dvd_a", 11, "a_reference.jpg", "a_1.jpg")
    pair(folder / "smvs_dvd_covers" / "dvd_b", 12, "b_reference.jpg", "b_1.jpg")
    pair(folder / "ukbench" / "obj_a", 21, "1.jpg", "2.jpg")
    pair(folder / "ukbench" / "obj_b", 22, "1.jpg", "2.jpg")
    (root / "found").mkdir()
    distractors = [str(_write(root / "found" / f"{i}.jpg", _texture(30 + i, 480, 360)))
                   for i in range(2)]
    return folder, distractors


def test_same_item_evaluation_is_kept_by_what_it_depends_on(tmp_path, monkeypatch):
    """Notebook 06's same-item figures are read back when nothing they depend on changed; the
    DVD part alone is redone for other distractors (found items), both for another setting."""
    from lfhelpers.similarity.evaluation import instances
    from lfhelpers.similarity.search.recipe import Recipe

    folder, distractors = _instances_folder(tmp_path)
    recipe = Recipe(backbone="mobilenet", weights="none", image_size=32, postprocess="none",
                    local_n_features=500)
    calls = {"dvd": 0, "ukbench": 0}
    real_recall, real_ns = instances.reference_recall, instances.ns_score

    def recall(*args, **kwargs):
        calls["dvd"] += 1
        return real_recall(*args, **kwargs)

    def ns(*args, **kwargs):
        calls["ukbench"] += 1
        return real_ns(*args, **kwargs)

    monkeypatch.setattr(instances, "reference_recall", recall)
    monkeypatch.setattr(instances, "ns_score", ns)

    def run(recipe=recipe):
        before = dict(calls)
        result = instances.evaluate_same_item(folder, recipe, distractors,
                                              ["found", "found"], cache_dir=tmp_path / "cache")
        return result, {k: calls[k] - before[k] for k in calls}

    first, done = run()
    assert done == {"dvd": 1, "ukbench": 2}  # N-S: global and verified
    assert (first.n_cameras, first.n_references, first.n_found) == (2, 2, 4)
    assert first.dvd_summary.loc["verified", "recall_at_1"] == 1.0
    assert first.ns["verified"] == 2.0  # each photo finds itself and its object's other photo

    again, done = run()
    assert done == {"dvd": 0, "ukbench": 0}
    pd.testing.assert_frame_equal(again.dvd_per_query, first.dvd_per_query)
    assert again.ns == first.ns and again.false_positives == first.false_positives

    _write(Path(distractors[1]), _texture(40, 480, 360))  # a found photo's content changed
    _, done = run()
    assert done == {"dvd": 1, "ukbench": 0}

    _, done = run(recipe.replace(n_local=3))  # a setting of the same-item stage
    assert done == {"dvd": 1, "ukbench": 2}


def test_same_item_key_names_the_model_by_content(photos, tmp_path):
    """Another model file is another key; the same model moved elsewhere is the same key."""
    from lfhelpers.similarity.evaluation.instances import same_item_key
    from lfhelpers.similarity.search.recipe import Recipe

    model = tmp_path / "a" / "model.keras"
    model.parent.mkdir()
    model.write_bytes(b"weights one")
    gallery = [photos["item"], photos["other"]]

    def key(path: Path) -> dict:
        return same_item_key(Recipe(backbone=f"finetuned:{path}"), gallery)

    first = key(model)
    moved = tmp_path / "b" / "model.keras"
    moved.parent.mkdir()
    moved.write_bytes(b"weights one")
    assert key(moved) == first
    model.write_bytes(b"weights two")  # retrained
    assert key(model) != first
    assert same_item_key(Recipe(backbone=f"finetuned:{moved}", n_global=3), gallery) != first
    assert same_item_key(Recipe(backbone=f"finetuned:{moved}"), gallery[::-1]) != first


def test_pair_verification_is_the_engines(photos, tmp_path):
    from lfhelpers.similarity.evaluation.instances import pair_verification
    from lfhelpers.similarity.search.recipe import Recipe

    recipe = Recipe(postprocess="center")
    engine, _ = _engine(tmp_path, [photos["other"], photos["item"]], recipe)
    expected = engine.verification(photos["copy"], 1)
    found = pair_verification(recipe, photos["copy"], photos["item"], tmp_path / "cache")
    assert found.inliers == expected.inliers >= SAME_ITEM_MIN_INLIERS
    np.testing.assert_array_equal(found.query_points, expected.query_points)
    np.testing.assert_array_equal(found.found_points, expected.found_points)


def test_engine_keeps_its_visual_words_by_the_gallerys_descriptors(photos, tmp_path,
                                                                     monkeypatch, caplog):
    """A gallery indexed again reads its visual words back (same answers); another gallery,
    photo order or vocabulary setting trains them again; a damaged kept copy is recomputed."""
    from lfhelpers.similarity.search.recipe import Recipe

    gallery = [photos["other"], photos["item"], photos["third"]]
    engine, vectors = _engine(tmp_path, gallery)
    before = engine.search([str(photos["copy"])], k=3, vectors=vectors[:1])
    kept = list((tmp_path / "cache" / "words").iterdir())
    assert len(kept) == 1 and (kept[0] / "words.json").is_file()

    real_fit = VisualWords.fit

    def refit(self, *args, **kwargs):
        raise AssertionError("the vocabulary was trained again")

    monkeypatch.setattr(VisualWords, "fit", refit)
    again, _ = _engine(tmp_path, gallery)  # the same descriptors: read back
    np.testing.assert_array_equal(again.words_.fine_, engine.words_.fine_)
    assert again.search([str(photos["copy"])], k=3, vectors=vectors[:1]) == before
    for other in ([photos["item"], photos["other"], photos["third"]],  # order: other ids
                  [photos["other"], photos["item"]]):  # another gallery
        with pytest.raises(AssertionError, match="trained again"):
            _engine(tmp_path, other)
    with pytest.raises(AssertionError, match="trained again"):
        _engine(tmp_path, gallery, Recipe(postprocess="center", n_words=64))

    monkeypatch.setattr(VisualWords, "fit", real_fit)
    (kept[0] / "fine.npy").write_bytes(b"not an array")
    with caplog.at_level(logging.WARNING, logger="lfhelpers.similarity.search.engine"):
        fixed, _ = _engine(tmp_path, gallery)
    assert "unreadable" in caplog.text
    assert len(fixed.words_) == 3 and fixed.words_.fit_seconds_ > 0  # trained again
    np.testing.assert_array_equal(np.load(kept[0] / "fine.npy"), fixed.words_.fine_)  # rewritten


def test_small_faiss_searches_run_on_one_thread_with_the_same_answers(kps, monkeypatch):
    """Word assignment and descriptor matching run faiss on one thread below
    SINGLE_THREAD_WORK (thread start-up costs more than it saves there): same results, and
    faiss' thread count is restored afterwards."""
    import faiss

    from lfhelpers.similarity.search import vocabulary

    before = faiss.omp_get_max_threads()
    with vocabulary.faiss_threads(vocabulary.SINGLE_THREAD_WORK - 1):
        assert faiss.omp_get_max_threads() == 1
    with vocabulary.faiss_threads(vocabulary.SINGLE_THREAD_WORK):
        assert faiss.omp_get_max_threads() == before
    assert faiss.omp_get_max_threads() == before

    q, g = kps["copy"].matching_descriptors(), kps["item"].matching_descriptors()
    words = VisualWords(64, seed=0).fit([kps["item"], kps["other"]])
    results = []
    for limit in (0, 10**15):  # never / always on one thread
        monkeypatch.setattr(vocabulary, "SINGLE_THREAD_WORK", limit)
        results.append((match_descriptors(q, g), words.assign(kps["copy"], 2)))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])

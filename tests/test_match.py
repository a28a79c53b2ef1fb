"""Tests of the search gallery, retrieval metrics, near duplicates and the matcher."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from lfhelpers.data.fixtures import make_synthetic_dataset  # noqa: E402
from lfhelpers.errors import ConfigError, DataError  # noqa: E402
from lfhelpers.similarity.evaluation.duplicates import (  # noqa: E402
    duplicate_recall,
    duplicate_table,
    make_near_duplicates,
)
from lfhelpers.similarity.evaluation.retrieval import (  # noqa: E402
    average_precision,
    per_class_table,
    retrieval_scores,
)
from lfhelpers.similarity.matcher import (  # noqa: E402
    LinearCategories,
    LostFoundMatcher,
    color_table,
    query_categories,
)
from lfhelpers.similarity.plots import plot_explained, plot_matches  # noqa: E402
from lfhelpers.similarity.search.backends import available_backends  # noqa: E402
from lfhelpers.similarity.search.exact import top_k_similar  # noqa: E402
from lfhelpers.similarity.search.gallery import GalleryIndex, Match  # noqa: E402


def blobs(n_per: int = 20, d: int = 32, classes: int = 4, spread: float = 0.3,
          seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around ``classes`` random centres, with their labels."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, d))
    x = np.repeat(centres, n_per, axis=0) + spread * rng.standard_normal((classes * n_per, d))
    labels = np.repeat([f"c{i}" for i in range(classes)], n_per)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


class FakeEmbedder:
    """Turns a path into the stored vector of that path (an embedder without a network)."""

    def __init__(self, table: dict[str, np.ndarray]):
        self.table = table

    def transform(self, paths):
        return np.stack([self.table[str(p)] for p in paths])


# --------------------------------------------------------------------------- index


def test_top_k_similar_matches_a_full_sort():
    x, _ = blobs()
    q = x[:7] + 0.01
    scores, idx = top_k_similar(q, x, 5)
    full = q @ x.T
    expected = np.argsort(-full, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(idx, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(full, expected, 1), rtol=1e-6)
    _, idx_ex = top_k_similar(x[:7], x, 3, exclude=np.arange(7))
    assert not (idx_ex == np.arange(7)[:, None]).any()


@pytest.mark.parametrize("backend", ["sklearn", "faiss-flat", "faiss-hnsw", "faiss-ivf",
                                     "hnswlib"])
def test_backends_agree_with_exact(backend):
    if backend not in available_backends():
        pytest.skip(f"{backend} is not installed (optional)")
    x, labels = blobs(n_per=50, d=24)
    q = x[::10] + 0.05
    exact = GalleryIndex().fit(x, labels=labels)
    other = GalleryIndex(backend=backend, n_jobs=1).fit(x, labels=labels)
    s1, i1 = exact.search(q, 10)
    s2, i2 = other.search(q, 10)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i1, i2, strict=True)])
    assert overlap >= (1.0 if backend in ("sklearn", "faiss-flat") else 0.9)
    np.testing.assert_allclose(s1[:, 0], s2[:, 0], atol=1e-4)
    _, self_ex = other.search(x[:5], 4, exclude=np.arange(5))
    assert not (self_ex == np.arange(5)[:, None]).any()


def test_unknown_or_missing_backend_is_a_config_error():
    with pytest.raises(ConfigError, match="Unknown backend"):
        GalleryIndex(backend="annoyish").fit(np.eye(3))


def test_query_returns_ranked_matches_by_vector_and_by_path():
    x, labels = blobs(n_per=5)
    paths = [f"g{i}.jpg" for i in range(len(x))]
    table = {p: v for p, v in zip(paths, x, strict=True)} | {"lost.jpg": x[3] + 0.01}
    index = GalleryIndex(embedder=FakeEmbedder(table)).fit(x, paths, labels)
    by_path = index.query("lost.jpg", k=4)
    by_vector = index.query(x[3] + 0.01, k=4)
    assert by_path == by_vector
    assert isinstance(by_path[0], Match)
    assert by_path[0].path == "g3.jpg" and by_path[0].label == labels[3]
    assert [m.score for m in by_path] == sorted((m.score for m in by_path), reverse=True)
    frame = index.query_table(["lost.jpg"], k=3, query_labels=[labels[3]])
    assert list(frame.columns) == ["query", "query_label", "rank", "path", "label", "score",
                                   "correct"]
    assert frame["correct"].iloc[0]


def test_centred_gallery_is_kept_with_the_index(tmp_path):
    # every vector shares a large offset: centring ranks by what differs, and a saved index
    # applies the same mean to new queries
    x, labels = blobs(n_per=5)
    shifted = x + 5.0
    paths = [f"g{i}.jpg" for i in range(len(x))]
    index = GalleryIndex(center=True).fit(shifted, paths, labels)
    np.testing.assert_allclose(index.mean_, (shifted / np.linalg.norm(
        shifted, axis=1, keepdims=True)).mean(axis=0), rtol=1e-5)
    loaded = GalleryIndex.load(index.save(tmp_path / "idx"))
    assert loaded.center and loaded.mean_ is not None
    query = shifted[3] + 0.01
    assert loaded.query(query, k=3) == index.query(query, k=3)
    assert loaded.query(query, k=1)[0].path == "g3.jpg"
    plain = GalleryIndex().fit(shifted, paths, labels).save(tmp_path / "idx")
    assert GalleryIndex.load(plain).mean_ is None  # re-saved without centring


def test_leave_one_out_of_a_cnn_gallery_refuses_steps_that_see_the_query():
    x, labels = blobs(n_per=5)
    loo = GalleryIndex(postprocess="center").fit(x, labels=labels).leave_one_out(k=2)
    assert len(loo) == 2 * len(x) and (loo["query"] != loo["file"]).all()
    assert loo["distance"].between(0, 2).all()
    for steps in ("dba", "center+aqe"):
        with pytest.raises(ConfigError, match="leave_one_out"):
            GalleryIndex(postprocess=steps).fit(x).leave_one_out()


def test_index_errors_say_what_to_do():
    x, _ = blobs(n_per=2)
    with pytest.raises(DataError, match="call fit"):
        GalleryIndex().search(x, 1)
    index = GalleryIndex().fit(x)
    with pytest.raises(DataError, match="k=99"):
        index.search(x[:1], 99)
    with pytest.raises(ConfigError, match="embedder"):
        index.query("photo.jpg")
    with pytest.raises(DataError, match="aligned"):
        GalleryIndex().fit(x, paths=["a"])


# --------------------------------------------------------------------------- metrics


def test_average_precision_known_values():
    assert average_precision([1, 0, 1]) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision([0, 1]) == pytest.approx(0.5)
    assert np.isnan(average_precision([0, 0]))


def test_retrieval_scores_hand_made_ranking():
    gallery = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], float)
    labels = ["a", "a", "b", "b"]
    queries = np.array([[1, 0.05], [0.2, 1]])
    summary, per_query = retrieval_scores(gallery, labels, queries, ["a", "b"], ks=(1, 2, 4))
    assert summary["p_at_1"] == 1.0 and summary["p_at_2"] == 1.0 and summary["p_at_4"] == 0.5
    assert summary["map"] == 1.0
    assert per_query["first_hit"].tolist() == [1, 1]
    # a query whose nearest photo has another label
    summary, _ = retrieval_scores(gallery, labels, np.array([[0.6, 0.8]]), ["a"], ks=(1,))
    assert summary["p_at_1"] == 0.0 and summary["map"] < 1.0


def test_leave_one_out_never_counts_the_query_itself():
    x, labels = blobs(n_per=1, classes=6, spread=0.0)  # every photo alone in its class
    summary, per_query = retrieval_scores(x, labels, ks=(1,))
    assert summary["p_at_1"] == 0.0
    assert per_query["ap"].isna().all()
    assert summary["n_queries"] == 6
    x2, labels2 = blobs(n_per=10, classes=3, spread=0.05)
    summary2, _ = retrieval_scores(x2, labels2)
    assert summary2["p_at_1"] == 1.0 and summary2["map"] == pytest.approx(1.0)
    table = per_class_table(_)
    assert table["queries"].sum() == 30


# --------------------------------------------------------------------------- near duplicates


@pytest.fixture(scope="module")
def gallery_files(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("gallery")
    make_synthetic_dataset(root, n_per_class=4, size=96, seed=2, labels=["ball", "card"])
    return sorted(str(p) for p in root.glob("*/*.jpg"))


def test_near_duplicates_are_seeded_transformed_copies(gallery_files, tmp_path):
    a = make_near_duplicates(gallery_files, tmp_path / "a", n=5, seed=7)
    b = make_near_duplicates(gallery_files, tmp_path / "b", n=5, seed=7)
    assert len(a) == 5 and a["original_index"].is_unique
    assert a["transform"].tolist() == b["transform"].tolist()
    assert all(Path(q).is_file() for q in a["query"])
    for row in a.itertuples():
        assert row.original == gallery_files[row.original_index]
        assert "crop" in row.transform and "jpeg" in row.transform
        with Image.open(row.query) as im, Image.open(row.original) as orig:
            assert im.size != orig.size or not np.array_equal(np.asarray(im), np.asarray(orig))
    assert len(make_near_duplicates(gallery_files, tmp_path / "c", n=100)) == len(
        gallery_files)
    # a gallery that gained a photo and lost another keeps the other copies byte for byte
    before = {row.original: Path(row.query).read_bytes() for row in a.itertuples()}
    grown = [f for f in gallery_files if f != a["original"].iloc[0]] + [gallery_files[0]]
    c = make_near_duplicates(grown, tmp_path / "a", n=5, seed=7)
    kept = set(a["original"]) & set(c["original"])
    assert len(kept) >= 3
    for original in kept:
        new_copy = Path(c.loc[c["original"] == original, "query"].iloc[0])
        assert new_copy.read_bytes() == before[original]
    assert sorted(p.name for p in (tmp_path / "a").glob("dup_*")) == sorted(
        Path(q).name for q in c["query"])  # copies no longer drawn were removed


def test_duplicate_recall():
    idx = np.array([[3, 1, 2], [0, 5, 4], [9, 8, 7]])
    assert duplicate_recall(idx, [3, 5, 1], ks=(1, 3)) == {
        "dup_recall_at_1": pytest.approx(1 / 3), "dup_recall_at_3": pytest.approx(2 / 3)}


def test_duplicate_table_marks_found_originals():
    x, labels = blobs(n_per=3)
    paths = [f"g{i}.jpg" for i in range(len(x))]
    index = GalleryIndex().fit(x, paths, labels)
    dups = pd.DataFrame({"query": ["d0.jpg", "d1.jpg"], "original": ["g0.jpg", "g4.jpg"],
                         "original_index": [0, 4], "transform": ["", ""]})
    table = duplicate_table(index, x[[0, 4]] + 0.01, dups, k=2)
    assert (table["original_rank"] == 1).all()
    assert set(table["query_label"]) == {labels[0], labels[4]}
    # a query whose original is not its first match comes first
    dups.loc[1, ["original", "original_index"]] = ["g0.jpg", 0]
    table = duplicate_table(index, x[[0, 4]] + 0.01, dups, k=2)
    assert table["query"].iloc[0] == "d1.jpg" and table["original_rank"].iloc[0] == 0


# --------------------------------------------------------------------------- matcher


def matcher_setup():
    x, labels = blobs(n_per=6, classes=3, spread=0.6, seed=4)
    paths = [f"g{i}.jpg" for i in range(len(x))]
    index = GalleryIndex().fit(x, paths, labels)
    query = x[0] * 0.45 + x[7] * 0.55  # between class c0 and class c1, nearer c1
    return index, query, labels


def test_category_filter_keeps_only_the_querys_categories():
    index, query, _ = matcher_setup()
    categories = {"lost.jpg": [("c0", 0.7), ("c2", 0.2), ("c1", 0.1)]}
    only_c0 = {"lost.jpg": [("c0", 1.0)]}
    plain = LostFoundMatcher(index).match("lost.jpg", k=5, vector=query)
    filtered = LostFoundMatcher(index, only_c0, category_mode="filter").match(
        "lost.jpg", k=5, vector=query)
    reranked = LostFoundMatcher(index, categories, w_category=1.0).match(
        "lost.jpg", k=5, vector=query)
    assert plain["label"].iloc[0] == "c1"
    assert set(filtered["label"]) == {"c0"}
    assert reranked["label"].iloc[0] == "c0"
    assert "category c0 (query's #1, p=0.70)" in reranked["why"].iloc[0]
    assert list(reranked["rank"]) == [1, 2, 3, 4, 5]
    assert (reranked["score"].diff().dropna() <= 0).all()


def test_color_term_and_explanation():
    index, query, labels = matcher_setup()
    colors = {p: (["red", "black"] if i % 2 else ["blue"]) for i, p in enumerate(index.paths_)}
    colors["lost.jpg"] = ["red"]
    matcher = LostFoundMatcher(index, color_fn=colors.get, color_mode="filter",
                                     w_color=0.5)
    table = matcher.match("lost.jpg", k=4, vector=query)
    assert len(table) == 4
    assert all(int(p[1:-4]) % 2 == 1 for p in table["path"])
    assert (table["color"] == 0.5).all()
    assert table["why"].str.contains("colors shared: red").all()
    result = matcher.evaluate(["lost.jpg"], ["c1"], vectors=query[None], k=4)
    assert 0.0 <= result["p_at_4"] <= 1.0 and result["mean_returned"] == 4


def test_matcher_rejects_unknown_modes():
    index, _, _ = matcher_setup()
    with pytest.raises(ConfigError, match="rerank"):
        LostFoundMatcher(index, category_mode="sometimes")


def test_linear_categories_top_k():
    x, labels = blobs(n_per=10, classes=4, spread=0.2)
    cats = LinearCategories(k=3).fit(x, labels)
    table = cats.table([f"p{i}" for i in range(len(x))], x)
    assert all(len(v) == 3 for v in table.values())
    hits = np.mean([table[f"p{i}"][0][0] == labels[i] for i in range(len(x))])
    assert hits >= 0.9


# --------------------------------------------------------------------------- figures


def test_figures_have_a_tile_per_match(gallery_files):
    table = pd.DataFrame({"query": [gallery_files[0]] * 3, "query_label": ["ball"] * 3,
                          "rank": [1, 2, 3], "path": gallery_files[1:4],
                          "label": ["ball", "card", "ball"], "score": [0.9, 0.8, 0.7]})
    fig = plot_matches(table)
    assert len(fig.axes) == 4
    assert "wrong" in fig.axes[2].get_title() and "right" in fig.axes[1].get_title()
    assert fig._suptitle is not None
    explained = table.assign(why=["similarity 0.90"] * 3)
    fig2 = plot_explained(gallery_files[0], explained, "ball")
    assert len(fig2.axes) == 4
    plt.close("all")


def test_query_categories_prefers_the_classifier():
    x, labels = blobs(n_per=8, classes=3, spread=0.2)
    files = [f"q{i}.jpg" for i in range(3)]
    table, source = query_categories(files, x[:3], x, labels, classifier=None)
    assert "logistic regression" in source and set(table) == set(files)

    class FakeClassifier:
        head_layers_ = ["head"]

        def top_k(self, paths, k=3):
            return {p: [("c9", 1.0)] for p in paths}

    table, source = query_categories(files, x[:3], x, labels, classifier=FakeClassifier())
    assert "classifier" in source and table["q0.jpg"] == [("c9", 1.0)]


def test_color_table_names_the_item_colors(gallery_files):
    color = pytest.importorskip("lfhelpers.color")
    table = color_table(gallery_files, color_source="synthetic", progress=False)
    assert set(table) == set(gallery_files)
    assert all(names and set(names) <= set(color.COLOR_NAMES) for names in table.values())
    balls = [table[f] for f in gallery_files if "/ball/" in f]
    cards = [table[f] for f in gallery_files if "/card/" in f]
    assert balls[0] != cards[0]

"""Tests of similarity.cluster and compare: clusters, scores, k estimates, maps, comparison."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from lfhelpers.data.fixtures import make_synthetic_dataset  # noqa: E402
from lfhelpers.errors import ConfigError, DataError  # noqa: E402
from lfhelpers.similarity import cluster  # noqa: E402
from lfhelpers.similarity.compare import compare_extractors  # noqa: E402


def blobs(n_per: int = 15, d: int = 16, classes: int = 4, spread: float = 0.15,
          seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated unit vectors around random centres, with their labels."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, d))
    x = np.repeat(centres, n_per, axis=0) + spread * rng.standard_normal((classes * n_per, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True), np.repeat(
        [f"class {i}" for i in range(classes)], n_per)


def test_purity_and_scores_known_values():
    truth = ["a", "a", "a", "b", "b", "b"]
    assert cluster.purity_score(truth, [0, 0, 1, 1, 1, 1]) == pytest.approx(5 / 6)
    perfect = cluster.clustering_scores(truth, [5, 5, 5, 2, 2, 2])
    assert perfect == {"nmi": pytest.approx(1.0), "ari": pytest.approx(1.0), "purity": 1.0}
    one = cluster.clustering_scores(truth, [0] * 6)
    assert one["ari"] == pytest.approx(0.0) and one["purity"] == 0.5


@pytest.mark.parametrize("method", cluster.METHODS)
def test_separated_blobs_are_recovered(method):
    x, y = blobs()
    labels = cluster.fit_clusters(x, 4, method, seed=1)
    assert cluster.clustering_scores(y, labels)["ari"] == pytest.approx(1.0)
    np.testing.assert_array_equal(labels, cluster.fit_clusters(x, 4, method, seed=1))
    table = cluster.contingency(y, labels)
    assert table.to_numpy().sum() == len(x) and (table.max(axis=1) == 15).all()


def test_fit_clusters_checks_its_arguments():
    x, _ = blobs(n_per=2)
    with pytest.raises(DataError, match="n_clusters"):
        cluster.fit_clusters(x, 1)
    with pytest.raises(ConfigError, match="kmeans"):
        cluster.fit_clusters(x, 2, "dbscan")


def test_estimate_k_finds_the_number_of_blobs():
    x, _ = blobs(classes=5, seed=3)
    estimate = cluster.estimate_k(x, range(2, 10), seed=0)
    assert estimate.best_k == 5
    assert list(estimate.table.index) == list(range(2, 10))
    assert {"silhouette", "inertia"} <= set(estimate.table.columns)
    fig = cluster.plot_k_estimate(estimate, true_k=5)
    assert "k" in fig.axes[0].get_xlabel() and fig.axes[0].get_title()
    plt.close(fig)


def test_k_range_covers_the_true_number_and_fits_the_data():
    assert cluster.k_range(1000, 37) == list(range(2, 75))
    assert cluster.k_range(1000, 4) == list(range(2, 17))
    assert cluster.k_range(6) == [2, 3, 4, 5]


@pytest.mark.parametrize("method", ["tsne", "pca", "umap"])
def test_project_2d(method):
    x, y = blobs(n_per=8)
    xy = cluster.project_2d(x, method, seed=0)
    assert xy.shape == (len(x), 2) and np.isfinite(xy).all()
    fig = cluster.plot_projection(xy, y, cluster.fit_clusters(x, 4), method=method)
    assert len(fig.axes) == 2 and all(ax.get_title() for ax in fig.axes)
    plt.close(fig)
    with pytest.raises(ConfigError):
        cluster.project_2d(x, "mds")


def test_cluster_samples_grid(tmp_path):
    from lfhelpers.plots import setup_fonts

    setup_fonts()
    make_synthetic_dataset(tmp_path, n_per_class=4, size=64, seed=0, labels=["ball", "열쇠고리"])
    files = sorted(str(p) for p in Path(tmp_path).glob("*/*.jpg"))
    labels = [Path(f).parent.name for f in files]
    fig = cluster.cluster_samples(files, [0, 0, 0, 1, 1, 1, 1, 1], labels, per_cluster=3)
    assert len(fig.axes) == 6
    assert "5 photos" in fig.axes[0].get_ylabel()  # largest cluster first
    plt.close(fig)


def test_compare_extractors_table():
    x, y = blobs(n_per=10)
    noise = np.random.default_rng(0).standard_normal(x.shape)
    gallery = np.arange(len(x)) % 5 != 0
    dup_queries = x[gallery][:6] + 0.01
    table = compare_extractors({"good": x, "noise": noise}, y, gallery,
                                     duplicates={"good": (dup_queries, np.arange(6))}, seed=0)
    assert list(table.index) == ["good", "noise"]
    assert table.loc["good", "p_at_1"] == 1.0 and table.loc["good", "kmeans_ari"] == 1.0
    assert table.loc["good", "dup_recall_at_1"] == 1.0
    assert np.isnan(table.loc["noise", "dup_recall_at_1"])
    assert table.loc["noise", "map"] < table.loc["good", "map"]
    for column in ("dim", "p_at_5", "p_at_10", "loo_p_at_5", "agglomerative_nmi",
                   "kmeans_purity"):
        assert column in table.columns
    assert table.loc["good", "loo_p_at_5"] == 1.0 and "p_at_5_post" not in table.columns
    post = compare_extractors({"good": x, "noise": noise}, y, gallery,
                                    postprocess="center+dba+aqe", seed=0)
    assert post.loc["good", "p_at_5_post"] == 1.0 and post.loc["good", "loo_p_at_5_post"] == 1.0
    assert post.loc["noise", "loo_p_at_5_post"] < 0.6

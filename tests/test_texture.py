"""Tests of the texture features (similarity.features.texture), their evaluation and gallery."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import mahotas  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from lfhelpers.data import gallery_and_queries, sample_per_class  # noqa: E402
from lfhelpers.data.fixtures import make_synthetic_dataset  # noqa: E402
from lfhelpers.errors import ConfigError, DataError  # noqa: E402
from lfhelpers.images import load_array as load_image  # noqa: E402
from lfhelpers.plots import setup_fonts  # noqa: E402
from lfhelpers.similarity.evaluation.texture import (  # noqa: E402
    evaluate,
    make_classifier,
    plot_confusion,
)
from lfhelpers.similarity.features.texture import (  # noqa: E402
    TUTORIAL_SETTINGS,
    HaralickFeatures,
    haralick_image,
    tutorial_features,
)
from lfhelpers.similarity.plots import plot_distance_heatmap, plot_neighbours  # noqa: E402
from lfhelpers.similarity.search.distances import (  # noqa: E402
    distance_matrix,
    nearest_from_matrix,
)
from lfhelpers.similarity.search.gallery import GalleryIndex  # noqa: E402
from lfhelpers.similarity.search.index import NeighbourIndex  # noqa: E402
from lfhelpers.similarity.search.tables import mismatched_queries  # noqa: E402

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "05_haralick_similarity.ipynb"


@pytest.fixture(scope="module")
def image_set(tmp_path_factory) -> tuple[list[str], list[str]]:
    """8 synthetic photos of each of 3 classes (96 px)."""
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_dataset(root, n_per_class=8, size=96, seed=3,
                           labels=["ball", "card", "열쇠고리"])
    files = sorted(str(p) for p in root.glob("*/*.jpg"))
    return files, [Path(f).parent.name for f in files]


def quiet(**params) -> HaralickFeatures:
    return HaralickFeatures(progress=False, **params)


def test_tutorial_settings_equal_mahotas_exactly(image_set):
    files, _ = image_set
    got = quiet(**TUTORIAL_SETTINGS).fit_transform(files[:6])
    expected = []
    for f in files[:6]:
        gray = mahotas.colors.rgb2gray(mahotas.imread(f), dtype=np.uint8)
        expected.append(mahotas.features.haralick(gray).ravel())
    assert got.shape == (6, 52)
    assert np.array_equal(got, np.array(expected))
    assert np.array_equal(got[0], tutorial_features(files[0]))


def test_feature_count_matches_names_for_each_option(image_set):
    files, _ = image_set
    cases = [
        ({}, 208),
        ({"channels": "gray", "distance": 1}, 26),
        ({"channels": "gray", "distance": 1, "directions": "all"}, 52),
        ({"channels": "gray", "distance": 1, "directions": "mean"}, 13),
        ({"channels": "gray", "distance": 1, "directions": "mean", "include_14th": True}, 14),
        ({"channels": "rgb", "distance": [2]}, 78),
        ({"channels": "gray+h", "distance": (1, 2, 4), "directions": "all"}, 312),
    ]
    for params, width in cases:
        extractor = quiet(**params)
        features = extractor.transform(files[:2])
        assert features.shape == (2, width), params
        assert len(extractor.get_feature_names_out()) == width
        assert np.isfinite(features).all()
    names = quiet().get_feature_names_out()
    assert names[1] == "gray_d1_mean_contrast"
    assert names[-1] == "v_d3_range_info_measure_correlation_2"


def test_levels_quantise_before_haralick(image_set):
    files, _ = image_set
    image = load_image(files[0])
    gray = mahotas.colors.rgb2gray(image, dtype=np.uint8)
    got = haralick_image(image, distance=1, levels=32, directions="all", channels="gray")
    assert np.array_equal(got, mahotas.features.haralick(gray >> 3).ravel())


def test_max_side_shrinks_before_extraction(tmp_path, image_set):
    files, _ = image_set
    big = tmp_path / "big.jpg"
    Image.open(files[0]).resize((400, 300)).save(big, quality=95)
    small = load_image(big, max_side=100)
    assert max(small.shape[:2]) <= 100 and small.shape[2] == 3
    assert load_image(big, max_side=1000).shape == (300, 400, 3)  # never enlarged
    full = quiet(max_side=None).transform([big])
    shrunk = quiet(max_side=100).transform([big])
    assert np.array_equal(shrunk[0], haralick_image(small))  # same default options
    assert not np.allclose(full, shrunk)


def test_arrays_and_greyscale_files_are_accepted(tmp_path, image_set):
    files, _ = image_set
    rgb = load_image(files[0])
    grey_file = tmp_path / "grey.png"
    Image.fromarray(rgb).convert("L").save(grey_file)
    features = quiet(channels="gray+hsv").transform([rgb, grey_file])
    assert np.array_equal(features[0], quiet(channels="gray+hsv").transform([files[0]])[0])
    assert np.isfinite(features[1]).all()


def test_parallel_extraction_equals_serial(image_set):
    files, _ = image_set
    serial = quiet(n_jobs=1).transform(files)
    parallel = quiet(n_jobs=2).transform(files)
    assert np.array_equal(serial, parallel)


def test_disk_cache_is_keyed_by_content_and_options(tmp_path, image_set):
    files, _ = image_set
    cache = tmp_path / "cache"
    first = quiet(cache_dir=cache).extract(files[:4])
    again = quiet(cache_dir=cache).extract(files[:4])
    assert first.n_cached == 0 and again.n_cached == 4
    assert np.array_equal(first.features, again.features)
    # same bytes under another name: a cache hit
    copy = tmp_path / "renamed.jpg"
    shutil.copyfile(files[0], copy)
    assert quiet(cache_dir=cache).extract([copy]).n_cached == 1
    # new content under the same name: recomputed
    shutil.copyfile(files[5], copy)
    result = quiet(cache_dir=cache).extract([copy])
    assert result.n_cached == 0
    assert np.array_equal(result.features[0], quiet().transform([files[5]])[0])
    # other options: their own cache folder
    other = quiet(cache_dir=cache, levels=32)
    assert other.cache_key() != quiet().cache_key()
    assert other.extract(files[:4]).n_cached == 0
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 2


def test_damaged_cache_entry_is_recomputed(tmp_path, image_set, caplog):
    files, _ = image_set
    cache = tmp_path / "cache"
    expected = quiet(cache_dir=cache).transform(files[:1])
    (entry,) = (cache / quiet().cache_key()).glob("*/*.npy")
    entry.write_bytes(b"not numpy")
    with caplog.at_level(logging.WARNING, logger="lfhelpers.similarity.features.base"):
        result = quiet(cache_dir=cache).extract(files[:1])
    assert result.n_cached == 0 and np.array_equal(result.features, expected)
    assert "damaged cache entry" in caplog.text
    assert quiet(cache_dir=cache).extract(files[:1]).n_cached == 1


def test_bad_images_are_skipped_with_a_logged_reason(tmp_path, image_set, caplog):
    files, _ = image_set
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"<html>not an image</html>")
    with caplog.at_level(logging.WARNING, logger="lfhelpers.similarity.features.base"):
        result = quiet().extract([files[0], bad, files[1]])
    assert result.ok.tolist() == [True, False, True]
    assert result.features.shape[0] == 2
    assert str(bad) in result.errors
    assert "broken.jpg" in caplog.text
    with pytest.raises(DataError, match="could not be read"):
        quiet().transform([files[0], bad])


@pytest.mark.parametrize("params", [{"directions": "diagonal"}, {"levels": 1},
                                    {"channels": "gray+x"}, {"distance": 0},
                                    {"max_side": 2}])
def test_invalid_options_raise_config_error(params, image_set):
    with pytest.raises(ConfigError):
        quiet(**params).fit(image_set[0][:1])


def test_transformer_works_in_a_scikit_learn_pipeline(image_set):
    files, labels = image_set
    model = make_pipeline(quiet(levels=32), make_classifier(seed=0))
    assert model.fit(files, labels).score(files, labels) > 0.9
    assert clone(quiet(levels=32)).get_params()["levels"] == 32


def test_evaluate_reports_loocv_kfold_and_confusion():
    rng = np.random.default_rng(0)
    labels = np.repeat(["a", "b", "열쇠"], 10)
    features = rng.normal(size=(30, 5)) + np.repeat(np.eye(3, 5) * 6, 10, axis=0)
    result = evaluate(features, labels, seed=0)
    assert result.loocv_accuracy == pytest.approx(1.0)
    assert len(result.cv_scores) == 5
    assert result.confusion.shape == (3, 3) and result.confusion.to_numpy().sum() == 30
    assert {"a", "b", "열쇠", "macro avg"} <= set(result.report.index)
    table = result.table()
    assert list(table.index) == ["leave-one-out", "5-fold (stratified)"]
    assert evaluate(features, labels, seed=0).cv_scores.tolist() == result.cv_scores.tolist()
    with pytest.raises(DataError, match="2\\+ images"):
        evaluate(features[:21], labels[:21])


def test_distance_matrix_and_index_give_the_same_neighbours():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(60, 8))
    for metric in ("cosine", "euclidean"):
        dist = distance_matrix(features, metric)
        assert dist.shape == (60, 60) and np.allclose(np.diag(dist), 0)
        by_matrix_d, by_matrix = nearest_from_matrix(dist, k=3)
        by_index_d, by_index = NeighbourIndex(metric).fit(features).kneighbors(None, k=3)
        assert np.array_equal(by_matrix, by_index)
        assert np.allclose(by_matrix_d, by_index_d)
        assert not (by_matrix == np.arange(60)[:, None]).any()  # never its own neighbour
    with pytest.raises(DataError):
        nearest_from_matrix(distance_matrix(features[:3]), k=3)


def test_texture_index_finds_neighbours_of_outside_and_gallery_photos(image_set):
    files, labels = image_set
    index = GalleryIndex.for_features(quiet(levels=32)).fit_files(files[1:], labels[1:])
    table = index.nearest(files[0], k=3, query_label=labels[0])
    assert list(table["rank"]) == [1, 2, 3]
    assert table["distance"].is_monotonic_increasing
    assert set(table["file"]) <= set(files[1:])
    same = index.nearest(files[5], k=1)
    assert same["file"].iloc[0] == files[5] and same["distance"].iloc[0] == pytest.approx(0)
    loo = index.leave_one_out(k=3)
    assert len(loo) == 3 * (len(files) - 1)
    assert (loo["query"] != loo["file"]).all()
    assert mismatched_queries(loo).shape[0] <= len(files) - 1
    with pytest.raises(DataError, match="query image"):
        index.nearest(Path(files[0]).with_name("missing.jpg"))


def test_texture_gallery_is_standardised_and_kept_with_its_scaler(image_set, tmp_path):
    files, labels = image_set
    extractor = quiet(levels=32)
    features = extractor.transform(files)
    index = GalleryIndex.for_features(extractor, metric="euclidean").fit(features, files, labels)
    assert index.scaling == "standardize" and index.mean_ is None
    # z-scores fitted on the gallery, as indexed (not unit rows: the metric is euclidean)
    assert np.array_equal(index.features_, StandardScaler().fit(features).transform(features))
    loaded = GalleryIndex.load(index.save(tmp_path / "texture"), embedder=extractor)
    assert loaded.scaling == "standardize" and loaded.metric == "euclidean"
    assert loaded.nearest(files[0], k=3).equals(index.nearest(files[0], k=3))
    assert loaded.leave_one_out(k=2).equals(index.leave_one_out(k=2))
    GalleryIndex().fit(features, files, labels).save(tmp_path / "texture")  # a CNN-style one
    assert not (tmp_path / "texture" / "scaler.joblib").exists()
    assert GalleryIndex.load(tmp_path / "texture").scaling == "unit"
    with pytest.raises(ConfigError, match="standardize"):
        GalleryIndex(scaling="standardize", postprocess="center").fit(features)
    with pytest.raises(ConfigError, match="scaling"):
        GalleryIndex(scaling="zscore").fit(features)
    with pytest.raises(DataError, match="at least 2"):
        GalleryIndex.for_features(extractor).fit(features[:1])


def test_sampling_and_gallery_split_are_seeded():
    df = pd.DataFrame({"path": [f"{c}/{i}.jpg" for c in "abc" for i in range(10)],
                       "label": [c for c in "abc" for _ in range(10)],
                       "split": (["train"] * 8 + ["test"] * 2) * 3})
    df = pd.concat([df, pd.DataFrame({"path": ["d/0.jpg"], "label": ["d"], "split": ["train"]})])
    one = sample_per_class(df, 4, seed=1)
    assert one["label"].value_counts().to_dict() == {"a": 4, "b": 4, "c": 4}
    assert one.equals(sample_per_class(df, 4, seed=1))
    assert not one.equals(sample_per_class(df, 4, seed=2))
    assert len(sample_per_class(df, None)) == 30
    gallery, queries = gallery_and_queries(sample_per_class(df, None))
    assert len(queries) == 6 and (queries["split"] == "test").all() and len(gallery) == 24
    gallery, queries = gallery_and_queries(one.drop(columns="split"), seed=0)
    assert len(queries) == 3 and len(gallery) == 9


def test_new_photos_change_the_sample_only_where_they_are_drawn():
    def photos(n, start=0):
        return pd.DataFrame({"path": [f"{c}/{i}.jpg" for c in "ab" for i in range(start, n)],
                             "sha256": [f"{c}{i}" for c in "ab" for i in range(start, n)],
                             "label": [c for c in "ab" for _ in range(start, n)]})

    before = sample_per_class(photos(200), 20, seed=3)
    grown = pd.concat([photos(200), photos(210, start=200)]).sample(frac=1.0, random_state=0)
    after = sample_per_class(grown, 20, seed=3)  # 10 new photos per class, rows in any order
    assert after["label"].value_counts().to_dict() == {"a": 20, "b": 20}
    new = ~after["path"].isin(before["path"])
    assert new.sum() == (~before["path"].isin(after["path"])).sum()  # each new one pushed one
    assert new.sum() <= 6  # about 20/210 of the 20 new photos, not a new draw
    # the draw follows the content: a renamed photo keeps its place
    renamed = photos(200).assign(path=lambda d: "moved/" + d["path"])
    assert sample_per_class(renamed, 20, seed=3)["sha256"].equals(before["sha256"])


def test_plots_are_titled_and_labelled(image_set):
    files, labels = image_set
    setup_fonts()
    index = GalleryIndex.for_features(quiet(levels=32)).fit_files(files, labels)
    fig = plot_neighbours(index.leave_one_out(k=3, queries=[0, 9]))
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[0].startswith("original") and titles[1].startswith("similar 1")
    assert len(titles) == 8
    ax = plot_distance_heatmap(distance_matrix(index.features_), index.labels_, metric="cosine")
    assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
    result = evaluate(index.features_, index.labels_, seed=0)
    ax = plot_confusion(result.confusion)
    assert ax.get_xlabel() == "predicted label" and ax.get_ylabel() == "true label"
    plt.close("all")


@pytest.mark.realdata
def test_tutorial_equality_on_real_photos(mirror):
    files = sorted((mirror / "lostnet" / "key").glob("*.jpg"))[:3]
    if not files:
        pytest.skip("the mirror has no lostnet/key photos")
    got = quiet(**TUTORIAL_SETTINGS).transform(files)
    assert np.array_equal(got, np.array([tutorial_features(f) for f in files]))

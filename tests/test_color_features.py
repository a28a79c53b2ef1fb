"""Tests of the color histogram, texture + color, presets, comparisons and Dask extraction."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.pipeline import FeatureUnion, make_pipeline

from lfhelpers.data.fixtures import make_synthetic_dataset
from lfhelpers.errors import ConfigError, DataError
from lfhelpers.images import load_array
from lfhelpers.similarity.evaluation.texture import (
    compare_features,
    labelled_files,
    make_classifier,
    time_extraction,
)
from lfhelpers.similarity.features.color import (
    BOOK_SETTINGS,
    ColorHistogram,
    color_histogram,
    texture_and_color,
)
from lfhelpers.similarity.features.texture import (
    TUTORIAL_SETTINGS,
    HaralickFeatures,
    tutorial_features,
)
from lfhelpers.similarity.search.gallery import GalleryIndex


@pytest.fixture(scope="module")
def image_set(tmp_path_factory) -> tuple[list[str], list[str]]:
    """6 synthetic photos of each of 3 classes (96 px)."""
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_dataset(root, n_per_class=6, size=96, seed=5,
                           labels=["ball", "card", "열쇠고리"])
    files = sorted(str(p) for p in root.glob("*/*.jpg"))
    return files, [Path(f).parent.name for f in files]


def book_chist(im: np.ndarray) -> np.ndarray:
    """The book's color histogram (chapter 10), as printed."""
    im = im // 64
    r, g, b = im.transpose((2, 0, 1))
    pixels = 1 * r + 4 * b + 16 * g
    hist = np.bincount(pixels.ravel(), minlength=64)
    return np.log1p(hist.astype(float))


def test_book_settings_give_the_books_histogram(image_set):
    files, _ = image_set
    got = ColorHistogram(**BOOK_SETTINGS, progress=False).transform(files[:3])
    for row, f in zip(got, files[:3], strict=True):
        expected = book_chist(load_array(f))
        # our bins run r, g, b (r slowest); the book's index is r + 4 b + 16 g
        order = [r + 4 * b + 16 * g for r in range(4) for g in range(4) for b in range(4)]
        assert np.allclose(row, expected[order])


def test_histogram_does_not_depend_on_photo_size():
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, size=(40, 60, 3), dtype=np.uint8)
    big = np.repeat(np.repeat(small, 4, axis=0), 4, axis=1)  # the same colors, 16x the pixels
    for space in ("lab", "rgb", "hsv"):
        assert np.allclose(color_histogram(small, space), color_histogram(big, space))
    raw = color_histogram(small, "rgb", 4, per_pixels=None, log=False)
    assert raw.sum() == 40 * 60 and raw.shape == (64,)


def test_lab_separates_lightness_from_color():
    grey_ramp = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2)
    hist = color_histogram(grey_ramp, "lab", (4, 8, 8), per_pixels=None, log=False)
    filled = np.flatnonzero(hist)
    a_b = {(i // 8) % 8 for i in filled} | {i % 8 for i in filled}
    assert a_b <= {3, 4}  # neutral greys keep a and b near 0 (the middle bins)
    assert len({i // 64 for i in filled}) == 4  # and spread over all lightness levels


def test_color_options_are_checked_and_named(image_set):
    files, _ = image_set
    for params in ({"space": "xyz"}, {"bins": 0}, {"bins": (4, 4)}, {"max_side": 2},
                   {"per_pixels": 0}):
        with pytest.raises(ConfigError):
            ColorHistogram(progress=False, **params).fit(files[:1])
    names = ColorHistogram().get_feature_names_out()
    assert len(names) == 256 and names[0] == "lab_L0_a0_b0" and names[-1] == "lab_L3_a7_b7"
    assert ColorHistogram(progress=False).transform(files[:2]).shape == (2, 256)


def test_texture_and_color_is_a_feature_union_with_a_skipping_extract(tmp_path, image_set):
    files, labels = image_set
    texture = HaralickFeatures(levels=32, progress=False)
    color = ColorHistogram(progress=False)
    union = texture_and_color(texture, color)
    assert isinstance(union, FeatureUnion)
    expected = np.hstack([texture.transform(files), color.transform(files)])
    assert np.allclose(union.fit_transform(files), expected)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    result = union.extract([files[0], bad, files[1]])
    assert result.ok.tolist() == [True, False, True]
    assert np.allclose(result.features, expected[:2])
    model = make_pipeline(texture_and_color(texture, color), make_classifier(seed=0))
    assert model.fit(files, labels).score(files, labels) > 0.9
    index = GalleryIndex.for_features(union).fit_files(files[1:], labels[1:])
    assert index.nearest(files[0], k=2)["file"].isin(files[1:]).all()


def test_tutorial_preset_is_the_tutorials_method(image_set):
    files, _ = image_set
    preset = HaralickFeatures(preset="tutorial", progress=False)
    assert preset.settings() == TUTORIAL_SETTINGS
    assert np.array_equal(preset.transform(files[:2]),
                          np.array([tutorial_features(f) for f in files[:2]]))
    assert HaralickFeatures(preset="default").settings() == HaralickFeatures().settings()
    assert preset.cache_key() == HaralickFeatures(**TUTORIAL_SETTINGS).cache_key()
    with pytest.raises(ConfigError, match="ambiguous"):
        HaralickFeatures(preset="tutorial", levels=32).fit()
    with pytest.raises(ConfigError, match="preset"):
        HaralickFeatures(preset="book").fit()


def test_compare_features_scores_each_set_on_the_same_photos(image_set):
    files, labels = image_set
    extractors = {"tutorial": HaralickFeatures(preset="tutorial", progress=False),
                  "texture": HaralickFeatures(progress=False),
                  "color": ColorHistogram(progress=False)}
    result = compare_features(extractors, files, labels, seed=0,
                              combine={"texture + color": ["texture", "color"]})
    assert list(result.table.index) == ["tutorial", "texture", "color", "texture + color"]
    assert result.table.loc["texture + color", "n_features"] == 208 + 256
    assert result.table["loocv_accuracy"].between(0, 1).all()
    assert result.best() in result.table.index
    speed = time_extraction({"tutorial": extractors["tutorial"],
                             "texture": extractors["texture"]}, files[:3])
    assert speed.loc["tutorial", "speedup"] == pytest.approx(1.0)
    assert (speed["photos"] == 3).all()


def test_kept_evaluations_are_not_refitted_on_the_same_photos(tmp_path, image_set,
                                                               monkeypatch):
    """Notebook 05 rerun on the same sample reads its leave-one-out scores."""
    from sklearn.linear_model import LogisticRegression

    files, labels = image_set
    extractors = {"color": ColorHistogram(progress=False)}
    first = compare_features(extractors, files, labels, seed=0, cache_dir=tmp_path)

    def refit(*args, **kwargs):
        raise AssertionError("refitted")

    monkeypatch.setattr(LogisticRegression, "fit", refit)
    again = compare_features(extractors, files, labels, seed=0, cache_dir=tmp_path)
    scores = ["loocv_accuracy", "cv5_accuracy"]  # the extraction's seconds differ: cache hits
    pd.testing.assert_frame_equal(first.table[scores], again.table[scores])
    with pytest.raises(ValueError, match="fits failed"):  # other labels: scored afresh
        compare_features(extractors, files, list(reversed(labels)), seed=0, cache_dir=tmp_path)


def test_cache_hits_are_not_counted_as_extraction_speed(tmp_path, image_set):
    files, _ = image_set
    first = ColorHistogram(cache_dir=tmp_path, progress=False).extract(files[:4])
    again = ColorHistogram(cache_dir=tmp_path, progress=False).extract(files[:4])
    assert first.n_computed == 4 and first.computed_per_second > 0
    assert again.n_cached == 4 and np.isnan(again.computed_per_second)


def test_labelled_files_reads_class_folders_and_the_books_flat_layout(tmp_path):
    flat = tmp_path / "SimpleImageDataset"
    flat.mkdir()
    for name in ("building00.jpg", "building01.jpg", "scene00.jpg", "text12.jpg"):
        Image.new("RGB", (8, 8)).save(flat / name)
    table = labelled_files(flat)
    assert table["label"].tolist() == ["building", "building", "scene", "text"]
    nested = tmp_path / "classes" / "가방"
    nested.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(nested / "a1.jpg")
    assert labelled_files(tmp_path / "classes")["label"].tolist() == ["가방"]
    with pytest.raises(DataError):
        labelled_files(tmp_path / "missing")


def test_unknown_scheduler_forms_are_refused(image_set):
    files, _ = image_set
    with pytest.raises(ConfigError):
        HaralickFeatures(scheduler="local:zero", progress=False).extract(files[:2])


@pytest.mark.skipif(importlib.util.find_spec("distributed") is None,
                    reason="dask.distributed is not installed (optional extra 'dask')")
def test_extraction_on_a_dask_cluster_equals_local(image_set):
    from dask.distributed import Client, LocalCluster

    files, _ = image_set
    local = HaralickFeatures(levels=32, progress=False).transform(files[:6])
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                      dashboard_address=None) as cluster, Client(cluster):
        on_dask = HaralickFeatures(levels=32, progress=False, scheduler="dask").extract(files[:6])
        assert np.array_equal(on_dask.features, local)
        color = ColorHistogram(progress=False, scheduler="dask").transform(files[:6])
        assert np.allclose(color, ColorHistogram(progress=False).transform(files[:6]))
    with pytest.raises(ConfigError, match="Client"):
        HaralickFeatures(progress=False, scheduler="dask").extract(files[:2])

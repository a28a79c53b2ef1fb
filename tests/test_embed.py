"""Tests of similarity.features.cnn and the registry: weights, embedder, cache, cut, sets.

The core tests use ``weights="none"`` (random MobileNet, 64 px) and run anywhere; the test with
ImageNet weights needs the MobileNet file (``LF_MOBILENET_WEIGHTS``, or the data mirror's
``../weights`` folder) and is skipped without it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lfhelpers.data.fixtures import make_synthetic_dataset
from lfhelpers.errors import ConfigError, DataError
from lfhelpers.images import load_rgb
from lfhelpers.models import backbones
from lfhelpers.similarity.features import cnn as embed
from lfhelpers.similarity.features import registry
from lfhelpers.similarity.features.base import standardize_l2
from lfhelpers.similarity.search.recipe import embedding_spec

# Keras' own numpy conversion warns under NumPy 2 (not ours to fix)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SIZE = 64
MOBILENET_FILE = "mobilenet_2_5_224_tf_no_top.h5"


def mobilenet_weights() -> Path | None:
    """The MobileNet ImageNet weights file, when this machine has it."""
    value = os.environ.get("LF_MOBILENET_WEIGHTS", "")
    if value and Path(value).is_file():
        return Path(value)
    mirror = os.environ.get("LF_DATA_MIRROR", "")
    if mirror and (Path(mirror) / ".." / "weights" / MOBILENET_FILE).is_file():
        return (Path(mirror) / ".." / "weights" / MOBILENET_FILE).resolve()
    return None


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> tuple[list[str], list[str]]:
    """6 synthetic photos of each of 3 classes (80 px)."""
    root = tmp_path_factory.mktemp("photos")
    make_synthetic_dataset(root, n_per_class=6, size=80, seed=1,
                           labels=["ball", "card", "열쇠고리"])
    files = sorted(str(p) for p in root.glob("*/*.jpg"))
    return files, [Path(f).parent.name for f in files]


@pytest.fixture(scope="module")
def classifier_file(tmp_path_factory) -> Path:
    """A small classifier saved like notebook 03's: pixels 0-255 in, softmax out, labels json."""
    import keras

    backbones.set_seed(0)
    inp = keras.Input((SIZE, SIZE, 3), name="pixels")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="scale")(inp)
    trunk = keras.applications.MobileNet(alpha=0.25, include_top=False, weights=None,
                                         input_shape=(SIZE, SIZE, 3))
    x = trunk(x, training=False)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    head = keras.Sequential([keras.layers.Dropout(0.2),
                             keras.layers.Dense(3, activation="softmax", name="predictions")],
                            name="head")
    model = keras.Model(inp, head(x), name="tiny_classifier")
    folder = tmp_path_factory.mktemp("models")
    path = folder / "tiny.keras"
    model.save(path)
    (folder / "tiny.labels.json").write_text(
        json.dumps({"labels": ["ball", "card", "열쇠고리"], "image_size": SIZE}), encoding="utf-8")
    return path


def quiet(**params) -> embed.Embedder:
    params.setdefault("backbone", "mobilenet")
    params.setdefault("image_size", SIZE)
    params.setdefault("batch_size", 8)
    return embed.Embedder(progress=False, **params)


# --------------------------------------------------------------------------- weights


def test_resolve_weights_values(tmp_path, monkeypatch):
    monkeypatch.delenv("LF_MOBILENET_WEIGHTS", raising=False)
    monkeypatch.delenv("LF_DATA_MIRROR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert backbones.resolve_weights("mobilenet", "none") is None
    assert backbones.resolve_weights("mobilenet", "imagenet") == "imagenet"
    file = tmp_path / "w.h5"
    file.write_bytes(b"x")
    assert backbones.resolve_weights("mobilenet", str(file)) == str(file.resolve())
    with pytest.raises(ConfigError, match="does not exist"):
        backbones.resolve_weights("mobilenet", str(tmp_path / "missing.h5"))
    with pytest.raises(ConfigError, match="Unknown backbone"):
        backbones.resolve_weights("no_such_net", "none")


def test_auto_weights_use_env_then_local_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LF_DATA_MIRROR", raising=False)
    monkeypatch.setenv("LF_MOBILENET_WEIGHTS", "none")
    assert backbones.resolve_weights("mobilenet", "auto") is None
    monkeypatch.delenv("LF_MOBILENET_WEIGHTS")
    local = tmp_path / "models" / "weights" / MOBILENET_FILE
    local.parent.mkdir(parents=True)
    local.write_bytes(b"x")
    assert backbones.resolve_weights("mobilenet", "") == str(local.resolve())
    mirror = tmp_path / "shared" / "datasets"
    (tmp_path / "shared" / "weights").mkdir(parents=True)
    mirror.mkdir()
    (tmp_path / "shared" / "weights" / "xception_imagenet_notop.weights.h5").write_bytes(b"x")
    monkeypatch.setenv("LF_DATA_MIRROR", str(mirror))
    monkeypatch.delenv("LF_XCEPTION_WEIGHTS", raising=False)
    assert Path(backbones.resolve_weights("xception", "auto")).name == \
        "xception_imagenet_notop.weights.h5"


def test_backbone_by_keras_class_name_and_size_check():
    assert backbones.backbone_spec("DenseNet121").keras_name == "DenseNet121"
    with pytest.raises(ConfigError, match="too small"):
        backbones.build_backbone("xception", 48, None)


# --------------------------------------------------------------------------- embedder


def test_embeddings_are_unit_vectors_and_deterministic(photos):
    files, _ = photos
    backbones.set_seed(3)
    first = quiet(weights="none").fit().transform(files)
    backbones.set_seed(3)
    again = quiet(weights="none").fit().transform(files)
    assert first.shape == (len(files), 256)
    assert first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(first, again, atol=1e-6)
    raw = quiet(weights="none", normalize=False).fit().extract(files[:3]).features
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)


def test_batching_does_not_change_vectors(photos, weights_file):
    files, _ = photos
    a = quiet(weights=weights_file, batch_size=4).fit().transform(files[:7])
    b = quiet(weights=weights_file, batch_size=16).fit().transform(files[:7])
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_unreadable_image_is_skipped_with_reason(photos, tmp_path, caplog):
    files, _ = photos
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"<html>not an image</html>")
    embedder = quiet(weights="none").fit()
    with caplog.at_level(logging.WARNING, logger="lfhelpers.similarity.features.cnn"):
        result = embedder.extract([files[0], str(bad), files[1]])
    assert result.ok.tolist() == [True, False, True]
    assert result.features.shape == (2, 256)
    assert str(bad) in result.errors and "broken.jpg" in caplog.text
    aligned = result.aligned()
    assert np.isnan(aligned[1]).all() and np.isfinite(aligned[[0, 2]]).all()
    with pytest.raises(DataError, match="could not be read"):
        embedder.transform([str(bad)])


def test_cache_by_content(photos, weights_file, tmp_path):
    files, _ = photos
    cache = tmp_path / "cache"
    first = quiet(weights=weights_file, cache_dir=cache).fit().extract(files)
    assert first.n_cached == 0
    second = quiet(weights=weights_file, cache_dir=cache).fit().extract(files)
    assert second.n_cached == len(files)
    np.testing.assert_allclose(first.features, second.features, atol=1e-6)
    # a copy under another name is a hit; a changed file is not
    copy = tmp_path / "copy.jpg"
    copy.write_bytes(Path(files[0]).read_bytes())
    changed = tmp_path / "changed.jpg"
    Image.open(files[0]).rotate(90).save(changed)
    third = quiet(weights=weights_file, cache_dir=cache).fit().extract([copy, changed])
    assert third.n_cached == 1
    # another image size is another model: its own cache folder
    other = quiet(weights=weights_file, cache_dir=cache, image_size=48).fit()
    assert other.cache_key_ != quiet(weights=weights_file, cache_dir=cache).fit().cache_key_
    # random weights are never cached
    assert quiet(weights="none", cache_dir=cache).fit().cache_key_ is None


def test_load_rgb_handles_modes_and_exif(tmp_path):
    grey = tmp_path / "grey.png"
    Image.new("L", (40, 20), 100).save(grey)
    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (30, 30), (255, 0, 0, 0)).save(rgba)
    rotated = tmp_path / "rot.jpg"
    im = Image.new("RGB", (60, 20), (0, 0, 255))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90° when shown
    im.save(rotated, exif=exif)
    assert load_rgb(grey, 32).shape == (32, 32, 3)
    assert (load_rgb(rgba, 16) == 255).all()  # transparent -> white
    tall = load_rgb(rotated, 32)
    assert tall.shape == (32, 32, 3)


def test_standardize_l2_uses_fit_rows_only():
    x = np.array([[1.0, 100.0], [3.0, 300.0], [1000.0, -5.0]])
    out = standardize_l2(x, np.array([True, True, False]))
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(out[0], -out[1], atol=1e-6)


# --------------------------------------------------------------------------- classifier


def test_classifier_embedding_and_top_k(photos, classifier_file, tmp_path):
    import keras

    files, _ = photos
    embedder = embed.Embedder("classifier", model_path=classifier_file, progress=False,
                              cache_dir=tmp_path / "cache").fit()
    assert embedder.image_size_ == SIZE and embedder.dim_ == 256
    assert embedder.classes_ == ["ball", "card", "열쇠고리"]
    vectors = embedder.transform(files[:4])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    top = embedder.top_k(files[:4], k=2)
    model = keras.models.load_model(classifier_file, compile=False)
    pixels = np.stack([load_rgb(f, SIZE) for f in files[:4]]).astype(np.float32)
    expected = model.predict(pixels, verbose=0)
    for f, row in zip(files[:4], expected, strict=True):
        labels = [lab for lab, _ in top[f]]
        assert labels[0] == ["ball", "card", "열쇠고리"][int(np.argmax(row))]
        assert top[f][0][1] == pytest.approx(float(row.max()), abs=1e-4)
    assert embedder.extract(files[:4]).n_cached == 4  # top_k reused the same vectors


def test_classifier_needs_a_model_file():
    with pytest.raises(ConfigError, match="model_path"):
        embed.Embedder("classifier", model_path="nope.keras").fit()
    with pytest.raises(ConfigError, match="predict_proba"):
        quiet(weights="none").fit().predict_proba(np.zeros((1, 256)))


# --------------------------------------------------------------------------- feature sets


def test_feature_sets_skip_missing_finetuned_and_align_rows(photos, tmp_path):
    files, _ = photos
    fit = np.arange(len(files)) % 3 != 0
    sets = registry.feature_sets("finetuned,mobilenet,haralick", files, fit, image_size=SIZE,
                              weights="none", classifier_model=tmp_path / "none.keras",
                              cache_dir=tmp_path / "cache", progress=False)
    assert list(sets) == ["finetuned", "mobilenet", "haralick"]
    assert sets["finetuned"].features is None and "skipped" in sets["finetuned"].note
    assert sets["mobilenet"].features.shape == (len(files), 256)
    assert sets["haralick"].features.shape[0] == len(files)
    np.testing.assert_allclose(np.linalg.norm(sets["haralick"].features, axis=1), 1.0,
                               rtol=1e-5)
    table = registry.feature_table(sets)
    assert table.loc["finetuned", "dim"] == 0 and table.loc["mobilenet", "dim"] == 256


def test_imagenet_mobilenet_separates_the_synthetic_classes(photos):
    path = mobilenet_weights()
    if path is None:
        pytest.skip("needs the MobileNet ImageNet weights: set LF_MOBILENET_WEIGHTS or "
                    "LF_DATA_MIRROR")
    from lfhelpers.similarity.evaluation.retrieval import retrieval_scores

    files, labels = photos
    vectors = quiet(weights=str(path), image_size=96).fit().transform(files)
    summary, _ = retrieval_scores(vectors, labels)
    assert summary["p_at_1"] >= 0.8


# --------------------------------------------------------------------------- pooling, flip


def test_pooling_and_flip_are_part_of_the_vector_and_its_cache_key(photos, weights_file):
    from PIL import Image

    files, _ = photos
    avg = quiet(weights=weights_file).fit()
    gem = quiet(weights=weights_file, pooling="gem").fit()
    flip = quiet(weights=weights_file, flip=True).fit()
    assert len({avg.cache_spec_["pooling"], gem.cache_spec_["pooling"]}) == 2
    assert avg.vector_spec() != flip.vector_spec()
    a, g = avg.transform(files[:3]), gem.transform(files[:3])
    assert a.shape == g.shape and not np.allclose(a, g)
    # flip averaging makes a photo and its mirror image the same vector
    mirrored = Path(files[0]).with_name("mirrored.png")
    with Image.open(files[0]) as im:
        im.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(mirrored)
    v = flip.transform([files[0], str(mirrored)])
    np.testing.assert_allclose(v[0], v[1], atol=1e-4)
    assert not np.allclose(*avg.transform([files[0], str(mirrored)]), atol=1e-4)
    mirrored.unlink()
    with pytest.raises(ConfigError, match="pooling"):
        quiet(pooling="median").fit()


# --------------------------------------------------------------------------- extractor choice


def test_a_classifier_of_other_labels_is_not_used(classifier_file):
    from lfhelpers.similarity.features.registry import choose_extractor, classifier_fits

    ok, why = classifier_fits(classifier_file, ["cat", "dog"])
    assert not ok and "other labels" in why
    choice = choose_extractor(["finetuned", "xception", "haralick"], classifier_file,
                              ["cat", "dog", "cat"])
    assert choice.main == "xception" and not choice.classifier_ok
    assert "finetuned" not in choice.backbones and "not used" in choice.reason
    fits = choose_extractor(["finetuned", "xception"], classifier_file,
                            ["ball", "card", "열쇠고리"])
    assert fits.main == "finetuned" and fits.classifier_ok and "trained on" in fits.reason
    missing = choose_extractor(["finetuned", "mobilenet"], "nowhere.keras", ["a"])
    assert missing.main == "mobilenet" and not missing.classifier_ok
    with pytest.raises(ConfigError, match="main_features"):
        choose_extractor(["finetuned", "xception"], classifier_file, ["cat"], "finetuned")


# --------------------------------------------------------------------------- shards and commands


def test_embed_shards_resume_and_refuse_other_settings(photos, weights_file, tmp_path):
    from lfhelpers.similarity.batch import shards

    root = Path(photos[0][0]).parent.parent
    spec = embedding_spec("mobilenet", weights_file, SIZE, batch_size=8)
    first = shards.embed_folder(root, tmp_path / "emb", spec, progress=False)
    assert first.n_embedded == len(photos[0]) and first.n_done_before == 0
    again = shards.embed_folder(root, tmp_path / "emb", spec, progress=False)
    assert again.n_embedded == 0 and again.n_done_before == len(photos[0])
    rows, x = shards.read_embeddings(tmp_path / "emb")
    assert list(rows.columns[:3]) == ["path", "label", "sha256"] and len(rows) == len(x)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    direct = quiet(weights=weights_file, pooling=spec["pooling"]).fit().transform(rows["path"])
    np.testing.assert_allclose(x, direct, atol=1e-5)
    changed = Path(rows["path"].iloc[0])
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    third = shards.embed_folder(root, tmp_path / "emb", spec, progress=False)
    assert third.n_embedded == 1
    assert len(shards.read_embeddings(tmp_path / "emb")[0]) == len(photos[0])
    with pytest.raises(ConfigError, match="other settings"):
        shards.embed_folder(root, tmp_path / "emb", {**spec, "pooling": "avg"}, progress=False)


def test_a_damaged_shard_is_set_aside_and_its_photos_embedded_again(photos, weights_file,
                                                                     tmp_path, caplog):
    from lfhelpers.similarity.batch import shards

    root = Path(photos[0][0]).parent.parent
    spec = embedding_spec("mobilenet", weights_file, SIZE, batch_size=8)
    shards.embed_folder(root, tmp_path / "emb", spec, partition_size=6, progress=False)
    rows, vectors = shards.read_embeddings(tmp_path / "emb")
    first = sorted((tmp_path / "emb").glob("part-*.parquet"))[0]
    first.write_bytes(first.read_bytes()[:100])  # truncated, as by a full disk
    with caplog.at_level(logging.WARNING, logger="lfhelpers.similarity.batch.shards"):
        again = shards.embed_folder(root, tmp_path / "emb", spec, partition_size=6,
                                    progress=False)
    assert again.n_embedded == 6 and again.n_done_before == len(rows) - 6
    assert "set aside" in caplog.text and (first.parent / (first.name + ".damaged")).is_file()
    rows2, vectors2 = shards.read_embeddings(tmp_path / "emb")
    order = rows2.set_index("path").index.get_indexer(rows["path"])
    np.testing.assert_allclose(vectors2[order], vectors, atol=1e-5)


def test_index_and_search_commands_round_trip(photos, weights_file, tmp_path, capsys):
    from lfhelpers.cli import main

    root = str(Path(photos[0][0]).parent.parent)
    common = ["--backbone", "mobilenet", "--weights", weights_file, "--image-size", str(SIZE)]
    assert main(["embed", root, "--out", str(tmp_path / "emb"), "--quiet", *common]) == 0
    assert main(["index", str(tmp_path / "emb"), "--out", str(tmp_path / "idx")]) == 0
    capsys.readouterr()
    assert main(["search", str(tmp_path / "idx"), photos[0][0], photos[0][7], "--k", "3"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["query"] for line in lines] == [photos[0][0], photos[0][7]]
    for line in lines:
        best = line["neighbours"][0]
        assert len(line["neighbours"]) == 3
        assert set(best) == {"path", "label", "score", "inliers", "same_item"}
        assert Path(best["path"]).resolve() == Path(line["query"]).resolve()
        # the photo itself: called the same item unless an 80 px drawing has too few keypoints
        from lfhelpers.similarity.search.verify import SAME_ITEM_MIN_INLIERS

        assert best["same_item"] in (True, None) or best["inliers"] < SAME_ITEM_MIN_INLIERS
    assert main(["search", str(tmp_path / "idx"), str(tmp_path / "missing.jpg")]) == 1
    assert json.loads((tmp_path / "idx" / "recipe.json").read_text())["pooling"] == "gem"


def test_notebook_path_and_search_command_serve_the_same_ranking(photos, weights_file, tmp_path,
                                                                 capsys):
    """Notebook 06 (feature_sets -> SearchEngine.fit on its vectors) and `embed` + `index` +
    `search` (vectors from shards, queries embedded by the saved recipe) give the same
    neighbours and scores: one recipe, one engine."""
    from lfhelpers.cli import main
    from lfhelpers.similarity.search.engine import SearchEngine
    from lfhelpers.similarity.search.recipe import Recipe

    files, labels = photos
    gallery, queries = files[::2], files[1::2]
    root = tmp_path / "gallery"
    for f in gallery:  # the gallery as a class-folder set for `embed`
        dest = root / Path(f).parent.name / Path(f).name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(Path(f).read_bytes())
    g_files = sorted(str(p) for p in root.glob("*/*.jpg"))
    common = ["--backbone", "mobilenet", "--weights", weights_file, "--image-size", str(SIZE)]
    assert main(["embed", str(root), "--out", str(tmp_path / "emb"), "--quiet", *common]) == 0
    assert main(["index", str(tmp_path / "emb"), "--out", str(tmp_path / "idx"),
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    capsys.readouterr()
    assert main(["search", str(tmp_path / "idx"), *queries, "--k", "4",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    served = [json.loads(line)["neighbours"] for line in capsys.readouterr().out.splitlines()]

    # notebook 06's code path: the registry's vectors, the recipe's defaults
    recipe = Recipe(backbone="mobilenet", weights=weights_file, image_size=SIZE, batch_size=8)
    sets = registry.feature_sets(["mobilenet"], g_files + queries, image_size=SIZE,
                                 weights=weights_file, batch_size=8, progress=False,
                                 pooling=recipe.pooling)
    x = sets["mobilenet"].features
    engine = SearchEngine(recipe, cache_dir=tmp_path / "cache2").fit(
        x[:len(g_files)], g_files, [Path(f).parent.name for f in g_files])
    measured = engine.search(queries, k=4, vectors=x[len(g_files):])
    assert len(served) == len(measured) == len(queries)
    for a, b in zip(served, measured, strict=True):
        assert [Path(n["path"]).name for n in a] == [Path(n["path"]).name for n in b]
        np.testing.assert_allclose([n["score"] for n in a], [n["score"] for n in b], atol=1e-4)
        assert [n["same_item"] for n in a] == [n["same_item"] for n in b]


def test_embed_ignores_a_foreign_manifest_in_a_class_folder_set(photos, weights_file, tmp_path,
                                                                caplog):
    """A folder of class sub-folders may hold its own manifest.csv (not ours): it is ignored
    with a logged line and the sub-folders are embedded (it used to end in KeyError 'label')."""
    import shutil

    from lfhelpers.cli import main
    from lfhelpers.similarity.batch import shards

    root = tmp_path / "photos"
    shutil.copytree(Path(photos[0][0]).parent.parent, root)
    (root / "manifest.csv").write_text("file,class\nball/x.jpg,ball\n", encoding="utf-8")
    common = ["--backbone", "mobilenet", "--weights", weights_file, "--image-size", str(SIZE)]
    with caplog.at_level("WARNING", logger="lfhelpers"):
        assert main(["embed", str(root), "--out", str(tmp_path / "emb"), "--quiet",
                     *common]) == 0
    assert "not a manifest of this project" in caplog.text
    rows, _ = shards.read_embeddings(tmp_path / "emb")
    assert sorted(rows["label"].unique()) == sorted(set(photos[1]))
    assert len(rows) == len(photos[0])


@pytest.mark.slow
def test_dask_workers_give_the_same_vectors(photos, weights_file, tmp_path):
    pytest.importorskip("distributed", reason="Dask is the optional extra `dask`")
    from lfhelpers.similarity.batch import shards
    from lfhelpers.similarity.batch.distributed import dask_client

    root = Path(photos[0][0]).parent.parent
    spec = embedding_spec("mobilenet", weights_file, SIZE, batch_size=8)
    shards.embed_folder(root, tmp_path / "single", spec, progress=False)
    with dask_client("local:2") as client:
        assert len(client.scheduler_info()["workers"]) == 2
        report = shards.embed_folder(root, tmp_path / "dask", spec, client,
                                     partition_size=5, progress=False)
    assert report.n_embedded == len(photos[0]) and len(report.shards) == 4
    a_rows, a = shards.read_embeddings(tmp_path / "single")
    b_rows, b = shards.read_embeddings(tmp_path / "dask")
    order = b_rows.set_index("path").index.get_indexer(a_rows["path"])
    np.testing.assert_allclose(a, b[order], atol=1e-5)

"""The Xception classifier: weights, backbone split, training, evaluation, saving, prediction CLI.

Models here use ``weights="none"`` and 71 px inputs on the small synthetic fixture, so that the
whole file runs in about a minute on two CPU cores; the test with real ImageNet weights skips
when the local weights file is absent.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from lfhelpers.cli import main as cli_main
from lfhelpers.data import sample_per_class  # noqa: E402
from lfhelpers.data.fixtures import make_synthetic_dataset  # noqa: E402
from lfhelpers.errors import ConfigError, DataError, LFError  # noqa: E402
from lfhelpers.images import load_rgb  # noqa: E402
from lfhelpers.models.backbones import WEIGHTS_DIR, build_backbone, resolve_weights  # noqa: E402
from lfhelpers.models.evaluation import (  # noqa: E402
    comparison_table,
    epoch_table,
    evaluate_predictions,
    mistake_gallery,
    plot_learning_curves,
    top_k_table,
)
from lfhelpers.models.features import FeatureCache, split_backbone  # noqa: E402
from lfhelpers.models.leak import (  # noqa: E402
    HONEST_ORDER,
    LEAKY_ORDER,
    augmentation_leak_demo,
    augmented_training_set,
    leak_lesson,
    paper_protocol_scores,
    tutorial_cnn,
    tutorial_copies,
    tutorial_leak_demo,
)
from lfhelpers.models.predict import labels_path  # noqa: E402
from lfhelpers.models.xception import XceptionClassifier  # noqa: E402
from lfhelpers.plots import confusion_matrix  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS_ENV = "LF_XCEPTION_WEIGHTS"
DEFAULT_WEIGHTS_FILE = WEIGHTS_DIR / "xception_imagenet_notop.weights.h5"
SIZE = 71
# Keras's own model saving trips a NumPy 2 deprecation notice; it is not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
LABELS = ["ball", "card", "key", "열쇠고리"]


def _manifest(root: Path, n_per_class: int = 12, size: int = 80, seed: int = 5) -> pd.DataFrame:
    """A synthetic class-folder set and a hand-made manifest (train 6 / val 2 / test 4)."""
    make_synthetic_dataset(root, n_per_class=n_per_class, size=size, seed=seed)
    rows = []
    for label in LABELS:
        for i in range(n_per_class):
            split = "train" if i < n_per_class // 2 else "val" if i < n_per_class * 2 // 3 \
                else "test"
            path = f"{label}/{label}_{i:03d}.jpg"
            rows.append({"path": path, "label": label, "split": split, "sha256": f"{label}{i}",
                         "group": f"{label}{i}", "file": str(root / path)})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> pd.DataFrame:
    return _manifest(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="module")
def cache() -> FeatureCache:
    return FeatureCache(image_size=SIZE, weights="none", unfreeze_blocks=1, batch_size=16,
                        seed=0, progress=False)


def _params(**extra):
    params = dict(image_size=SIZE, weights="none", unfreeze_blocks=1, batch_size=16, epochs=2,
                  learning_rate=1e-3, fine_tune_epochs=1, fine_tune_learning_rate=1e-4,
                  class_weight="balanced", patience=2, seed=0, progress=False)
    params.update(extra)
    return params


@pytest.fixture(scope="module")
def fitted(data, cache) -> XceptionClassifier:
    train, val = data[data.split == "train"], data[data.split == "val"]
    return XceptionClassifier(feature_cache=cache, **_params()).fit(train, val)


# ------------------------------------------------------------------ weights and backbone


def test_resolve_weights(tmp_path, monkeypatch):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    assert resolve_weights("xception", "none") is None
    assert resolve_weights("xception", "NONE") is None
    assert resolve_weights("xception", "imagenet") == "imagenet"
    file = tmp_path / "w.weights.h5"
    file.write_bytes(b"x")
    assert resolve_weights("xception", str(file)) == str(file.resolve())
    monkeypatch.setenv(WEIGHTS_ENV, "none")
    assert resolve_weights("xception", "") is None, "empty falls back to the environment"
    assert resolve_weights("xception", "auto") is None
    assert resolve_weights("xception", "imagenet") == "imagenet", "an explicit parameter wins"
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_weights("xception", str(tmp_path / "missing.weights.h5"))


def test_resolve_weights_default_prefers_local_file(tmp_path, monkeypatch):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    monkeypatch.delenv("LF_DATA_MIRROR", raising=False)
    monkeypatch.chdir(tmp_path)
    if not (ROOT / DEFAULT_WEIGHTS_FILE).is_file():
        assert resolve_weights("xception", None) == "imagenet"
    local = tmp_path / DEFAULT_WEIGHTS_FILE
    local.parent.mkdir(parents=True)
    local.write_bytes(b"x")
    assert resolve_weights("xception", None) == str(local.resolve())


def test_backbone_size_and_split():
    with pytest.raises(ConfigError, match="at least 71"):
        build_backbone("xception", 64, None, pooling=None)
    backbone, _, _ = build_backbone("xception", SIZE, None, pooling=None)
    x = np.random.default_rng(0).uniform(-1, 1, (2, SIZE, SIZE, 3)).astype("float32")
    whole = backbone(x, training=False)
    for k in (1, 3):
        trunk, top = split_backbone(backbone, k)
        assert np.allclose(top(trunk(x, training=False), training=False), whole, atol=1e-5)
    trunk, top = split_backbone(backbone, 0)
    assert top is None and trunk.output.shape[-1] == 2048
    with pytest.raises(ConfigError):
        split_backbone(backbone, 11)


# ------------------------------------------------------------------ training


def test_fit_predict_evaluate(fitted, data):
    assert fitted.classes_ == sorted(LABELS)
    test = data[data.split == "test"]
    proba = fitted.predict_proba(test)
    assert proba.shape == (len(test), 4)
    assert np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert set(fitted.predict(test)) <= set(LABELS)
    assert list(fitted.history_["phase"].unique()) == ["1 head", "2 fine-tune"]
    assert {"loss", "val_loss", "accuracy", "top3"} <= set(fitted.history_.columns)
    assert fitted.n_train_ == (data.split == "train").sum() and fitted.train_seconds_ > 0
    result = fitted.evaluate(test)
    assert result["n"] == len(test) and 0 <= result["top1"] <= result["top3"] <= 1
    assert result["confusion"].to_numpy().sum() == len(test)
    assert list(result["per_class"].index) == sorted(LABELS)


def test_same_seed_same_model(fitted, data, cache):
    train, val = data[data.split == "train"], data[data.split == "val"]
    again = XceptionClassifier(feature_cache=cache, **_params()).fit(train, val)
    test = data[data.split == "test"]
    assert np.allclose(again.predict_proba(test), fitted.predict_proba(test), atol=1e-6)
    pd.testing.assert_frame_equal(again.history_, fitted.history_)


def test_cache_is_shared_and_checked(fitted, cache, data):
    n = len(cache)
    XceptionClassifier(feature_cache=cache, **_params(fine_tune_epochs=0)).fit(
        data[data.split == "train"], data[data.split == "val"])
    assert len(cache) == n, "a second model reuses the cached trunk activations"
    with pytest.raises(ConfigError, match="feature_cache"):
        XceptionClassifier(feature_cache=cache, **_params(unfreeze_blocks=2)).fit(
            data[data.split == "train"])


def test_trunk_store_is_shared_by_training_and_the_fine_tuned_embeddings(data, tmp_path):
    """Notebook 03 keeps each photo's trunk activations; the saved classifier's embeddings
    (notebooks 06, 07) then come from them through block 14 only, equal to a full pass."""
    from lfhelpers.fsutil import sha256_file
    from lfhelpers.similarity.features.cnn import Embedder

    store_dir = tmp_path / "cache"
    stored = FeatureCache(image_size=SIZE, weights="none", unfreeze_blocks=1, batch_size=16,
                          progress=False, cache_dir=store_dir)
    train, val = data[data.split == "train"], data[data.split == "val"]
    clf = XceptionClassifier(feature_cache=stored, **_params(epochs=1)).fit(train, val)
    model_file = clf.save(tmp_path / "m.keras")[0]
    assert len(stored.trunk_store) == len(train) + len(val)

    files = list(train["file"][:6])
    via_store = Embedder("classifier", model_path=model_file, cache_dir=store_dir,
                         progress=False).fit()
    assert via_store.trunk_store_.folder == stored.trunk_store.folder  # same weights: one store
    got = via_store.extract(files, normalize=False)
    assert got.n_from_trunk == len(files) and got.n_cached == 0
    full = Embedder("classifier", model_path=model_file, progress=False).fit()
    np.testing.assert_allclose(got.features, full.extract(files, normalize=False).features,
                               rtol=2e-2, atol=2e-3)  # float16 activations
    assert via_store.extract(files).n_cached == len(files)  # vectors kept too

    # a photo never seen leaves its activations for the next reader; a damaged entry is redone
    new = list(data[data.split == "test"]["file"][:2])
    assert via_store.extract(new).n_from_trunk == 0
    entry = stored.trunk_store.path(sha256_file(new[0]))
    assert entry.is_file()
    entry.write_bytes(b"not an array")
    fresh = Embedder("classifier", model_path=model_file, cache_dir=tmp_path / "other",
                     progress=False).fit()
    fresh.trunk_store_ = stored.trunk_store
    assert fresh.extract(new).n_from_trunk == 1
    assert entry.with_name(entry.name + ".damaged").is_file() and entry.is_file()


def test_a_cache_entry_left_empty_is_computed_again(tmp_path, caplog):
    """Cache entries are written atomically but not flushed one by one: an entry that a power
    cut left empty reads as missing (set aside, logged), not as an error."""
    from lfhelpers.store import ContentStore

    store = ContentStore.under(tmp_path / "cache", {"what": "test"})
    store.put("ab" * 32, np.arange(6, dtype=np.float16))
    np.testing.assert_array_equal(store.get("ab" * 32), np.arange(6))
    store.path("ab" * 32).write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        assert store.get("ab" * 32) is None
    assert "damaged" in caplog.text and not store.path("ab" * 32).exists()


def test_embeddings_of_unseen_photos_on_the_openvino_trunk(data, tmp_path, monkeypatch):
    """Photos notebook 03 never saw go through the trunk on OpenVINO (``engine``, as the
    search recipe names it): their activations are kept in the same store, and the vectors
    equal the Keras ones up to rounding. A call with only a few photos (one lost photo's
    search) stays on Keras: no conversion."""
    pytest.importorskip("openvino", reason="the openvino package is not installed")
    from lfhelpers.similarity.features import cnn
    from lfhelpers.similarity.features.cnn import Embedder
    from lfhelpers.similarity.search.recipe import Recipe

    stored = FeatureCache(image_size=SIZE, weights="none", unfreeze_blocks=1, batch_size=16,
                          progress=False, cache_dir=tmp_path / "cache")
    train, val = data[data.split == "train"], data[data.split == "val"]
    clf = XceptionClassifier(feature_cache=stored, **_params(epochs=1)).fit(train, val)
    model_file = clf.save(tmp_path / "m.keras")[0]
    unseen = list(data[data.split == "test"]["file"][:5])
    keras_run = Embedder("classifier", model_path=model_file, cache_dir=tmp_path / "k",
                         progress=False).fit().extract(unseen)
    recipe = Recipe(backbone=f"finetuned:{model_file}", pooling="avg", image_size=0,
                    engine="openvino", precision="float32")
    assert Recipe.from_dict(recipe.to_dict()) == recipe
    embedder = recipe.embedder(cache_dir=tmp_path / "cache")
    assert embedder.engine == "openvino" and embedder.trunk_store_.folder == \
        stored.trunk_store.folder
    before = len(stored.trunk_store)
    embedder.extract(unseen[:1])
    assert embedder._run_ov is None, "one photo: no conversion"
    monkeypatch.setattr(cnn, "OPENVINO_MIN_PHOTOS", 3)
    got = embedder.extract(unseen)
    assert callable(embedder._run_ov), "enough photos: the OpenVINO trunk ran"
    assert got.n_cached == 1 and len(stored.trunk_store) == before + len(unseen)
    assert (got.features * keras_run.features).sum(axis=1).min() > 0.999
    with pytest.raises(ConfigError, match="engine"):
        Embedder("classifier", model_path=model_file, engine="tensorrt").fit()


def test_a_head_only_model_scores_from_the_kept_pooled_vectors(data, cache, tmp_path):
    train, val, test = (data[data.split == s] for s in ("train", "val", "test"))
    clf = XceptionClassifier(feature_cache=cache, **_params(fine_tune_epochs=0)).fit(train, val)
    assert not clf.top_tuned_
    # the same probabilities as the whole saved network over the pixels
    whole = XceptionClassifier.load(clf.save(tmp_path / "head.keras")[0])
    assert np.allclose(clf.predict_proba(test), whole.predict_proba(test), atol=1e-4)
    # a second classifier on the cache reads the pooled vectors instead of computing them
    kept = len(cache._pooled)
    XceptionClassifier(feature_cache=cache, **_params(fine_tune_epochs=0)).fit(train, val)
    assert len(cache._pooled) == kept


def test_augment_views_add_training_examples(data, cache):
    train = data[data.split == "train"]
    clf = XceptionClassifier(feature_cache=cache, **_params(fine_tune_epochs=0, epochs=1,
                                                            augment_views=2)).fit(train)
    assert clf.n_train_ == 3 * len(train)
    assert (train["file"].iloc[0], "aug2") in cache._store


@pytest.mark.parametrize("cache_trunk", [True, False])
def test_phase_two_trains_the_unfrozen_top_blocks(data, cache, cache_trunk):
    """Fine-tuning must change the top block's convolutions, not only the head."""
    train, val = data[data.split == "train"], data[data.split == "val"]
    clf = XceptionClassifier(feature_cache=cache,
                             **_params(cache_trunk=cache_trunk, fine_tune_learning_rate=1e-2))
    def block14(model):
        return [w.numpy() for w in model.weights if w.path.startswith("block14_sepconv1/")]

    before = block14(cache.new_backbone())
    clf.fit(train, val)
    after = block14(clf.model_)
    assert len(after) == len(before) > 0
    assert any(not np.allclose(b, a) for b, a in zip(before, after, strict=True))


def test_fine_tune_on_images_with_online_augmentation(data, cache):
    train, val = data[data.split == "train"], data[data.split == "val"]
    clf = XceptionClassifier(feature_cache=cache, **_params(cache_trunk=False, augment_views=1))
    clf.fit(train, val)
    assert list(clf.history_["phase"].unique()) == ["1 head", "2 fine-tune"]
    assert clf.n_train_ == len(train), "online augmentation adds no fixed copies"
    test = data[data.split == "test"]
    pixels = np.stack([load_rgb(f, SIZE) for f in test["file"]]).astype("float32")
    assert np.allclose(clf.predict_proba(test), clf.model_.predict(pixels, verbose=0), atol=1e-3)


def test_unreadable_training_image_is_skipped_with_reason(data, cache, tmp_path, caplog):
    bad = tmp_path / "ball" / "broken.jpg"
    bad.parent.mkdir()
    bad.write_bytes(b"<html>not an image</html>")
    train = pd.concat([data[data.split == "train"],
                       pd.DataFrame([{"file": str(bad), "label": "ball"}])], ignore_index=True)
    with caplog.at_level(logging.WARNING, logger="lfhelpers.models.features"):
        clf = XceptionClassifier(feature_cache=cache, **_params(fine_tune_epochs=0,
                                                                epochs=1)).fit(train)
    assert clf.n_train_ == len(train) - 1
    assert any("broken.jpg" in r.getMessage() for r in caplog.records)


def test_empty_or_single_class_training_set_is_refused(data, cache):
    train = data[data.split == "train"]
    with pytest.raises(DataError, match="empty"):
        XceptionClassifier(feature_cache=cache, **_params()).fit(train.iloc[:0])
    with pytest.raises(DataError, match="two classes"):
        XceptionClassifier(feature_cache=cache, **_params()).fit(train[train.label == "key"])


# ------------------------------------------------------------------ saving and the CLI


def test_save_load_roundtrip(fitted, data, cache, tmp_path):
    paths = fitted.save(tmp_path / "models" / "xception.keras")
    assert [p.name for p in paths] == ["xception.keras", "xception.labels.json"]
    meta = json.loads(labels_path(paths[0]).read_text(encoding="utf-8"))
    assert meta["labels"] == sorted(LABELS) and meta["image_size"] == SIZE
    loaded = XceptionClassifier.load(paths[0])
    test = data[data.split == "test"]
    # the loaded model runs the whole network on the files; the fitted one uses its cache
    assert np.allclose(loaded.predict_proba(test), fitted.predict_proba(test), atol=1e-4)
    with pytest.raises(ConfigError, match=r"\.keras"):
        fitted.save(tmp_path / "model.h5")
    # a kept model is scored from the trunk activations, as the fitted one is
    from_cache = XceptionClassifier.load(paths[0], feature_cache=cache)
    assert np.allclose(from_cache.predict_proba(test), fitted.predict_proba(test), atol=1e-5)
    assert from_cache.evaluate(test)["top1"] == fitted.evaluate(test)["top1"]
    other = FeatureCache(image_size=SIZE, weights="none", unfreeze_blocks=2, batch_size=16,
                         seed=0, progress=False)
    with pytest.raises(ConfigError, match="does not match"):
        XceptionClassifier.load(paths[0], feature_cache=other)


def test_flip_tta_is_saved_with_the_model(data, cache, tmp_path):
    train, test = data[data.split == "train"], data[data.split == "test"]
    clf = XceptionClassifier(feature_cache=cache, **_params(fine_tune_epochs=0, flip_tta=True))
    clf.fit(train)
    plain = clf.cut_model_.predict(cache.features(list(test["file"])).astype("float32"),
                                   verbose=0)
    mirrored = clf.cut_model_.predict(cache.features(list(test["file"]), "fliplr").astype(
        "float32"), verbose=0)
    assert np.allclose(clf.predict_proba(test), (plain + mirrored) / 2, atol=1e-6)
    saved = clf.save(tmp_path / "tta.keras")[0]
    loaded = XceptionClassifier.load(saved)
    assert loaded.flip_tta
    assert np.allclose(loaded.predict_proba(test), clf.predict_proba(test), atol=1e-4)
    # notebook 06 embeds photos with the saved model: the pooled vector, not the probabilities
    from lfhelpers.similarity.features.cnn import Embedder

    embedder = Embedder("classifier", model_path=saved, progress=False).fit()
    vectors = embedder.extract(list(test["file"])[:3])
    assert vectors.features.shape == (3, 2048)
    assert set(embedder.top_k(list(test["file"])[:1])[str(test["file"].iloc[0])][0][0]) != set()


def test_predict_cli(fitted, data, tmp_path, capsys):
    model = fitted.save(tmp_path / "m.keras")[0]
    good = list(data[data.split == "test"]["file"].iloc[:2])
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"GIF89a-truncated")
    code = cli_main(["predict", "--model", str(model), good[0], str(bad), good[1],
                         str(tmp_path / "missing.png")])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1, "some images failed"
    assert [e["path"] for e in lines] == [good[0], str(bad), good[1],
                                          str(tmp_path / "missing.png")]
    assert "error" in lines[1] and "error" in lines[3]
    for entry in (lines[0], lines[2]):
        assert len(entry["top3"]) == 3
        assert {t["label"] for t in entry["top3"]} <= set(LABELS)
        probs = [t["prob"] for t in entry["top3"]]
        assert probs == sorted(probs, reverse=True)
    assert cli_main(["predict", "--model", str(model), good[0]]) == 0
    capsys.readouterr()
    assert cli_main(["predict", "--model", str(tmp_path / "nope.keras"), good[0]]) == 2
    assert "not found" in capsys.readouterr().err


# ------------------------------------------------------------------ evaluation helpers


def test_evaluate_predictions_known_values():
    classes = ["a", "b", "c", "d"]
    proba = np.array([[0.7, 0.2, 0.1, 0.0],   # a: right
                      [0.5, 0.3, 0.2, 0.0],   # b: second
                      [0.4, 0.3, 0.2, 0.1],   # d: fourth
                      [0.1, 0.1, 0.2, 0.6]])  # d: right
    result = evaluate_predictions(["a", "b", "d", "d"], proba, classes)
    assert result["top1"] == 0.5 and result["top3"] == 0.75
    expected_loss = -np.mean(np.log([0.7, 0.3, 0.1, 0.6]))
    assert result["loss"] == pytest.approx(expected_loss)
    assert result["per_class"].loc["d", "recall"] == 0.5
    assert result["confusion"].loc["d", "a"] == 1
    table = top_k_table(proba, classes, k=3, files=["/x/1.jpg", "/x/2.jpg", "/x/3.jpg",
                                                    "/x/4.jpg"])
    assert list(table.columns) == ["file", "top1", "p1", "top2", "p2", "top3", "p3"]
    assert table.loc[3, "top1"] == "d" and table.loc[3, "p1"] == 0.6


def test_comparison_table():
    table = comparison_table({"without augmentation": {"loss": 1.0, "top1": 0.5, "top3": 0.9,
                                                       "macro_f1": 0.4, "n_train": 10},
                              "with augmentation": {"loss": 0.8, "top1": 0.6, "top3": 0.95,
                                                    "macro_f1": 0.5, "n_train": 20}})
    assert list(table.index) == ["without augmentation", "with augmentation"]
    assert table.loc["with augmentation", "test_top1"] == 0.6


def test_cap_per_class():
    df = pd.DataFrame({"label": ["a"] * 10 + ["b"] * 3, "file": [str(i) for i in range(13)]})
    capped = sample_per_class(df, 4, seed=1)
    assert capped["label"].value_counts().to_dict() == {"a": 4, "b": 3}
    assert capped.equals(sample_per_class(df, 4, seed=1))
    assert len(sample_per_class(df, 0)) == 13


def test_augmented_training_set(data, tmp_path):
    clean = tmp_path / "clean"
    clean.mkdir()
    data.drop(columns="file").to_csv(clean / "manifest.csv", index=False)
    train = data[data.split == "train"].drop(columns="file").assign(
        file=lambda d: [str(clean / p) for p in d["path"]])
    aug_dir = tmp_path / "clean_augmented"  # notebook 02's default place for this folder
    aug_dir.mkdir()
    first, second = train["path"].iloc[0], train["path"].iloc[1]
    val_path = data[data.split == "val"]["path"].iloc[0]
    capped = train[train["path"] != second]  # as if max_per_class had dropped `second`
    extra = pd.DataFrame([{"path": "ball/x_aug1.jpg", "label": "ball", "split": "train",
                           "sha256": "new1", "origin": first},
                          {"path": "ball/y_aug1.jpg", "label": "ball", "split": "train",
                           "sha256": "new2", "origin": second}])
    extra.to_csv(aug_dir / "manifest.csv", index=False)
    rows, views, note = augmented_training_set(clean, capped, "", online_views=2)
    assert len(rows) == len(capped) + 1 and views == 0 and "1 augmented" in note
    assert rows["file"].iloc[-1] == str(aug_dir / "ball" / "x_aug1.jpg")
    rows, views, note = augmented_training_set(clean, train, "none", online_views=2)
    assert rows is train and views == 2 and "online" in note
    rows, views, note = augmented_training_set(clean, train, tmp_path / "nothing")
    assert rows is None and "skipped" in note and "notebook 02" in note
    extra.loc[0, "origin"] = val_path  # a copy of a validation image: a leak
    extra.to_csv(aug_dir / "manifest.csv", index=False)
    with pytest.raises(DataError):
        augmented_training_set(clean, train, aug_dir)


def test_plots_have_titles_and_labels(fitted, data):
    result = fitted.evaluate(data[data.split == "test"])
    fig = plot_learning_curves(fitted.history_, "curves")
    assert fig._suptitle.get_text() == "curves"
    assert all(ax.get_xlabel() == "epoch" for ax in fig.axes)
    fig = confusion_matrix(result["confusion"], "cm")
    assert fig.axes[0].get_title() == "cm" and fig.axes[0].get_ylabel() == "true label"
    test = data[data.split == "test"].reset_index(drop=True)
    proba = np.tile(np.eye(4)[[1]], (len(test), 1))  # always "card": most are mistakes
    fig = mistake_gallery(test, proba, sorted(LABELS), n=5)
    titled = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titled) == 5 and all(t.startswith("true: ") for t in titled)
    plt.close("all")


def test_leak_demo_protocols(data, cache):
    table = augmentation_leak_demo(data, views=("orig", "fliplr"), feature_cache=cache,
                                   **_params(fine_tune_epochs=0, epochs=1))
    leaky, honest = table.iloc[0], table.iloc[1]
    assert leaky["test_with_copy_in_train"] > 0.5, "copies of test images were trained on"
    assert honest["test_with_copy_in_train"] == 0
    assert honest["test_images"] == (data.split == "test").sum()


def test_tutorial_copies_and_model():
    pixels = np.zeros((16, 16, 3), np.uint8)
    pixels[:, :4] = 255  # a white band on the left
    copies = tutorial_copies(pixels, angles=(-20, 0, 15))
    assert copies.shape == (6, 16, 16, 3) and copies.dtype == np.uint8
    assert np.array_equal(copies[2], pixels) and np.array_equal(copies[3], pixels[:, ::-1])
    model = tutorial_cnn(5, image_size=64, precision="float32")
    assert [layer.__class__.__name__ for layer in model.layers] == [
        "Rescaling", "Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Flatten", "Dense",
        "Dropout", "Dense"]
    assert model.layers[1].filters == 32 and model.layers[3].filters == 64
    assert model.layers[6].units == 512 and model.output_shape == (None, 5)
    with pytest.raises(ConfigError):
        tutorial_cnn(5, precision="half")


def test_tutorial_leak_demo_counts_copies_in_training(data):
    table = tutorial_leak_demo(data, image_size=32, angles=(-10, 0, 10), epochs=1,
                               batch_size=32, seed=3, progress=False)
    leaky, honest = table.loc[LEAKY_ORDER], table.loc[HONEST_ORDER]
    n_test = int((data.split == "test").sum())
    assert table.attrs["copies_per_photo"] == 6
    assert leaky["train_images"] + leaky["test_images"] == len(data) * 6
    assert leaky["test_with_copy_in_train"] > 0.9 * leaky["test_images"]
    assert honest["test_images"] == n_test and honest["test_with_copy_in_train"] == 0
    assert honest["train_images"] == (len(data) - n_test) * 6
    assert list(table["tutorial_reported"]) == [0.993, 0.87]
    assert table["test_accuracy"].between(0, 1).all()
    again = tutorial_leak_demo(data, image_size=32, angles=(-10, 0, 10), epochs=1,
                               batch_size=32, seed=3, progress=False)
    assert np.allclose(again["test_accuracy"], table["test_accuracy"], atol=0.07)
    assert "memory, not skill" in leak_lesson(table)


def test_kept_leak_demo_is_not_trained_again(data, tmp_path, monkeypatch):
    """Notebook 03 rerun for new item photos reads the demo's table instead of training."""
    from lfhelpers.models import leak

    settings = dict(image_size=32, angles=(0,), mirror=False, epochs=1, batch_size=32, seed=3,
                    progress=False, cache_dir=tmp_path)
    table = tutorial_leak_demo(data, **settings)
    monkeypatch.setattr(leak, "tutorial_cnn", lambda *a, **k: pytest.fail("trained again"))
    pd.testing.assert_frame_equal(tutorial_leak_demo(data, **settings), table)
    with pytest.raises(pytest.fail.Exception, match="trained again"):  # other photos: afresh
        tutorial_leak_demo(data.iloc[:-1], **settings)


def test_not_fitted():
    with pytest.raises(LFError, match="not fitted"):
        XceptionClassifier().predict_proba(["x.jpg"])


# ------------------------------------------------------------------ real weights


@pytest.mark.slow
def test_imagenet_weights_learn_the_synthetic_classes(tmp_path, monkeypatch):
    weights = os.environ.get(WEIGHTS_ENV) or str(ROOT / DEFAULT_WEIGHTS_FILE)
    if weights in ("none", "imagenet") or not Path(weights).is_file():
        pytest.skip(f"needs a local ImageNet weights file ({DEFAULT_WEIGHTS_FILE} or "
                    f"{WEIGHTS_ENV})")
    df = _manifest(tmp_path, n_per_class=16, size=96, seed=11)
    clf = XceptionClassifier(**_params(image_size=96, weights=weights, epochs=15,
                                       fine_tune_epochs=0, patience=5)).fit(
        df[df.split == "train"], df[df.split == "val"])
    assert clf.evaluate(df[df.split == "test"])["top1"] >= 0.9


# ------------------------------------------------------------------ additions


def test_balanced_class_weights_follow_scikit_learn(cache):
    clf = XceptionClassifier(class_weight="balanced")
    y = np.eye(3, dtype=np.float32)[[0, 0, 0, 1]]  # class 2 absent
    weights = clf._class_weights(y)
    assert weights == pytest.approx({0: 4 / (2 * 3), 1: 4 / (2 * 1), 2: 0.0})


def test_training_shows_one_bar_and_an_epoch_table(data, cache, capsys):
    train, val = data[data.split == "train"], data[data.split == "val"]
    clf = XceptionClassifier(feature_cache=cache, **_params(fine_tune_epochs=0, epochs=3,
                                                            progress=True)).fit(train, val)
    err = capsys.readouterr().err
    assert "training phase1" in err and "Epoch 1/" not in err, "no Keras per-epoch log lines"
    table = epoch_table(clf.history_)
    assert list(table.index.names) == ["phase", "epoch"] and len(table) == len(clf.history_)


def test_pooled_cache_head_only(data):
    pooled = FeatureCache(image_size=SIZE, weights="none", unfreeze_blocks=0, batch_size=16,
                          progress=False)
    assert pooled.pooled and pooled.feature_shape == (2048,)
    train, val = data[data.split == "train"], data[data.split == "val"]
    clf = XceptionClassifier(feature_cache=pooled, **_params(unfreeze_blocks=0,
                                                             fine_tune_epochs=0)).fit(train, val)
    test = data[data.split == "test"]
    whole = clf.model_.predict(np.stack([load_rgb(f, SIZE) for f in test["file"]])
                               .astype("float32"), verbose=0)
    assert np.allclose(clf.predict_proba(test), whole, atol=1e-3)


def test_paper_protocol_scores(data, cache):
    result = paper_protocol_scores(data, feature_cache=cache, **_params())
    assert result["n_train"] + result["n_test"] == len(data)
    assert 0 <= result["top1"] <= result["top3"] <= 1
    assert result["near_duplicate_groups_split"] == 0, "the fixture's groups are singletons"


def test_openvino_engine_matches_the_tensorflow_trunk(data):
    pytest.importorskip("openvino", reason="the openvino package is not installed")
    files = list(data["file"].iloc[:6])
    ref = FeatureCache(SIZE, "none", 1, progress=False, seed=0)
    ov = FeatureCache(SIZE, "none", 1, progress=False, seed=0, engine="openvino")
    for target, source in zip(ov.backbone.weights, ref.backbone.weights, strict=True):
        target.assign(source)  # same random weights; "none" draws new ones per cache
    ov._start_engine("openvino", "float32")
    a, b = ref.features(files).astype("float32"), ov.features(files).astype("float32")
    assert ov.engine == "openvino"
    assert np.abs(a - b).max() <= 1e-2 * max(1.0, float(np.abs(a).max()))  # float16 storage
    # a batch is split across OpenVINO's streams: each photo's answer stays in its place
    pixels = np.stack([load_rgb(f, SIZE) for f in files])
    whole = ov.run_trunk(pixels)
    one_by_one = np.concatenate([ov.run_trunk(pixels[i:i + 1]) for i in range(len(files))])
    np.testing.assert_allclose(whole, one_by_one, rtol=0, atol=1e-4)


def test_distribute_strategy_choice():
    from lfhelpers.models.backbones import distribution_strategy

    assert type(distribution_strategy("default")).__name__ == "_DefaultDistributionStrategy"
    assert type(distribution_strategy("auto")).__name__ == "_DefaultDistributionStrategy"
    with pytest.raises(ConfigError, match="distribute"):
        distribution_strategy("tpu")


@pytest.mark.slow
def test_mirrored_training_on_two_cpu_devices(tmp_path):
    """Build and train under MirroredStrategy with two logical CPUs (in its own process)."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import numpy as np, pandas as pd
        from lfhelpers.data.fixtures import make_synthetic_dataset
        from lfhelpers.models.xception import XceptionClassifier
        root = {str(tmp_path)!r}
        make_synthetic_dataset(root, n_per_class=6, size=72, seed=1)
        import pathlib
        files = sorted(str(p) for p in pathlib.Path(root).glob("*/*.jpg"))
        df = pd.DataFrame({{"file": files, "label": [pathlib.Path(f).parent.name for f in files]}})
        clf = XceptionClassifier(image_size=71, weights="none", unfreeze_blocks=1, epochs=1,
                                 fine_tune_epochs=1, batch_size=8, distribute="mirrored",
                                 progress=False).fit(df, df)
        print("replicas", clf.strategy_.num_replicas_in_sync)
        print("proba", clf.predict_proba(df).shape)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "replicas 2" in done.stdout and "proba (" in done.stdout


def test_predict_expands_folders(fitted, data, tmp_path, capsys):
    model = fitted.save(tmp_path / "m.keras")[0]
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    sources = list(data[data.split == "test"]["file"].iloc[:2])
    for name, src in zip(["b.jpg", "sub/a.jpg"], sources, strict=True):
        (folder / name).write_bytes(Path(src).read_bytes())
    (folder / "notes.txt").write_text("not a photo")
    assert cli_main(["predict", "--model", str(model), str(folder)]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [e["path"] for e in lines] == [str(folder / "b.jpg"), str(folder / "sub" / "a.jpg")]
    assert all(len(e["top3"]) == 3 for e in lines)
    (tmp_path / "empty").mkdir()
    assert cli_main(["predict", "--model", str(model), str(tmp_path / "empty")]) == 1
    assert "no images found" in capsys.readouterr().err


def test_predict_messages_have_no_python_exception_names(fitted, tmp_path, capsys):
    model = fitted.save(tmp_path / "m.keras")[0]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"<html>not an image</html>")
    cli_main(["predict", "--model", str(model), str(bad), str(tmp_path / "missing.jpg")])
    out = capsys.readouterr().out
    for name in ("Error", "Exception", "Traceback", "UnidentifiedImage"):
        assert name not in out
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a zip")
    labels_path(junk).write_text('{"labels": ["a", "b"]}', encoding="utf-8")
    assert cli_main(["predict", "--model", str(junk), str(bad)]) == 2
    err = capsys.readouterr().err
    assert "not a readable Keras model" in err and "Error:" not in err


def test_predict_help_does_not_import_tensorflow():
    import subprocess
    import sys

    code = ("import sys\nfrom lfhelpers.cli import main\ntry:\n    main(['predict', '--help'])\n"
            "except SystemExit:\n    pass\nprint('tf' if 'tensorflow' in sys.modules else 'no tf')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert done.stdout.strip().endswith("no tf"), done.stdout + done.stderr


def test_phase_two_has_its_own_patience():
    import keras

    clf = XceptionClassifier(patience=4, fine_tune_patience=1, progress=False)
    stops = {phase: [c.patience for c in clf._callbacks(phase, True, 3)
                     if isinstance(c, keras.callbacks.EarlyStopping)]
             for phase in ("phase1", "phase2")}
    assert stops == {"phase1": [4], "phase2": [1]}
    assert XceptionClassifier(patience=4)._callbacks("phase2", True, 3)[0].patience == 4

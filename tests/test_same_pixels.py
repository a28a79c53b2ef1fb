"""One image path: training, evaluation, ``predict`` and the embeddings see the same array.

A photo with an EXIF rotation, transparency and an odd size goes through every loader; the
arrays each one hands to its network must be identical, and the classifier's probabilities
from notebook 03's evaluation path must equal ``predict``'s for the same photos.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lfhelpers.data.fixtures import make_synthetic_dataset
from lfhelpers.images import load_rgb
from lfhelpers.models.features import FeatureCache
from lfhelpers.models.predict import load_model, predict_files, predict_pixels
from lfhelpers.models.xception import XceptionClassifier
from lfhelpers.similarity.features.cnn import Embedder

SIZE = 71
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("pixels")
    make_synthetic_dataset(root / "set", n_per_class=6, size=90, seed=3)
    files = sorted(str(p) for p in (root / "set").glob("*/*.jpg"))
    df = pd.DataFrame({"file": files, "label": [p.split("/")[-2] for p in files]})
    odd = Image.new("RGBA", (157, 93), (10, 200, 30, 255))
    odd.paste((250, 10, 10, 0), (0, 0, 60, 93))  # a transparent band
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: displayed upright only after EXIF transpose
    odd_path = root / "odd.png"
    odd.save(odd_path, exif=exif)
    cache = FeatureCache(SIZE, "none", 1, batch_size=4, seed=0, progress=False)
    clf = XceptionClassifier(image_size=SIZE, weights="none", unfreeze_blocks=1, epochs=2,
                             fine_tune_epochs=1, batch_size=8, feature_cache=cache, seed=0,
                             progress=False).fit(df)
    model_path = clf.save(root / "m.keras")[0]
    return {"df": df, "odd": str(odd_path), "cache": cache, "clf": clf, "model": model_path}


def _record(calls: list):
    def wrap(fn):
        def inner(x, *args, **kwargs):
            calls.append(np.array(x))
            return fn(x, *args, **kwargs)
        return inner
    return wrap


def test_every_loader_gives_the_same_array(setup):
    photos = [setup["odd"], *setup["df"]["file"].iloc[:2]]
    expected = np.stack([load_rgb(p, SIZE) for p in photos]).astype(np.float32)

    cache_calls: list = []
    cache = setup["cache"]
    for photo in photos:  # computed again, to see what the trunk is fed
        cache._store.pop((photo, "orig"), None)
    original = cache.run_trunk
    cache.run_trunk = _record(cache_calls)(original)
    try:
        cache.compute(photos, "orig")
    finally:
        cache.run_trunk = original
    fed_cache = np.concatenate(cache_calls).astype(np.float32)

    model, labels, _ = load_model(setup["model"])
    predict_calls: list = []
    model.predict = _record(predict_calls)(model.predict)
    predict_files(model, labels, photos, batch_size=8)
    fed_predict = np.concatenate(predict_calls).astype(np.float32)

    embedder = Embedder(backbone="classifier", model_path=setup["model"], batch_size=8,
                        progress=False).fit()
    embed_calls: list = []
    embedder.model_.predict_on_batch = _record(embed_calls)(embedder.model_.predict_on_batch)
    embedder.extract(photos)
    fed_embed = np.concatenate(embed_calls)[:len(photos)].astype(np.float32)

    np.testing.assert_array_equal(fed_cache, expected)
    np.testing.assert_array_equal(fed_predict, expected)
    np.testing.assert_array_equal(fed_embed, expected)
    assert expected[0].shape == (SIZE, SIZE, 3)


def test_evaluation_probabilities_equal_predict(setup):
    df, clf = setup["df"], setup["clf"]
    photos = [setup["odd"], *df["file"]]
    notebook = clf.predict_proba(photos)
    model, labels, _ = load_model(setup["model"])
    assert labels == clf.classes_
    command = predict_pixels(model, photos, batch_size=5)
    np.testing.assert_allclose(notebook, command, atol=1e-5)
    entries = predict_files(model, labels, photos)
    for row, entry in zip(notebook, entries, strict=True):
        order = np.argsort(-row, kind="stable")[:3]
        assert [t["label"] for t in entry["top3"]] == [labels[i] for i in order]
        assert [t["prob"] for t in entry["top3"]] == pytest.approx(row[order], abs=1e-4)
    result = clf.evaluate(df)
    np.testing.assert_allclose(result["proba"], command[1:], atol=1e-5)

"""Tests of the retrieval post-processing (GeM, centering, PCA whitening, DBA, QE, k-reciprocal)."""

from __future__ import annotations

import numpy as np
import pytest

from lfhelpers.errors import ConfigError
from lfhelpers.similarity.evaluation.retrieval import retrieval_scores
from lfhelpers.similarity.features import pooling
from lfhelpers.similarity.search import postprocess as pp

ALL_STEPS = ["", "center", "pcaw", "dba", "aqe", "krr", "dba+aqe", "pcaw+dba+aqe",
             "center+dba+aqe"]


def noisy_classes(per: int = 15, classes: int = 8, d: int = 48, noise: float = 1.6,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), per).astype(str)
    centres = rng.standard_normal((classes, d))
    return (centres[labels.astype(int)] + noise * rng.standard_normal((len(labels), d)),
            labels)


def test_gem_between_average_and_max():
    maps = np.random.default_rng(0).random((2, 3, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(pooling.gem_pool(maps, 1.0), maps.mean(axis=(1, 2)), rtol=1e-5)
    gem = pooling.pool_maps(maps, "gem")
    assert (gem >= maps.mean(axis=(1, 2)) - 1e-6).all() and (gem <= maps.max(axis=(1, 2))).all()
    with pytest.raises(ConfigError):
        pooling.pool_maps(maps, "median")
    # tiny activations (a network with random weights) keep their differences: proportional
    tiny = maps * 1e-15
    np.testing.assert_allclose(pooling.gem_pool(tiny), 1e-15 * pooling.gem_pool(maps), rtol=1e-4)
    unit = pooling.gem_pool(tiny) / np.linalg.norm(pooling.gem_pool(tiny), axis=1, keepdims=True)
    assert not np.allclose(unit[0], unit[1], atol=1e-3)  # not all clamped to one vector


@pytest.mark.parametrize("steps", ALL_STEPS)
def test_leave_one_out_stays_honest(steps):
    # every photo alone in its class: no step may find a same-label photo
    x, _ = noisy_classes(per=1, classes=30)
    labels = np.arange(30).astype(str)
    summary, _ = retrieval_scores(x, labels, ks=(1,), postprocess=steps)
    assert summary["p_at_1"] == 0.0
    # duplicated photos in different classes: DBA without the query must not pull it back
    dup = np.vstack([x, x[:5] + 1e-3])
    dup_labels = np.r_[labels, [f"copy{i}" for i in range(5)]]
    summary, _ = retrieval_scores(dup, dup_labels, ks=(1,), postprocess=steps)
    assert summary["p_at_1"] == 0.0


def test_expansion_and_augmentation_help_on_noisy_classes():
    x, labels = noisy_classes()
    y, _ = noisy_classes(seed=0, noise=1.6)
    plain, _ = retrieval_scores(x, labels, ks=(5,))
    both, _ = retrieval_scores(x, labels, ks=(5,), postprocess="dba+aqe")
    assert both["map"] > plain["map"]
    test, _ = retrieval_scores(x, labels, y + 0.01, labels, ks=(5,), postprocess="dba+aqe")
    assert test["n_queries"] == len(y)


def test_whitening_gives_unit_vectors_and_steps_are_checked():
    x, _ = noisy_classes()
    white = pp.PCAWhitening(n_components=10).fit(x)
    z = white.transform(x[:5])
    assert z.shape == (5, 10)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)
    assert pp.parse_steps("aqe+pcaw") == ["pcaw", "aqe"]
    assert pp.parse_steps("none") == []
    with pytest.raises(ConfigError, match="Unknown"):
        pp.parse_steps("magic")


def test_centering_removes_what_every_photo_shares():
    # an offset common to all photos (ReLU features are all positive) hides the classes from
    # cosine similarity; subtracting the gallery mean gives the ranking of the classes back
    x, labels = noisy_classes()
    original, _ = retrieval_scores(x, labels, ks=(5,))
    plain, _ = retrieval_scores(x + 3.0, labels, ks=(5,))
    centred, _ = retrieval_scores(x + 3.0, labels, ks=(5,), postprocess="center")
    assert centred["p_at_5"] > plain["p_at_5"] + 0.05
    assert centred["p_at_5"] >= original["p_at_5"] - 0.01
    g, q = pp.center(x + 3.0, x[:3] + 3.0)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    assert abs(float(g.mean(axis=0).sum())) < abs(float((x + 3.0).mean(axis=0).sum())) / 100
    assert pp.parse_steps("aqe+center") == ["center", "aqe"]

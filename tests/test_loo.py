"""Tests of the exact leave-one-out of the texture classifier (similarity.evaluation.loo)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import LeaveOneOut, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lfhelpers.similarity.evaluation import loo
from lfhelpers.similarity.evaluation.loo import fast_path, leave_one_out_predict, loo_decisions
from lfhelpers.similarity.evaluation.texture import make_classifier


def _problem(seed: int = 0, per_class: int = 12, k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping classes, features on different scales, a few rows that set a feature's scale.

    Leaving out row 3, 10 or 20 changes the fold's ``StandardScaler`` a lot, so a fast path that
    did not refit the scaler per fold would give other decision values.
    """
    rng = np.random.default_rng(seed)
    labels = np.repeat([f"class {i}" for i in range(k)], per_class)
    centres = rng.normal(scale=1.2, size=(k, 6))
    features = centres[np.repeat(np.arange(k), per_class)] + rng.normal(size=(k * per_class, 6))
    features[:, 0] *= 50.0
    features[3, 1] += 25.0  # this row dominates feature 1's spread
    rare = np.zeros((k * per_class, 2))
    rare[10, 0], rare[20, 1] = 4.0, 0.5  # nonzero in one row only: constant in that row's fold
    return np.hstack([features, rare, np.zeros((k * per_class, 1))]), labels


def _tight(classifier):
    return clone(classifier).set_params(classifier__solver="newton-cg", classifier__tol=1e-12,
                                        classifier__max_iter=10_000)


def test_fast_leave_one_out_equals_cross_val_predict():
    features, labels = _problem()
    classifier = make_classifier(seed=0)
    assert fast_path(classifier)
    fast = leave_one_out_predict(classifier, features, labels)
    slow = cross_val_predict(classifier, features, labels, cv=LeaveOneOut())
    assert fast.dtype == slow.dtype
    assert 0.5 < np.mean(fast == labels) < 1.0  # not a trivial problem
    assert fast.tolist() == slow.tolist()
    tight = cross_val_predict(_tight(classifier), features, labels, cv=LeaveOneOut())
    assert fast.tolist() == tight.tolist()


@pytest.mark.parametrize("C", [1.0, 0.05])
def test_decision_values_are_each_folds_optimum(C):
    features, labels = _problem(seed=1)
    classifier = make_classifier(seed=0, C=C)
    classes, values = loo_decisions(classifier, features, labels)
    assert classes.tolist() == sorted(set(labels))
    for i in (0, 3, 10, 20, 47):  # ordinary rows and the rows that set a feature's scale
        keep = np.arange(len(labels)) != i
        fold = _tight(classifier).fit(features[keep], labels[keep])
        np.testing.assert_allclose(values[i], fold.decision_function(features[i:i + 1])[0],
                                   rtol=0, atol=1e-6)


def test_other_classifiers_go_through_cross_val_predict():
    features, labels = _problem(seed=2, per_class=6)
    others = [make_pipeline(StandardScaler(), KNeighborsClassifier(3)),
              make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced")),
              make_pipeline(StandardScaler(with_mean=False), LogisticRegression())]
    for classifier in others:
        assert not fast_path(classifier)
        assert loo_decisions(classifier, features, labels) is None
        np.testing.assert_array_equal(
            leave_one_out_predict(classifier, features, labels),
            cross_val_predict(classifier, features, labels, cv=LeaveOneOut()))
    two = np.isin(labels, ["class 0", "class 1"])  # binary: another loss, the generic path
    assert loo_decisions(make_classifier(0), features[two], labels[two]) is None
    np.testing.assert_array_equal(
        leave_one_out_predict(make_classifier(0), features[two], labels[two]),
        cross_val_predict(make_classifier(0), features[two], labels[two], cv=LeaveOneOut()))


def test_folds_that_do_not_converge_are_refit(monkeypatch, caplog):
    features, labels = _problem(seed=3, per_class=6)
    monkeypatch.setattr(loo, "MAX_PASSES", 1)
    with caplog.at_level("WARNING", logger=loo.__name__):
        fast = leave_one_out_predict(make_classifier(0), features, labels)
    assert caplog.text.count("did not converge") == len(labels)
    np.testing.assert_array_equal(
        fast, cross_val_predict(make_classifier(0), features, labels, cv=LeaveOneOut()))

"""Label issues: photos whose label the other photos' labels contradict.

Confident learning (Northcutt, Jiang and Chuang, JAIR 2021) on out-of-fold predicted
probabilities: a logistic regression on CNN embeddings (ImageNet Xception, or MobileNet, cached
on disk and shared with notebook 06) predicts every photo from a model trained on the other
folds; a photo is a finding when another class's probability reaches that class's own threshold
(the mean probability its labelled photos get) and wins. Implemented with scikit-learn and
NumPy; the result is ranked so the most certain findings come first.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from lfhelpers.errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: Columns of a finding (the rows of ``audit.csv``).
COLUMNS = ["path", "label", "issue", "score", "suggested_label", "probability",
           "given_probability", "detail", "source"]


def out_of_fold_proba(features: np.ndarray, labels: np.ndarray, *, n_splits: int = 5,
                      C: float = 1.0, seed: int = 0,
                      n_jobs: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Predicted class probabilities of each photo from a model that never saw it.

    A standardised logistic regression (balanced class weights, so a small class is not
    drowned) is trained on the other folds of a stratified ``n_splits``-fold split
    (``sklearn.model_selection.cross_val_predict``).

    Parameters
    ----------
    features : ndarray of shape (n, dim)
    labels : ndarray of shape (n,)
        Every class needs at least 2 photos (the caller leaves smaller classes out).
    n_splits, C, seed, n_jobs
        Folds (lowered to the smallest class size), inverse regularisation, fold seed, workers.

    Returns
    -------
    (proba, classes)
        ``proba[i, k]``: probability of ``classes[k]`` for photo ``i``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2 or counts.min() < 2:
        raise DataError("Out-of-fold probabilities need two classes of at least 2 photos.")
    folds = StratifiedKFold(n_splits=int(min(n_splits, counts.min())), shuffle=True,
                            random_state=seed)
    model = make_pipeline(StandardScaler(),
                          LogisticRegression(C=C, max_iter=2000, class_weight="balanced"))
    proba = cross_val_predict(model, features, labels, cv=folds, method="predict_proba",
                              n_jobs=n_jobs)
    return proba, classes


def confident_learning(labels: np.ndarray, proba: np.ndarray,
                       classes: np.ndarray) -> pd.DataFrame:
    """Label issues by confident learning with per-class thresholds.

    The threshold of class ``k`` is the mean predicted probability of ``k`` over the photos
    labelled ``k``. A photo's confident label is its most probable class among those whose
    probability reaches their threshold; a photo whose confident label differs from its given
    label is an issue.

    Parameters
    ----------
    labels : ndarray of shape (n,)
        Given labels (values of ``classes``).
    proba : ndarray of shape (n, n_classes)
        Out-of-fold probabilities.
    classes : ndarray of shape (n_classes,)

    Returns
    -------
    pandas.DataFrame
        ``index`` (row of the input), ``suggested_label``, ``probability`` (of the suggestion),
        ``given_probability``, ``score`` (``(1 + probability - given_probability) / 2``, higher
        = more certain), most certain first.
    """
    given = np.searchsorted(classes, labels)
    thresholds = np.array([proba[given == k, k].mean() if (given == k).any() else 1.0
                           for k in range(len(classes))])
    above = proba >= thresholds[None, :]
    masked = np.where(above, proba, -1.0)
    confident = masked.argmax(axis=1)
    has = above.any(axis=1)
    issue = has & (confident != given)
    idx = np.flatnonzero(issue)
    p_sugg = proba[idx, confident[idx]]
    p_given = proba[idx, given[idx]]
    frame = pd.DataFrame({"index": idx, "suggested_label": classes[confident[idx]],
                          "probability": p_sugg.round(4), "given_probability": p_given.round(4),
                          "score": ((1 + p_sugg - p_given) / 2).round(4)})
    return frame.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)


def choose_embedder(backbone: str = "auto", weights: str = "auto", *, image_size: int = 224,
                    model_path: str | os.PathLike[str] = "",
                    cache_dir: str | os.PathLike[str] | None = "data/cache",
                    progress: bool = True) -> tuple[object | None, str]:
    """The embedding network for the label part, or ``None`` and the reason it is skipped.

    ``backbone="auto"`` takes the fine-tuned classifier at ``model_path`` when that file
    exists, else ImageNet Xception, else MobileNet, each only when its weights are on this
    machine (``weights="auto"`` never downloads; ``weights="imagenet"`` may). ``"none"`` skips.

    Returns
    -------
    (embedder, note)
        A fitted :class:`lfhelpers.similarity.embeddings.Embedder` (or ``None``) and a sentence
        saying which one, or why none.
    """
    from lfhelpers.similarity import embeddings as emb

    name = str(backbone or "auto").lower()
    if name == "none":
        return None, "label issues skipped: backbone='none'"
    cache = Path(cache_dir) / "embeddings" if cache_dir else None
    if name in ("auto", emb.CLASSIFIER, "finetuned") and model_path and Path(model_path).is_file():
        embedder = emb.Embedder(emb.CLASSIFIER, model_path=model_path, cache_dir=cache,
                                progress=progress).fit()
        return embedder, f"fine-tuned classifier {Path(model_path).name} embeddings"
    candidates = ["xception", "mobilenet"] if name in ("auto", "finetuned") else [name]
    reasons = []
    for cand in candidates:
        try:
            resolved = emb.resolve_weights(cand, weights)
        except ConfigError as exc:
            reasons.append(str(exc))
            continue
        if resolved is None:
            reasons.append(f"{cand}: weights='none' gives random features, no label signal")
            continue
        if resolved == "imagenet" and str(weights).lower() != "imagenet":
            keras_home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
            local = keras_home / "models" / emb.backbone_spec(cand).weights_file
            if not local.is_file():
                reasons.append(f"no {cand} ImageNet weights on this machine (set "
                               f"{emb.backbone_spec(cand).weights_env} or put "
                               f"{emb.backbone_spec(cand).weights_file} in models/weights/)")
                continue
        embedder = emb.Embedder(cand, weights=weights, image_size=image_size, cache_dir=cache,
                                progress=progress).fit()
        return embedder, f"ImageNet {cand} embeddings, {embedder.image_size_} px"
    return None, "label issues skipped: " + "; ".join(reasons)


def label_issues(manifest: pd.DataFrame, embedder: object, *, n_splits: int = 5,
                 seed: int = 0, n_jobs: int = 1) -> tuple[pd.DataFrame, dict]:
    """Label-issue findings of a manifest's photos (see the module docstring).

    Classes with fewer than 2 photos cannot be cross-validated and are left out (logged).

    Returns
    -------
    (findings, seconds)
        Findings (columns of :data:`COLUMNS`) and the time of ``embeddings`` and ``labels``.
    """
    start = time.perf_counter()
    result = embedder.extract(list(manifest["file"]))
    t_embed = time.perf_counter() - start
    rows = manifest[result.ok].reset_index(drop=True)
    features = result.features
    counts = rows["label"].value_counts()
    small = counts[counts < 2].index.tolist()
    if small:
        log.warning("Label check leaves out class(es) with fewer than 2 photos: %s", small)
    keep = ~rows["label"].isin(small).to_numpy()
    rows, features = rows[keep].reset_index(drop=True), features[keep]
    if rows["label"].nunique() < 2:
        log.warning("Label check needs two classes of at least 2 photos; skipped.")
        return pd.DataFrame(columns=COLUMNS), {"embeddings": t_embed, "labels": 0.0}
    labels = rows["label"].to_numpy(dtype=object).astype(str)
    proba, classes = out_of_fold_proba(features, labels, n_splits=n_splits, seed=seed,
                                       n_jobs=n_jobs)
    found = confident_learning(labels, proba, classes)
    picked = rows.iloc[found["index"]].reset_index(drop=True)
    frame = pd.DataFrame({"path": picked["path"], "label": picked["label"],
                          "issue": "label_issue", "score": found["score"],
                          "suggested_label": found["suggested_label"],
                          "probability": found["probability"],
                          "given_probability": found["given_probability"],
                          "detail": [f"p({s})={p:.2f} vs p({g})={q:.2f}" for s, p, g, q in zip(
                              found["suggested_label"], found["probability"], picked["label"],
                              found["given_probability"], strict=True)],
                          "source": picked["source"]})
    return frame, {"embeddings": t_embed, "labels": time.perf_counter() - start - t_embed}

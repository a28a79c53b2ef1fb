"""Label issues: photos whose label the other photos' labels contradict.

Confident learning (Northcutt, Jiang and Chuang, JAIR 2021) on out-of-fold predicted
probabilities: a logistic regression on CNN embeddings (ImageNet Xception, or MobileNet, cached
on disk and shared with notebook 06) predicts every photo from a model trained on the other
folds; per-class thresholds (the mean probability a class's own photos get) give a confident
joint of given and likely-true labels, which estimates how many photos of each label belong to
each other class; that many photos with the largest margin are the findings (cleanlab's
default "prune by noise rate", reimplemented with NumPy and scikit-learn), ranked by how little
the other photos back their given label.
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
                      C: float = 0.01, seed: int = 0,
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
        Folds (lowered to the smallest class size), inverse regularisation (strong by default:
        calibrated probabilities matter more here than accuracy; on lostnet C=0.01 ranks
        flipped labels better than C=1), fold seed, workers.

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
    """Label issues by confident learning: per-class thresholds, then pruning by noise rate.

    1. The threshold of class ``k`` is the mean predicted probability of ``k`` over the photos
       labelled ``k``; a photo's confident label is its most probable class among those whose
       probability reaches their threshold. Counting (given, confident) pairs gives the
       confident joint.
    2. Each row of the joint is scaled to the number of photos with that given label; its
       off-diagonal cell ``(i, j)`` estimates how many photos labelled ``i`` are really ``j``.
    3. For each such cell, that many photos labelled ``i`` with the largest margin
       ``p(j) - p(i)`` are issues, with ``j`` as the suggested label.

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
        ``given_probability``, ``score`` (``1 - given_probability``: the less the other photos
        back the given label, the more certain the finding), most certain first.
    """
    proba = np.asarray(proba, dtype=np.float64)
    given = np.searchsorted(classes, labels)
    n_classes = len(classes)
    thresholds = np.array([proba[given == k, k].mean() if (given == k).any() else 1.0
                           for k in range(n_classes)])
    above = proba >= thresholds[None, :] - 1e-12
    confident = np.where(above, proba, -1.0).argmax(axis=1)
    has = above.any(axis=1)
    joint = np.zeros((n_classes, n_classes))
    np.add.at(joint, (given[has], confident[has]), 1.0)
    per_given = np.bincount(given, minlength=n_classes).astype(np.float64)
    rows = joint.sum(axis=1, keepdims=True)
    calibrated = np.divide(joint, rows, out=np.zeros_like(joint), where=rows > 0) * per_given[
        :, None]
    chosen: dict[int, int] = {}
    for i in range(n_classes):
        members = np.flatnonzero(given == i)
        for j in range(n_classes):
            count = int(round(calibrated[i, j])) if i != j else 0
            if count == 0 or members.size == 0:
                continue
            margin = proba[members, j] - proba[members, i]
            for m in members[np.argsort(-margin, kind="stable")[:count]]:
                if m not in chosen or proba[m, j] > proba[m, chosen[m]]:
                    chosen[int(m)] = j
    idx = np.array(sorted(chosen), dtype=int)
    sugg = np.array([chosen[i] for i in idx], dtype=int)
    p_sugg = proba[idx, sugg] if idx.size else np.empty(0)
    p_given = proba[idx, given[idx]] if idx.size else np.empty(0)
    frame = pd.DataFrame({"index": idx, "suggested_label": classes[sugg] if idx.size else [],
                          "probability": np.round(p_sugg, 4),
                          "given_probability": np.round(p_given, 4),
                          "score": np.round(1.0 - p_given, 4)})
    return frame.sort_values(["score", "probability"], ascending=False,
                             kind="stable").reset_index(drop=True)


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
        A fitted :class:`lfhelpers.similarity.features.cnn.Embedder` (or ``None``) and a sentence
        saying which one, or why none.
    """
    from lfhelpers.models import backbones as bb
    from lfhelpers.similarity.features import cnn as emb

    name = str(backbone or "auto").lower()
    if name == "none":
        return None, "label issues skipped: backbone='none'"
    cache = cache_dir or None  # vectors in <cache_dir>/embeddings, trunk activations in trunk/
    if name in ("auto", bb.CLASSIFIER, "finetuned") and model_path and Path(model_path).is_file():
        embedder = emb.Embedder(bb.CLASSIFIER, model_path=model_path, cache_dir=cache,
                                progress=progress).fit()
        return embedder, f"fine-tuned classifier {Path(model_path).name} embeddings"
    candidates = ["xception", "mobilenet"] if name in ("auto", "finetuned") else [name]
    reasons = []
    for cand in candidates:
        try:
            resolved = bb.resolve_weights(cand, weights)
        except ConfigError as exc:
            reasons.append(str(exc))
            continue
        if resolved is None:
            reasons.append(f"{cand}: weights='none' gives random features, no label signal")
            continue
        if resolved == "imagenet" and str(weights).lower() != "imagenet":
            keras_home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
            local = keras_home / "models" / bb.backbone_spec(cand).weights_file
            if not local.is_file():
                reasons.append(f"no {cand} ImageNet weights on this machine (set "
                               f"{bb.backbone_spec(cand).weights_env} or put "
                               f"{bb.backbone_spec(cand).weights_file} in models/weights/)")
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

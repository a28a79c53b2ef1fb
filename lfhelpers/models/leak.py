"""What a test score means: augmented copies kept out of validation and test, the augmentation
leak of the CNN tutorial, and the LostNet paper's protocol beside this project's.

* :func:`augmented_training_set`: the training rows of the "with augmentation" run (notebook 02's
  copies of training images only);
* :func:`augmentation_leak_demo`: the same model scored after *augment, then split* (copies of a
  test image in training) and after *split, then augment*;
* :func:`paper_protocol_scores`: the same model scored under the LostNet paper's protocol (a
  random 80/20 split without near-duplicate grouping, the test part also used for early
  stopping) and under this project's split, on cached features, so that a comparison with the
  paper's figure is like for like.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.model_selection import train_test_split

from lfhelpers.models.features import FeatureCache
from lfhelpers.models.xception import XceptionClassifier

#: The leak demonstration's heading and explanation (shown by notebook 03 only when it runs).
LEAK_DEMO_INTRO = """\
## Why not augment before splitting? (Caltech 101, five classes)

The CNN tutorial reported 0.87 test accuracy for a small CNN on five Caltech 101 categories, and
0.993 after adding rotated and flipped copies of every image **before** the train/test split.
Copies of a test image then sit in the training set, so the test partly measures memory. Here
the same model (head only, for speed) is trained on the same copies under both protocols:
*augment, then split* (the tutorial's) and *split, then augment* (this project's: the manifest's
split, copies of training images only, original test images). The column
`test_with_copy_in_train` says how many test images had themselves (flipped or rotated) in
training.
"""


def augmented_training_set(
    clean_dir: str | os.PathLike[str],
    train: pd.DataFrame,
    aug_dir: str | os.PathLike[str] | None = "",
    online_views: int = 0,
) -> tuple[pd.DataFrame | None, int, str]:
    """The training rows of the "with augmentation" run, and a sentence saying what they are.

    Parameters
    ----------
    clean_dir : path-like
        The clean data set (its manifest).
    train : pandas.DataFrame
        The plain training rows (possibly capped per class).
    aug_dir : path-like, optional
        Output folder of notebook 02 (:func:`lfhelpers.augment.balance_train`). Empty: its
        default place (:func:`lfhelpers.augment.default_aug_dir`); ``"none"``: do not look.
    online_views : int
        When there is no augmented folder: random augmented copies per training image made
        with Keras preprocessing layers (``XceptionClassifier(augment_views=...)``); 0 skips
        the comparison.

    Returns
    -------
    rows : pandas.DataFrame or None
        ``train`` plus the augmented images made from its rows, or ``train`` itself when
        augmenting online, or ``None`` when there is nothing to compare.
    augment_views : int
        The ``augment_views`` to give the classifier.
    note : str
        What was done, for the notebook to print.

    Raises
    ------
    DataError
        When the augmented folder holds copies of validation or test images.
    """
    from lfhelpers.augment import default_aug_dir, train_with_augmented
    from lfhelpers.data import manifest_path

    value = "" if aug_dir is None else os.fspath(aug_dir).strip()
    folder = None if value.lower() == "none" else Path(value) if value \
        else default_aug_dir(clean_dir)
    if folder is not None and manifest_path(folder).is_file():
        both = train_with_augmented(clean_dir, folder)
        extra = both[both["augmented"].astype(bool) & both["origin"].isin(set(train["path"]))]
        rows = pd.concat([train, extra], ignore_index=True)
        return rows, 0, (f"Using {len(extra)} augmented train images from {folder} "
                         f"({len(rows)} training images in all).")
    where = "no augmented folder asked for" if folder is None \
        else f"no augmented images at {folder} (run notebook 02 first)"
    if online_views > 0:
        return train, int(online_views), (
            f"{where}: augmenting online instead with Keras preprocessing layers, "
            f"{online_views} random cop{'y' if online_views == 1 else 'ies'} per training image.")
    return None, 0, f"{where}, and online_views is 0: the with-augmentation run is skipped."


def _cache_for(params: dict[str, Any], feature_cache: FeatureCache | None) -> FeatureCache:
    if feature_cache is not None:
        return feature_cache
    return FeatureCache(params.get("image_size", 299), params.get("weights"),
                        params.get("unfreeze_blocks", 2), batch_size=params.get("batch_size", 32),
                        seed=int(params.get("seed", 0)))


def augmentation_leak_demo(
    df: pd.DataFrame,
    views: Sequence[str] = ("orig", "fliplr", "rot90", "rot270"),
    test_size: float = 0.2,
    feature_cache: FeatureCache | None = None,
    **params: Any,
) -> pd.DataFrame:
    """Show that augmenting before the train/test split inflates the test score.

    Two protocols, the same model (``params`` for :class:`XceptionClassifier`), the same
    augmented copies (fixed rotations and flips, ``views``):

    - *augment, then split* (the CNN tutorial's): every image and its copies go into one pool,
      which is split at random; copies of a test image usually land in the training set;
    - *split, then augment* (this project's): the manifest's train/val/test split, which keeps
      near-duplicates together; only training images get copies, the test images are originals.

    Parameters
    ----------
    df : pandas.DataFrame
        A manifest with ``file``, ``label``, ``split`` and ``group``.
    views : sequence of str
        Views of :data:`lfhelpers.models.features.FIXED_VIEWS` (``"orig"`` first).
    test_size : float
        Test share of the *augment, then split* pool.
    feature_cache : FeatureCache, optional
        Shared trunk cache (must match ``params``).
    **params
        Passed to :class:`XceptionClassifier` (``flip_tta`` is turned off); its ``seed`` also
        seeds the random split.

    Returns
    -------
    pandas.DataFrame
        One row per protocol: training and test images, the share of test images whose
        original (or a copy of it) was trained on, and the test top-1 and top-3.
    """
    views = list(views)
    seed = int(params.get("seed", 0))
    params = {**params, "flip_tta": False}  # test images are copies here: no test-time flips
    usable = df[df["split"].isin(["train", "val", "test"])].reset_index(drop=True)

    def expand(rows: pd.DataFrame) -> pd.DataFrame:
        return pd.concat([rows.assign(view=v) for v in views], ignore_index=True)

    pool = expand(usable)
    train_pool, test_leak = train_test_split(pool, test_size=test_size, random_state=seed,
                                             stratify=pool["label"])
    train_leak, val_leak = train_test_split(train_pool, test_size=0.1, random_state=seed,
                                            stratify=train_pool["label"])
    honest_train = expand(usable[usable["split"] == "train"])
    honest_val = usable[usable["split"] == "val"].assign(view="orig")
    honest_test = usable[usable["split"] == "test"].assign(view="orig")
    cache = _cache_for(params, feature_cache)
    rows = []
    for name, tr, va, te in (("augment, then split (tutorial)", train_leak, val_leak, test_leak),
                             ("split, then augment (this project)", honest_train, honest_val,
                              honest_test)):
        clf = XceptionClassifier(feature_cache=cache, **params).fit(tr, va)
        score = clf.evaluate(te)
        seen = set(tr["file"])
        rows.append({"protocol": name, "train_images": len(tr), "test_images": len(te),
                     "test_with_copy_in_train": round(float(te["file"].isin(seen).mean()), 3),
                     "test_top1": round(score["top1"], 4), "test_top3": round(score["top3"], 4)})
    return pd.DataFrame(rows).set_index("protocol")


def paper_protocol_scores(
    df: pd.DataFrame,
    test_size: float = 0.2,
    feature_cache: FeatureCache | None = None,
    **params: Any,
) -> dict[str, Any]:
    """The same model under the LostNet paper's protocol: a random split, test as validation.

    The paper (Zhou et al. 2024) split its photos 80/20 at random, without keeping
    near-duplicates together, and chose the model on the test part. Here the head is trained
    again on the cached features of such a split (``seed`` seeds it), early-stopped on that test
    part, and scored on it.

    Parameters
    ----------
    df : pandas.DataFrame
        A manifest with ``file``, ``label`` and ``split`` (all three splits are pooled).
    test_size : float
        Test share.
    feature_cache : FeatureCache, optional
        Shared trunk cache (must match ``params``).
    **params
        Passed to :class:`XceptionClassifier` (``fine_tune_epochs`` is set to 0: head only).

    Returns
    -------
    dict
        The test scores (see :meth:`XceptionClassifier.evaluate`, without ``proba``) plus
        ``n_train``, ``n_test`` and ``near_duplicate_groups_split``: how many groups of
        near-duplicates have photos on both sides.
    """
    seed = int(params.get("seed", 0))
    usable = df[df["split"].isin(["train", "val", "test"])].reset_index(drop=True)
    train, test = train_test_split(usable, test_size=test_size, random_state=seed,
                                   stratify=usable["label"])
    cache = _cache_for(params, feature_cache)
    clf = XceptionClassifier(feature_cache=cache, **{**params, "fine_tune_epochs": 0,
                                                     "progress": False}).fit(train, test)
    result = {k: v for k, v in clf.evaluate(test).items() if k != "proba"}
    split_groups = (set(train["group"]) & set(test["group"])) if "group" in usable else set()
    big = usable.groupby("group")["file"].transform("size") > 1 if "group" in usable else None
    multi = set(usable.loc[big, "group"]) if big is not None else set()
    return {**result, "n_train": len(train), "n_test": len(test),
            "near_duplicate_groups_split": len(split_groups & multi)}

"""What a test score means: augmented copies kept out of validation and test, the augmentation
leak of the CNN tutorial, and the LostNet paper's protocol beside this project's.

* :func:`augmented_training_set`: the training rows of the "with augmentation" run (notebook 02's
  copies of training images only);
* :func:`tutorial_leak_demo`: the CNN tutorial's own small CNN (64 px, its rotated and mirrored
  copies) scored after *augment, then split* (copies of a test image in training) and after
  *split, then augment*, in under a minute on two CPU cores; :func:`leak_lesson` says what the
  gap means in one sentence;
* :func:`augmentation_leak_demo`: the same comparison with the Xception classifier (a GPU's
  work: four trunk passes of every photo);
* :func:`paper_protocol_scores`: the same model scored under the LostNet paper's protocol (a
  random 80/20 split without near-duplicate grouping, the test part also used for early
  stopping) and under this project's split, on cached features, so that a comparison with the
  paper's figure is like for like.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from lfhelpers.errors import ConfigError, DataError
from lfhelpers.models.features import FeatureCache
from lfhelpers.models.xception import XceptionClassifier
from lfhelpers.store import kept_results

#: The leak demonstration's heading and explanation (shown by notebook 03 only when it runs).
LEAK_DEMO_INTRO = """\
## Why not augment before splitting? (Caltech 101, five classes)

The CNN tutorial trained a small CNN (two convolution blocks of 32 and 64 filters, a dense layer
of 512, dropout, softmax; 64 × 64 px) on five Caltech 101 categories and reported **0.87** test
accuracy; after adding rotated and mirrored copies of every image (−20° to 15° in steps of 5°,
each also mirrored) **before** the train/test split it reported **0.993**. Copies of a test image
then sit in the training set, so the test partly measures memory. Here the tutorial's model is
trained on the same copies under both orders: *augment, then split* (the tutorial's) and *split,
then augment* (this project's: the manifest's split, near-duplicates kept on one side, copies of
training photos only, original test photos). `test_with_copy_in_train` counts the test images
that had themselves, rotated or mirrored, in training.
"""

#: The CNN tutorial's copies: rotations from -20 to 15 degrees in steps of 5, each also mirrored.
TUTORIAL_ANGLES: tuple[int, ...] = tuple(range(-20, 16, 5))
#: Test accuracies the CNN tutorial reported on its five Caltech 101 categories.
TUTORIAL_REPORTED: dict[str, float] = {"no copies": 0.87, "augment, then split": 0.993}
#: Row names of :func:`tutorial_leak_demo`'s table.
LEAKY_ORDER = "augment, then split (the tutorial's)"
HONEST_ORDER = "split, then augment (this project's)"


def tutorial_copies(pixels: np.ndarray, angles: Sequence[float] = TUTORIAL_ANGLES,
                    mirror: bool = True) -> np.ndarray:
    """The CNN tutorial's copies of one image: each rotation, and the mirror image of each.

    Parameters
    ----------
    pixels : numpy.ndarray
        ``(h, w, 3)`` ``uint8`` image.
    angles : sequence of float
        Rotations in degrees (anticlockwise, about the centre, same size, black corners); 0 is
        the image itself.
    mirror : bool
        Also add the left-right mirror image of every rotation.

    Returns
    -------
    numpy.ndarray
        ``(len(angles) * (1 + mirror), h, w, 3)`` ``uint8``: rotation by rotation, each followed
        by its mirror image.
    """
    from PIL import Image

    image = Image.fromarray(np.asarray(pixels, dtype=np.uint8))
    out = []
    for angle in angles:
        turned = np.asarray(image.rotate(float(angle), resample=Image.Resampling.BILINEAR))
        out.append(turned)
        if mirror:
            out.append(turned[:, ::-1])
    return np.ascontiguousarray(np.stack(out))


def cpu_has_bfloat16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AMX or AVX-512 BF16; Linux only)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def tutorial_cnn(n_classes: int, image_size: int = 64, learning_rate: float = 1e-3,
                 precision: str = "auto") -> Any:
    """The CNN tutorial's model, compiled: two conv blocks (32, 64), dense 512, dropout, softmax.

    Parameters
    ----------
    n_classes : int
        Outputs of the softmax layer.
    image_size : int
        Input side in pixels (raw ``uint8`` RGB in; rescaled to 0-1 inside the model).
    learning_rate : float
        Adam's learning rate.
    precision : {"auto", "float32", "bfloat16"}
        ``"bfloat16"`` computes the layers in bfloat16 (the softmax stays float32), about 2.5
        times faster on CPUs with AMX; ``"auto"``: bfloat16 where the CPU has it.

    Returns
    -------
    keras.Sequential
    """
    import keras
    from keras import layers

    if precision not in ("auto", "float32", "bfloat16"):
        raise ConfigError(f"precision must be 'auto', 'float32' or 'bfloat16', not {precision!r}.")
    fast = precision == "bfloat16" or (precision == "auto" and cpu_has_bfloat16())
    dtype = keras.DTypePolicy("mixed_bfloat16" if fast else "float32")
    model = keras.Sequential([
        keras.Input((image_size, image_size, 3)),
        layers.Rescaling(1 / 255, dtype=dtype),
        layers.Conv2D(32, 3, activation="relu", dtype=dtype),
        layers.MaxPooling2D(dtype=dtype),
        layers.Conv2D(64, 3, activation="relu", dtype=dtype),
        layers.MaxPooling2D(dtype=dtype),
        layers.Flatten(dtype=dtype),
        layers.Dense(512, activation="relu", dtype=dtype),
        layers.Dropout(0.5, dtype=dtype),
        layers.Dense(n_classes, activation="softmax", dtype="float32"),
    ], name="tutorial_cnn")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _keys(rows: pd.DataFrame) -> pd.Series:
    """What makes two rows the same photo: its near-duplicate group, else its file."""
    return rows["group"].astype(str) if "group" in rows else rows["file"].astype(str)


def tutorial_leak_demo(
    df: pd.DataFrame,
    image_size: int = 64,
    angles: Sequence[float] = TUTORIAL_ANGLES,
    mirror: bool = True,
    epochs: int = 3,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    test_size: float = 0.2,
    precision: str = "auto",
    seed: int = 0,
    progress: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
) -> pd.DataFrame:
    """The CNN tutorial's leak measured with its own model, under both orders of split and copies.

    Every photo is loaded once at ``image_size`` and expanded into the tutorial's copies
    (:func:`tutorial_copies`). Then, with the same seeded initial weights, epochs and batches:

    - *augment, then split* (the tutorial's): all copies of all photos go into one pool, split
      ``1 - test_size`` / ``test_size`` at random (stratified); copies of a test image land in
      training;
    - *split, then augment* (this project's): the manifest's split (near-duplicates on one
      side); the train and validation photos and their copies train, the original test photos
      are scored.

    Parameters
    ----------
    df : pandas.DataFrame
        A manifest with ``file``, ``label``, ``split`` (and ``group``: near-duplicates).
    image_size : int
        Side in pixels (the tutorial's 64).
    angles, mirror
        The copies (see :func:`tutorial_copies`).
    epochs, batch_size, learning_rate
        Training of :func:`tutorial_cnn` (Adam), the same for both orders.
    test_size : float
        Test share of the *augment, then split* pool.
    precision : str
        See :func:`tutorial_cnn`.
    seed : int
        Seeds the split, the initial weights and the shuffles.
    progress : bool
        One line per epoch.
    cache_dir : path-like, optional
        The result is kept in ``<cache_dir>/leak_demo`` (:func:`lfhelpers.store.kept_results`,
        by the manifest with its photos' digests, the settings and this module's code): notebook
        03 rerun for new item photos does not train the demo's two CNNs again. The table then
        reports the seconds of the run that made it.

    Returns
    -------
    pandas.DataFrame
        One row per order (index ``order``): ``train_images``, ``test_images``,
        ``test_with_copy_in_train`` (test images whose photo, or a near-duplicate of it, was
        trained on in some copy), ``test_accuracy``, ``tutorial_reported`` (its figure for that
        setting: 0.993 after augmenting first, 0.87 without copies) and ``seconds`` (training
        and scoring). ``attrs`` holds ``copies_per_photo``, ``load_seconds`` and ``seconds`` (the
        whole demo).
    """
    settings = dict(image_size=image_size, angles=tuple(angles), mirror=mirror, epochs=epochs,
                    batch_size=batch_size, learning_rate=learning_rate, test_size=test_size,
                    precision=precision, seed=seed)
    run = kept_results(cache_dir, "leak_demo", sys.modules[__name__]).cache(
        _tutorial_leak_demo, ignore=["progress"])
    return run(df, **settings, progress=progress)


def _tutorial_leak_demo(df: pd.DataFrame, image_size: int, angles: Sequence[float],
                        mirror: bool, epochs: int, batch_size: int, learning_rate: float,
                        test_size: float, precision: str, seed: int,
                        progress: bool) -> pd.DataFrame:
    """:func:`tutorial_leak_demo` without the kept result."""
    import keras
    from tqdm import tqdm

    from lfhelpers.images import load_rgb
    from lfhelpers.models.backbones import array_batches, quiet_tensorflow, set_seed

    started = time.perf_counter()
    quiet_tensorflow()
    usable = df[df["split"].isin(["train", "val", "test"])].reset_index(drop=True)
    if usable.empty:
        raise DataError("The leak demo needs a manifest with train, val and test photos.")
    classes = sorted(usable["label"].astype(str).unique())
    originals = np.stack([load_rgb(f, image_size) for f in tqdm(
        usable["file"], desc="photos", unit="photo", disable=not progress)])
    copies = np.stack([tutorial_copies(x, angles, mirror) for x in originals])
    per_photo = copies.shape[1]
    load_seconds = time.perf_counter() - started
    y_photo = np.searchsorted(classes, usable["label"].astype(str).to_numpy())
    keys = _keys(usable).to_numpy()

    # each order's training and test images as (photo, copy) pairs; copy -1 is the original
    pool = np.array([(i, c) for i in range(len(usable)) for c in range(per_photo)])
    leaky_train, leaky_test = train_test_split(pool, test_size=test_size, random_state=seed,
                                               stratify=y_photo[pool[:, 0]])
    honest = usable["split"].isin(["train", "val"]).to_numpy()
    honest_train = np.array([(i, c) for i in np.flatnonzero(honest) for c in range(per_photo)])
    honest_test = np.array([(i, -1) for i in np.flatnonzero(~honest)])

    def images(pairs: np.ndarray) -> np.ndarray:
        if (pairs[:, 1] < 0).all():
            return originals[pairs[:, 0]]
        return copies[pairs[:, 0], pairs[:, 1]]

    rows = []
    for order, train, test, reported in (
            (LEAKY_ORDER, leaky_train, leaky_test, TUTORIAL_REPORTED["augment, then split"]),
            (HONEST_ORDER, honest_train, honest_test, TUTORIAL_REPORTED["no copies"])):
        t0 = time.perf_counter()
        set_seed(seed)  # the same initial weights and shuffles for both orders
        model = tutorial_cnn(len(classes), image_size, learning_rate, precision)
        model.fit(array_batches(images(train), y_photo[train[:, 0]], batch_size, seed),
                  epochs=epochs, shuffle=False, verbose=2 if progress else 0)  # shuffled there
        predicted = model.predict(images(test), batch_size=256, verbose=0).argmax(axis=1)
        seen = set(keys[train[:, 0]])
        rows.append({"order": order, "train_images": len(train), "test_images": len(test),
                     "test_with_copy_in_train": int(sum(k in seen for k in keys[test[:, 0]])),
                     "test_accuracy": round(float((predicted == y_photo[test[:, 0]]).mean()), 4),
                     "tutorial_reported": reported,
                     "seconds": round(time.perf_counter() - t0, 1)})
        keras.backend.clear_session()
    table = pd.DataFrame(rows).set_index("order")
    table.attrs.update(copies_per_photo=per_photo, load_seconds=round(load_seconds, 1),
                       seconds=round(time.perf_counter() - started, 1))
    return table


def leak_lesson(table: pd.DataFrame) -> str:
    """The leak demo's lesson in one sentence, with the measured figures.

    Parameters
    ----------
    table : pandas.DataFrame
        :func:`tutorial_leak_demo`'s table.

    Returns
    -------
    str
        Markdown.
    """
    leaky, honest = table.loc[LEAKY_ORDER], table.loc[HONEST_ORDER]
    gap = leaky["test_accuracy"] - honest["test_accuracy"]
    copied, tested = int(leaky["test_with_copy_in_train"]), int(leaky["test_images"])
    return (f"**The same model scores {leaky['test_accuracy']:.3f} when {copied:,} of its "
            f"{tested:,} test images had a rotated or mirrored copy of themselves in training, "
            f"and {honest['test_accuracy']:.3f} on photos it never saw in any form: the "
            f"{gap:.3f} between the two is memory, not skill, which is why this project splits "
            f"first and augments the training photos only.**")


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

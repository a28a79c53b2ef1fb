"""Seeded, stratified train/val/test split that keeps near-duplicate groups together.

A split is stable under additions: given the ``previous`` manifest of the same clean set (made
with the same split settings), every photo it split keeps its split, and only new photos are
assigned (see :func:`split_manifest`). Adding photos therefore never moves a training photo into
the test set, and what was trained on stays comparable.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold

from lfhelpers.data.sampling import seeded_digest
from lfhelpers.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def _first_fold(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the first fold of a stratified group k-fold with k = round(1/fraction)."""
    n_splits = round(1 / fraction)
    if n_splits < 2:
        raise ConfigError(f"Split fraction {fraction} is too large; use at most 0.5.")
    mask = np.zeros(len(labels), dtype=bool)
    if len(np.unique(groups)) < 2:
        return mask
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")
        try:
            _, held = next(splitter.split(np.zeros(len(labels)), labels, groups))
        except ValueError:
            # every class has fewer than n_splits members: hold out the same fraction of
            # groups without per-class stratification (small sets, e.g. 10 photos per class)
            log.warning("Classes too small for a stratified 1/%d fold; holding out %.0f%% of "
                        "the groups at random instead.", n_splits, 100 * fraction)
            shuffler = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
            try:
                _, held = next(shuffler.split(np.zeros(len(labels)), labels, groups))
            except ValueError as exc:
                raise DataError(
                    f"Too few images to hold out 1/{n_splits} ({exc}). Add images or raise "
                    "min_per_class."
                ) from None
    mask[held] = True
    return mask


def split_manifest(
    manifest: pd.DataFrame,
    seed: int = 42,
    test_size: float = 0.2,
    val_size: float = 0.1,
    min_per_class: int = 10,
    on_small_class: str = "exclude",
    previous: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Fill the ``split`` column: stratified train/test, then train/val, seeded.

    The tutorial's ratios are the defaults: test 2/10 of everything, then val 1/10 of the rest.
    Rows sharing a ``group`` (near duplicates) always land in the same split. Fractions are used
    as ``1/k`` folds of :class:`sklearn.model_selection.StratifiedGroupKFold`.

    Parameters
    ----------
    manifest : pandas.DataFrame
        Rows with ``label`` and ``group`` columns, in a stable order.
    seed : int
        Random seed; the same seed and manifest give the same split.
    test_size, val_size : float
        Fractions held out for test (of all) and validation (of the rest).
    min_per_class : int
        Classes with fewer clean images are not split.
    on_small_class : {"exclude", "error"}
        ``"exclude"`` marks such classes ``excluded`` with a warning; ``"error"`` raises.
    previous : pandas.DataFrame, optional
        An earlier split of the same set with the same settings (rows with ``sha256`` or
        ``path``, and ``split``). Its photos keep their split; a near-duplicate group that holds
        some of them takes theirs (the held-out one, test before val before train, if they
        disagree); other new photos of a class split before go to test, val or train by a seeded
        hash of their content, in the same proportions; a class with no photo split before is
        split as a whole, as without ``previous``.

    Returns
    -------
    pandas.DataFrame
        A copy with ``split`` in ``train``, ``val``, ``test`` or ``excluded``.

    Raises
    ------
    DataError
        When a class is too small and ``on_small_class="error"``, or nothing is left to split.
    """
    if on_small_class not in ("exclude", "error"):
        raise ConfigError("on_small_class must be 'exclude' or 'error'.")
    out = manifest.copy()
    out["split"] = "excluded"
    counts = out["label"].value_counts()
    small = sorted(counts[counts < min_per_class].index)
    if small:
        detail = ", ".join(f"{lab!r} ({counts[lab]})" for lab in small)
        if on_small_class == "error":
            raise DataError(f"Classes with fewer than {min_per_class} clean images: {detail}. "
                            "Add images, merge them with a label map, or lower min_per_class.")
        log.warning("Excluded from the split (fewer than %d clean images): %s", min_per_class,
                    detail)
    usable = ~out["label"].isin(small)
    if usable.sum() == 0:
        raise DataError(f"No class has at least {min_per_class} clean images to split.")
    idx = np.flatnonzero(usable.to_numpy())
    if previous is not None:
        kept = _previous_splits(out, previous)
        if kept.notna().any():
            return _extend_split(out, kept, usable.to_numpy(), seed, test_size, val_size)
    labels = out["label"].to_numpy()[idx]
    groups = out["group"].to_numpy()[idx]
    test = _first_fold(labels, groups, test_size, seed)
    if not test.any():
        raise DataError(f"Too few images ({len(idx)}) to hold out a test split; add images or "
                        "lower min_per_class.")
    rest = idx[~test]
    val = _first_fold(labels[~test], groups[~test], val_size, seed)
    if not val.any():
        log.warning("No validation images: too few images left after the test split.")
    split = np.array(["train"] * len(out), dtype=object)
    split[~usable.to_numpy()] = "excluded"
    split[idx[test]] = "test"
    split[rest[val]] = "val"
    out["split"] = split
    return out


#: When two earlier splits meet in one near-duplicate group, the held-out one wins.
_PRECEDENCE = ("test", "val", "train")


def _previous_splits(manifest: pd.DataFrame, previous: pd.DataFrame) -> pd.Series:
    """The earlier split of each row (by content digest, else by path); NaN for new photos."""
    key = "sha256" if "sha256" in manifest.columns and "sha256" in previous.columns else "path"
    earlier = previous[previous["split"].isin(_PRECEDENCE)].drop_duplicates(key)
    return manifest[key].map(earlier.set_index(key)["split"])


def _hash_fraction(text: str, seed: int) -> float:
    """A uniform number in [0, 1) drawn from ``text`` and ``seed`` (the same on every run)."""
    return int(seeded_digest(text, seed)[:16], 16) / 2**64


def _extend_split(out: pd.DataFrame, kept: pd.Series, usable: np.ndarray, seed: int,
                  test_size: float, val_size: float) -> pd.DataFrame:
    """Keep the earlier splits and assign the new photos (see :func:`split_manifest`)."""
    split = np.where(usable, None, "excluded").astype(object)
    key = out["sha256"] if "sha256" in out.columns else out["path"]
    fresh_classes = []
    moved = 0
    for label, rows in out[usable].groupby("label", sort=True):
        if kept.loc[rows.index].isna().all():
            fresh_classes.append(label)  # nothing split before: split the class as a whole
            continue
        for _, members in rows.groupby("group", sort=False):
            known = kept.loc[members.index].dropna()
            if len(known):
                chosen = next(s for s in _PRECEDENCE if s in set(known))
                moved += int((known != chosen).sum())
            else:
                u = _hash_fraction(str(key.loc[members.index].min()), seed)
                chosen = ("test" if u < test_size
                          else "val" if u < test_size + (1 - test_size) * val_size else "train")
            split[out.index.get_indexer(members.index)] = chosen
    if moved:
        log.warning("%d photo(s) changed split: a new near duplicate joined photos of two splits "
                    "(the held-out split was kept for the whole group).", moved)
    if fresh_classes:
        rows = out["label"].isin(fresh_classes).to_numpy() & usable
        part = split_manifest(out[rows], seed=seed, test_size=test_size, val_size=val_size,
                              min_per_class=1)
        split[rows] = part["split"].to_numpy()
    n_new = int((kept.isna() & usable).sum())
    if n_new:
        log.info("Kept the earlier split of %d photo(s); assigned %d new one(s).",
                 int(kept.notna().sum()), n_new)
    result = out.copy()
    result["split"] = split
    return result

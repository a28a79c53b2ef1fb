"""Seeded, stratified train/val/test split that keeps near-duplicate groups together."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold

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

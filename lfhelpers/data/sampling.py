"""Samples of a manifest: per class, spread over the classes, gallery and queries.

One sampler serves every notebook: :func:`sample_per_class` caps the photos of each label (03's
training cap, 05's and 06's photo sets), :func:`spread_sample` picks ``n`` photos spread evenly
over the labels (04's color gallery), :func:`gallery_and_queries` splits a sample into the
found-items gallery and the "lost" queries.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pandas as pd

from lfhelpers.errors import DataError

log = logging.getLogger(__name__)


def sample_per_class(df: pd.DataFrame, max_per_class: int | None, seed: int = 42,
                     min_per_class: int = 2) -> pd.DataFrame:
    """At most ``max_per_class`` rows of each label, drawn with ``seed``; sorted by label.

    The draw is a property of each photo, not of the whole manifest: a row's rank in its class
    is a seeded hash of its content (``sha256``, else its ``path``, else its ``file``), and the
    ``max_per_class`` lowest ranks are kept. So new photos change the sample only where they
    rank among the kept ones (a class of ``n`` photos takes in about ``max_per_class / n`` of
    its new photos, each pushing one out), and the results kept for the photos already sampled
    stay valid; a frame with none of those columns is drawn by position.

    Parameters
    ----------
    df : pandas.DataFrame
        A manifest (needs ``label``; sorted by ``path`` when present).
    max_per_class : int or None
        Cap per label; ``None`` or 0 keeps every row.
    seed : int
        Sampling seed.
    min_per_class : int
        Labels with fewer rows are dropped (logged): cross-validation needs 2 per class.

    Returns
    -------
    pandas.DataFrame
        The sample, index reset.
    """
    counts = df["label"].value_counts()
    small = counts[counts < min_per_class]
    for label, n in small.items():
        log.warning("Dropped class %r: %d image(s), fewer than %d.", label, n, min_per_class)
    df = df[~df["label"].isin(small.index)]
    if df.empty:
        raise DataError(f"No class has at least {min_per_class} images; add images.")
    if "path" in df.columns:
        df = df.sort_values(["label", "path"])
    if max_per_class:
        rank = _seeded_rank(df, seed)
        order = np.lexsort((rank, df["label"].astype(str).to_numpy()))
        df = df.iloc[order].groupby("label", sort=True).head(int(max_per_class))
        df = df.sort_values(["label", "path"] if "path" in df.columns else ["label"])
    return df.reset_index(drop=True)


def seeded_digest(value: str, seed: int) -> str:
    """SHA-256 (hex) of ``value`` under ``seed``: a photo's place in every seeded draw that
    must not move when other photos come or go (samples, splits of new photos, near-duplicate
    picks)."""
    return hashlib.sha256(f"{seed}|{value}".encode()).hexdigest()


def _seeded_rank(df: pd.DataFrame, seed: int) -> np.ndarray:
    """Each row's place in a seeded draw, from its content digest (else path, else file)."""
    column = next((c for c in ("sha256", "path", "file") if c in df.columns), None)
    if column is None:
        return np.random.default_rng(seed).permutation(len(df))
    keys = [seeded_digest(value, seed) for value in df[column].astype(str)]
    # ties (the same content twice) are broken by position, so the draw is a total order
    return np.argsort(np.argsort(np.array(keys), kind="stable"), kind="stable")


def gallery_and_queries(df: pd.DataFrame, seed: int = 42) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a manifest into the found-items gallery and the "lost" query photos.

    The ``test`` split plays the lost photos; everything else is the gallery. Without a
    ``test`` split, one photo per class is held out (drawn with ``seed``).

    Returns
    -------
    gallery, queries : pandas.DataFrame
        Index reset.
    """
    if "split" in df.columns and (df["split"] == "test").any():
        is_query = (df["split"] == "test").to_numpy()
    else:
        held = df.groupby("label").sample(n=1, random_state=seed).index
        is_query = df.index.isin(held)
    return (df[~is_query].reset_index(drop=True), df[is_query].reset_index(drop=True))


def spread_sample(manifest: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """Pick ``n`` photos spread evenly over the classes, reproducibly.

    Parameters
    ----------
    manifest : pandas.DataFrame
        Rows with ``label`` and ``file`` (see :func:`lfhelpers.data.read_manifest`).
    n : int
        Photos wanted (fewer when the data has fewer).
    seed : int

    Returns
    -------
    pandas.DataFrame
        The chosen rows, ordered by label.
    """
    if manifest.empty:
        raise DataError("The data set holds no photos for the color gallery.")
    rng = np.random.default_rng(seed)
    shuffled = manifest.iloc[rng.permutation(len(manifest))]
    order = shuffled.groupby("label", sort=True).cumcount()
    picked = shuffled.assign(_rank=order.to_numpy()).sort_values(["_rank", "label"]).head(n)
    return picked.drop(columns="_rank").sort_values("label", kind="stable").reset_index(drop=True)

"""Exact and near duplicates among the photos of a cleanup run, and the groups the split keeps.

:func:`mark_duplicates` rejects the later copy (in path order) of a photo seen twice, by content
or pixels (``exact_duplicate``) or by a close perceptual hash (``near_duplicate``); a copy under
another label is a ``label_conflict``. :func:`hamming_pairs` finds the close hashes (the audit
uses it too).
"""

from __future__ import annotations

import numpy as np

from lfhelpers.data.checks import CleanOptions, FileResult


def hamming_pairs(hashes: list[str], threshold: int) -> list[tuple[int, int]]:
    """All index pairs ``i < j`` whose 64-bit hashes differ in at most ``threshold`` bits."""
    if threshold < 0 or len(hashes) < 2:
        return []
    values = np.array([int(h, 16) for h in hashes], dtype=np.uint64)
    pairs: list[tuple[int, int]] = []
    step = 2048
    for start in range(0, len(values), step):
        block = values[start:start + step]
        dist = np.bitwise_count(block[:, None] ^ values[None, :])
        ii, jj = np.nonzero(dist <= threshold)
        ii = ii + start
        keep = ii < jj
        pairs.extend(zip(ii[keep].tolist(), jj[keep].tolist(), strict=True))
    return pairs


def _components(n: int, pairs: list[tuple[int, int]]) -> np.ndarray:
    """Connected-component id of each of ``n`` nodes given undirected edges."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if not pairs:
        return np.arange(n)
    rows, cols = zip(*pairs, strict=True)
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def mark_duplicates(results: list[FileResult], options: CleanOptions) -> None:
    """Mark exact and near duplicates as rejects (first in path order is kept); set groups.

    A duplicate under another label than the photo it repeats is a ``label_conflict``: the same
    item filed under two categories, which the analyst has to settle (see the audit).
    """
    seen: dict[str, FileResult] = {}
    for res in results:
        if not res.ok:
            continue
        key = res.pixel_sha256
        first = seen.get(res.sha256) or seen.get(key)
        if first is not None:
            res.ok = False
            if first.label == res.label:
                res.reason, res.detail = "exact_duplicate", f"same content as {first.source}"
            else:
                res.reason = "label_conflict"
                res.detail = (f"same content as {first.source}: filed as {res.label!r} here "
                              f"and as {first.label!r} there")
            continue
        seen[res.sha256] = res
        seen[key] = res
    kept = [r for r in results if r.ok]
    removed: set[int] = set()
    for i, j in hamming_pairs([r.phash for r in kept], options.near_dup_distance):
        if i in removed or j in removed:
            continue
        res, first = kept[j], kept[i]
        res.ok = False
        dist = int(np.bitwise_count(np.uint64(int(res.phash, 16) ^ int(first.phash, 16))))
        if first.label == res.label:
            res.reason = "near_duplicate"
            res.detail = f"looks like {first.source} (phash distance {dist})"
        else:
            res.reason = "label_conflict"
            res.detail = (f"looks like {first.source} (phash distance {dist}): filed as "
                          f"{res.label!r} here and as {first.label!r} there")
        res.extra["twin"] = first.source
        removed.add(j)
    kept = [r for r in results if r.ok]
    groups = _components(len(kept), hamming_pairs([r.phash for r in kept],
                                                  options.group_distance))
    for res, group in zip(kept, groups, strict=True):
        res.extra["group"] = int(group)

"""Same-item retrieval measured on sets of several photos of one physical object.

The folder layout is ``<set>/<object>/<photo>`` (the ``instances_dev`` data: ``ukbench`` with 4
photos of each household object; ``smvs_dvd_covers`` with a clean catalogue cover
``*_reference.*`` and 4 camera photos of each DVD case). Two standard measures:

* **recall@k** of the reference photo for each camera photo as the query, with the references
  among distractor photos as the found-items gallery (:func:`reference_recall`);
* the **N-S score** of UKBench (Nistér & Stewénius 2006): each photo queries the set (itself
  included) and scores how many of its object's photos are among the first 4; 4.0 is perfect
  (:func:`ns_score`).

Three rankings are compared: the global descriptor alone, the visual-word shortlist alone, and
the engine's verified ranking (the fused shortlists checked geometrically).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lfhelpers.errors import DataError
from lfhelpers.images import IMAGE_SUFFIXES
from lfhelpers.similarity.search.engine import SearchEngine

RANKINGS = ("global", "local shortlist", "verified")


def find_instances(folder: str | os.PathLike[str]) -> tuple[Path | None, str]:
    """Where the same-item dev photos are, or why they are skipped.

    ``folder`` is a folder, or a name under the offline mirror (``$LF_DATA_MIRROR/<name>``;
    ``instances_dev`` is dev data the project never downloads); ``""`` skips.

    Returns
    -------
    (path or None, str)
        The folder and a one-line note, or ``None`` and the reason it is skipped.
    """
    name = os.fspath(folder)
    if not name:
        return None, "same-item check skipped: instances_dir is empty"
    if Path(name).is_dir():
        return Path(name), f"same-item photos from {name}"
    mirror = os.environ.get("LF_DATA_MIRROR", "")
    if mirror and (Path(mirror) / name).is_dir():
        return Path(mirror) / name, f"same-item photos: {name} of the offline mirror"
    return None, (f"same-item check skipped: no folder {name!r} here and none in "
                  "LF_DATA_MIRROR (the instances_dev photos come with the offline mirror)")


def instance_photos(folder: str | os.PathLike[str]) -> pd.DataFrame:
    """``path, set, object, role`` of every photo under ``folder/<set>/<object>/``.

    ``role`` is ``reference`` for a file whose name contains ``_reference``, else ``photo``.

    Raises
    ------
    DataError
        When the folder holds no such photos.
    """
    root = Path(folder)
    rows = [{"path": str(p), "set": p.parent.parent.name, "object": p.parent.name,
             "role": "reference" if "_reference" in p.stem else "photo"}
            for p in sorted(root.glob("*/*/*")) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not rows:
        raise DataError(f"No photos under {root}/<set>/<object>/; expected e.g. the "
                        "instances_dev data of the offline mirror.")
    return pd.DataFrame(rows)


def _rank_of(found: Sequence[str], wanted: str) -> int:
    """1-based rank of ``wanted`` among ``found`` paths; 0 when absent."""
    for rank, path in enumerate(found, start=1):
        if path == wanted:
            return rank
    return 0


def reference_recall(engine: SearchEngine, queries: pd.DataFrame, references: pd.DataFrame,
                     ks: Sequence[int] = (1, 5, 10)) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Recall@k of each query's reference photo under the three rankings.

    Parameters
    ----------
    engine : SearchEngine
        Fitted on a gallery that holds ``references`` (and any distractors).
    queries, references : DataFrame
        Rows of :func:`instance_photos`; a query's reference has the same ``object``.
    ks : sequence of int

    Returns
    -------
    summary : DataFrame
        One row per ranking: ``recall_at_<k>``.
    per_query : DataFrame
        ``path, object, reference, rank_global, rank_local, rank_verified, inliers``
        (rank 0: not in the first ``max(ks)``).
    """
    depth = max(ks)
    ref_of = dict(zip(references["object"], references["path"], strict=True))
    paths = list(queries["path"])
    verified = engine.search(paths, depth, verify=True)
    plain = engine.search(paths, depth, verify=False)
    kps = engine.local_features().extract(paths) if engine.words_ is not None else None
    rows = []
    for i, (path, obj) in enumerate(zip(paths, queries["object"], strict=True)):
        ref = ref_of[obj]
        local = []
        if kps is not None and len(kps[i]):
            ids, _ = engine.words_.shortlist(kps[i], depth)
            local = [engine.paths_[int(j)] for j in ids]
        hit = next((n for n in verified[i] if n["path"] == ref), None)
        rows.append({"path": path, "object": obj, "reference": ref,
                     "rank_global": _rank_of([n["path"] for n in plain[i]], ref),
                     "rank_local": _rank_of(local, ref),
                     "rank_verified": _rank_of([n["path"] for n in verified[i]], ref),
                     "inliers": None if hit is None else hit["inliers"],
                     "same_item": bool(hit and hit["same_item"])})
    per_query = pd.DataFrame(rows)
    summary = {}
    for name, col in zip(RANKINGS, ("rank_global", "rank_local", "rank_verified"), strict=True):
        r = per_query[col].to_numpy()
        summary[name] = {f"recall_at_{k}": float(np.mean((r >= 1) & (r <= k))) for k in ks}
    return pd.DataFrame(summary).T, per_query


def ns_score(engine: SearchEngine, photos: pd.DataFrame, verify: bool = True) -> float:
    """UKBench's N-S score: mean number of a photo's object among its first 4 results.

    ``engine`` must be fitted on ``photos`` themselves (each photo finds itself too).
    """
    paths = list(photos["path"])
    obj = dict(zip(paths, photos["object"], strict=True))
    found = engine.search(paths, 4, verify=verify)
    return float(np.mean([sum(obj.get(n["path"]) == obj[p] for n in f[:4])
                          for p, f in zip(paths, found, strict=True)]))


def false_positive_rate(engine: SearchEngine, queries: pd.DataFrame, k: int = 10) -> dict:
    """How often verified neighbours of other objects are called the same item.

    Every verified neighbour (within the first ``k``) whose object differs from the query's
    is a pair of different objects; the share of those with ``same_item`` true is the false-
    positive rate. Objects are read from the gallery paths' parent folder names; gallery
    photos outside the instance sets (distractors) count as other objects.

    Returns
    -------
    dict
        ``pairs`` (different-object pairs verified), ``false_positives``, ``rate``.
    """
    found = engine.search(list(queries["path"]), k, verify=True)
    pairs = fps = 0
    for obj, neighbours in zip(queries["object"], found, strict=True):
        for n in neighbours:
            if n["inliers"] is None or Path(n["path"]).parent.name == obj:
                continue
            pairs += 1
            fps += bool(n["same_item"])
    return {"pairs": pairs, "false_positives": fps, "rate": fps / pairs if pairs else 0.0}

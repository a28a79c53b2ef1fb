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

:func:`evaluate_same_item` runs both measures for notebook 06 and keeps its results
(:func:`lfhelpers.store.kept_results`), each part keyed by what it depends on: the recipe with
the model file's digest, the path and content digest of every photo it searches, and the code.
The UKBench N-S score depends on the ``ukbench`` photos only, so new found-item photos never
redo it; the DVD recall also depends on the found-items gallery, its distractors.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lfhelpers.errors import DataError
from lfhelpers.fsutil import sha256_file
from lfhelpers.images import IMAGE_SUFFIXES
from lfhelpers.similarity.search.engine import SearchEngine
from lfhelpers.similarity.search.recipe import Recipe
from lfhelpers.similarity.search.same_item import LocalStore
from lfhelpers.similarity.search.verify import Verification, verify
from lfhelpers.store import kept_results

RANKINGS = ("global", "local shortlist", "verified")
#: The two instance sets of ``instances_dev``: covers with camera photos, and UKBench.
DVD_SET, UKBENCH_SET = "smvs_dvd_covers", "ukbench"
#: Where :func:`evaluate_same_item` keeps its results, under the cache root.
KEPT_FOLDER = "same_item"


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
                     ks: Sequence[int] = (1, 5, 10), verified: list[list[dict]] | None = None
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Recall@k of each query's reference photo under the three rankings.

    Parameters
    ----------
    engine : SearchEngine
        Fitted on a gallery that holds ``references`` (and any distractors).
    queries, references : DataFrame
        Rows of :func:`instance_photos`; a query's reference has the same ``object``.
    ks : sequence of int
    verified : list, optional
        ``engine.search(queries["path"], max(ks), verify=True)`` when the caller has it.

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
    if verified is None:
        verified = engine.search(paths, depth, verify=True)
    plain = engine.search(paths, depth, verify=False)
    kps = engine.local_features().extract(paths) if engine.words_ is not None else None
    shortlists = engine.words_.shortlists(kps, depth) if kps is not None else None
    rows = []
    for i, (path, obj) in enumerate(zip(paths, queries["object"], strict=True)):
        ref = ref_of[obj]
        local = []
        if shortlists is not None and len(kps[i]):
            local = [engine.paths_[int(j)] for j in shortlists[i][0]]
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


def false_positive_rate(engine: SearchEngine, queries: pd.DataFrame, k: int = 10,
                        found: list[list[dict]] | None = None) -> dict:
    """How often verified neighbours of other objects are called the same item.

    Every verified neighbour (within the first ``k``) whose object differs from the query's
    is a pair of different objects; the share of those with ``same_item`` true is the false-
    positive rate. Objects are read from the gallery paths' parent folder names; gallery
    photos outside the instance sets (distractors) count as other objects. ``found`` is
    ``engine.search(queries["path"], k, verify=True)`` when the caller has it.

    Returns
    -------
    dict
        ``pairs`` (different-object pairs verified), ``false_positives``, ``rate``.
    """
    if found is None:
        found = engine.search(list(queries["path"]), k, verify=True)
    pairs = fps = 0
    for obj, neighbours in zip(queries["object"], found, strict=True):
        for n in neighbours:
            if n["inliers"] is None or Path(n["path"]).parent.name == obj:
                continue
            pairs += 1
            fps += bool(n["same_item"])
    return {"pairs": pairs, "false_positives": fps, "rate": fps / pairs if pairs else 0.0}


@dataclass
class SameItemEvaluation:
    """The same-item measures of notebook 06 on the ``instances_dev`` photos.

    Attributes
    ----------
    dvd_summary, dvd_per_query : DataFrame
        :func:`reference_recall` of the DVD camera photos against the covers among the
        distractors.
    false_positives : dict
        :func:`false_positive_rate` of the same search.
    ns : dict
        UKBench N-S score (:func:`ns_score`) by ranking: ``global`` and ``verified``.
    n_cameras, n_references, n_found : int
        DVD camera photos (queries), covers, and photos in the DVD gallery (covers plus the
        readable distractors).
    """

    dvd_summary: pd.DataFrame
    dvd_per_query: pd.DataFrame
    false_positives: dict[str, Any]
    ns: dict[str, float]
    n_cameras: int
    n_references: int
    n_found: int


def same_item_key(recipe: Recipe, paths: Sequence[str | os.PathLike[str]],
                  labels: Sequence[str] | None = None) -> dict[str, Any]:
    """What a same-item result depends on besides the code, as plain JSON values.

    The recipe, with the model named by its content (``embedding_spec``'s weights digest; the
    model file's path is left out), and each photo's path and SHA-256 in order (the results
    name photos by path, so a moved photo is a new key; an edited one too).

    Parameters
    ----------
    recipe : Recipe
    paths : sequence of path-like
        Every photo the result searches or indexes, in the order used.
    labels : sequence of str, optional
        Their labels, when the result depends on them.

    Returns
    -------
    dict
    """
    settings = recipe.to_dict()
    embedding = recipe.embedding_spec()
    embedding.pop("model_path", None)
    if str(settings["backbone"]).lower().startswith(("finetuned:", "classifier:")):
        settings["backbone"] = "finetuned"  # which model: the digest in `embedding`
    key: dict[str, Any] = {"recipe": settings, "embedding": embedding,
                           "photos": [[os.fspath(p), sha256_file(p)] for p in paths]}
    if labels is not None:
        key["labels"] = [str(lab) for lab in labels]
    return key


def evaluate_same_item(folder: str | os.PathLike[str], recipe: Recipe,
                       distractors: Sequence[str | os.PathLike[str]] = (),
                       distractor_labels: Sequence[str] | None = None,
                       cache_dir: str | os.PathLike[str] | None = None,
                       progress: bool = False) -> SameItemEvaluation:
    """Recall@k of the DVD covers among distractors, false positives, and UKBench's N-S score.

    The DVD gallery is the covers followed by ``distractors`` (notebook 06: its found-items
    gallery); each camera photo queries it (:func:`reference_recall`,
    :func:`false_positive_rate`). The UKBench photos query an engine of their own
    (:func:`ns_score`, global and verified).

    With ``cache_dir`` each part is kept in ``<cache_dir>/same_item``
    (:func:`lfhelpers.store.kept_results`, also keyed by the code of this module, of
    :mod:`lfhelpers.similarity.search` and of :mod:`lfhelpers.similarity.features`) under
    :func:`same_item_key` of the photos it reads: the DVD part by the covers, the camera photos
    and the distractors, the UKBench part by the UKBench photos alone. A rerun for new found-item
    photos reads the N-S score back, and the DVD figures too while the distractors are the same;
    another model file, recipe setting or photo content computes again.

    Parameters
    ----------
    folder : path-like
        The ``instances_dev`` folder (``<set>/<object>/<photo>``).
    recipe : Recipe
        The search engine's recipe (embedding, post-processing, same-item stage).
    distractors : sequence of path-like
        Photos of other things added to the DVD gallery.
    distractor_labels : sequence of str, optional
        Their labels (default: ``"distractor"``).
    cache_dir : path-like, optional
        Cache root (the engines' content-addressed embeddings and local features, and the
        kept results).
    progress : bool
        Progress bars while embedding the DVD photos.

    Returns
    -------
    SameItemEvaluation
    """
    import lfhelpers.similarity.features as features_pkg
    import lfhelpers.similarity.search as search_pkg
    from lfhelpers.similarity.evaluation import instances as this_module

    inst = instance_photos(folder)
    dvd = inst[inst["set"] == DVD_SET]
    refs, cams = dvd[dvd["role"] == "reference"], dvd[dvd["role"] == "photo"]
    ukb = inst[inst["set"] == UKBENCH_SET]
    distractors = [os.fspath(p) for p in distractors]
    labels = (["distractor"] * len(distractors) if distractor_labels is None
              else [str(lab) for lab in distractor_labels])
    memory = kept_results(cache_dir, KEPT_FOLDER, this_module, search_pkg, features_pkg)
    # every argument but `key` is named by the key (or changes no result: cache_dir, progress)
    dvd_part = memory.cache(_dvd_part, ignore=["recipe", "refs", "cams", "distractors",
                                               "labels", "cache_dir", "progress"])
    ukb_part = memory.cache(_ukbench_part, ignore=["recipe", "photos", "cache_dir"])
    dvd_key = same_item_key(recipe, [*refs["path"], *cams["path"], *distractors],
                            [*refs["object"], *cams["object"], *labels])
    found = dvd_part(dvd_key, recipe=recipe, refs=refs, cams=cams, distractors=distractors,
                     labels=labels, cache_dir=cache_dir, progress=progress)
    ns = ukb_part(same_item_key(recipe, ukb["path"], ukb["object"]), recipe=recipe, photos=ukb,
                  cache_dir=cache_dir)
    return SameItemEvaluation(**found, ns=ns)


def _dvd_part(key: dict[str, Any], recipe: Recipe, refs: pd.DataFrame, cams: pd.DataFrame,
              distractors: list[str], labels: list[str],
              cache_dir: str | os.PathLike[str] | None, progress: bool) -> dict[str, Any]:
    """The DVD part of :func:`evaluate_same_item` (``key`` names the result)."""
    engine = SearchEngine(recipe, cache_dir=cache_dir, progress=progress).fit_files(
        list(refs["path"]) + distractors, list(refs["object"]) + labels)
    verified = engine.search(list(cams["path"]), 10, verify=True)  # one search for both
    summary, per_query = reference_recall(engine, cams, refs, verified=verified)
    return {"dvd_summary": summary, "dvd_per_query": per_query,
            "false_positives": false_positive_rate(engine, cams, 10, found=verified),
            "n_cameras": len(cams),
            "n_references": len(refs), "n_found": int(engine.gallery_.n_items_)}


def _ukbench_part(key: dict[str, Any], recipe: Recipe, photos: pd.DataFrame,
                  cache_dir: str | os.PathLike[str] | None) -> dict[str, float]:
    """The UKBench part of :func:`evaluate_same_item` (``key`` names the result)."""
    engine = SearchEngine(recipe, cache_dir=cache_dir).fit_files(photos["path"],
                                                                 photos["object"])
    return {r: ns_score(engine, photos, verify=r == "verified") for r in ("global", "verified")}


def pair_verification(recipe: Recipe, query: str | os.PathLike[str],
                      found: str | os.PathLike[str],
                      cache_dir: str | os.PathLike[str] | None = None) -> Verification:
    """The geometric verification of ``query`` against ``found``, as a search engine of
    ``recipe`` holding ``found`` makes it (:meth:`SearchEngine.verification`), for drawing
    the correspondences of a kept :func:`evaluate_same_item` result without its engine.

    Parameters
    ----------
    recipe : Recipe
        Its local features.
    query, found : path-like
        The two photos.
    cache_dir : path-like, optional
        Cache root (local features in ``local/``).

    Returns
    -------
    Verification
    """
    extractor = recipe.local_features(Path(cache_dir) / "local" if cache_dir else None)
    query_kp, found_kp = extractor.extract([os.fspath(query), os.fspath(found)])
    store = LocalStore()
    store.add_keypoints([found_kp], [os.fspath(found)])  # packed as the engine packs it
    return verify(query_kp, store[0])

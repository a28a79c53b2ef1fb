"""Benchmark of same-item search as users get it: ``SearchEngine`` with the default ``Recipe``.

Headline figures (through :class:`~lfhelpers.similarity.search.engine.SearchEngine` built with
``Recipe()``: ImageNet Xception 299 px, GeM, center+dba+aqe; RootSIFT 640 px, 1000 features,
5 global + 15 visual-word candidates, 20 verified, vocabulary from the gallery's size), on the
development photos (``instances_dev``: SMVS DVD covers, UKBench; distractors from LostNet,
Caltech-101 and UKBench):

(a) DVD covers: the 200 camera photos query a gallery of the 50 clean covers among >= 1,500
    distractors: recall@1/5/10 of the global ranking, the visual-word shortlist alone and the
    engine's verified ranking (:func:`~lfhelpers.similarity.evaluation.instances.
    reference_recall`);
(b) UKBench N-S (4.0 perfect), engine fitted on the 500 UKBench photos: global and verified;
(c) LostNet near duplicates (cropped, rotated, re-lit, re-encoded copies of gallery photos)
    recall@1 through the engine, with each miss explained (what came first instead);
(d) same-item false positives among the verified neighbours: different-object pairs split into
    other objects of the instance sets and unrelated distractors;
(e) cost: ``search`` with verification vs ``verify=False`` on the same queries, each embedded
    and described from scratch (an engine loaded with ``cache_dir=None``), bytes per photo of
    the local store and of the saved index, ``fit_files`` throughput from an empty cache.

Measured on the modules directly (not through the engine), kept from the earlier benchmark:

(m1) the feature-method comparison (RootSIFT sizes, ORB) on camera photo -> own cover;
(m2) the same-item rule on random pairs (the calibration ``verify.SAME_ITEM_MIN_INLIERS``
     cites);
(m3) a scale run: shortlist + verification time and memory at 1k, 10k, 100k gallery photos
     (the gallery beyond the real photos is made of copies of the real distractors' stored
     keypoints, each a random 80 % of them with jittered positions).

Usage::

    OMP_NUM_THREADS=2 python benchmarks/bench_same_item.py

The ImageNet Xception weights come from ``LF_XCEPTION_WEIGHTS`` (default here:
``models/xception_imagenet.weights.h5``). Embeddings and local features of the gallery are
cached by content under ``data/cache/`` (``embeddings/``, ``local/``), so reruns are fast; the
timed queries never use a cache. Results: printed and written to
``benchmarks/results/same_item.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import random
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
_WEIGHTS = ROOT / "models" / "xception_imagenet.weights.h5"
if _WEIGHTS.is_file():  # the recipe's "auto" weights read this variable
    os.environ.setdefault("LF_XCEPTION_WEIGHTS", str(_WEIGHTS))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import pandas as pd  # noqa: E402

from lfhelpers.fsutil import write_json  # noqa: E402
from lfhelpers.similarity.evaluation.duplicates import make_near_duplicates  # noqa: E402
from lfhelpers.similarity.evaluation.instances import (  # noqa: E402
    instance_photos,
    ns_score,
    reference_recall,
)
from lfhelpers.similarity.features.local import LocalFeatures  # noqa: E402
from lfhelpers.similarity.search.engine import SearchEngine  # noqa: E402
from lfhelpers.similarity.search.recipe import Recipe  # noqa: E402
from lfhelpers.similarity.search.same_item import LocalStore, find_same_item  # noqa: E402
from lfhelpers.similarity.search.verify import is_same_item, verify  # noqa: E402
from lfhelpers.similarity.search.words import VisualWords  # noqa: E402


def shown_path(value: object) -> object:
    """A path as the results show it: relative to the project, else its name (no machine paths)."""
    if not isinstance(value, str) or not value or value in ("imagenet", "none"):
        return value
    path = Path(value).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def _log(msg: str) -> None:
    print(msg, flush=True)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _r(x: float, n: int = 4) -> float:
    return round(float(x), n)


# --------------------------------------------------------------------------- machine


def machine_info() -> dict:
    """CPU model, cores, the vector/matrix instruction flags and the thread settings."""
    model, flags = platform.processor(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("", "x86_64"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags |= set(line.split(":", 1)[1].split())
    except OSError:
        pass
    keep = sorted(f for f in flags if f == "avx2" or f.startswith(("avx512", "amx")))
    return {"cpu": model, "cores": os.cpu_count(),
            "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count(),
            "cpu_flags": keep, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "loadavg_start": list(os.getloadavg()), "python": platform.python_version(),
            "opencv": cv2.__version__}


# --------------------------------------------------------------------------- data


def load_sets(mirror: Path, n_lostnet: int, seed: int) -> dict[str, list[str]]:
    dev = mirror / "instances_dev"
    dvd = sorted(str(p) for p in (dev / "smvs_dvd_covers").glob("*/*.jpg"))
    lost_all = sorted(str(p) for p in (mirror / "lostnet").glob("*/*.jpg"))
    random.Random(seed).shuffle(lost_all)
    return {
        "refs": [p for p in dvd if p.endswith("_reference.jpg")],
        "cams": [p for p in dvd if not p.endswith("_reference.jpg")],
        "uk": sorted(str(p) for p in (dev / "ukbench").glob("*/*.jpg")),
        "caltech": sorted(str(p) for p in (mirror / "caltech101_5").glob("*/*.jpg")),
        "lost": sorted(lost_all[:n_lostnet]),
    }


def obj(path: str) -> str:
    return Path(path).parent.name


def _sha(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _folder_bytes(folder: Path) -> dict:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return {"apparent": int(sum(p.stat().st_size for p in files)),
            "du": int(sum(p.stat().st_blocks * 512 for p in files))}


def _mean(x) -> float | None:
    return _r(np.mean(x)) if len(x) else None


# --------------------------------------------------------------------------- engine sections

#: LostNet pairs called the same item by the engine in the near-duplicate run (seed 0, 1,000
#: LostNet photos), looked at by eye: shop watermarks and brand logos are shared by photos of
#: different objects.
INSPECTED_LOSTNET = {
    frozenset(("umbrella584.jpg", "earphone567.jpg")):
        "different objects: the same 'JD.COM' watermark",
    frozenset(("USBflashdisk177.jpg", "USBflashdisk951.jpg")):
        "different objects: the same shop-name watermark text",
    frozenset(("USBflashdisk4.jpg", "USBflashdisk787.jpg")):
        "different objects: two ADATA sticks, the brand logo matches",
    frozenset(("umbrella942.jpg", "umbrella388.jpg")):
        "different objects: two umbrellas with the same brand logo (top left)",
    frozenset(("key149.jpg", "key66.jpg")):
        "same object: the same photo of the same keys, rescaled and shifted",
    frozenset(("lipstick798.jpg", "lipstick843.jpg")):
        "same objects: two shots of the same lipsticks in the same scene",
    frozenset(("phone75.jpg", "phone1021.jpg")): "byte-identical files",
    frozenset(("key88.jpg", "key418.jpg")): "byte-identical files",
}


def build_engine(paths: list[str], cache: Path, what: str) -> tuple[SearchEngine, float]:
    t = time.perf_counter()
    engine = SearchEngine(Recipe(), cache_dir=cache).fit_files(paths, [obj(p) for p in paths])
    seconds = time.perf_counter() - t
    if list(engine.paths_) != list(paths):
        raise SystemExit(f"{what}: {len(paths) - len(engine.paths_)} photos could not be read")
    _log(f"engine ({what}): {len(paths)} photos, {engine.words_.n_words_} words, "
         f"{seconds:.1f} s (cached features)")
    return engine, seconds


def dvd_section(engine: SearchEngine, sets: dict, mirror: Path) -> tuple[dict, list]:
    """(a) recall@k of the reference cover, and the verified neighbours for (d)."""
    photos = instance_photos(mirror / "instances_dev")
    dvd = photos[photos["set"] == "smvs_dvd_covers"]
    queries = dvd[dvd["role"] == "photo"].reset_index(drop=True)
    refs = dvd[dvd["role"] == "reference"].reset_index(drop=True)
    assert list(queries["path"]) == sets["cams"] and list(refs["path"]) == sets["refs"]
    t = time.perf_counter()
    summary, per_query = reference_recall(engine, queries, refs)
    seconds = time.perf_counter() - t
    found = engine.search(list(queries["path"]), 10, verify=True)  # answered from the memo
    misses = []
    row_of = {p: i for i, p in enumerate(engine.paths_)}
    for row, neighbours in zip(per_query.itertuples(), found, strict=True):
        if row.rank_verified != 1:
            top = neighbours[0] if neighbours else {}
            direct = engine.verification(row.path, row_of[row.reference])
            misses.append({"query": Path(row.path).name, "rank_verified": int(row.rank_verified),
                           "rank_global": int(row.rank_global),
                           "rank_local": int(row.rank_local),
                           "own_cover_inliers": None if pd.isna(row.inliers)
                           else int(row.inliers),
                           "own_cover_inliers_verified_directly": int(direct.inliers),
                           "own_cover_same_item_directly": bool(is_same_item(direct)),
                           "first": str(Path(top.get("path", "")).relative_to(mirror))
                           if top else None,
                           "first_inliers": top.get("inliers"),
                           "first_same_item": top.get("same_item")})
    out = {"gallery": len(engine.paths_), "covers": len(refs),
           "distractors": len(engine.paths_) - len(refs), "queries": len(queries),
           "recall": {name.replace(" ", "_"): {k.replace("recall_at_", "recall@"): _r(v)
                                               for k, v in row.items()}
                      for name, row in summary.to_dict("index").items()},
           "own_cover_same_item_rate": _r(per_query["same_item"].mean()),
           "seconds_200_queries_both_rankings": round(seconds, 1),
           "misses_verified": misses,
           "note": "rank 0 = not in the first 10; 'local_shortlist' is the visual-word "
                   "shortlist alone (engine.words_), 'verified' the engine's answer; "
                   "own_cover_*_directly: the query verified against its own cover outside "
                   "the search (is the miss the shortlist's or the verifier's?)"}
    return out, found


def split_false_positives(queries: list[str], found: list, is_instance, mirror: Path) -> dict:
    """Different-object verified neighbours: (a) other instance objects, (b) distractors."""
    split = {"other_instance_objects": [0, 0, []], "distractors": [0, 0, []]}
    for q, neighbours in zip(queries, found, strict=True):
        for n in neighbours:
            if n["inliers"] is None or obj(n["path"]) == obj(q):
                continue
            key = "other_instance_objects" if is_instance(n["path"]) else "distractors"
            split[key][0] += 1
            if n["same_item"]:
                split[key][1] += 1
                split[key][2].append([Path(q).name, str(Path(n["path"]).relative_to(mirror)),
                                      n["inliers"]])
    return {k: {"pairs": p, "same_item": f, "rate": _r(f / p, 5) if p else None,
                "examples": ex[:30]} for k, (p, f, ex) in split.items()}


def ukbench_section(engine: SearchEngine, sets: dict, mirror: Path) -> dict:
    """(b) N-S, plus verified neighbours: cross-object pairs (d) and same-object decisions."""
    photos = instance_photos(mirror / "instances_dev")
    uk = photos[photos["set"] == "ukbench"].reset_index(drop=True)
    assert list(uk["path"]) == sets["uk"]
    t = time.perf_counter()
    ns_g = ns_score(engine, uk, verify=False)
    ns_v = ns_score(engine, uk, verify=True)
    seconds = time.perf_counter() - t
    paths = list(uk["path"])
    found = engine.search(paths, 10, verify=True)
    fp = split_false_positives(paths, found, lambda p: "/instances_dev/" in p, mirror)
    same = [n["same_item"] for q, ns in zip(paths, found, strict=True) for n in ns
            if n["inliers"] is not None and obj(n["path"]) == obj(q) and n["path"] != q]
    return {"ns": {"global": _r(ns_g), "verified": _r(ns_v)}, "seconds_ns": round(seconds, 1),
            "false_positives": fp,
            "same_object_verified_neighbours": {"pairs": len(same), "same_item": int(sum(same)),
                                                "rate": _mean(same)}}


def near_duplicate_section(engine: SearchEngine, lost: list[str], cache: Path, seed: int,
                           mirror: Path) -> dict:
    """(c) recall@1 of the original photo for perturbed copies; each miss explained."""
    dups = make_near_duplicates(lost, cache / "near_duplicates_same_item", n=200, seed=seed)
    queries, originals = list(dups["query"]), list(dups["original"])
    plain = engine.search(queries, 10, verify=False)
    found = engine.search(queries, 10, verify=True)
    sha = {p: _sha(p) for p in lost}
    twins: dict[str, list[str]] = {}
    for p, h in sha.items():
        twins.setdefault(h, []).append(p)
    n_with_twin = sum(len(v) for v in twins.values() if len(v) > 1)
    row_of = {p: i for i, p in enumerate(engine.paths_)}
    vec = engine.gallery_.index_.reconstruct()
    hit_g = [bool(f) and f[0]["path"] == o for f, o in zip(plain, originals, strict=True)]
    hit_v = [bool(f) and f[0]["path"] == o for f, o in zip(found, originals, strict=True)]
    misses, fps = [], []
    for q, o, f, how in zip(queries, originals, found, dups["transform"], strict=True):
        rank = next((r for r, n in enumerate(f, 1) if n["path"] == o), 0)
        orig = f[rank - 1] if rank else {}
        for n in f:
            if n["path"] != o and n["same_item"]:
                fps.append((q, o, n))
        if rank == 1:
            continue
        first = f[0]
        v = engine.verification(o, row_of[first["path"]])
        misses.append({
            "query": Path(q).name, "transform": how,
            "original": str(Path(o).relative_to(mirror)),
            "returned": str(Path(first["path"]).relative_to(mirror)),
            "returned_inliers": first["inliers"], "returned_same_item": first["same_item"],
            "original_rank": rank, "original_inliers": orig.get("inliers"),
            "returned_is_byte_identical_to_original": sha[first["path"]] == sha[o],
            "original_vs_returned_inliers": None if v is None else int(v.inliers),
            "original_vs_returned_cosine": _r(vec[row_of[o]] @ vec[row_of[first["path"]]])})
    twin_ok = [h or (bool(f) and sha[f[0]["path"]] == sha[o])
               for h, f, o in zip(hit_v, found, originals, strict=True)]
    fp_rows = []
    for q, o, n in fps:
        v = engine.verification(o, row_of[n["path"]])
        fp_rows.append({"query": Path(q).name, "original": str(Path(o).relative_to(mirror)),
                        "neighbour": str(Path(n["path"]).relative_to(mirror)),
                        "inliers": n["inliers"],
                        "byte_identical_to_original": sha[n["path"]] == sha[o],
                        "original_vs_neighbour_inliers": None if v is None else int(v.inliers),
                        "inspected": INSPECTED_LOSTNET.get(
                            frozenset((Path(o).name, Path(n["path"]).name)), "not inspected")})
    # different-photo pairs among the verified neighbours (byte-identical twins left out)
    pairs = sum(1 for f, o in zip(found, originals, strict=True) for n in f
                if n["inliers"] is not None and n["path"] != o and sha[n["path"]] != sha[o])
    other = [r for r in fp_rows if not r["byte_identical_to_original"]]
    return {"n": len(dups), "gallery": len(lost),
            "gallery_photos_with_a_byte_identical_twin": n_with_twin,
            "recall@1_global": _mean(hit_g), "recall@1_verified": _mean(hit_v),
            "recall@1_verified_byte_identical_twin_counted": _mean(twin_ok),
            "misses_verified": misses,
            "same_item_neighbours_other_than_original": {
                "count": len(fp_rows),
                "byte_identical_twins": len(fp_rows) - len(other),
                "other_photos": len(other),
                "other_photos_inspected_different_objects": sum(
                    r["inspected"].startswith("different") for r in other),
                "other_photos_not_inspected": sum(r["inspected"] == "not inspected"
                                                  for r in other),
                "rows": fp_rows[:30]},
            "false_positives": {"distractors": {
                "pairs": pairs, "same_item": len(other),
                "rate": _r(len(other) / pairs, 5) if pairs else None,
                "inspected_different_objects": sum(r["inspected"].startswith("different")
                                                   for r in other),
                "note": "verified neighbours of a near-duplicate query other than its original "
                        "(byte-identical twins left out); 'inspected' says what a person saw "
                        "in the two photos"}}}


def timing_section(engine: SearchEngine, folder: Path, cams: list[str], n: int) -> dict:
    """(e) per-query search time with and without verification, from scratch."""
    engine.save(folder)
    n_photos = len(engine.paths_)
    size = _folder_bytes(folder)
    parts = {sub: _folder_bytes(folder / sub)["apparent"] // n_photos
             for sub in ("local", "words")}
    words_files = {f.stem: f.stat().st_size for f in (folder / "words").glob("*.npy")}
    codebook = sum(words_files.get(k, 0) for k in ("coarse", "fine", "df"))
    inverted = sum(words_files.get(k, 0) for k in ("data", "indices", "indptr", "ids"))
    out: dict = {
        "bytes_per_photo": {
            "local_store_in_memory": int(engine.store_.nbytes / len(engine.store_)),
            "keypoints_per_photo": _r(np.mean(np.diff(engine.store_.offsets_)), 1),
            "saved_index_folder_apparent": size["apparent"] // n_photos,
            "saved_index_folder_du": size["du"] // n_photos,
            "saved_local_store": parts["local"], "saved_visual_words": parts["words"],
            "saved_visual_words_inverted_file": inverted // n_photos,
            "saved_visual_words_codebook_total_bytes": int(codebook),
            "n_words": int(engine.words_.n_words_),
            "note": "the visual-word codebook (coarse + fine centroids, float32, and df) is "
                    "a fixed cost of the vocabulary size, spread here over the gallery",
            "saved_rest_global_index_paths_recipe":
                (size["apparent"] // n_photos) - parts["local"] - parts["words"],
            "gallery_photos": n_photos}}
    timed = cams[0::4][:n]  # one camera photo per DVD
    batched = cams[1::4][:n]  # other photos: the engine remembers answers it gave
    warm = cams[2]

    def one_by_one(eng: SearchEngine, components: bool = False) -> dict:
        eng.search([warm], 10, verify=False)  # graph compilation, first reads
        eng.search([warm], 10, verify=True)
        wall: dict[bool, list[float]] = {False: [], True: []}
        cpu: dict[bool, list[float]] = {False: [], True: []}
        for i, p in enumerate(timed):  # alternate the order: load drift hits both alike
            for v in ((False, True) if i % 2 == 0 else (True, False)):
                t, c = time.perf_counter(), time.process_time()
                eng.search([p], 10, verify=v)
                wall[v].append(time.perf_counter() - t)
                cpu[v].append(time.process_time() - c)
        return {"queries": len(timed),
                "without_s_mean": _r(np.mean(wall[False])),
                "with_s_mean": _r(np.mean(wall[True])),
                "without_s_median": _r(np.median(wall[False])),
                "with_s_median": _r(np.median(wall[True])),
                "ratio_mean_wall": _r(np.mean(wall[True]) / np.mean(wall[False]), 3),
                "ratio_median_wall": _r(np.median(wall[True]) / np.median(wall[False]), 3),
                "ratio_cpu_time": _r(np.sum(cpu[True]) / np.sum(cpu[False]), 3),
                **(_components(eng, timed) if components else {})}

    loaded = SearchEngine.load(folder, cache_dir=None)
    bs = loaded.recipe_.batch_size
    out["one_photo_per_call"] = one_by_one(loaded)
    out["one_photo_per_call"]["note"] = (
        f"the saved recipe's batch_size {bs}: each single photo is padded to a batch of {bs} "
        "before the network runs (Embedder._run), so the global embedding alone costs a full "
        "batch; this inflates the time without verification")
    _log(f"(e) one photo per call (recipe batch {bs}): {out['one_photo_per_call']}")
    t = time.perf_counter()
    loaded.search(batched, 10, verify=False)
    t_without = time.perf_counter() - t
    t = time.perf_counter()
    loaded.search(batched, 10, verify=True)
    t_with = time.perf_counter() - t
    out["photos_per_call"] = {
        "queries": len(batched), "without_s_per_query": _r(t_without / len(batched)),
        "with_s_per_query": _r(t_with / len(batched)), "ratio": _r(t_with / t_without, 3),
        "note": f"all {len(batched)} photos in one search call (batches of {bs})"}
    _log(f"(e) {len(batched)} photos per call: {out['photos_per_call']}")
    diag = SearchEngine.load(folder, cache_dir=None)
    diag.recipe = diag.recipe_.replace(batch_size=1)
    out["one_photo_per_call_batch_size_1"] = one_by_one(diag, components=True)
    out["one_photo_per_call_batch_size_1"]["note"] = (
        "diagnostic: the same engine with the recipe's batch_size set to 1 (same vectors, no "
        "padding); the verification overhead against an unpadded global search")
    _log(f"(e) one photo per call (batch 1): {out['one_photo_per_call_batch_size_1']}")
    return out


def _components(eng: SearchEngine, paths: list[str]) -> dict:
    """Where a verified query's time goes (each step timed alone, one photo at a time)."""
    r = eng.recipe_
    lf = eng.local_features()
    steps: dict[str, list[float]] = {"embed": [], "global_search": [], "local_extract": [],
                                     "shortlist_and_verify": []}
    for p in paths:
        t = time.perf_counter()
        vec = eng.embedder().transform([p])
        steps["embed"].append(time.perf_counter() - t)
        t = time.perf_counter()
        _, idx = eng.gallery_.index_.search(eng.gallery_.scaler_.transform(vec), 10, None)
        steps["global_search"].append(time.perf_counter() - t)
        t = time.perf_counter()
        kp = lf.extract([p])[0]
        steps["local_extract"].append(time.perf_counter() - t)
        t = time.perf_counter()
        find_same_item(kp, eng.store_, eng.words_, [int(i) for i in idx[0] if i >= 0],
                       n_local=r.n_local, n_global=r.n_global, max_verify=r.max_verify)
        steps["shortlist_and_verify"].append(time.perf_counter() - t)
    return {"components_s_mean": {k: _r(np.mean(v)) for k, v in steps.items()}}


def build_section(sample: list[str], cache: Path) -> dict:
    """(e) ``fit_files`` throughput from an empty local-feature cache (and from nothing)."""
    out = {"photos": len(sample)}
    with tempfile.TemporaryDirectory(prefix="bench_same_item_") as tmp:
        for name, link in (("local_features_from_scratch_embeddings_cached", True),
                           ("everything_from_scratch", False)):
            folder = Path(tmp) / name
            folder.mkdir()
            if link:
                for part in ("embeddings", "trunk"):
                    if (cache / part).is_dir():
                        (folder / part).symlink_to(cache / part)
            engine = SearchEngine(Recipe(), cache_dir=folder)
            t = time.perf_counter()
            engine.embedder()  # the network is built once per process: not photo work
            model_s = time.perf_counter() - t
            t = time.perf_counter()
            engine.fit_files(sample, [obj(p) for p in sample])
            seconds = time.perf_counter() - t
            out[name] = {"photos_per_s": _r(len(sample) / seconds, 2),
                         "seconds": round(seconds, 1), "network_build_s": round(model_s, 1),
                         "n_words": int(engine.words_.n_words_)}
            _log(f"(e) build {name}: {out[name]}")
    out["note"] = ("fit_files = global embedding (cached or not) + RootSIFT extraction (one "
                   "thread) + vocabulary fit and inverted file on the subset's own descriptors")
    return out


# --------------------------------------------------------------------------- module sections


def methods_section(sets: dict, cache: Path, jobs: int) -> dict:
    """(m1) camera photo -> own cover among the 50 covers, per feature method (modules)."""
    methods = {}
    configs = (("rootsift", 640, 1000), ("rootsift", 480, 1000), ("rootsift", 640, 500),
               ("orb", 640, 1000))
    for method, ms, nf in configs:
        lf_m = LocalFeatures(method=method, max_side=ms, n_features=nf,
                             cache_dir=cache / "local", n_jobs=jobs)
        kq = lf_m.extract(sets["cams"])
        kr = lf_m.extract(sets["refs"])
        t = time.perf_counter()
        lf_m.cache_dir = None
        lf_m.extract(sets["cams"][:40])
        ext = (time.perf_counter() - t) / 40
        ok, tv, rank1 = 0, 0.0, 0
        for i, q in enumerate(sets["cams"]):
            t = time.perf_counter()
            vs = [verify(kq[i], r) for r in kr]
            tv += time.perf_counter() - t
            inl = [v.inliers for v in vs]
            own = [obj(r) for r in sets["refs"]].index(obj(q))
            ok += is_same_item(vs[own])
            rank1 += int(np.argmax(inl) == own)
        methods[f"{method}-{ms}px-{nf}"] = {
            "extract_s_per_photo": _r(ext),
            "keypoints_per_photo": _r(np.mean([len(k) for k in kq + kr]), 1),
            "verify_ms_per_pair": _r(1000 * tv / (len(kq) * len(kr)), 2),
            "own_cover_same_item_rate": _r(ok / len(kq)),
            "recall@1_among_50_covers": _r(rank1 / len(kq))}
        _log(f"(m1) method {method} {ms}px {nf}: {methods[f'{method}-{ms}px-{nf}']}")
    return methods


def pairs_section(dvd: SearchEngine, ukb: SearchEngine, lost: SearchEngine, qkp: list,
                  sets: dict, seed: int) -> dict:
    """(m2) the same-item rule on pairs, verified directly (the rule's calibration)."""
    rng = random.Random(seed)

    def rate(x: list) -> dict:
        hits = [is_same_item(v) for v in x]
        neg_max = max((v.inliers for v in x), default=0)
        return {"pairs": len(x), "rate": _r(np.mean(hits), 5) if x else None,
                "count": int(np.sum(hits)), "max_inliers": int(neg_max)}

    n_refs = len(sets["refs"])
    dvd_neg, dvd_pos = [], []
    for i, q in enumerate(sets["cams"]):
        for j, r in enumerate(sets["refs"]):
            (dvd_pos if obj(r) == obj(q) else dvd_neg).append(verify(qkp[i], dvd.store_[j]))
    uk = sets["uk"]
    uk_pos, uk_neg = [], []
    for i in range(len(uk)):
        for j in range(len(uk)):
            if i != j and obj(uk[i]) == obj(uk[j]):
                uk_pos.append(verify(ukb.store_[i], ukb.store_[j]))
    for _ in range(3000):
        i, j = rng.sample(range(len(uk)), 2)
        if obj(uk[i]) != obj(uk[j]):
            uk_neg.append(verify(ukb.store_[i], ukb.store_[j]))
    lp = sets["lost"]
    lost_neg = []
    for _ in range(3000):
        i, j = rng.sample(range(len(lp)), 2)
        if obj(lp[i]) != obj(lp[j]):
            lost_neg.append(verify(lost.store_[i], lost.store_[j]))
    cal, base = sets["caltech"], n_refs + len(uk)
    cal_neg = []
    for _ in range(2000):
        i, j = rng.sample(range(len(cal)), 2)
        if obj(cal[i]) != obj(cal[j]):
            cal_neg.append(verify(dvd.store_[base + i], dvd.store_[base + j]))
    return {
        "false_positive": {
            "ukbench_random_cross_object": rate(uk_neg),
            "lostnet_cross_class": rate(lost_neg),
            "caltech_cross_class": rate(cal_neg),
            "all_random_cross_pairs": rate(uk_neg + lost_neg + cal_neg),
            "dvd_photo_vs_other_covers": rate(dvd_neg),
            "note": "DVD camera photos show neighbouring DVD cases; a 'false positive' there "
                    "is usually a neighbour really visible in the photo"},
        "true_positive": {"ukbench_same_object": rate(uk_pos),
                          "dvd_photo_vs_own_cover": rate(dvd_pos)}}


def scale_run(sizes_arg: str, recipe: Recipe, words: VisualWords, store: LocalStore, qkp,
              sets, gallery, cache: Path, seed: int) -> dict:
    """(m3) Shortlist + verification per query at growing gallery sizes (copied keypoints)."""
    sizes = [int(s) for s in str(sizes_arg).split(",") if s.strip()]
    out: dict = {}
    if not sizes:
        return out
    n_refs = len(sets["refs"])
    base_words = [words.assign(store[i], 1)[:, 0] for i in range(len(store))]
    rng = np.random.default_rng(seed)
    queries = list(range(0, len(qkp), 4))  # 50 queries (one per DVD)
    for n in sizes:
        start = time.perf_counter()
        folder = Path(tempfile.mkdtemp(prefix="scale_store_", dir=cache))
        try:
            store_n, words_n = _scale_gallery(n, store, base_words, words, n_refs, rng, folder)
        except MemoryError:
            out[str(n)] = "not run: out of memory"
            shutil.rmtree(folder, ignore_errors=True)
            continue
        build_s = time.perf_counter() - start
        t_q, found = [], 0
        for qi in queries:
            t = time.perf_counter()
            ranked = find_same_item(qkp[qi], store_n, words_n, (), n_local=recipe.max_verify,
                                    max_verify=recipe.max_verify)
            t_q.append(time.perf_counter() - t)
            target = obj(sets["cams"][qi])
            found += bool(ranked) and ranked[0].same_item and ranked[0].id < n_refs and obj(
                gallery[ranked[0].id]) == target
        out[str(n)] = {"gallery": len(store_n), "build_s": round(build_s, 1),
                       "query_s_mean": _r(np.mean(t_q)),
                       "query_s_p95": _r(np.percentile(t_q, 95)),
                       "recall@1_dvd_50_queries": _r(found / len(queries)),
                       "store_bytes_on_disk": int(sum(f.stat().st_size for f in
                                                      folder.glob("*.npy"))),
                       "inverted_file_bytes": int(words_n.counts_.nnz * 12),
                       "max_rss_mb": round(_rss_mb(), 1)}
        del store_n, words_n
        shutil.rmtree(folder, ignore_errors=True)
        _log(f"(m3) scale {n}: {out[str(n)]}")
    return out


def _scale_gallery(n, store, base_words, words, n_refs, rng, folder):
    """The real gallery, then copies of the distractors (80 % of their keypoints, jittered)."""
    real = min(n, len(store))
    counts = [int(store.offsets_[i + 1] - store.offsets_[i]) for i in range(len(store))]
    sources = list(range(real)) + [int(rng.integers(n_refs, len(store)))
                                   for _ in range(n - real)]
    keeps = []
    for k, i in enumerate(sources):
        m = counts[i]
        keeps.append(np.arange(m) if k < real else np.sort(
            rng.choice(m, size=int(0.8 * m), replace=False)))
    total = int(sum(len(x) for x in keeps))
    desc = np.lib.format.open_memmap(folder / "descriptors.npy", "w+", np.uint8, (total, 128))
    xy = np.lib.format.open_memmap(folder / "xy.npy", "w+", np.float32, (total, 2))
    offsets = np.zeros(len(sources) + 1, np.int64)
    pos = 0
    for k, (i, keep) in enumerate(zip(sources, keeps, strict=True)):
        a = int(store.offsets_[i])
        rows = a + keep
        desc[pos:pos + len(keep)] = store.descriptors_[rows]
        jitter = rng.normal(0, 0.5, (len(keep), 2)).astype(np.float32) if k >= real else 0
        xy[pos:pos + len(keep)] = store.xy_[rows] + jitter
        pos += len(keep)
        offsets[k + 1] = pos
    desc.flush()
    xy.flush()
    del desc, xy
    np.save(folder / "offsets.npy", offsets)
    np.save(folder / "sizes.npy", store.sizes_[sources])
    np.save(folder / "scales.npy", store.scales_[sources])
    write_json(folder / "store.json", {"format": 1, "method": "rootsift",
                                       "n_photos": len(sources), "paths": [""] * len(sources)})
    store_n = LocalStore.load(folder)
    words_n = words.empty_copy()
    words_n.add_words([base_words[i][keep] for i, keep in zip(sources, keeps, strict=True)])
    return store_n, words_n


# --------------------------------------------------------------------------- report


def _fp_counts(fp: dict) -> dict:
    return {k: {p: (v["same_item"], v["pairs"]) for p, v in x.items() if isinstance(v, dict)}
            for k, x in fp.items()}


def table(res: dict) -> str:
    e = res["engine"]
    d, u, n, c = e["dvd"], e["ukbench"], e["near_duplicates"], e["cost"]
    rows = [("DVD recall@1/5/10 global", d["recall"]["global"]),
            ("DVD recall@1/5/10 local shortlist", d["recall"]["local_shortlist"]),
            ("DVD recall@1/5/10 verified  (target @1 >= 0.95)", d["recall"]["verified"])]
    lines = [f"{'measure (through SearchEngine, Recipe())':<58} value"]
    for name, rec in rows:
        lines.append(f"{name:<58} " + " / ".join(f"{v:.3f}" for v in rec.values()))
    lines += [
        f"{'UKBench N-S global / verified  (target >= 3.94)':<58} "
        f"{u['ns']['global']:.3f} / {u['ns']['verified']:.3f}",
        f"{'LostNet near-dup recall@1 global / verified (target 1.0)':<58} "
        f"{n['recall@1_global']:.3f} / {n['recall@1_verified']:.3f}"]
    for key, parts in _fp_counts(e["false_positives"]).items():
        for part, (fps, pairs) in parts.items():
            lines.append(f"{'same_item FP ' + key + ': ' + part:<58} {fps} of {pairs}")
    for mode in ("one_photo_per_call", "photos_per_call", "one_photo_per_call_batch_size_1"):
        m = c["timing"][mode]
        ratio = m.get("ratio", m.get("ratio_mean_wall"))
        lines.append(f"{'query s without / with verify, ratio: ' + mode:<58} "
                     f"{m.get('without_s_mean', m.get('without_s_per_query')):.3f} / "
                     f"{m.get('with_s_mean', m.get('with_s_per_query')):.3f}, {ratio:.2f}")
    b = c["timing"]["bytes_per_photo"]
    lines += [f"{'bytes/photo local store / saved index (du)':<58} "
              f"{b['local_store_in_memory']} / {b['saved_index_folder_du']}",
              f"{'fit_files photos/s (local from scratch / all from scratch)':<58} "
              f"{c['build']['local_features_from_scratch_embeddings_cached']['photos_per_s']} / "
              f"{c['build']['everything_from_scratch']['photos_per_s']}"]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default_mirror = os.environ.get("LF_DATA_MIRROR") or str(ROOT.parent / "shared" / "datasets")
    parser.add_argument("--mirror", default=default_mirror, help="datasets folder")
    parser.add_argument("--cache-dir", default=str(ROOT / "data" / "cache"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "same_item.json"))
    parser.add_argument("--n-lostnet", type=int, default=1000, help="LostNet distractors")
    parser.add_argument("--n-timing", type=int, default=50, help="timed queries each way")
    parser.add_argument("--n-build", type=int, default=200, help="photos of the build timing")
    parser.add_argument("--jobs", type=int, default=2, help="extraction threads (m1)")
    parser.add_argument("--scale", default="1000,10000,100000",
                        help="gallery sizes of the scale run ('' skips it)")
    parser.add_argument("--skip-methods", action="store_true",
                        help="skip the feature-method comparison (m1)")
    parser.add_argument("--skip-pairs", action="store_true",
                        help="skip the pair calibration of the same-item rule (m2)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    import faiss

    faiss.omp_set_num_threads(1)
    start = time.perf_counter()
    mirror, cache = Path(args.mirror), Path(args.cache_dir)
    out = Path(args.out)
    sets = load_sets(mirror, args.n_lostnet, args.seed)
    distractors = sets["uk"] + sets["caltech"] + sets["lost"]
    gallery = sets["refs"] + distractors
    recipe = Recipe()
    spec = recipe.embedding_spec()
    res: dict = {"complete": False,
                 "config": {k: shown_path(v) if k in ("mirror", "cache_dir", "out") else v
                            for k, v in vars(args).items()},
                 "machine": machine_info(),
                 "recipe": {**recipe.to_dict(),
                            "embedding": {**spec, "weights": shown_path(spec["weights"])}},
                 "engine": {}, "modules": {}}

    def save() -> None:
        res["seconds_total"] = round(time.perf_counter() - start, 1)
        write_json(out, res)

    _log(f"DVD gallery: {len(sets['refs'])} covers + {len(distractors)} distractors "
         f"(UKBench {len(sets['uk'])}, Caltech {len(sets['caltech'])}, LostNet "
         f"{len(sets['lost'])}); {len(sets['cams'])} camera queries")

    # ---- headline: through the engine
    dvd_engine, build_s = build_engine(gallery, cache, "DVD")
    res["engine"]["dvd"], dvd_found = dvd_section(dvd_engine, sets, mirror)
    res["engine"]["dvd"]["fit_files_s_cached"] = round(build_s, 1)
    _log(f"(a) DVD: {res['engine']['dvd']['recall']}; "
         f"misses {res['engine']['dvd']['misses_verified']}")
    fp = {"dvd_camera_photos": split_false_positives(
        sets["cams"], dvd_found, lambda p: "/smvs_dvd_covers/" in p, mirror)}
    fp["dvd_camera_photos"]["note"] = (
        "other_instance_objects = other DVDs' covers (the camera photos often show "
        "neighbouring DVD cases, so most of these are real); distractors = LostNet, Caltech, "
        "UKBench photos")
    save()

    uk_engine, _ = build_engine(sets["uk"], cache, "UKBench")
    res["engine"]["ukbench"] = ukbench_section(uk_engine, sets, mirror)
    fp["ukbench"] = res["engine"]["ukbench"].pop("false_positives")
    _log(f"(b) UKBench N-S: {res['engine']['ukbench']['ns']}")
    save()

    lost_engine, _ = build_engine(sets["lost"], cache, "LostNet")
    res["engine"]["near_duplicates"] = near_duplicate_section(
        lost_engine, sets["lost"], cache, args.seed, mirror)
    nd = res["engine"]["near_duplicates"]
    _log(f"(c) near duplicates: global {nd['recall@1_global']}, verified "
         f"{nd['recall@1_verified']}; misses {nd['misses_verified']}")
    fp["lostnet_near_duplicates"] = nd.pop("false_positives")
    res["engine"]["false_positives"] = fp
    _log(f"(d) false positives (same_item, pairs): {_fp_counts(fp)}")
    save()

    with tempfile.TemporaryDirectory(prefix="bench_same_item_index_") as tmp:
        timing = timing_section(dvd_engine, Path(tmp) / "index", sets["cams"], args.n_timing)
    sample = (sets["refs"][:50] + sets["uk"][:50] + sets["caltech"][:50]
              + sets["lost"][:50])[:args.n_build]
    res["engine"]["cost"] = {"timing": timing, "build": build_section(sample, cache)}
    save()

    # ---- measured on the modules directly
    qkp = dvd_engine.local_features().extract(sets["cams"])
    res["modules"]["note"] = ("measured on the lower-level modules directly (LocalFeatures, "
                              "verify, find_same_item), not through SearchEngine")
    if not args.skip_methods:
        res["modules"]["methods"] = methods_section(sets, cache, args.jobs)
        save()
    if not args.skip_pairs:
        res["modules"]["same_item_pairs"] = pairs_section(dvd_engine, uk_engine, lost_engine,
                                                          qkp, sets, args.seed)
        _log(f"(m2) pairs: {res['modules']['same_item_pairs']}")
        save()
    res["modules"]["scale"] = scale_run(args.scale, recipe, dvd_engine.words_,
                                        dvd_engine.store_, qkp, sets, gallery, cache, args.seed)
    res["machine"]["loadavg_end"] = list(os.getloadavg())
    res["complete"] = True
    save()
    _log("\n" + table(res))
    _log(f"written {out} ({res['seconds_total']:.0f} s)")


if __name__ == "__main__":
    main()

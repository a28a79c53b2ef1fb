"""Benchmark of the same-item engine: local features, visual-word shortlist, verification.

On the development photos (``instances_dev``: SMVS DVD covers, UKBench; distractors from
LostNet, Caltech-101 and UKBench) it measures

(a) DVD covers: 200 camera photos as queries, 50 clean covers among >= 1,500 distractors as
    the gallery: recall@1/5/10 of the global ranking, of the visual-word shortlist alone and of
    the fused and verified ranking;
(b) UKBench N-S (4.0 perfect) of the global and the verified ranking;
(c) LostNet near duplicates (cropped, rotated, re-lit, re-encoded copies) recall@1;
(d) the same-item decision on different-object pairs (false positives) and same-object pairs
    (true positives);
(e) timings: a query with verification vs without (global only), bytes per photo, build
    throughput;
(f) a scale run: shortlist + verification time and memory at 1k, 10k, 100k gallery photos
    (the gallery beyond the real photos is made of copies of the real distractors' stored
    keypoints, each a random 80 % of them with jittered positions: ``--scale-copies``).

Usage::

    python benchmarks/bench_same_item.py --global xception   # ImageNet Xception, GeM
    python benchmarks/bench_same_item.py --global color      # no TensorFlow needed

Extraction is cached under ``data/cache/`` (keypoints per photo, embeddings), so reruns are
fast. Results: printed and written to ``benchmarks/results/same_item.json``.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from lfhelpers.fsutil import write_json
from lfhelpers.images import open_image
from lfhelpers.similarity.features.local import LocalFeatures
from lfhelpers.similarity.search.same_item import LocalStore, find_same_item
from lfhelpers.similarity.search.verify import is_same_item, verify
from lfhelpers.similarity.search.words import VisualWords

ROOT = Path(__file__).resolve().parent.parent


def _log(msg: str) -> None:
    print(msg, flush=True)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------- global descriptors


def color_histograms(paths: list[str]) -> np.ndarray:
    """A cheap global descriptor: 8x8x8 RGB histogram of a 128-px thumbnail, Hellinger."""
    rows = []
    for p in paths:
        a = np.asarray(open_image(p, max_side=128)).reshape(-1, 3) // 32
        h = np.bincount(a[:, 0] * 64 + a[:, 1] * 8 + a[:, 2], minlength=512).astype(np.float32)
        h = np.sqrt(h / max(h.sum(), 1))
        rows.append(h / max(np.linalg.norm(h), 1e-9))
    return np.vstack(rows)


class GlobalDescriptor:
    """``--global``: ``xception`` (ImageNet Xception 299 px, GeM), ``color`` or ``none``."""

    def __init__(self, kind: str, cache_dir: Path):
        self.kind = kind
        self.cache_dir = cache_dir
        self.embedder = None
        if kind == "xception":
            try:
                from lfhelpers.similarity.features.cnn import Embedder
            except ImportError:  # before the move into features/
                from lfhelpers.similarity.embeddings import Embedder
            weights = ROOT / "models" / "xception_imagenet.weights.h5"
            if not weights.is_file():
                raise SystemExit(f"{weights} is missing: run /work/shared/tools/"
                                 "xception_imagenet_weights.py with it as the argument.")
            self.embedder = Embedder("xception", weights=str(weights), pooling="gem",
                                     cache_dir=cache_dir / "embeddings", progress=False,
                                     batch_size=16).fit()
            self.single = Embedder("xception", weights=str(weights), pooling="gem",
                                   cache_dir=None, progress=False, batch_size=1).fit()

    def transform(self, paths: list[str]) -> np.ndarray | None:
        if self.kind == "none":
            return None
        if self.kind == "color":
            return color_histograms(paths)
        return self.embedder.transform(paths)

    def query_seconds(self, paths: list[str]) -> float:
        """Seconds per query photo of the global descriptor, uncached, one photo at a time."""
        if self.kind == "none":
            return 0.0
        if self.kind == "color":
            start = time.perf_counter()
            color_histograms(paths)
            return (time.perf_counter() - start) / len(paths)
        self.single.transform(paths[:1])  # warm-up (graph compilation)
        start = time.perf_counter()
        for p in paths:
            self.single.transform([p])
        return (time.perf_counter() - start) / len(paths)


def global_order(q: np.ndarray | None, g: np.ndarray | None, n: int) -> np.ndarray:
    """Gallery rows by decreasing cosine similarity, per query row (``n`` first)."""
    if q is None or g is None:
        return np.zeros((0 if q is None else len(q), 0), np.int64)
    s = q @ g.T
    n = min(n, s.shape[1])
    top = np.argpartition(-s, n - 1, axis=1)[:, :n]
    return np.take_along_axis(top, np.argsort(-np.take_along_axis(s, top, 1), 1), 1)


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
        "lost_rest": sorted(lost_all[n_lostnet:]),
    }


def obj(path: str) -> str:
    return Path(path).parent.name


def recall(ranks: list[int], ks=(1, 5, 10)) -> dict[str, float]:
    r = np.asarray(ranks)
    return {f"recall@{k}": round(float((r < k).mean()), 4) for k in ks}


def rank_of(ids, gallery: list[str], target) -> int:
    for i, g in enumerate(ids):
        if target(gallery[int(g)]):
            return i
    return 10**9


# --------------------------------------------------------------------------- main


def main() -> None:  # noqa: C901 - one linear script
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default_mirror = os.environ.get("LF_DATA_MIRROR") or str(ROOT.parent / "shared" / "datasets")
    parser.add_argument("--mirror", default=default_mirror, help="datasets folder")
    parser.add_argument("--global", dest="global_kind", default="xception",
                        choices=["xception", "color", "none"])
    parser.add_argument("--cache-dir", default=str(ROOT / "data" / "cache"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "same_item.json"))
    parser.add_argument("--n-lostnet", type=int, default=1000, help="LostNet distractors")
    parser.add_argument("--max-side", type=int, default=640)
    parser.add_argument("--n-features", type=int, default=1000)
    parser.add_argument("--n-words", type=int, default=262_144)
    parser.add_argument("--n-local", type=int, default=15)
    parser.add_argument("--n-global", type=int, default=5)
    parser.add_argument("--max-verify", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=2, help="extraction threads")
    parser.add_argument("--scale", default="1000,10000,100000",
                        help="gallery sizes of the scale run ('' skips it)")
    parser.add_argument("--scale-copies", action="store_true", default=True,
                        help="fill the scale run's gallery with copies of stored keypoints")
    parser.add_argument("--skip-methods", action="store_true",
                        help="skip the feature-method comparison")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    import faiss

    faiss.omp_set_num_threads(1)
    mirror, cache = Path(args.mirror), Path(args.cache_dir)
    sets = load_sets(mirror, args.n_lostnet, args.seed)
    distractors = sets["uk"] + sets["caltech"] + sets["lost"]
    gallery = sets["refs"] + distractors
    res: dict = {"config": {k: v for k, v in vars(args).items()},
                 "n_gallery_dvd": len(gallery), "n_distractors": len(distractors)}
    _log(f"DVD gallery: {len(sets['refs'])} covers + {len(distractors)} distractors; "
         f"{len(sets['cams'])} camera queries")

    # ---- build throughput (uncached, on 150 photos)
    sample = gallery[:50] + sets["caltech"][:50] + sets["lost"][:50]
    with tempfile.TemporaryDirectory() as tmp:
        for jobs in (1, args.jobs):
            lf_tmp = LocalFeatures(max_side=args.max_side, n_features=args.n_features,
                                   cache_dir=Path(tmp) / str(jobs), n_jobs=jobs)
            t = time.perf_counter()
            lf_tmp.extract(sample)
            res.setdefault("build", {})[f"extract_photos_per_s_{jobs}_threads"] = round(
                len(sample) / (time.perf_counter() - t), 1)
        sizes = [p.stat().st_size for p in (Path(tmp) / "1").rglob("*.npz")]
        res["build"]["cache_file_bytes_per_photo"] = int(np.mean(sizes))
    # method comparison on DVD camera photo -> own cover (no distractors)
    methods = {}
    configs = (("rootsift", 640, 1000), ("rootsift", 480, 1000), ("rootsift", 640, 500),
               ("orb", 640, 1000))
    for method, ms, nf in () if args.skip_methods else configs:
        lf_m = LocalFeatures(method=method, max_side=ms, n_features=nf,
                             cache_dir=cache / "local", n_jobs=args.jobs)
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
            "extract_s_per_photo": round(ext, 4),
            "keypoints_per_photo": round(float(np.mean([len(k) for k in kq + kr])), 1),
            "verify_ms_per_pair": round(1000 * tv / (len(kq) * len(kr)), 2),
            "own_cover_same_item_rate": round(ok / len(kq), 4),
            "recall@1_among_50_covers": round(rank1 / len(kq), 4)}
        _log(f"method {method} {ms}px {nf}: {methods[f'{method}-{ms}px-{nf}']}")
    res["methods"] = methods

    # ---- features of everything
    lf = LocalFeatures(max_side=args.max_side, n_features=args.n_features,
                       cache_dir=cache / "local", n_jobs=args.jobs)
    t = time.perf_counter()
    store = LocalStore().build(gallery, lf)
    qkp = lf.extract(sets["cams"])
    _log(f"features: {time.perf_counter() - t:.1f} s ({lf.n_cached_} cached of last batch)")
    n_kp = np.diff(store.offsets_)
    res["bytes_per_photo"] = {"store": int(store.nbytes / len(store)),
                              "keypoints_per_photo": round(float(n_kp.mean()), 1)}
    words = VisualWords(n_words=args.n_words, seed=args.seed)
    t = time.perf_counter()
    words.fit(store.keypoints())
    res["build"]["words_fit_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    words.add(store.keypoints())
    res["build"]["words_add_photos_per_s"] = round(len(store) / (time.perf_counter() - t), 1)
    nnz = words.counts_.nnz
    res["bytes_per_photo"]["inverted_file"] = int(nnz * 12 / len(store))
    _log(f"build: {res['build']}, bytes/photo: {res['bytes_per_photo']}")

    # ---- global descriptors
    glob_desc = GlobalDescriptor(args.global_kind, cache)
    t = time.perf_counter()
    g_gal = glob_desc.transform(gallery)
    g_q = glob_desc.transform(sets["cams"])
    _log(f"global descriptors ({args.global_kind}): {time.perf_counter() - t:.1f} s")
    g_order = global_order(g_q, g_gal, 100)

    # ---- (a) DVD
    is_target = [lambda p, q=q: obj(p) == obj(q) and p.endswith("_reference.jpg")
                 for q in sets["cams"]]
    ranks = {"global": [], "local_shortlist": [], "fused_verified": []}
    t_local = []
    rows_dvd = []
    for i in range(len(sets["cams"])):
        if len(g_order[i]):
            ranks["global"].append(rank_of(g_order[i], gallery, is_target[i]))
        t = time.perf_counter()
        lids, _ = words.shortlist(qkp[i], 100)
        ranks["local_shortlist"].append(rank_of(lids, gallery, is_target[i]))
        ranked = find_same_item(qkp[i], store, words, g_order[i] if len(g_order[i]) else (),
                                n_local=args.n_local, n_global=args.n_global,
                                max_verify=args.max_verify)
        t_local.append(time.perf_counter() - t)
        ids = [r.id for r in ranked]
        if len(ids) < 10:  # no global ranking: continue with the word shortlist
            ids += [int(j) for j in lids if int(j) not in set(ids)]
        ranks["fused_verified"].append(rank_of(ids, gallery, is_target[i]))
        rows_dvd.append(ranked)
    res["dvd"] = {k: recall(v) for k, v in ranks.items() if v}
    _log(f"(a) DVD: {res['dvd']}")

    # ---- (b) UKBench N-S
    uk = sets["uk"]
    ustore = LocalStore().build(uk, lf)
    ukp = ustore.keypoints()
    uwords = words.empty_copy()
    uwords.add(ukp)
    g_uk = glob_desc.transform(uk)
    u_order = global_order(g_uk, g_uk, 100)
    ns_g, ns_v, ns_l = [], [], []
    uk_pairs = []
    for i, q in enumerate(uk):
        lids, _ = uwords.shortlist(ukp[i], 100)
        ns_l.append(sum(obj(uk[j]) == obj(q) for j in lids[:4]))
        if len(u_order[i]):
            ns_g.append(sum(obj(uk[j]) == obj(q) for j in u_order[i][:4]))
        ranked = find_same_item(ukp[i], ustore, uwords,
                                u_order[i] if len(u_order[i]) else (),
                                n_local=args.n_local, n_global=args.n_global,
                                max_verify=args.max_verify)
        ids = [r.id for r in ranked]
        if len(ids) < 4:
            ids += [int(j) for j in lids if int(j) not in set(ids)]
        ns_v.append(sum(obj(uk[j]) == obj(q) for j in ids[:4]))
        uk_pairs += [(r.same_item, obj(uk[r.id]) == obj(q)) for r in ranked
                     if r.verification is not None and r.id != i]
    res["ukbench_ns"] = {"global": round(float(np.mean(ns_g)), 4) if ns_g else None,
                         "local_shortlist": round(float(np.mean(ns_l)), 4),
                         "verified": round(float(np.mean(ns_v)), 4)}
    _log(f"(b) UKBench N-S: {res['ukbench_ns']}")

    # ---- (c) LostNet near duplicates
    try:
        from lfhelpers.similarity.evaluation.duplicates import make_near_duplicates
    except ImportError:
        from lfhelpers.similarity.duplicates import make_near_duplicates
    lost = sets["lost"]
    dups = make_near_duplicates(lost, cache / "near_duplicates_same_item", n=200,
                                seed=args.seed)
    lstore = LocalStore().build(lost, lf)
    lwords = words.empty_copy()
    lwords.add(lstore.keypoints())
    dkp = lf.extract(list(dups["query"]))
    g_l = glob_desc.transform(lost)
    g_d = glob_desc.transform(list(dups["query"]))
    d_order = global_order(g_d, g_l, 100)
    hit_g, hit_v = [], []
    for i, orig in enumerate(dups["original_index"]):
        if len(d_order[i]):
            hit_g.append(int(d_order[i][0]) == orig)
        ranked = find_same_item(dkp[i], lstore, lwords, d_order[i] if len(d_order[i]) else (),
                                n_local=args.n_local, n_global=args.n_global,
                                max_verify=args.max_verify)
        hit_v.append(bool(ranked) and ranked[0].id == orig)
    res["lostnet_near_duplicates"] = {
        "n": len(dups), "recall@1_global": round(float(np.mean(hit_g)), 4) if hit_g else None,
        "recall@1_verified": round(float(np.mean(hit_v)), 4)}
    _log(f"(c) near duplicates: {res['lostnet_near_duplicates']}")

    # ---- (d) same-item decision on pairs
    kref = {p: store[i] for i, p in enumerate(sets["refs"])}
    dvd_neg, dvd_pos = [], []
    for i, q in enumerate(sets["cams"]):
        for r in sets["refs"]:
            same = is_same_item(verify(qkp[i], kref[r]))
            (dvd_pos if obj(r) == obj(q) else dvd_neg).append(same)
    uk_pos, uk_neg_rand = [], []
    rng = random.Random(args.seed)
    for i in range(len(uk)):
        for j in range(len(uk)):
            if i != j and obj(uk[i]) == obj(uk[j]):
                uk_pos.append(is_same_item(verify(ukp[i], ukp[j])))
    for _ in range(3000):
        i, j = rng.sample(range(len(uk)), 2)
        if obj(uk[i]) != obj(uk[j]):
            uk_neg_rand.append(is_same_item(verify(ukp[i], ukp[j])))
    uk_neg_short = [s for s, same in uk_pairs if not same]
    lkp = lstore.keypoints()
    lost_neg = []
    for _ in range(3000):
        i, j = rng.sample(range(len(lost)), 2)
        if obj(lost[i]) != obj(lost[j]):
            lost_neg.append(is_same_item(verify(lkp[i], lkp[j])))
    cal = sets["caltech"]
    ckp = store.keypoints()[len(sets["refs"]) + len(uk):len(sets["refs"]) + len(uk) + len(cal)]
    cal_neg = []
    for _ in range(2000):
        i, j = rng.sample(range(len(cal)), 2)
        if obj(cal[i]) != obj(cal[j]):
            cal_neg.append(is_same_item(verify(ckp[i], ckp[j])))

    def rate(x: list[bool]) -> dict:
        return {"pairs": len(x), "rate": round(float(np.mean(x)), 5) if x else None,
                "count": int(np.sum(x))}

    res["same_item"] = {
        "false_positive": {
            "ukbench_shortlisted_cross_object": rate(uk_neg_short),
            "ukbench_random_cross_object": rate(uk_neg_rand),
            "lostnet_cross_class": rate(lost_neg),
            "caltech_cross_class": rate(cal_neg),
            "dvd_photo_vs_other_covers": rate(dvd_neg),
            "note": "DVD camera photos show neighbouring DVD cases; a 'false positive' there "
                    "is usually a neighbour really visible in the photo"},
        "true_positive": {"ukbench_same_object": rate(uk_pos),
                          "dvd_photo_vs_own_cover": rate(dvd_pos)}}
    all_neg = uk_neg_short + uk_neg_rand + lost_neg + cal_neg
    res["same_item"]["false_positive"]["all_except_dvd"] = rate(all_neg)
    _log(f"(d) same item: {res['same_item']}")

    # ---- (e) timings
    t_global = glob_desc.query_seconds(sets["cams"][:20])
    t_search = 0.0
    if g_gal is not None:
        t = time.perf_counter()
        for i in range(len(g_q)):
            global_order(g_q[i:i + 1], g_gal, 100)
        t_search = (time.perf_counter() - t) / len(g_q)
    lf_nc = LocalFeatures(max_side=args.max_side, n_features=args.n_features)
    t = time.perf_counter()
    for p in sets["cams"][:40]:
        lf_nc.extract([p])
    t_extract = (time.perf_counter() - t) / 40
    t_rest = float(np.mean(t_local))
    without = t_global + t_search
    with_v = without + t_extract + t_rest
    res["timing"] = {
        "global_embedding_s": round(t_global, 4), "global_search_s": round(t_search, 5),
        "local_extract_s": round(t_extract, 4), "shortlist_and_verify_s": round(t_rest, 4),
        "query_without_verification_s": round(without, 4),
        "query_with_verification_s": round(with_v, 4),
        "ratio": round(with_v / without, 3) if without else None}
    _log(f"(e) timing: {res['timing']}")

    # ---- (f) scale
    res["scale"] = scale_run(args, words, store, qkp, sets, gallery, cache)
    write_json(args.out, res)
    _log(f"written {args.out}")


def scale_run(args, words: VisualWords, store: LocalStore, qkp, sets, gallery, cache) -> dict:
    """Shortlist + verification per query at growing gallery sizes (copied keypoints)."""
    sizes = [int(s) for s in str(args.scale).split(",") if s.strip()]
    out: dict = {}
    if not sizes:
        return out
    n_refs = len(sets["refs"])
    base_words = [words.assign(store[i], 1)[:, 0] for i in range(len(store))]
    rng = np.random.default_rng(args.seed)
    queries = list(range(0, len(qkp), 4))  # 50 queries (one per DVD)
    for n in sizes:
        start = time.perf_counter()
        folder = cache / "scale_store"
        try:
            store_n, words_n = _scale_gallery(n, store, base_words, words, n_refs, rng, folder)
        except MemoryError:
            out[str(n)] = "not run: out of memory"
            continue
        build_s = time.perf_counter() - start
        t_q, found = [], 0
        for qi in queries:
            t = time.perf_counter()
            ranked = find_same_item(qkp[qi], store_n, words_n, (), n_local=args.max_verify,
                                    max_verify=args.max_verify)
            t_q.append(time.perf_counter() - t)
            target = obj(sets["cams"][qi])
            found += bool(ranked) and ranked[0].same_item and ranked[0].id < n_refs and obj(
                gallery[ranked[0].id]) == target
        out[str(n)] = {"gallery": len(store_n), "build_s": round(build_s, 1),
                       "query_s_mean": round(float(np.mean(t_q)), 4),
                       "query_s_p95": round(float(np.percentile(t_q, 95)), 4),
                       "recall@1_dvd_50_queries": round(found / len(queries), 4),
                       "store_bytes_on_disk": int(sum(f.stat().st_size for f in
                                                      folder.glob("*.npy"))),
                       "inverted_file_bytes": int(words_n.counts_.nnz * 12),
                       "max_rss_mb": round(_rss_mb(), 1)}
        _log(f"(f) scale {n}: {out[str(n)]}")
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
    folder.mkdir(parents=True, exist_ok=True)
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


if __name__ == "__main__":
    main()

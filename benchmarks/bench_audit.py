"""Benchmark of the data-quality audit on lostnet, side by side with cleanvision and cleanlab.

    LF_DATA_MIRROR=<datasets> python benchmarks/bench_audit.py [--clean-dir DIR] [--jobs 2]

1. cleans lostnet into a temporary folder (or reuses ``--clean-dir``);
2. quality flags: our statistics measured from scratch on every clean photo (no cache) against
   cleanvision's ``Imagelab.find_issues`` for the same six issue types, same photos, same number
   of workers: photos per second, and the confusion of the two per issue type;
3. injected defects (seeded): blur, darkening, over-exposure, near-uniform, 8:1 strips and
   greyscale copies of photos, each replacing its original; recall per type, ours and
   cleanvision's, and the share of untouched photos flagged;
4. label issues: 5 % of the labels flipped at random (seeded), out-of-fold probabilities of a
   logistic regression on cached ImageNet embeddings (Xception, else MobileNet), then our
   confident learning against ``cleanlab.filter.find_label_issues`` on the same probabilities:
   precision and recall among the top k (k = number of flips) and how often the suggested
   label is the true one.

cleanvision and cleanlab (AGPL-3.0) are benchmark references only, installed by hand
(``pip install cleanvision cleanlab``); the project does not depend on them. Prints the figures
and writes ``benchmarks/results/audit.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

from lfhelpers.audit.labels import choose_embedder, confident_learning, out_of_fold_proba
from lfhelpers.audit.report import photo_stats
from lfhelpers.data import prepare_dataset, read_manifest
from lfhelpers.data.checks import CleanOptions, inspect_file
from lfhelpers.data.quality import QUALITY_ISSUES, image_stats, quality_findings
from lfhelpers.fsutil import write_json

ROOT = Path(__file__).resolve().parent.parent
DEFECTS = ("blurry", "dark", "light", "low_information", "odd_aspect_ratio", "grayscale")
#: cleanvision's issue-type names for ours (same meaning)
CV_TYPES = {issue: issue for issue in QUALITY_ISSUES}


def inject(img: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    """A defective version of a photo (the benchmark's definition of each defect)."""
    arr = np.asarray(img).astype(np.float32)
    if kind == "blurry":
        return img.filter(ImageFilter.GaussianBlur(max(2.0, 0.01 * max(img.size))))
    if kind == "dark":
        return Image.fromarray((arr * rng.uniform(0.1, 0.25)).astype(np.uint8))
    if kind == "light":
        return Image.fromarray((255 - (255 - arr) * rng.uniform(0.1, 0.25)).astype(np.uint8))
    if kind == "low_information":
        mean = arr.reshape(-1, 3).mean(0)
        return Image.fromarray(np.clip(mean + rng.normal(0, 3, arr.shape), 0, 255)
                               .astype(np.uint8))
    if kind == "odd_aspect_ratio":
        w, h = img.size
        side = max(8, w // 8)
        top = (h - side) // 2
        return img.crop((0, top, w, top + side))
    if kind == "grayscale":
        return img.convert("L").convert("RGB")
    raise ValueError(kind)


def stats_view(clean_dir: Path, work: Path) -> Path:
    """A folder with the clean photos (symlinked) and manifest but no cached statistics."""
    view = work / "view"
    view.mkdir()
    for entry in clean_dir.iterdir():
        if entry.is_dir() and not entry.name.startswith(("_", ".")):
            (view / entry.name).symlink_to(entry, target_is_directory=True)
    (view / "manifest.csv").symlink_to(clean_dir / "manifest.csv")
    return view


def cleanvision_flags(files: list[str], n_jobs: int) -> tuple[pd.DataFrame | None, float, str]:
    try:
        from cleanvision import Imagelab
    except ImportError:
        return None, 0.0, "cleanvision not installed (pip install cleanvision)"
    start = time.perf_counter()
    lab = Imagelab(filepaths=files)
    lab.find_issues({t: {} for t in CV_TYPES.values()}, n_jobs=n_jobs, verbose=False)
    seconds = time.perf_counter() - start
    import cleanvision

    flags = pd.DataFrame({ours: lab.issues[f"is_{cv}_issue"].to_numpy()
                          for ours, cv in CV_TYPES.items()}, index=files)
    return flags, seconds, f"cleanvision {cleanvision.__version__}"


def our_flags(stats: pd.DataFrame) -> pd.DataFrame:
    found = quality_findings(stats)
    flags = pd.DataFrame(False, index=stats["path"], columns=list(QUALITY_ISSUES))
    for path, issue in zip(found["path"], found["issue"], strict=True):
        flags.loc[path, issue] = True
    return flags


def quality_part(clean_dir: Path, n_jobs: int, seed: int, n_defect: int) -> dict:
    manifest = read_manifest(clean_dir)
    with tempfile.TemporaryDirectory() as tmp:
        view = stats_view(clean_dir, Path(tmp))
        start = time.perf_counter()
        stats, measured = photo_stats(view, manifest, n_jobs=n_jobs, progress=False)
        ours_s = time.perf_counter() - start
    ours = our_flags(stats)
    files = [str(clean_dir / p) for p in ours.index]
    cv, cv_s, cv_name = cleanvision_flags(files, n_jobs)
    out = {"photos": len(stats), "measured": measured, "ours_seconds": round(ours_s, 2),
           "ours_photos_per_s": round(len(stats) / ours_s, 1), "reference": cv_name,
           "untouched_flagged_share": round(float(ours.any(axis=1).mean()), 4),
           "untouched_flagged_per_type": {k: int(v) for k, v in ours.sum().items()}}
    if cv is not None:
        cv.index = ours.index
        out["cleanvision_seconds"] = round(cv_s, 2)
        out["cleanvision_photos_per_s"] = round(len(stats) / cv_s, 1)
        out["speed_ratio"] = round(cv_s / ours_s, 2)
        out["cleanvision_flagged_share"] = round(float(cv.any(axis=1).mean()), 4)
        out["confusion"] = {t: {"both": int((ours[t] & cv[t]).sum()),
                                "ours_only": int((ours[t] & ~cv[t]).sum()),
                                "cleanvision_only": int((~ours[t] & cv[t]).sum()),
                                "neither": int((~ours[t] & ~cv[t]).sum())}
                            for t in QUALITY_ISSUES}
    # injected defects: each replaces its original, measured through the cleanup's own path
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(manifest), n_defect * len(DEFECTS), replace=False)
    options = CleanOptions()
    rows, recall = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for k, kind in enumerate(DEFECTS):
            for i in picks[k * n_defect:(k + 1) * n_defect]:
                img, _ = inspect_file(Path(manifest["file"].iloc[i]), options)
                bad = inject(img, kind, rng)
                path = Path(tmp) / f"{kind}_{i}.png"
                bad.save(path)
                full, _ = inspect_file(path, options)  # decoded as the cleanup decodes it
                rows.append({"path": str(path), "label": kind, **image_stats(full)})
        defect_stats = pd.DataFrame(rows)
        flags = our_flags(defect_stats)
        cv_def, _, _ = cleanvision_flags(list(defect_stats["path"]), n_jobs)
    for kind in DEFECTS:
        mine = flags.loc[defect_stats.loc[defect_stats["label"] == kind, "path"], kind]
        recall[kind] = {"ours": round(float(mine.mean()), 3)}
        if cv_def is not None:
            theirs = cv_def.loc[defect_stats.loc[defect_stats["label"] == kind, "path"], kind]
            recall[kind]["cleanvision"] = round(float(theirs.mean()), 3)
    out["injected_per_type"] = n_defect
    out["injected_recall"] = recall
    return out


def label_part(clean_dir: Path, seed: int, rate: float, backbones: list[str],
               cache_dir: str) -> dict:
    manifest = read_manifest(clean_dir)
    truth = manifest["label"].to_numpy().astype(str)
    rng = np.random.default_rng(seed)
    n_flip = int(round(rate * len(truth)))
    flipped = rng.choice(len(truth), n_flip, replace=False)
    classes = np.unique(truth)
    noisy = truth.copy()
    for i in flipped:
        noisy[i] = rng.choice(classes[classes != truth[i]])
    results = {"photos": len(truth), "flips": n_flip, "k": n_flip}
    for backbone in backbones:
        embedder, note = choose_embedder(backbone, "auto", image_size=224, cache_dir=cache_dir,
                                         progress=True)
        if embedder is None:
            results[backbone] = {"note": note}
            continue
        start = time.perf_counter()
        emb = embedder.extract(list(manifest["file"]))
        t_emb = time.perf_counter() - start
        assert emb.ok.all(), "every clean photo should embed"
        start = time.perf_counter()
        proba, cls = out_of_fold_proba(emb.features, noisy, seed=seed, n_jobs=2)
        t_oof = time.perf_counter() - start
        start = time.perf_counter()
        found = confident_learning(noisy, proba, cls)
        t_cl = time.perf_counter() - start
        flips = set(flipped.tolist())
        top = found.head(n_flip)
        hit = top[top["index"].isin(flips)]
        entry = {"note": note, "embedding_seconds": round(t_emb, 1),
                 "embeddings_cached": emb.n_cached, "oof_seconds": round(t_oof, 1),
                 "out_of_fold_accuracy_vs_noisy": round(float((cls[proba.argmax(1)] == noisy)
                                                              .mean()), 4),
                 "ours": {"n_found": len(found),
                          "precision_at_k": round(len(hit) / n_flip, 3),
                          "recall_at_k": round(len(hit) / n_flip, 3),
                          "recall_all_found": round(len(flips & set(found["index"])) / n_flip, 3),
                          "suggested_right": round(float(np.mean(
                              truth[hit["index"]] == hit["suggested_label"])), 3),
                          "seconds": round(t_cl, 3)}}
        try:
            from cleanlab.filter import find_label_issues

            start = time.perf_counter()
            given = np.searchsorted(cls, noisy)
            ranked = find_label_issues(given, proba, return_indices_ranked_by="self_confidence")
            t_clab = time.perf_counter() - start
            top_c = ranked[:n_flip]
            hit_c = [i for i in top_c if i in flips]
            sugg = cls[proba[hit_c].argmax(1)] if hit_c else np.array([])
            entry["cleanlab"] = {"n_found": len(ranked),
                                 "precision_at_k": round(len(hit_c) / n_flip, 3),
                                 "recall_all_found": round(len(flips & set(ranked.tolist()))
                                                           / n_flip, 3),
                                 "suggested_right_argmax": round(float(np.mean(
                                     truth[hit_c] == sugg)) if hit_c else 0.0, 3),
                                 "seconds": round(t_clab, 3)}
        except ImportError:
            entry["cleanlab"] = "not installed (pip install cleanlab)"
        results[backbone] = entry
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clean-dir", type=Path, default=None,
                        help="an already cleaned lostnet (default: clean into a temp folder)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--defects", type=int, default=30, help="photos per injected defect")
    parser.add_argument("--flip-rate", type=float, default=0.05)
    parser.add_argument("--backbones", default="xception,mobilenet")
    parser.add_argument("--cache-dir", default=str(ROOT / "data" / "cache"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/audit.json")
    args = parser.parse_args()
    mirror = os.environ.get("LF_DATA_MIRROR")
    if not mirror:
        raise SystemExit("set LF_DATA_MIRROR to the offline datasets folder (with lostnet/)")
    with tempfile.TemporaryDirectory() as tmp:
        clean_dir = args.clean_dir or Path(tmp) / "lostnet"
        start = time.perf_counter()
        report = prepare_dataset(Path(mirror) / "lostnet", clean_dir, n_jobs=args.jobs,
                                 progress=False)
        clean_s = time.perf_counter() - start
        result = {
            "machine": {"cpus": os.cpu_count(), "processor": platform.processor(),
                        "note": "shared 2-core machine (AVX-512, AMX); load from other users"},
            "clean": {"seconds": round(clean_s, 1), "decoded": report.n_decoded,
                      "clean": report.n_clean, "rejected": report.rejected_by_reason()},
            "quality": quality_part(clean_dir, args.jobs, args.seed, args.defects),
            "labels": label_part(clean_dir, args.seed, args.flip_rate,
                                 [b.strip() for b in args.backbones.split(",") if b.strip()],
                                 args.cache_dir),
        }
    print(json.dumps(result, indent=2, ensure_ascii=False))
    write_json(args.out, result)
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()

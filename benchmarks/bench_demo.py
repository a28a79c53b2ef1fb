"""`make demo` in plain Xception passes: from empty caches, unchanged, and with 50 new photos.

In one run, on one machine:

(a) the yardstick (``bench_xception.yardstick``: plain Keras Xception inference at 224 px,
    images per second over a minute of calls), measured before (b), between (b) and (c), and
    after (d); each run is counted with the mean of the two measured around it (the machine's
    speed drifts);
(b) a fresh copy of the project (its tracked files) in a work folder, whose raw photos are a
    local copy of the mirror's LostNet **minus 50 photos held out**; the demo's command
    (``python -m lfhelpers run --profile cpu --jobs 2``, with ``-p source=<that folder>`` so
    that the cleanup reads it in place) from empty caches;
(c) the same command again, nothing changed;
(d) the 50 held-out photos copied into the raw folder (new arrivals), the command again.

For each run: seconds in all and per notebook (the runner's ``run.json``), and **passes**: seconds
times the yardstick's images per second over the number of clean photos, i.e. how many plain
Keras Xception passes over the data set the run costs on this machine. Notebook figures that the
demo must keep are copied from the fresh run's ``metrics.json``.

Usage::

    LF_DATA_MIRROR=... LF_XCEPTION_WEIGHTS=... python benchmarks/bench_demo.py \\
        [--work DIR] [--hold-out 50] [--out benchmarks/results/demo.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_xception import cpu_flags, write_results, yardstick  # noqa: E402

#: Figures of the fresh run that ``reports/latest`` publishes and the demo must keep.
KEPT = {
    "01_crawl_cleanup": ["n_clean", "n_rejected", "n_label_conflicts"],
    "03_xception_finetune": ["test_top1", "test_top3", "trunk_seconds", "train_seconds",
                             "kept_model", "train_photos_added"],
    "06_cnn_search_clustering": ["p_at_5", "loo_p_at_5", "dvd_recall_at_1_verified",
                                 "ukbench_ns_verified"],
    "07_explore": ["load_seconds"],
}


def project_copy(dest: Path) -> Path:
    """The project's tracked files (as committed or edited, not its data or caches) in ``dest``."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return dest


def photos_copy(mirror: Path, dest: Path, hold_out: int, seed: int = 0) -> tuple[Path, Path]:
    """LostNet from the mirror in ``dest/lostnet`` minus ``hold_out`` photos, those in
    ``dest/held_out`` (same class folders)."""
    photos = sorted(p for p in (mirror / "lostnet").rglob("*")
                    if p.is_file() and not p.name.startswith("."))
    held = set(random.Random(seed).sample(range(len(photos)), hold_out))
    raw, aside = dest / "lostnet", dest / "held_out"
    for i, photo in enumerate(photos):
        target = (aside if i in held else raw) / photo.relative_to(mirror / "lostnet")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(photo, target)
    return raw, aside


def run_demo(repo: Path, raw: Path, label: str, jobs: int = 2) -> dict:
    """The demo's command in ``repo``; its seconds and the runner's per-notebook record."""
    env = {**os.environ, "PYTHONPATH": str(repo)}
    command = [sys.executable, "-m", "lfhelpers", "run", "--profile", "cpu", "--out",
               "reports/runs/demo", "-p", f"source={raw}", "--jobs", str(jobs)]
    print(f"[{label}] {' '.join(command[1:])}", flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        print(done.stdout[-4000:], done.stderr[-4000:], sep="\n")
        raise SystemExit(f"[{label}] the demo failed (exit {done.returncode})")
    record = json.loads((repo / "reports/runs/demo/run.json").read_text(encoding="utf-8"))
    notebooks = {nb["stem"]: {"status": nb["status"], "seconds": round(nb["seconds"], 1)}
                 for nb in record["notebooks"]}
    metrics = json.loads((repo / "reports/runs/demo/metrics.json").read_text(encoding="utf-8"))
    print(f"[{label}] {seconds:.0f} s: " + ", ".join(
        f"{k[:2]} {v['seconds']:.0f} s ({v['status']})" for k, v in notebooks.items()),
        flush=True)
    return {"seconds": round(seconds, 1), "notebooks": notebooks,
            "figures": {nb: {k: metrics.get(nb, {}).get(k) for k in keys}
                        for nb, keys in KEPT.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", help="work folder (default: a temporary one, removed after)")
    parser.add_argument("--hold-out", type=int, default=50, help="photos added in step (d)")
    parser.add_argument("--jobs", type=int, default=2,
                        help="notebooks run side by side (the runner's --jobs; make demo: 2)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "demo.json"))
    args = parser.parse_args(argv)
    from lfhelpers.models.backbones import resolve_weights

    mirror = os.environ.get("LF_DATA_MIRROR", "").strip()
    weights = resolve_weights("xception", "auto")
    if not mirror or weights in (None, "imagenet"):
        sys.exit("Needs LF_DATA_MIRROR (with lostnet) and a local Xception weights file "
                 "(LF_XCEPTION_WEIGHTS).")
    os.environ["LF_XCEPTION_WEIGHTS"] = str(Path(weights).resolve())
    os.environ["LF_DATA_MIRROR"] = str(Path(mirror).resolve())
    with tempfile.TemporaryDirectory(prefix="bench_demo_") as tmp:
        work = Path(args.work or tmp)
        if work.exists() and any(work.iterdir()):
            sys.exit(f"{work} is not empty: the fresh run needs empty caches.")
        repo = project_copy(work / "project")
        raw, held = photos_copy(Path(mirror), work / "photos", args.hold_out)
        before = yardstick(os.environ["LF_XCEPTION_WEIGHTS"])
        print(f"yardstick before: {before:.2f} images/s", flush=True)
        fresh = run_demo(repo, raw, "fresh", args.jobs)
        between = yardstick(os.environ["LF_XCEPTION_WEIGHTS"])
        print(f"yardstick between: {between:.2f} images/s", flush=True)
        unchanged = run_demo(repo, raw, "unchanged", args.jobs)
        shutil.copytree(held, raw, dirs_exist_ok=True)
        added = run_demo(repo, raw, f"{args.hold_out} new photos", args.jobs)
        after = yardstick(os.environ["LF_XCEPTION_WEIGHTS"])
        print(f"yardstick after: {after:.2f} images/s", flush=True)
        n_clean = int(added["figures"]["01_crawl_cleanup"]["n_clean"])
    # the machine's speed drifts during a run (a yardstick of four calls moved from 24.8 to 12.4
    # images/s in one run here): each run is counted in the passes of the two yardsticks around it
    ips = (before + between + after) / 3
    pass_seconds = n_clean / ips
    for run, around in ((fresh, (before, between)), (unchanged, (between, after)),
                        (added, (between, after))):
        run["yardstick_images_per_second"] = round(sum(around) / 2, 2)
        run_pass = n_clean / (sum(around) / 2)
        run["seconds_per_plain_pass"] = round(run_pass, 1)
        run["passes"] = round(run["seconds"] / run_pass, 2)
        for nb in run["notebooks"].values():
            nb["passes"] = round(nb["seconds"] / run_pass, 3)
    result = {
        "command": f"python -m lfhelpers run --profile cpu --jobs {args.jobs} (make demo), "
                   "source = local LostNet",
        "yardstick_images_per_second": round(ips, 2), "yardstick_before": round(before, 2),
        "yardstick_between": round(between, 2), "yardstick_after": round(after, 2),
        "clean_photos_after": n_clean,
        "seconds_per_plain_pass": round(pass_seconds, 1), "target_passes": 2,
        "fresh": fresh, "unchanged": unchanged, f"added_{args.hold_out}_photos": added,
        "cpu_flags": cpu_flags(), "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "python": platform.python_version(),
    }
    print(f"plain pass: {fresh['seconds_per_plain_pass']:.0f} s around the fresh run, "
          f"{added['seconds_per_plain_pass']:.0f} s around the others ({n_clean} photos); "
          f"fresh demo {fresh['seconds']:.0f} s = {fresh['passes']} passes; unchanged rerun "
          f"{unchanged['seconds']:.0f} s; {args.hold_out} new photos {added['seconds']:.0f} s = "
          f"{added['passes']} passes")
    write_results(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

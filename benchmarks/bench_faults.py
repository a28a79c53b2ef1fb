"""``python -m lfhelpers run`` killed with SIGKILL in the middle, then run again.

The pipeline runner is killed (``kill -9``) while a notebook executes, at several moments, and
then run again into the same folder; each time the result must equal an uninterrupted run into
another folder: the same ``metrics.json`` (float noise, speed and cache figures aside), every
notebook ``ok`` or ``cached`` in ``run.json``, and the rerun not blocked by the killed run's lock
(it dies with its process). Too slow for the test suite (a
smoke run per kill), so it lives here; ``tests/test_faults.py`` does the same for ``clean``,
``embed`` and ``index``.

Usage::

    python benchmarks/bench_faults.py [--only 01,02,05] [--kills 3]
        [--out benchmarks/results/faults.json]

Prints one line per kill and writes the JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_command(out: Path, only: str) -> list[str]:
    """The runner on the smoke profile into ``out``."""
    return [sys.executable, "-m", "lfhelpers", "run", "--profile", "smoke", "--only", only,
            "--out", str(out)]


#: Figures about speed and cache use, not results: a resumed run differs there by design.
VOLATILE = ("second", "time", "per_second", "speedup", "from_cache")


def same(a: object, b: object, rel: float = 1e-6) -> bool:
    """Equal JSON values, floats within ``rel``; speed and cache figures left out."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = {k for k in a.keys() | b.keys() if not any(v in k for v in VOLATILE)}
        return all(k in a and k in b and same(a[k], b[k], rel) for k in keys)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y, rel) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and math.isclose(
            a, b, rel_tol=rel, abs_tol=1e-9)
    return a == b


def main(argv: list[str] | None = None) -> int:
    """Run the reference, then the killed-and-rerun runs; print and write the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="01,02,05", help="notebooks of the smoke profile")
    parser.add_argument("--kills", type=int, default=3, help="kill moments (spread over a run)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "faults.json"))
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="lf-faults-"))
    start = time.perf_counter()
    reference = subprocess.run(run_command(work / "reference", args.only), cwd=ROOT,
                               capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if reference.returncode != 0:
        print(reference.stdout[-2000:], reference.stderr[-2000:], file=sys.stderr)
        return 1
    expected = json.loads((work / "reference" / "metrics.json").read_text(encoding="utf-8"))
    results = []
    for n in range(args.kills):
        at = seconds * (n + 1) / (args.kills + 1)
        out = work / f"killed-{n}"
        proc = subprocess.Popen(run_command(out, args.only), cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(at)
        was_running = proc.poll() is None
        if was_running:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        again = subprocess.run(run_command(out, args.only), cwd=ROOT, capture_output=True,
                               text=True)
        run = json.loads((out / "run.json").read_text(encoding="utf-8"))
        metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
        row = {"kill_after_s": round(at, 1), "killed_while_running": was_running,
               "rerun_exit": again.returncode,
               "statuses": {nb["stem"]: nb["status"] for nb in run["notebooks"]},
               "metrics_equal": same(metrics, expected)}
        row["ok"] = (row["rerun_exit"] == 0 and row["metrics_equal"]
                     and all(s in ("ok", "cached") for s in row["statuses"].values()))
        results.append(row)
        print(f"killed after {at:5.1f} s (running: {was_running}): rerun exit "
              f"{again.returncode}, {row['statuses']}, metrics equal: {row['metrics_equal']}")
    summary = {"only": args.only, "reference_seconds": round(seconds, 1), "kills": results,
               "all_ok": all(r["ok"] for r in results)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(f"all reruns equal the uninterrupted run: {summary['all_ok']} -> {args.out}")
    return 0 if summary["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

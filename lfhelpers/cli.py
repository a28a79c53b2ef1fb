"""Command line: ``python -m lfhelpers COMMAND ...`` (also installed as ``lfhelpers``).

Commands
--------
run      execute the numbered notebooks with papermill (profiles, ``-p`` overrides)
fetch    download (or copy from ``LF_DATA_MIRROR``) a public data set
clean    clean and split a folder of class sub-folders, writing ``manifest.csv``
crawl    crawl a listing site into class folders with an ``items.csv`` sidecar
color    name the main colours of the item in photos
predict  top-3 categories of photos with a model trained by notebook 03
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable

from .errors import LFError, PipelineError

#: Commands implemented in other modules: name -> ("module", "function(argv) -> int", help).
EXTERNAL: dict[str, tuple[str, str, str]] = {
    "fetch": ("lfhelpers.sources", "fetch_main", "download or copy a public data set"),
    "crawl": ("lfhelpers.crawl", "crawl_main",
              "crawl a lost-and-found listing site into class folders"),
    "color": ("lfhelpers.color", "color_main", "name the main colours of the item in photos"),
    "predict": ("lfhelpers.classifier", "predict_main",
                "top-3 categories of photos with a model from notebook 03"),
}


def _run(args: argparse.Namespace) -> int:
    from .pipeline import format_plan, format_summary, parse_overrides, run_pipeline

    result = run_pipeline(profile=args.profile, only=args.only,
                          overrides=parse_overrides(args.param), out_dir=args.out,
                          html=not args.no_html, force=args.force, jobs=args.jobs,
                          dry_run=args.dry_run)
    if args.dry_run:
        print(format_plan(result))
        return 0
    print(f"Done: {len(result.notebooks)} notebook(s) in {result.out_dir}")
    print(format_summary(result))
    if args.publish:
        from .pipeline import publish

        print(f"Published the reports to {publish(result, args.publish)}")
    return 0


def _clean(args: argparse.Namespace) -> int:
    from .clean import CleanOptions
    from .dataset import class_counts, prepare_dataset

    options = CleanOptions(min_side=args.min_side, max_pixels=args.max_pixels,
                           near_dup_distance=args.near_dup_distance,
                           group_distance=max(args.group_distance, args.near_dup_distance))
    report = prepare_dataset(args.raw_dir, args.out, seed=args.seed,
                             min_per_class=args.min_per_class,
                             on_small_class=args.on_small_class, label_map=args.label_map,
                             options=options, n_jobs=args.jobs)
    print(f"raw files: {report.n_raw}  clean: {report.n_clean}  rejected: {report.n_rejected} "
          f"(decoded now: {report.n_decoded}, unchanged: {report.n_cached})")
    for reason, count in sorted(report.rejected_by_reason().items()):
        print(f"  rejected {reason}: {count}")
    print(class_counts(report.manifest).to_string())
    print(f"manifest: {report.clean_dir / 'manifest.csv'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m lfhelpers``."""
    parser = argparse.ArgumentParser(prog="python -m lfhelpers",
                                     description="Lost & Found image workbook helpers.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="execute the numbered notebooks with papermill")
    run.add_argument("--profile", default="cpu", help="smoke, cpu or full (default: cpu)")
    run.add_argument("--only", default=None, help="notebook numbers to run, e.g. 01,03")
    run.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                     help="override a parameter for every notebook that has it (repeatable)")
    run.add_argument("--out", default=None,
                     help="output folder (default: reports/runs/<profile>-<UTC time>); a rerun "
                          "into the same folder reuses the notebooks that did not change")
    run.add_argument("--no-html", action="store_true", help="skip the HTML exports")
    run.add_argument("--publish", default=None, metavar="DIR",
                     help="after a successful run, copy HTML and metrics to DIR "
                          "(make demo: reports/latest)")
    run.add_argument("--force", nargs="?", const=True, default=None, metavar="NN,NN",
                     help="run again even when cached: every notebook, or the listed ones "
                          "(and so what depends on them)")
    run.add_argument("--jobs", type=int, default=1, metavar="N",
                     help="run up to N notebooks side by side when their inputs are ready")
    run.add_argument("--dry-run", action="store_true",
                     help="print what would run and why (which input changed), run nothing")
    run.set_defaults(func=_run)

    clean = sub.add_parser("clean", help="clean and split a folder of class sub-folders")
    clean.add_argument("raw_dir", help="folder of class sub-folders (never modified)")
    clean.add_argument("--out", required=True, help="clean folder to write")
    clean.add_argument("--seed", type=int, default=42)
    clean.add_argument("--label-map", default=None, help="CSV (folder,label) or YAML mapping")
    clean.add_argument("--min-side", type=int, default=32)
    clean.add_argument("--max-pixels", type=int, default=40_000_000)
    clean.add_argument("--near-dup-distance", type=int, default=4,
                       help="phash distance for near duplicates (-1 keeps them)")
    clean.add_argument("--group-distance", type=int, default=8,
                       help="phash distance of images kept in one split")
    clean.add_argument("--min-per-class", type=int, default=10)
    clean.add_argument("--on-small-class", choices=["exclude", "error"], default="exclude")
    clean.add_argument("--jobs", type=int, default=1, help="decoding workers (-1: all cores)")
    clean.set_defaults(func=_clean)

    for name, (_, _, help_text) in EXTERNAL.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _external(name: str) -> Callable[[list[str]], int]:
    module, func, _ = EXTERNAL[name]
    return getattr(importlib.import_module(module), func)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status.

    Exit status: 0 on success, 1 when a notebook of ``run`` failed, 2 on any other error a user
    can act on (the message says what to do).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "-v" in argv[:1] or "--verbose" in argv[:1]
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    rest = [a for a in argv if a not in ("-v", "--verbose")] if verbose else argv
    if rest and rest[0] in EXTERNAL:
        return _external(rest[0])(rest[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except LFError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

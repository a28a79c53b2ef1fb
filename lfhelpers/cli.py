"""Command line: ``python -m lfhelpers VERB ...`` (also installed as ``lfhelpers``).

One :mod:`argparse` parser with a sub-command per verb; each verb's handler imports its stage
only when it runs, so ``--help`` is instant (TensorFlow is imported by the verbs that need it).
Exit status: 0 on success, 1 when a notebook of ``run`` failed or some inputs of a per-file verb
could not be read, 2 on any other error a user can act on (the message says what to do).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from lfhelpers.errors import LFError, PipelineError
from lfhelpers.similarity.search.recipe import Recipe

#: The one retrieval recipe's defaults: the commands' defaults equal notebook 06's.
RECIPE = Recipe()

MIRROR_ENV = "LF_DATA_MIRROR"


# --------------------------------------------------------------------------- handlers


def _run(args: argparse.Namespace) -> int:
    from lfhelpers.pipeline import (
        format_plan,
        format_summary,
        parse_overrides,
        publish,
        run_pipeline,
    )

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
        print(f"Published the reports to {publish(result, args.publish)}")
    return 0


def _clean(args: argparse.Namespace) -> int:
    from lfhelpers.data import class_counts, prepare_dataset
    from lfhelpers.data.checks import CleanOptions

    options = CleanOptions(min_side=args.min_side, max_pixels=args.max_pixels,
                           near_dup_distance=args.near_dup_distance,
                           group_distance=max(args.group_distance, args.near_dup_distance))
    report = prepare_dataset(args.raw_dir, args.out, seed=args.seed,
                             min_per_class=args.min_per_class,
                             on_small_class=args.on_small_class, label_map=args.label_map,
                             options=options, n_jobs=args.jobs, corrections=args.corrections)
    print(f"raw files: {report.n_raw}  clean: {report.n_clean}  rejected: {report.n_rejected} "
          f"(decoded now: {report.n_decoded}, unchanged: {report.n_cached})")
    for reason, count in sorted(report.rejected_by_reason().items()):
        print(f"  rejected {reason}: {count}")
    print(class_counts(report.manifest).to_string())
    print(f"manifest: {report.clean_dir / 'manifest.csv'}")
    return 0


def _stage(module: str, function: str, tensorflow: bool = False) -> Callable[..., int]:
    """A handler that imports ``module`` only when its verb runs and calls ``function(args)``."""
    def handler(args: argparse.Namespace) -> int:
        if tensorflow:
            from lfhelpers.models.backbones import quiet_tensorflow

            quiet_tensorflow()
        return getattr(importlib.import_module(module), function)(args)

    handler.__name__ = f"_{function}"
    return handler


_audit = _stage("lfhelpers.audit.report", "audit_command")
_fetch = _stage("lfhelpers.data.sources", "fetch_command")
_crawl = _stage("lfhelpers.crawl.crawler", "crawl_command")
_color = _stage("lfhelpers.color.command", "color_command")
_predict = _stage("lfhelpers.models.predict", "predict_command", tensorflow=True)
_embed = _stage("lfhelpers.similarity.commands", "embed_command", tensorflow=True)
_index = _stage("lfhelpers.similarity.commands", "index_command")
_search = _stage("lfhelpers.similarity.commands", "search_command", tensorflow=True)


# --------------------------------------------------------------------------- parsers


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="execute the numbered notebooks with papermill",
                       description="Execute the numbered notebooks with papermill, in the order "
                                   "of the notebook graph (lfhelpers/graph.yaml); a rerun into "
                                   "the same --out folder reuses what did not change.")
    p.add_argument("--profile", default="cpu", help="smoke, cpu or full (default: cpu)")
    p.add_argument("--only", default=None, help="notebook numbers to run, e.g. 01,03")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                   help="override a parameter for every notebook that has it (repeatable)")
    p.add_argument("--out", default=None,
                   help="output folder (default: reports/runs/<profile>-<UTC time>); a rerun "
                        "into the same folder reuses the notebooks that did not change")
    p.add_argument("--no-html", action="store_true", help="skip the HTML exports")
    p.add_argument("--publish", default=None, metavar="DIR",
                   help="after a successful run, copy HTML and metrics to DIR "
                        "(make demo: reports/latest)")
    p.add_argument("--force", nargs="?", const=True, default=None, metavar="NN,NN",
                   help="run again even when cached: every notebook, or the listed ones "
                        "(and so what depends on them)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="run up to N notebooks side by side when their inputs are ready")
    p.add_argument("--dry-run", action="store_true",
                   help="print what would run and why (which input changed), run nothing")
    p.set_defaults(func=_run)


def _add_fetch(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fetch", help="download (or copy from the offline mirror) a public data set",
        description="Fetch a public data set (lostnet, caltech101_5, caltech101, "
                    "codingtrain_colors) or "
                    f"check a local folder into data/raw/<name>. With {MIRROR_ENV}=<folder> "
                    "the data are copied from <folder>/<name> instead.")
    p.add_argument("name", metavar="NAME", help="data-set name or a local folder")
    p.add_argument("--dest", type=Path, default=None,
                   help="result folder (default: data/raw/NAME)")
    p.add_argument("--mirror", type=Path, default=None,
                   help=f"offline mirror folder (default: ${MIRROR_ENV})")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_fetch)


def _add_clean(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("clean", help="clean and split a folder of class sub-folders",
                       description="Clean and split a folder of class sub-folders into a clean "
                                   "set with manifest.csv (the raw folder is never modified).")
    p.add_argument("raw_dir", help="folder of class sub-folders (never modified)")
    p.add_argument("--out", required=True, help="clean folder to write")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--label-map", default=None, help="CSV (folder,label) or YAML mapping")
    p.add_argument("--min-side", type=int, default=32)
    p.add_argument("--max-pixels", type=int, default=40_000_000)
    p.add_argument("--near-dup-distance", type=int, default=4,
                   help="phash distance for near duplicates (-1 keeps them)")
    p.add_argument("--group-distance", type=int, default=8,
                   help="phash distance of images kept in one split")
    p.add_argument("--min-per-class", type=int, default=10)
    p.add_argument("--on-small-class", choices=["exclude", "error"], default="exclude")
    p.add_argument("--jobs", type=int, default=1, help="decoding workers (-1: all cores)")
    p.add_argument("--corrections", default=None, metavar="CSV",
                   help="reviewed corrections to apply (path,action,new_label,note; action "
                        "relabel|reject|keep); default: OUT/corrections.csv when it exists")
    p.set_defaults(func=_clean)


def _add_crawl(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "crawl", help="crawl a lost-and-found listing site into class folders",
        description="Crawl a lost-and-found listing site into DIR/<category>/ with a sidecar "
                    "DIR/items.csv. Reruns resume. Config keys: see lfhelpers.crawl.config "
                    "and examples/crawl/.")
    p.add_argument("config", type=Path, help="site configuration (.yaml, .yml or .toml)")
    p.add_argument("--out", type=Path, required=True, help="output folder (the raw set)")
    p.add_argument("--base-url", default=None, help="override the config's base_url")
    p.add_argument("--fetcher", choices=["static", "browser"], default=None,
                   help="override the config's fetcher")
    p.add_argument("--max-pages", type=int, default=None, help="listing page limit")
    p.add_argument("--max-items", type=int, default=None, help="item limit")
    p.add_argument("--refresh", action="store_true",
                   help="fetch the listing pages again (new items); saved images are kept")
    p.add_argument("--ignore-robots", action="store_true",
                   help="do not read robots.txt (only with the site owner's permission)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_crawl)


def _add_color(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "color", help="name the main colors of the item in photos",
        description="Name the main colors of the item in each photo (white, black and grey "
                    "by lightness and chroma; other colors by the color-name model).")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("-k", "--n-colors", type=int, default=3,
                   help="color clusters per photo (default 3)")
    p.add_argument("--model", default="models/color_names.joblib",
                   help="saved color-name model; trained and saved there when missing "
                        "(default %(default)s)")
    p.add_argument("--color-source", default="codingtrain_colors",
                   help="color data wanted, and trained on when there is no saved model: "
                        "codingtrain_colors (honours LF_DATA_MIRROR), a JSON file, or "
                        "'synthetic' (offline fixture: a saved fixture model is used only "
                        "with this value, and never saved to models/color_names.joblib) "
                        "(default %(default)s)")
    p.add_argument("--method", choices=("border", "grabcut", "none"), default="border",
                   help="background separation (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=_color)


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict", help="top-3 categories of photos with a model from notebook 03",
        description="Recommend item categories for photos with a model trained by notebook 03: "
                    "one JSON line per photo with its top 3.")
    p.add_argument("--model", required=True,
                   help="the .keras file (its <stem>.labels.json must be next to it)")
    p.add_argument("--top", type=int, default=3, help="labels per image (default 3)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("images", nargs="+", help="image files or folders (searched recursively)")
    p.set_defaults(func=_predict)


def _add_embed(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed", help="CNN embeddings of every photo of a set, as Parquet shards",
        description="Embed every photo of a clean set (manifest.csv) or a folder of class "
                    "sub-folders into EMB_DIR/part-*.parquet (path, label, sha256, embedding). "
                    "Reruns embed only new or changed photos. --scheduler runs the partitions "
                    "on Dask workers (pip install -e '.[dask]').")
    p.add_argument("data_dir", help="clean set or folder of class sub-folders")
    p.add_argument("--out", required=True, help="shard folder (EMB_DIR)")
    p.add_argument("--backbone", default="xception",
                   help="xception, mobilenet, another keras.applications name, or "
                        "finetuned:PATH (notebook 03's .keras model) (default %(default)s)")
    p.add_argument("--weights", default="auto",
                   help="auto (LF_XCEPTION_WEIGHTS / LF_MOBILENET_WEIGHTS, else a local file, "
                        "else the Keras download), imagenet, none, or a weights file")
    p.add_argument("--image-size", type=int, default=None,
                   help="input side in pixels (default: the backbone's ImageNet size)")
    p.add_argument("--pooling", choices=("avg", "gem", "max"), default=RECIPE.pooling,
                   help="pooling of the last feature map (default %(default)s)")
    p.add_argument("--flip", action="store_true",
                   help="average each photo's vector with its mirror image's (two passes)")
    p.add_argument("--scheduler", default=None,
                   help="local, local:N (N worker processes) or tcp://HOST:8786; "
                        "default: in this process, no Dask")
    p.add_argument("--partition-size", type=int, default=256,
                   help="photos per task and shard (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0, help="seeds random weights (--weights none)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_embed)


def _add_index(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "index", help="build a nearest-neighbour index of embedding shards",
        description="Build a nearest-neighbour index (cosine) of the shards made by `embed`, "
                    "with its parameters and the embedding settings recorded in INDEX_DIR.")
    p.add_argument("emb_dir", help="shard folder made by `embed`")
    p.add_argument("--out", required=True, help="index folder (INDEX_DIR)")
    p.add_argument("--kind", choices=("auto", "exact", "ivf", "hnsw"), default="auto",
                   help="auto: exact below --exact-below vectors, else IVF (default %(default)s)")
    p.add_argument("--exact-below", type=int, default=100_000)
    p.add_argument("--nlist", type=int, default=None, help="IVF cells (default ~4*sqrt(n))")
    p.add_argument("--nprobe", type=int, default=None, help="IVF cells searched per query")
    p.add_argument("--encoding", default="",
                   help="IVF storage: Flat, SQ8 or PQ<m> (default: Flat below 2 GB, else SQ8)")
    p.add_argument("--postprocess", default=RECIPE.postprocess,
                   help="vector steps, some of center+pcaw+dba+aqe, or none (default "
                        "%(default)s, as notebook 06 measures)")
    p.add_argument("--no-center", dest="center", action="store_false",
                   help="leave the center step out (keep the gallery mean in the vectors)")
    p.add_argument("--no-same-item", dest="same_item", action="store_false",
                   help="no local features: `search` ranks by the global descriptor alone")
    p.add_argument("--cache-dir", default="data/cache",
                   help="cache of local features, CACHE_DIR/local (default %(default)s)")
    p.set_defaults(func=_index)


def _add_search(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search", help="most similar indexed photos of query photos (JSON lines)",
        description="Embed each photo by the index's recipe and print one JSON line per photo: "
                    "{\"query\": ..., \"neighbours\": [{\"path\", \"label\", \"score\", "
                    "\"inliers\", \"same_item\"}, ...]}. score: cosine similarity of the "
                    "global descriptors; inliers: local-feature correspondences that one "
                    "geometric transform explains; same_item: the verifier's decision that the "
                    "found photo shows the very object (verified same items come first; null "
                    "when a candidate was not verified).")
    p.add_argument("index_dir", help="index folder made by `index`")
    p.add_argument("images", nargs="+", help="query photos")
    p.add_argument("--k", type=int, default=10, help="neighbours per photo (default 10)")
    p.add_argument("--no-verify", action="store_true",
                   help="rank by the global descriptor alone (no same-item verification)")
    p.add_argument("--cache-dir", default="data/cache",
                   help="cache of vectors and local features (default %(default)s)")
    p.set_defaults(func=_search)


#: The verbs, in the order ``--help`` lists them.
def _add_audit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "audit", help="list bad photos and doubtful labels of a clean set (audit.csv)",
        description="Audit a clean set: photo-quality flags (dark, light, blurry, "
                    "low_information, odd_aspect_ratio, grayscale), near-identical photos under "
                    "different labels (cross_class_duplicate) and label issues (confident "
                    "learning on out-of-fold probabilities of CNN embeddings). Writes "
                    "CLEAN_DIR/audit.csv (path,label,issue,score,suggested_label,...); the "
                    "manifest and the raw folder are not changed. Act on findings with "
                    "CLEAN_DIR/corrections.csv and `clean` (see lfhelpers.data.corrections).")
    p.add_argument("clean_dir", help="clean set (holds manifest.csv)")
    p.add_argument("--backbone", default="auto",
                   help="auto (fine-tuned model with --model, else xception, else mobilenet, "
                        "when their weights are here), xception, mobilenet, classifier, or none "
                        "(quality flags only) (default %(default)s)")
    p.add_argument("--weights", default="auto", help="auto | imagenet | a weights file")
    p.add_argument("--image-size", type=int, default=224,
                   help="embedding input side (default %(default)s)")
    p.add_argument("--model", default=None, help="fine-tuned .keras model of notebook 03")
    p.add_argument("--cache-dir", default="data/cache",
                   help="cache root; vectors go to CACHE_DIR/embeddings (default %(default)s)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--duplicate-distance", type=int, default=8,
                   help="phash distance of cross-class duplicates (default %(default)s)")
    for name, help_text in (("dark", "95th luma percentile below"),
                            ("light", "5th luma percentile above"),
                            ("blurry", "detail-to-contrast ratio below"),
                            ("low-information", "lightness standard deviation below"),
                            ("odd-aspect-ratio", "long/short side above"),
                            ("grayscale", "99th percentile channel spread below")):
        p.add_argument(f"--{name}", type=float, default=None,
                       help=f"threshold: {help_text} (default: see QualityThresholds)")
    p.add_argument("--template", action="store_true",
                   help="also write CLEAN_DIR/corrections_todo.csv: the label findings with "
                        "action empty, to fill in and save as corrections.csv")
    p.add_argument("--jobs", type=int, default=1, help="workers (-1: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_audit)


#: The verbs, in the order ``--help`` lists them.
VERBS = (_add_run, _add_fetch, _add_clean, _add_audit, _add_crawl, _add_color, _add_predict,
         _add_embed, _add_index, _add_search)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m lfhelpers`` (one sub-command per verb)."""
    parser = argparse.ArgumentParser(prog="python -m lfhelpers",
                                     description="Lost & Found image workbook helpers.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", required=True, metavar="VERB")
    for add in VERBS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status.

    Parameters
    ----------
    argv : list of str, optional
        Arguments after the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 1 when a notebook of ``run`` failed (or some inputs of a per-file verb
        could not be read), 2 on any other error a user can act on.
    """
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except LFError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

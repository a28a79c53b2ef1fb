"""``python -m lfhelpers color IMAGE...``: print the main colors of the item in each photo."""

from __future__ import annotations

import argparse
import json
import sys

from lfhelpers.color.namer import load_color_namer
from lfhelpers.color.photos import dominant_colors
from lfhelpers.errors import ConfigError, LFError


def color_command(args: argparse.Namespace) -> int:
    """``python -m lfhelpers color IMAGE...``: print each photo's main colors.

    One line per image: the path, a tab, then its colors, main color first, as
    ``name share%`` separated by commas (``--json``: one JSON object per line). An image that
    cannot be read gives ``PATH<tab>error: reason`` and the others go on; the exit status is 1
    when any image failed.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line (:mod:`lfhelpers.cli`).

    Returns
    -------
    int
        Exit status.
    """
    if args.n_colors < 1:
        raise ConfigError("--n-colors must be at least 1")
    try:
        namer = load_color_namer(args.model or None, color_source=args.color_source,
                                 seed=args.seed)
    except LFError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failed = 0
    for image in args.images:
        try:
            pal = dominant_colors(image, namer, n_colors=args.n_colors, method=args.method,
                                  seed=args.seed)
        except LFError as exc:
            failed += 1
            line = (json.dumps({"image": image, "error": str(exc)}, ensure_ascii=False)
                    if args.json else f"{image}\terror: {exc}")
            print(line, flush=True)
            continue
        if args.json:
            print(json.dumps({"image": image, "colors": [
                {"name": c.name, "share": round(c.share, 4), "rgb": list(c.rgb), "hex": c.hex}
                for c in pal.colors]}, ensure_ascii=False), flush=True)
        else:
            print(f"{image}\t{pal.describe()}", flush=True)
    return 1 if failed else 0

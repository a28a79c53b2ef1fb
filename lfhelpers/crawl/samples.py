"""Reading a crawl's result: the sidecar as a table and a grid of saved images."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from lfhelpers.crawl.config import SIDECARS
from lfhelpers.errors import DataError

if TYPE_CHECKING:
    import matplotlib.pyplot as plt


def read_items(out_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """Read the sidecar of a crawl (``items.csv`` or ``items.jsonl``) as strings.

    Raises
    ------
    DataError
        When ``out_dir`` holds no sidecar.
    """
    out = Path(out_dir)
    if (out / SIDECARS["csv"]).exists():
        return pd.read_csv(out / SIDECARS["csv"], dtype=str, keep_default_na=False)
    if (out / SIDECARS["jsonl"]).exists():
        return pd.read_json(out / SIDECARS["jsonl"], lines=True, dtype=False).astype(str)
    raise DataError(f"No crawl sidecar (items.csv or items.jsonl) in {out}; run the crawl first.")


def crawl_samples(out_dir: str | os.PathLike[str], n: int = 12, seed: int = 0,
                  ncols: int = 6) -> plt.Figure | None:
    """A grid of saved images, spread over the categories, titled with category and title.

    Parameters
    ----------
    out_dir : path-like
        A crawl output folder.
    n : int
        Most images shown.
    seed : int
        Which images are picked.
    ncols : int
        Grid columns.

    Returns
    -------
    matplotlib.figure.Figure or None
        None when nothing was saved.
    """
    from lfhelpers.plots import image_grid, setup_fonts

    setup_fonts()
    items = read_items(out_dir)
    saved = items[items["status"] == "saved"]
    if saved.empty:
        return None
    shuffled = saved.sample(frac=1.0, random_state=seed)
    shuffled = shuffled.assign(_rank=shuffled.groupby("category").cumcount())
    picked = shuffled.sort_values(["_rank", "category"], kind="stable").head(n)
    titles = [f"{r.category}\n{r.title[:12]}" for r in picked.itertuples()]
    suptitle = f"Crawled images ({len(saved)} saved, {len(picked)} shown)"
    return image_grid([Path(out_dir) / f for f in picked["file"]], titles=titles, ncols=ncols,
                      size=1.9, suptitle=suptitle)

"""Lost-to-found search in one import: gallery, retrieval scores, near duplicates, matcher.

The code lives in smaller modules; this one gathers their public names for notebooks:

gallery      :class:`GalleryIndex` (paths and labels over the one nearest-neighbour index)
retrieval    :func:`retrieval_scores`, :func:`average_precision`, :func:`per_class_table`
duplicates   :func:`make_near_duplicates`, :func:`duplicate_recall`, :func:`duplicate_table`
matcher      :class:`LostFoundMatcher`, :func:`query_categories`, :func:`color_table`
plots        :func:`plot_matches`, :func:`plot_explained`
"""

from lfhelpers.similarity.duplicates import (
    duplicate_recall,
    duplicate_table,
    make_near_duplicates,
    perturb,
)
from lfhelpers.similarity.gallery import (
    APPROX_BACKENDS,
    BACKENDS,
    GalleryIndex,
    Match,
    available_backends,
)
from lfhelpers.similarity.index import top_k_similar
from lfhelpers.similarity.matcher import (
    LinearCategories,
    LostFoundMatcher,
    color_table,
    query_categories,
)
from lfhelpers.similarity.plots import plot_explained, plot_matches
from lfhelpers.similarity.retrieval import average_precision, per_class_table, retrieval_scores

__all__ = [
    "APPROX_BACKENDS", "BACKENDS", "GalleryIndex", "LinearCategories", "LostFoundMatcher",
    "Match", "available_backends", "average_precision", "color_table", "duplicate_recall",
    "duplicate_table", "make_near_duplicates", "per_class_table", "perturb", "plot_explained",
    "plot_matches", "query_categories", "retrieval_scores", "top_k_similar",
]

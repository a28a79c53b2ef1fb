"""Geometric verification: is the found photo the very same object as the query?

Two photos of one object share many local features whose positions agree on one geometric
transformation; two different objects of the same kind share only a few, scattered ones.
:func:`verify` matches the descriptors of two photos (nearest neighbour with Lowe's ratio test,
one-to-one), fits a homography with OpenCV's MAGSAC++ and counts the matches that agree with
it (the inliers). :func:`is_same_item` turns that count into the decision, with thresholds
calibrated on the development photos (``benchmarks/bench_same_item.py``):

* a plane seen from two viewpoints (covers, boxes, labels) maps exactly by a homography; for a
  3-D object the homography of its dominant face still holds most of the inliers. An affine
  model and the fundamental matrix were measured too (UKBench same-object pairs called the
  same item at 15 inliers; different-object pairs): homography 71 % (random different-object
  pairs reach at most 5 inliers), affine 65 % (it loses the perspective of close-up photos),
  fundamental matrix 84 %, but it only constrains a point to a line, so different objects
  reach up to 13 inliers (almost no margin under the threshold) and it costs twice the time;
  the homography is the default, the others are options;
* a fitted homography must be plausible (keeps orientation, no extreme scale): a degenerate
  one that folds the photo is the typical false match of repeated text or logos.

:func:`plot_correspondences` draws the two photos side by side with the inlier matches.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from lfhelpers.errors import ConfigError
from lfhelpers.similarity.features.keypoints import Keypoints
from lfhelpers.similarity.search.vocabulary import faiss_threads

#: Fewest inliers of a same-item decision, calibrated on the development photos: no pair of
#: different objects reached it (about 18,000 pairs: UKBench cross-object pairs shortlisted by
#: visual words and random ones, LostNet and Caltech pairs across classes; the largest count
#: seen was 11), while 99.5 % of the DVD camera photos reach it with their own cover and 71 %
#: of the UKBench same-object pairs (3-D objects turned by up to 90 degrees); see
#: ``benchmarks/results/same_item.json``.
SAME_ITEM_MIN_INLIERS = 15

#: Smallest share of the ratio-test matches that must be inliers (a pair whose many matches
#: are mostly scattered fails it even when a few happen to agree). True pairs have 0.6-0.95.
SAME_ITEM_MIN_RATIO = 0.25

#: Lowe's ratio of the nearest to the second-nearest descriptor distance.
DEFAULT_RATIO = 0.8

#: Largest reprojection error (pixels of the shrunk photos) of an inlier.
DEFAULT_THRESHOLD = 4.0

#: Geometric models of :func:`verify`.
MODELS = ("homography", "affine", "fundamental")


@dataclass
class Verification:
    """Result of :func:`verify` for one pair of photos.

    Attributes
    ----------
    inliers : int
        Matches that agree with the fitted model (0 when no model was found or it was
        implausible).
    n_matches : int
        Tentative matches (after the ratio test), the RANSAC input.
    query_points, found_points : ndarray of float32, shape (inliers, 2)
        The inlier matches, in the ORIGINAL photos' pixels (for drawing).
    model : ndarray or None
        The fitted 3x3 homography (or 2x3 affine, 3x3 fundamental matrix) from the query's
        original pixels to the found photo's original pixels.
    kind : str
        Geometric model used.
    plausible : bool
        The model passed the sanity checks (orientation kept, bounded scale).
    """

    inliers: int = 0
    n_matches: int = 0
    query_points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    found_points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    model: np.ndarray | None = None
    kind: str = "homography"
    plausible: bool = False

    @property
    def inlier_ratio(self) -> float:
        """Inliers / tentative matches (0 without matches)."""
        return self.inliers / self.n_matches if self.n_matches else 0.0


def match_descriptors(q: np.ndarray, g: np.ndarray, ratio: float = DEFAULT_RATIO,
                      mutual: bool = False) -> np.ndarray:
    """Tentative matches: nearest neighbours that pass Lowe's ratio test, one-to-one.

    Parameters
    ----------
    q, g : ndarray
        Query and found descriptors: float32 (RootSIFT; Euclidean distance) or uint8 of 32
        bytes (ORB; Hamming distance), as :meth:`Keypoints.matching_descriptors` gives.
    ratio : float
        Keep a match when its distance is below ``ratio`` times the second-nearest one.
    mutual : bool
        Also require the query descriptor to be the nearest of the found one.

    Returns
    -------
    ndarray of int64, shape (m, 2)
        Rows ``(query index, found index)``; each found index at most once (its closest).
    """
    if len(q) < 1 or len(g) < 2:
        return np.zeros((0, 2), np.int64)
    if q.dtype == np.uint8:
        pairs = [p for p in cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(q, g, k=2) if len(p) == 2]
        dist = np.array([[p[0].distance, p[1].distance] for p in pairs],
                        np.float32).reshape(-1, 2)
        keep = dist[:, 0] < ratio * dist[:, 1]
        qi = np.array([p[0].queryIdx for p in pairs], np.int64)[keep]
        gi = np.array([p[0].trainIdx for p in pairs], np.int64)[keep]
    else:
        import faiss

        with faiss_threads(float(len(q)) * len(g) * q.shape[1]):
            dist, idx = faiss.knn(np.ascontiguousarray(q, np.float32),
                                  np.ascontiguousarray(g, np.float32), 2)
        keep = dist[:, 0] < (ratio * ratio) * dist[:, 1]  # squared distances
        qi = np.nonzero(keep)[0].astype(np.int64)
        gi = idx[keep, 0].astype(np.int64)
    d0 = dist[keep, 0]
    if not len(qi):
        return np.zeros((0, 2), np.int64)
    order = np.lexsort((d0, gi))  # by found index, closest first
    first = np.ones(len(order), bool)
    first[1:] = gi[order][1:] != gi[order][:-1]
    pick = order[first]
    m = np.stack([qi[pick], gi[pick]], axis=1)
    if mutual and len(m):
        back = match_descriptors(g, q, ratio=1.0)
        best = dict(zip(back[:, 0].tolist(), back[:, 1].tolist(), strict=True))
        m = m[[best.get(int(b)) == int(a) for a, b in m]]
    return m


def _plausible_homography(h: np.ndarray, size: tuple[int, int], max_scale: float) -> bool:
    """Orientation kept, bounded area change, no fold of the query photo's frame."""
    if not np.all(np.isfinite(h)) or abs(h[2, 2]) < 1e-12:
        return False
    h = h / h[2, 2]
    det = float(np.linalg.det(h[:2, :2]))
    if not (1.0 / max_scale**2 < det < max_scale**2):
        return False
    w, hh = max(size[0], 1), max(size[1], 1)
    corners = np.array([[0, 0], [w, 0], [w, hh], [0, hh]], np.float64)
    proj = np.c_[corners, np.ones(4)] @ h.T
    if np.any(proj[:, 2] <= 0):  # a corner behind the camera: the frame is torn apart
        return False
    p = proj[:, :2] / proj[:, 2:]
    edges = np.roll(p, -1, axis=0) - p
    cross = edges[:, 0] * np.roll(edges, -1, axis=0)[:, 1] - edges[:, 1] * np.roll(
        edges, -1, axis=0)[:, 0]
    return bool(np.all(cross > 0) or np.all(cross < 0))  # convex, not folded


def verify(q: Keypoints, g: Keypoints, ratio: float = DEFAULT_RATIO,
           model: str = "homography", threshold: float = DEFAULT_THRESHOLD,
           max_iters: int = 2000, confidence: float = 0.999, max_scale: float = 10.0,
           min_matches: int = 8) -> Verification:
    """Match two photos' keypoints and count the matches that agree on one geometry.

    Parameters
    ----------
    q, g : Keypoints
        The query photo and a found photo (same feature method).
    ratio : float
        Lowe's ratio test (see :func:`match_descriptors`).
    model : {"homography", "affine", "fundamental"}
        Geometric model (MAGSAC++ for the homography and the fundamental matrix; RANSAC for
        the affine model, which OpenCV fits without MAGSAC).
    threshold : float
        Largest reprojection error of an inlier, in pixels of the shrunk photos.
    max_iters : int
        RANSAC iterations at most.
    confidence : float
        RANSAC confidence.
    max_scale : float
        A homography whose linear part scales areas by more than ``max_scale**2`` (or less
        than its inverse) is implausible.
    min_matches : int
        Fewer tentative matches skip the model fit (0 inliers).

    Returns
    -------
    Verification
    """
    if model not in MODELS:
        raise ConfigError(f"model must be one of {MODELS}, got {model!r}.")
    if q.method != g.method:
        raise ConfigError(f"Cannot compare {q.method} keypoints with {g.method} ones.")
    if len(q) < 2 or len(g) < 2:
        return Verification(kind=model)
    m = match_descriptors(q.matching_descriptors(), g.matching_descriptors(), ratio)
    result = Verification(n_matches=len(m), kind=model)
    if len(m) < max(min_matches, 8 if model == "fundamental" else 4):
        return result
    a = q.xy[m[:, 0]].astype(np.float32)
    b = g.xy[m[:, 1]].astype(np.float32)
    try:
        fitted, mask, ok = _fit(a, b, q, model, threshold, max_iters, confidence, max_scale)
    except cv2.error:  # a degenerate sample OpenCV cannot handle: no model
        return result
    if fitted is None or mask is None:
        return result
    inl = mask.ravel().astype(bool)
    result.plausible = bool(ok)
    if not ok:
        return result
    result.inliers = int(inl.sum())
    result.query_points = (a[inl] * np.float32(q.scale)).astype(np.float32)
    result.found_points = (b[inl] * np.float32(g.scale)).astype(np.float32)
    result.model = _to_original(fitted, q.scale, g.scale, model)
    return result


def _fit(a: np.ndarray, b: np.ndarray, q: Keypoints, model: str, threshold: float,
         max_iters: int, confidence: float, max_scale: float
         ) -> tuple[np.ndarray | None, np.ndarray | None, bool]:
    """Fit the geometric model; returns the model, the inlier mask and plausibility."""
    if model == "homography":
        fitted, mask = cv2.findHomography(a, b, cv2.USAC_MAGSAC, threshold,
                                          maxIters=max_iters, confidence=confidence)
        ok = fitted is not None and _plausible_homography(fitted, q.image_size, max_scale)
    elif model == "affine":
        fitted, mask = cv2.estimateAffine2D(a, b, method=cv2.RANSAC,
                                            ransacReprojThreshold=threshold,
                                            maxIters=max_iters, confidence=confidence)
        ok = fitted is not None and 1.0 / max_scale**2 < float(
            np.linalg.det(fitted[:, :2])) < max_scale**2
    else:
        fitted, mask = cv2.findFundamentalMat(a, b, cv2.USAC_MAGSAC, threshold, confidence,
                                              max_iters)
        ok = fitted is not None and fitted.shape == (3, 3)
    return fitted, mask, ok


def _to_original(fitted: np.ndarray, sq: float, sg: float, model: str) -> np.ndarray:
    """Express a model fitted on shrunk photos in the original photos' pixels."""
    to_q = np.diag([1.0 / sq, 1.0 / sq, 1.0])
    from_g = np.diag([sg, sg, 1.0])
    if model == "affine":
        full = np.vstack([fitted, [0.0, 0.0, 1.0]])
        return (from_g @ full @ to_q)[:2]
    if model == "fundamental":  # x_g' F x_q = 0 with shrunk points
        return np.linalg.inv(from_g).T @ fitted @ to_q
    return from_g @ fitted @ to_q


def is_same_item(v: Verification, min_inliers: int = SAME_ITEM_MIN_INLIERS,
                 min_ratio: float = SAME_ITEM_MIN_RATIO) -> bool:
    """The same-item decision: enough inliers, and enough of the matches are inliers.

    Parameters
    ----------
    v : Verification
        Result of :func:`verify`.
    min_inliers : int
        Fewest inliers.
    min_ratio : float
        Smallest inlier share of the tentative matches.

    Returns
    -------
    bool
    """
    return bool(v.plausible and v.inliers >= min_inliers and v.inlier_ratio >= min_ratio)


def plot_correspondences(query_path: str | os.PathLike[str], found_path: str | os.PathLike[str],
                         verification: Verification, ax: Any = None, max_lines: int = 80,
                         max_side: int = 640) -> Any:
    """The query and the found photo side by side, with the inlier matches as lines.

    Parameters
    ----------
    query_path, found_path : path-like
        The two photos (opened with :func:`lfhelpers.images.open_image`).
    verification : Verification
        Result of :func:`verify` (its points are in the original photos' pixels).
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new figure when ``None``.
    max_lines : int
        Draw at most this many matches (evenly drawn from the inliers).
    max_side : int
        Longer side of each photo as drawn (both get the same height).

    Returns
    -------
    matplotlib.axes.Axes
    """
    import matplotlib.pyplot as plt

    from lfhelpers.images import open_image

    photos, originals = [], []
    for path in (query_path, found_path):
        img = open_image(path)
        originals.append(img.size)
        img.thumbnail((max_side, max_side))
        photos.append(img)
    left, right = photos
    height = max(left.size[1], right.size[1])
    scaled = []
    for img in (left, right):
        f = height / img.size[1]
        scaled.append((img.resize((max(1, round(img.size[0] * f)), height)), f))
    (li, lf), (ri, rf) = scaled
    gap = 10
    canvas = np.full((height, li.size[0] + gap + ri.size[0], 3), 255, np.uint8)
    canvas[:, :li.size[0]] = np.asarray(li)
    canvas[:, li.size[0] + gap:] = np.asarray(ri)
    if ax is None:
        _, ax = plt.subplots(figsize=(10, 10 * height / canvas.shape[1] + 0.6))
    ax.imshow(canvas)
    # points are in original pixels: to drawn pixels via the loaded/original size ratios
    kq = lf * left.size[0] / max(originals[0][0], 1)
    kg = rf * right.size[0] / max(originals[1][0], 1)
    n = verification.inliers
    pick = np.linspace(0, n - 1, min(n, max_lines)).round().astype(int) if n else []
    for i in pick:
        x0, y0 = verification.query_points[i] * kq
        x1, y1 = verification.found_points[i] * kg
        x1 += li.size[0] + gap
        ax.plot([x0, x1], [y0, y1], "-", color="lime", linewidth=0.8, alpha=0.8)
        ax.plot([x0, x1], [y0, y1], "o", color="yellow", markersize=2)
    same = "same item" if is_same_item(verification) else "not the same item"
    ax.set_title(f"{verification.inliers} inliers of {verification.n_matches} matches "
                 f"({verification.kind}): {same}")
    ax.set_axis_off()
    return ax


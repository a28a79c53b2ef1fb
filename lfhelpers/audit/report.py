"""Data-quality audit of a clean set: bad photos and doubtful labels, ranked for review.

``audit_dataset(clean_dir)`` reads the manifest and writes ``clean_dir/audit.csv``, one row per
finding, worst first within each issue:

``path``             the clean photo (or its quarantine copy for a ``label_conflict``)
``label``            its label
``issue``            ``dark``, ``light``, ``blurry``, ``low_information``, ``odd_aspect_ratio``,
                     ``grayscale`` (see :mod:`lfhelpers.data.quality`), ``cross_class_duplicate``
                     (the same or a near-identical photo under another label) or ``label_issue``
``score``            0..1, higher = more certain
``suggested_label``  for ``label_issue`` and ``cross_class_duplicate``: the other label
``probability``      for ``label_issue``: out-of-fold probability of the suggested label
``given_probability`` ... and of the given one
``detail``           the measured value and threshold, or the twin photo
``source``           the raw file (what a corrections file may name)

Quality statistics come from the cleanup's per-file cache (measured while it decoded each
photo); photos without them are measured once here and cached in ``clean_dir/.audit_stats.json``.

Label issues use confident learning (Northcutt et al., JAIR 2021) on out-of-fold predicted
probabilities: a logistic regression on CNN embeddings (ImageNet Xception, or MobileNet, cached
in ``cache_dir/embeddings`` and shared with notebook 06) predicts every photo from the other
folds; per-class thresholds (the mean probability a class's own photos get) estimate how many
photos of each label belong to each other class, and that many with the largest margin are
findings (see :mod:`lfhelpers.audit.labels`). Without any local backbone weights the label part
is skipped with the reason, and the quality flags still come.

The audit only reports: ``manifest.csv`` and the raw folder stay as they are. Findings are acted
on with a corrections file (:mod:`lfhelpers.data.corrections`), applied by the next ``clean``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from joblib import Parallel, delayed

from lfhelpers.audit.labels import COLUMNS, choose_embedder, label_issues
from lfhelpers.data.clean import CACHE, REJECTS
from lfhelpers.data.corrections import CORRECTIONS, corrections_template, read_corrections
from lfhelpers.data.duplicates import hamming_pairs
from lfhelpers.data.manifest import read_manifest
from lfhelpers.data.quality import (
    QUALITY_ISSUES,
    STATS_SIDE,
    STATS_VERSION,
    QualityThresholds,
    image_stats,
    quality_findings,
)
from lfhelpers.errors import ConfigError, DataError
from lfhelpers.fsutil import atomic_write, write_json
from lfhelpers.images import open_image

log = logging.getLogger(__name__)

AUDIT = "audit.csv"
STATS_CACHE = ".audit_stats.json"
ISSUES = (*QUALITY_ISSUES, "cross_class_duplicate", "label_issue")


@dataclass
class AuditReport:
    """What :func:`audit_dataset` found.

    Attributes
    ----------
    clean_dir : pathlib.Path
    findings : pandas.DataFrame
        The rows of ``audit.csv`` (columns :data:`COLUMNS`).
    stats : pandas.DataFrame
        Quality statistics per photo (``path``, ``label`` and the statistics).
    label_method : str
        How label issues were found, or why they were skipped.
    seconds : dict
        Wall-clock time per part (``stats``, ``embeddings``, ``labels``).
    n_stats_measured : int
        Photos whose statistics had to be measured here (not in the cleanup's cache).
    """

    clean_dir: Path
    findings: pd.DataFrame
    stats: pd.DataFrame
    label_method: str
    seconds: dict = field(default_factory=dict)
    n_stats_measured: int = 0

    def counts(self) -> pd.Series:
        """Findings per issue (every issue listed, zeros included)."""
        return self.findings["issue"].value_counts().reindex(list(ISSUES), fill_value=0)

    def worst(self, issue: str, n: int = 12) -> pd.DataFrame:
        """The ``n`` most certain findings of one issue."""
        rows = self.findings[self.findings["issue"] == issue]
        return rows.sort_values("score", ascending=False, kind="stable").head(n)


def _stats_of_file(file: str) -> dict | None:
    try:
        return image_stats(open_image(file, max_side=STATS_SIDE))
    except DataError as exc:
        log.warning("Audit skipped %s: %s", file, exc)
        return None


def photo_stats(clean_dir: str | os.PathLike[str], manifest: pd.DataFrame | None = None, *,
                n_jobs: int = 1, progress: bool = True) -> tuple[pd.DataFrame, int]:
    """Quality statistics of every photo of a clean set.

    Read from the cleanup's cache where it has them (no second decode); the others are
    measured once (in ``n_jobs`` processes) and kept in ``clean_dir/.audit_stats.json``.

    Returns
    -------
    (stats, n_measured)
        One row per readable photo (``path``, ``label``, ``source``, statistics), and how many
        photos were measured now.
    """
    from tqdm import tqdm

    clean_dir = Path(clean_dir)
    manifest = read_manifest(clean_dir) if manifest is None else manifest
    cached = _json(clean_dir / CACHE).get("files", {})
    extra = _json(clean_dir / STATS_CACHE)
    found: list[dict | None] = []
    todo: list[int] = []
    for i, row in enumerate(manifest.itertuples()):
        stats = (cached.get(row.source) or {}).get("quality") or extra.get(row.sha256)
        if not stats or stats.get("stats_version") != STATS_VERSION:
            todo.append(i)
            stats = None
        found.append(stats)
    if todo:
        files = [str(clean_dir / manifest["path"].iloc[i]) for i in todo]
        jobs = (delayed(_stats_of_file)(f) for f in files)
        results = Parallel(n_jobs=n_jobs, return_as="generator", batch_size=16)(jobs)
        for i, stats in tqdm(zip(todo, results, strict=True), total=len(todo), unit="img",
                             desc="quality statistics", disable=not progress):
            found[i] = stats
            if stats is not None:
                extra[manifest["sha256"].iloc[i]] = stats
        write_json(clean_dir / STATS_CACHE, extra)
    ok = [i for i, s in enumerate(found) if s is not None]
    stats = pd.DataFrame([found[i] for i in ok]).drop(columns="stats_version")
    head = manifest.iloc[ok][["path", "label", "source"]].reset_index(drop=True)
    return pd.concat([head, stats], axis=1), len(todo)


def _json(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        log.warning("Ignoring unreadable %s", path)
        return {}


def cross_class_duplicates(clean_dir: str | os.PathLike[str], manifest: pd.DataFrame,
                           distance: int = 8) -> pd.DataFrame:
    """Photos that look the same (perceptual hash) but carry different labels.

    Both photos of each pair get a row, with the other's label as ``suggested_label``; so do
    the cleanup's ``label_conflict`` rejects and the photos they repeat.

    Parameters
    ----------
    clean_dir : path-like
    manifest : pandas.DataFrame
    distance : int
        Hamming distance of the 64-bit perceptual hashes at or below which two photos count as
        the same (the cleanup's ``group_distance`` default).

    Returns
    -------
    pandas.DataFrame
        Findings (columns :data:`COLUMNS`), ``score = 1 - distance / (distance + 1)``.
    """
    rows = []
    paths, labels = manifest["path"].tolist(), manifest["label"].tolist()
    sources, hashes = manifest["source"].tolist(), manifest["phash"].tolist()
    for i, j in hamming_pairs(hashes, distance):
        if labels[i] == labels[j]:
            continue
        d = int(np.bitwise_count(np.uint64(int(hashes[i], 16) ^ int(hashes[j], 16))))
        for a, b in ((i, j), (j, i)):
            rows.append({"path": paths[a], "label": labels[a], "suggested_label": labels[b],
                         "score": 1 - d / (distance + 1), "source": sources[a],
                         "detail": f"looks like {paths[b]} (phash distance {d})"})
    rejects_file = Path(clean_dir) / REJECTS
    if rejects_file.exists():
        rejects = pd.read_csv(rejects_file, dtype=str, keep_default_na=False)
        by_source = dict(zip(sources, zip(paths, labels, strict=True), strict=True))
        for r in rejects[rejects["reason"] == "label_conflict"].itertuples():
            twin = _twin_of(r.detail)
            twin_path, twin_label = by_source.get(twin, ("", ""))
            rows.append({"path": r.quarantine, "label": r.label, "suggested_label": twin_label,
                         "score": 1.0, "source": r.source,
                         "detail": f"quarantined as label_conflict: {r.detail}"})
            if twin_path:
                rows.append({"path": twin_path, "label": twin_label, "suggested_label": r.label,
                             "score": 1.0, "source": twin,
                             "detail": f"its twin {r.source} (filed as {r.label!r}) was "
                                       "quarantined as label_conflict"})
    frame = pd.DataFrame(rows, columns=["path", "label", "suggested_label", "score", "source",
                                        "detail"])
    frame["issue"] = "cross_class_duplicate"
    return frame


def _twin_of(detail: str) -> str:
    """The raw file a ``label_conflict`` reject repeats, from its detail text."""
    if detail.startswith("looks like "):
        return detail[len("looks like "):].split(" (phash distance")[0]
    if detail.startswith("same content as "):
        return detail[len("same content as "):].split(": filed as")[0]
    return ""


def audit_dataset(
    clean_dir: str | os.PathLike[str],
    *,
    thresholds: QualityThresholds | None = None,
    duplicate_distance: int = 8,
    labels: bool = True,
    backbone: str = "auto",
    weights: str = "auto",
    image_size: int = 224,
    model_path: str | os.PathLike[str] = "",
    cache_dir: str | os.PathLike[str] | None = "data/cache",
    n_splits: int = 5,
    seed: int = 0,
    n_jobs: int = 1,
    progress: bool = True,
    write: bool = True,
) -> AuditReport:
    """Audit a clean set and write ``clean_dir/audit.csv`` (see the module docstring).

    Parameters
    ----------
    clean_dir : path-like
        A clean set (``manifest.csv``); nothing in it is changed except ``audit.csv`` and the
        statistics cache.
    thresholds : QualityThresholds, optional
        When a statistic makes a photo a finding.
    duplicate_distance : int
        Perceptual-hash distance of cross-class duplicates.
    labels : bool
        Look for label issues (needs embedding weights; skipped with the reason otherwise).
    backbone, weights, image_size, model_path, cache_dir
        The embedding network (see :func:`choose_embedder`); the default cache is notebook
        06's, so the two share vectors.
    n_splits, seed
        Cross-validation folds and seed of the out-of-fold probabilities.
    n_jobs : int
        Worker processes for statistics that are not cached yet and for the folds.
    progress : bool
        Progress bars.
    write : bool
        Write ``audit.csv``.

    Returns
    -------
    AuditReport
    """
    clean_dir = Path(clean_dir)
    if duplicate_distance < 0:
        raise ConfigError(f"duplicate_distance must be >= 0, got {duplicate_distance}.")
    manifest = read_manifest(clean_dir)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    stats, n_measured = photo_stats(clean_dir, manifest, n_jobs=n_jobs, progress=progress)
    quality = quality_findings(stats, thresholds)
    quality["detail"] = [f"{v:.3g} vs threshold {t:g}" for v, t in
                         zip(quality["value"], quality["threshold"], strict=True)]
    quality = quality.merge(manifest[["path", "source"]], on="path", how="left")
    seconds["stats"] = time.perf_counter() - start
    parts = [quality, cross_class_duplicates(clean_dir, manifest, duplicate_distance)]
    method = "label issues not asked for (labels=False)"
    if labels:
        embedder, method = choose_embedder(backbone, weights, image_size=image_size,
                                           model_path=model_path, cache_dir=cache_dir,
                                           progress=progress)
        if embedder is not None:
            found, times = label_issues(manifest, embedder, n_splits=n_splits, seed=seed,
                                        n_jobs=n_jobs)
            parts.append(found)
            seconds.update(times)
            method = (f"{method}; out-of-fold logistic regression ({n_splits} folds), "
                      "confident learning")
        else:
            log.warning("%s", method)
    findings = pd.concat([p.reindex(columns=COLUMNS) for p in parts if not p.empty],
                         ignore_index=True) if any(not p.empty for p in parts) else (
        pd.DataFrame(columns=COLUMNS))
    findings = _drop_kept(findings, clean_dir)
    order = {issue: k for k, issue in enumerate(ISSUES)}
    findings = (findings.assign(_o=findings["issue"].map(order))
                .sort_values(["_o", "score"], ascending=[True, False], kind="stable")
                .drop(columns="_o").reset_index(drop=True))
    findings["suggested_label"] = findings["suggested_label"].astype(object).fillna("")
    if write:
        with atomic_write(clean_dir / AUDIT, newline="") as fh:
            findings.to_csv(fh, index=False)
    return AuditReport(clean_dir=clean_dir.resolve(), findings=findings, stats=stats,
                       label_method=method, seconds=seconds, n_stats_measured=n_measured)


def _drop_kept(findings: pd.DataFrame, clean_dir: Path) -> pd.DataFrame:
    """Leave out photos the analyst marked ``keep`` in ``corrections.csv``."""
    path = clean_dir / CORRECTIONS
    if findings.empty or not path.exists():
        return findings
    kept = read_corrections(path)
    kept = kept[kept["action"] == "keep"]
    names = set(kept["path"]) | set(kept["source"]) - {""}
    return findings[~(findings["path"].isin(names) | findings["source"].isin(names))]


def review_template(report: AuditReport, issues: tuple[str, ...] = (
        "label_issue", "cross_class_duplicate"), name: str = "corrections_todo.csv") -> Path:
    """Write the findings to review as a corrections file with ``action`` left empty.

    The analyst fills in ``action`` (``relabel``, ``reject`` or ``keep``; ``new_label`` is
    pre-filled with the suggestion) and saves the file as ``corrections.csv``, which the next
    ``clean`` applies. Rewritten on every audit; ``corrections.csv`` itself is never written.

    Parameters
    ----------
    report : AuditReport
    issues : tuple of str
        Issues whose photos are listed.
    name : str
        File name in the clean folder.

    Returns
    -------
    pathlib.Path
    """
    if name == CORRECTIONS:
        raise ConfigError(f"{CORRECTIONS} holds the analyst's decisions; write the template "
                          "under another name.")
    path = report.clean_dir / name
    rows = report.findings[report.findings["issue"].isin(issues)]
    corrections_template(rows, path)
    # shown to the analyst: relative to the working folder (the project) when inside it
    return Path(os.path.relpath(path)) if path.is_relative_to(Path.cwd()) else path


def audit_summary(report: AuditReport) -> dict:
    """Key figures of an audit for ``metrics.json``."""
    counts = {k: int(v) for k, v in report.counts().items()}
    return {"n_photos": len(report.stats), "findings": counts,
            "n_photos_flagged": int(report.findings["path"].nunique()),
            "label_method": report.label_method,
            "seconds": {k: round(v, 1) for k, v in report.seconds.items()}}


def issue_gallery(report: AuditReport, issue: str, n: int = 12, ncols: int = 6):
    """Thumbnails of the ``n`` worst findings of one issue, titled with label and score.

    Returns
    -------
    matplotlib.figure.Figure or None
        ``None`` when the issue has no finding.
    """
    from lfhelpers.plots import image_grid

    rows = report.worst(issue, n)
    if rows.empty:
        return None
    titles = [f"{lab}" + (f" → {sug}" if sug else "") + f"\n{score:.2f}" for lab, sug, score
              in zip(rows["label"], rows["suggested_label"], rows["score"], strict=True)]
    paths = [report.clean_dir / p for p in rows["path"]]
    return image_grid(paths, titles, ncols=min(ncols, len(paths)), size=2.0,
                      suptitle=f"{issue}: {int(report.counts()[issue])} photo(s), worst first")


def audit_command(args) -> int:
    """``python -m lfhelpers audit CLEAN_DIR``: write ``audit.csv`` and print counts."""
    thresholds = QualityThresholds(**{k: v for k, v in vars(args).items()
                                      if k in asdict(QualityThresholds()) and v is not None})
    report = audit_dataset(args.clean_dir, thresholds=thresholds,
                           duplicate_distance=args.duplicate_distance,
                           labels=args.backbone != "none", backbone=args.backbone,
                           weights=args.weights, image_size=args.image_size,
                           model_path=args.model or "", cache_dir=args.cache_dir,
                           n_splits=args.folds, seed=args.seed, n_jobs=args.jobs,
                           progress=not args.quiet)
    print(f"{len(report.stats)} photos, {report.findings['path'].nunique()} with findings "
          f"({report.n_stats_measured} measured now, the rest from the cleanup's cache)")
    for issue, count in report.counts().items():
        print(f"  {issue:<22} {count}")
    print(report.label_method)
    print(f"audit: {report.clean_dir / AUDIT}")
    if args.template:
        print(f"findings to review (fill in action, save as corrections.csv): "
              f"{review_template(report)}")
    return 0


__all__ = ["AUDIT", "COLUMNS", "ISSUES", "AuditReport", "audit_dataset",
           "audit_summary", "cross_class_duplicates", "issue_gallery", "photo_stats",
           "review_template"]

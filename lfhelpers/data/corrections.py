"""The analyst's reviewed corrections, applied by the cleanup without losing anything.

The audit (:mod:`lfhelpers.audit.report`) only reports. To act on a finding, the analyst writes
``clean_dir/corrections.csv`` (UTF-8), one row per photo:

``path``       the photo as the audit or the manifest names it (``key/key_012.jpg``), or its raw
               file (``source`` column of ``audit.csv``)
``action``     ``relabel`` (file it under ``new_label``), ``reject`` (quarantine it as
               ``rejected_by_review``) or ``keep`` (the finding was wrong: the audit stops
               listing it)
``new_label``  the label for ``relabel`` (any Unicode; empty otherwise)
``note``       free text, kept as the quarantine detail of a rejected photo
``source``     optional: the raw file, as in ``audit.csv`` (then ``path`` is not needed)

:func:`corrections_template` writes such a file from the audit's findings with ``action``
empty (``clean_dir/corrections_todo.csv``), for the analyst to fill in and save as
``corrections.csv``. The next ``clean`` run applies it: the raw folder is never
touched, a relabelled photo moves to its new label folder and the manifest keeps its
``original_label``; a rerun with the same file gives the same manifest.
"""

from __future__ import annotations

import json
import logging
import os
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from lfhelpers.errors import ConfigError
from lfhelpers.fsutil import atomic_write, write_json

log = logging.getLogger(__name__)

CORRECTIONS = "corrections.csv"
#: Where the raw file each corrected clean path stood for is remembered between runs (a
#: relabelled photo's clean path changes, the analyst's file does not).
RESOLVED = ".corrections_resolved.json"
ACTIONS = ("relabel", "reject", "keep")
COLUMNS = ["path", "action", "new_label", "note"]


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text).strip()


def read_corrections(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read and check a corrections file.

    Parameters
    ----------
    path : path-like
        A CSV with the columns of the module docstring.

    Returns
    -------
    pandas.DataFrame
        Columns ``path, source, action, new_label, note`` (strings; rows with an empty action
        are dropped: not yet reviewed).

    Raises
    ------
    ConfigError
        When a column is missing, an action is unknown, or a relabel has no new label.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Corrections file {path} does not exist.")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = {"action"} - set(frame.columns)
    if missing or not ({"path", "source"} & set(frame.columns)):
        raise ConfigError(f"Corrections file {path} needs the columns path (or source), action, "
                          "new_label and note; see lfhelpers.data.corrections.")
    for col in ("path", "source", "new_label", "note"):
        if col not in frame.columns:
            frame[col] = ""
    frame = frame.map(_nfc)
    frame["action"] = frame["action"].str.lower()
    frame = frame[frame["action"] != ""].reset_index(drop=True)
    bad = sorted(set(frame["action"]) - set(ACTIONS))
    if bad:
        raise ConfigError(f"{path}: unknown action(s) {bad}; use one of {list(ACTIONS)} "
                          "(or leave it empty for a finding not reviewed yet).")
    relabel = frame["action"] == "relabel"
    empty = frame.loc[relabel & (frame["new_label"] == ""), "path"].tolist()
    if empty:
        raise ConfigError(f"{path}: relabel without new_label for {empty[:3]}.")
    odd = [lab for lab in frame.loc[relabel, "new_label"]
           if "/" in lab or "\\" in lab or lab.startswith((".", "_"))]
    if odd:
        raise ConfigError(f"{path}: {odd[:3]} cannot be a label (no '/', no leading '.' or '_').")
    return frame[["path", "source", "action", "new_label", "note"]]


def resolve_sources(frame: pd.DataFrame, clean_dir: Path, sources: Sequence[str],
                    path_to_source: Mapping[str, str]) -> pd.Series:
    """The raw file each correction row means (empty string when it cannot be found).

    A row's ``source`` wins; else its ``path`` is looked up as a clean path of the last
    manifest, then among the paths resolved by earlier runs, then as a raw path.
    """
    memory_file = clean_dir / RESOLVED
    memory: dict[str, str] = {}
    if memory_file.exists():
        try:
            memory = {str(k): str(v) for k, v in
                      json.loads(memory_file.read_text(encoding="utf-8")).items()}
        except (OSError, ValueError, AttributeError):
            log.warning("Ignoring unreadable %s", memory_file)
    known = set(sources)
    resolved = []
    for path, source in zip(frame["path"], frame["source"], strict=True):
        found = source if source in known else (
            path_to_source.get(path) or memory.get(path) or (path if path in known else ""))
        resolved.append(found if found in known else "")
        if found in known and path:
            memory[path] = found
    write_json(memory_file, dict(sorted(memory.items())))
    return pd.Series(resolved, index=frame.index, dtype=str)


def apply_corrections(results: list[Any], clean_dir: Path,
                      corrections: str | os.PathLike[str] | None,
                      previous: Mapping[str, tuple[str, str]]) -> int:
    """Apply reviewed corrections to the cleanup's per-file results, in place.

    Parameters
    ----------
    results : list of lfhelpers.data.checks.FileResult
        One per raw file (``source``, ``label``, ``ok``, ``reason``, ``detail``, ``extra``).
    clean_dir : pathlib.Path
        The clean folder (default corrections file, memory of resolved paths).
    corrections : path-like, optional
        The corrections file; ``None``: ``clean_dir/corrections.csv`` when it exists.
    previous : mapping
        ``{source: (clean path, sha256)}`` of the last manifest.

    Returns
    -------
    int
        Number of photos relabelled.
    """
    path = Path(corrections) if corrections else clean_dir / CORRECTIONS
    if corrections is None and not path.exists():
        return 0
    frame = read_corrections(path)
    if frame.empty:
        return 0
    by_source = {res.source: res for res in results}
    frame["resolved"] = resolve_sources(frame, clean_dir, list(by_source),
                                        {p: s for s, (p, _) in previous.items()})
    lost = frame.loc[frame["resolved"] == "", "path"].tolist()
    if lost:
        log.warning("%d correction(s) in %s name no photo of this set (first: %s); skipped.",
                    len(lost), path, lost[0])
    n_relabelled = 0
    for row in frame[frame["resolved"] != ""].itertuples():
        res = by_source[row.resolved]
        if row.action == "relabel" and row.new_label != res.label:
            res.extra["original_label"] = res.label
            res.label = row.new_label
            n_relabelled += 1
        elif row.action == "reject" and res.ok:
            res.ok = False
            res.reason = "rejected_by_review"
            res.detail = row.note or f"rejected in {path.name}"
    return n_relabelled


def corrections_template(findings: pd.DataFrame,
                         path: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """A corrections file to fill in, one row per photo of the findings (worst first).

    Parameters
    ----------
    findings : pandas.DataFrame
        Rows of ``audit.csv`` (``path, source, issue, suggested_label``).
    path : path-like, optional
        Where to write it (replaced when it exists).

    Returns
    -------
    pandas.DataFrame
        ``path, action, new_label, note, source``: ``new_label`` pre-filled with the suggested
        label, ``action`` empty (not reviewed), ``note`` naming the issues.
    """
    if findings.empty:
        frame = pd.DataFrame(columns=[*COLUMNS, "source"])
    else:
        first = findings.sort_values("score", ascending=False, kind="stable")
        grouped = first.groupby("path", sort=False)
        frame = pd.DataFrame({
            "path": list(grouped.groups),
            "action": "",
            "new_label": grouped["suggested_label"].apply(
                lambda s: next((x for x in s if isinstance(x, str) and x), "")).to_numpy(),
            "note": grouped["issue"].apply(lambda s: " ".join(dict.fromkeys(s))).to_numpy(),
            "source": grouped["source"].first().to_numpy() if "source" in findings else "",
        })
    if path is not None:
        with atomic_write(Path(path), newline="") as fh:
            frame.to_csv(fh, index=False)
    return frame

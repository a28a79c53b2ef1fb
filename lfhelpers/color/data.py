"""The crowd-sourced color-name data: reading, validation, and an offline synthetic fixture.

The Coding Train's data (people were shown a random RGB color and picked one of nine names,
``red-ish`` ... ``grey-ish``; data set ``codingtrain_colors``) is read and validated by
:func:`load_color_data`; invalid entries are counted by reason and skipped, never fatal.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from lfhelpers.errors import DataError

log = logging.getLogger(__name__)

#: The nine crowd-sourced labels, in the tutorial's order (its one-hot column order).
TUTORIAL_LABELS: tuple[str, ...] = (
    "red-ish", "green-ish", "blue-ish", "orange-ish", "yellow-ish",
    "pink-ish", "purple-ish", "brown-ish", "grey-ish",
)
#: File inside the ``codingtrain_colors`` folder.
COLOR_DATA_FILE = "colorData.json"
#: The ``source`` name of the offline fixture (:func:`make_synthetic_color_entries`).
SYNTHETIC_SOURCE = "synthetic"

_FIELDS = ("r", "g", "b", "label", "uid")


def is_synthetic_source(source: Any) -> bool:
    """True when ``source`` names the synthetic fixture, i.e. not real crowd-sourced data.

    ``"synthetic"``, and ``"synthetic fixture"`` as models saved by earlier versions record it.
    """
    return str(source).strip().lower() in (SYNTHETIC_SOURCE, "synthetic fixture")


@dataclass
class ColorData:
    """Validated color-name entries.

    Attributes
    ----------
    frame : pandas.DataFrame
        One row per valid entry: ``r``, ``g``, ``b`` (int 0-255), ``label`` (one of
        :data:`TUTORIAL_LABELS`), ``uid`` (contributor id).
    n_entries : int
        Entries in the source, valid or not.
    problems : dict
        Reason -> number of entries skipped for it.
    source : str
        Where the entries came from.
    """

    frame: pd.DataFrame
    n_entries: int
    problems: dict[str, int] = field(default_factory=dict)
    source: str = ""

    @property
    def X(self) -> np.ndarray:  # noqa: N802 - the usual name for a feature matrix
        """RGB values, shape (n, 3), float32 in 0-255."""
        return self.frame[["r", "g", "b"]].to_numpy(np.float32)

    @property
    def y(self) -> np.ndarray:
        """Labels, shape (n,), str."""
        return self.frame["label"].to_numpy(str)

    @property
    def groups(self) -> np.ndarray:
        """Contributor ids, shape (n,), str."""
        return self.frame["uid"].to_numpy(str)

    @property
    def n_bad(self) -> int:
        """Number of entries skipped."""
        return int(sum(self.problems.values()))

    def summary(self) -> pd.DataFrame:
        """One-column table: entries, valid, skipped (per reason), contributors, labels."""
        rows: dict[str, int] = {
            "entries in the source": self.n_entries,
            "valid entries": len(self.frame),
            "skipped entries": self.n_bad,
        }
        for reason, count in sorted(self.problems.items()):
            rows[f"  skipped: {reason}"] = count
        rows["contributors (uid)"] = int(self.frame["uid"].nunique())
        rows["labels"] = int(self.frame["label"].nunique())
        return pd.DataFrame({"value": rows})

    def label_counts(self) -> pd.Series:
        """Entries per label, in the tutorial's label order."""
        counts = self.frame["label"].value_counts()
        return counts.reindex([lab for lab in TUTORIAL_LABELS if lab in counts.index])


def _as_channel(value: Any) -> int | None:
    """Return ``value`` as an int when it is an integer number (not bool), else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return int(value)
    return None


def validate_color_entries(entries: Any, source: str = "") -> ColorData:
    """Check every color entry; keep the valid ones and count the others by reason.

    An entry is valid when it is an object with integer ``r``, ``g``, ``b`` in 0-255, a
    ``label`` among :data:`TUTORIAL_LABELS` (case and surrounding spaces ignored) and a
    non-empty ``uid``. Invalid entries are skipped, never fatal; a warning logs the counts.

    Parameters
    ----------
    entries : list or dict
        The list of entries, or the file's object ``{"entries": [...]}``.
    source : str
        Where they came from (for messages).

    Returns
    -------
    ColorData
        The valid entries, and the skipped ones counted by reason.

    Raises
    ------
    DataError
        When ``entries`` is not a list (or an object holding one), or no entry is valid.
    """
    if isinstance(entries, Mapping):
        if "entries" not in entries:
            raise DataError(f"{source or 'color data'}: expected an object with an 'entries' "
                            f"list, found keys {sorted(entries)[:5]}.")
        entries = entries["entries"]
    if not isinstance(entries, list):
        raise DataError(f"{source or 'color data'}: 'entries' must be a list of "
                        f"{{r, g, b, label, uid}} objects, got {type(entries).__name__}.")
    rows: list[tuple[int, int, int, str, str]] = []
    problems: Counter[str] = Counter()
    for entry in entries:
        if not isinstance(entry, Mapping):
            problems["not an object"] += 1
            continue
        missing = [f for f in _FIELDS if f not in entry or entry[f] is None]
        if missing:
            problems[f"missing {missing[0]}"] += 1
            continue
        channels = [_as_channel(entry[c]) for c in "rgb"]
        if any(v is None for v in channels):
            problems["r/g/b not an integer"] += 1
            continue
        if any(not 0 <= v <= 255 for v in channels):
            problems["r/g/b out of range 0-255"] += 1
            continue
        label = str(entry["label"]).strip().lower()
        if label not in TUTORIAL_LABELS:
            problems["unknown label"] += 1
            continue
        uid = str(entry["uid"]).strip()
        if not uid:
            problems["empty uid"] += 1
            continue
        rows.append((*channels, label, uid))
    if problems:
        log.warning("%s: skipped %d of %d color entries (%s)", source or "color data",
                    sum(problems.values()), len(entries),
                    ", ".join(f"{k}: {v}" for k, v in sorted(problems.items())))
    if not rows:
        raise DataError(f"{source or 'color data'} holds no valid color entry "
                        f"({len(entries)} entries; problems: {dict(problems) or 'none'}).")
    frame = pd.DataFrame(rows, columns=list(_FIELDS))
    frame[["r", "g", "b"]] = frame[["r", "g", "b"]].astype(np.int16)
    return ColorData(frame=frame, n_entries=len(entries), problems=dict(problems),
                     source=source)


def read_color_file(path: str | os.PathLike[str]) -> ColorData:
    """Read and validate a color-data JSON file (``{"entries": [...]}`` or a list).

    Parameters
    ----------
    path : path-like
        The JSON file (``colorData.json``).

    Returns
    -------
    ColorData
        The file's valid entries (see :func:`validate_color_entries`).

    Raises
    ------
    DataError
        When the file is missing or not JSON.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError(f"No color data at {path}.") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not a JSON color-data file ({exc}); fetch it again with "
                        "`python -m lfhelpers fetch codingtrain_colors`.") from exc
    return validate_color_entries(raw, source=str(path))


def make_synthetic_color_entries(
    n_entries: int = 1500, n_users: int = 40, noise: float = 0.08, n_bad: int = 6, seed: int = 0
) -> list[dict[str, Any]]:
    """Fixture color-name entries, generated by a fixed hue rule (not real crowd data).

    For tests and for the ``smoke`` profile on a machine with neither the mirror nor the
    network. Random RGB colors are named from their HSV hue, saturation and value (brown for
    dark orange/yellow, grey-ish for unsaturated), a fraction ``noise`` of labels is replaced by
    a random one, and ``n_bad`` malformed entries are appended so that validation has
    something to report.

    Parameters
    ----------
    n_entries : int
        Valid entries.
    n_users : int
        Fake contributor ids, assigned at random.
    noise : float
        Share of labels replaced at random.
    n_bad : int
        Malformed entries appended (out of range, unknown label, missing field, ...).
    seed : int
        Seed.

    Returns
    -------
    list of dict
        ``{r, g, b, label, uid}`` entries.
    """
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, size=(n_entries, 3))
    hsv = cv2.cvtColor((rgb.reshape(-1, 1, 3) / 255.0).astype(np.float32),
                       cv2.COLOR_RGB2HSV).reshape(-1, 3)
    hue, sat, val = hsv[:, 0], hsv[:, 1], hsv[:, 2]
    edges = [(15, "red-ish"), (40, "orange-ish"), (70, "yellow-ish"), (165, "green-ish"),
             (255, "blue-ish"), (290, "purple-ish"), (340, "pink-ish"), (361, "red-ish")]
    labels = np.empty(n_entries, dtype=object)
    for i, h in enumerate(hue):
        labels[i] = next(name for edge, name in edges if h < edge)
    brown = (hue >= 10) & (hue < 60) & (val < 0.62)
    labels[brown] = "brown-ish"
    labels[(sat < 0.18) | (val < 0.12)] = "grey-ish"
    flip = rng.random(n_entries) < noise
    labels[flip] = rng.choice(TUTORIAL_LABELS, size=int(flip.sum()))
    users = [f"synthetic-user-{k:02d}" for k in range(n_users)]
    uid = rng.choice(users, size=n_entries)
    entries: list[dict[str, Any]] = [
        {"r": int(r), "g": int(g), "b": int(b), "label": str(lab), "uid": str(u)}
        for (r, g, b), lab, u in zip(rgb, labels, uid, strict=True)
    ]
    bad: list[Any] = [
        {"r": 300, "g": 10, "b": 10, "label": "red-ish", "uid": "synthetic-bad"},
        {"r": 10, "g": 10, "b": 10, "label": "sky-ish", "uid": "synthetic-bad"},
        {"r": 10, "g": 10, "label": "grey-ish", "uid": "synthetic-bad"},
        {"r": "12", "g": 10, "b": 10, "label": "grey-ish", "uid": "synthetic-bad"},
        {"r": 10, "g": 10, "b": 10, "label": "grey-ish", "uid": ""},
        "not an entry",
    ]
    return entries + [bad[i % len(bad)] for i in range(n_bad)]


def load_color_data(
    source: str | os.PathLike[str] = "codingtrain_colors",
    dest: str | os.PathLike[str] | None = None,
    seed: int = 0,
    progress: bool = True,
) -> ColorData:
    """Load and validate color-name data.

    Parameters
    ----------
    source : str or path-like
        ``"codingtrain_colors"`` (fetched with :func:`lfhelpers.sources.fetch`, which honours
        ``LF_DATA_MIRROR``), ``"synthetic"`` (the fixture of
        :func:`make_synthetic_color_entries`), a JSON file, or a folder holding
        ``colorData.json``.
    dest : path-like, optional
        Where :func:`~lfhelpers.sources.fetch` puts the data set (its default:
        ``data/raw/<name>``).
    seed : int
        Seed of the synthetic fixture.
    progress : bool
        Progress bars while fetching.

    Returns
    -------
    ColorData

    Raises
    ------
    DataError, DownloadError
        When the data cannot be found or fetched; the message says what to do.
    """
    if is_synthetic_source(source):
        return validate_color_entries(make_synthetic_color_entries(seed=seed),
                                      source=SYNTHETIC_SOURCE)
    path = Path(source)
    if path.is_file():
        return read_color_file(path)
    from lfhelpers.data.sources import fetch

    folder = fetch(source, dest=dest, progress=progress)
    file = folder / COLOR_DATA_FILE
    if not file.is_file():
        raise DataError(f"{folder} has no {COLOR_DATA_FILE}; color data must be the "
                        "codingtrain_colors data set or a folder/file of the same format.")
    data = read_color_file(file)
    data.source = str(source)
    return data

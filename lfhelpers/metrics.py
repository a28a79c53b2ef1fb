"""The ``metrics.json`` of a run: each notebook merges its key figures under its own name."""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lfhelpers.fsutil import write_json

METRICS_FILE = "metrics.json"

log = logging.getLogger(__name__)


def _plain(value: Any) -> Any:
    """Convert NumPy scalars/arrays and paths to JSON-friendly Python values."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        value = float(value)
        return None if math.isnan(value) else value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def record_metrics(
    out_dir: str | os.PathLike[str], notebook: str, metrics: Mapping[str, Any]
) -> dict:
    """Merge ``metrics`` into ``<out_dir>/metrics.json`` under the key ``notebook``.

    Existing figures of other notebooks are kept; figures of the same notebook with the same
    name are replaced. The write is atomic and guarded by a lock file.

    Parameters
    ----------
    out_dir : path-like
        The run's output folder (the notebook's ``out_dir`` parameter).
    notebook : str
        Notebook stem, e.g. ``"01_crawl_cleanup"``.
    metrics : mapping
        Metric name to value (numbers, strings, lists or ``{label: count}`` mappings).

    Returns
    -------
    dict
        The whole merged content of ``metrics.json``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / METRICS_FILE
    with open(out / ".metrics.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = _load(path)
        if not isinstance(data.get(notebook, {}), dict):
            data[notebook] = {}
        data.setdefault(notebook, {}).update(_plain(dict(metrics)))
        write_json(path, data)
    return data


def read_metrics(out_dir: str | os.PathLike[str]) -> dict:
    """Return the content of ``<out_dir>/metrics.json`` (empty dict when absent).

    Parameters
    ----------
    out_dir : path-like
        A run's output folder.

    Returns
    -------
    dict
        ``{notebook stem: {metric: value}}``.
    """
    return _load(Path(out_dir) / METRICS_FILE)


def _load(path: Path) -> dict:
    """``metrics.json`` as a dict; a damaged file (truncated, not an object) counts as empty,
    with a logged warning, so the notebooks whose figures it held run again."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("Ignoring the damaged %s (%s); the figures it held will be recorded again.",
                    path, exc)
        return {}
    if not isinstance(data, dict):
        log.warning("Ignoring %s: a JSON %s, not an object.", path, type(data).__name__)
        return {}
    return data

"""Whether notebook 03 must train again, or may keep the classifier it saved last time.

A classifier saved by notebook 03 carries a record of what it was trained on
(``<model>.trained_on.json``: the content digest of every training photo, the classes and a
digest of the training settings and code). On a rerun, :func:`reuse_decision` compares that
record with the current training split:

- the classes, the settings or the training code changed: train again;
- a photo it was trained on is now in the validation or test split (or was relabelled): train
  again, or the test figures would include photos the model has seen;
- otherwise, when the photos added to or removed from the training split are at most
  ``retrain_fraction`` of it, the saved model is kept and only evaluated on the current test
  split (through the trunk store, seconds), so that a handful of new photos costs a handful of
  photos, not a retraining.

``retrain="always"`` trains every time; ``retrain="never"`` keeps any compatible model.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from lfhelpers.errors import ConfigError
from lfhelpers.fsutil import atomic_write, write_json
from lfhelpers.store import code_digest, spec_digest

log = logging.getLogger(__name__)

#: Suffix of the record written beside a saved model.
RECORD_SUFFIX = ".trained_on.json"
#: Values of ``retrain``.
RETRAIN_MODES = ("auto", "always", "never")
#: Layout of the record; a change retrains.
RECORD_VERSION = 1


def record_path(model_path: str | os.PathLike[str]) -> Path:
    """``<stem>.trained_on.json`` beside ``model.keras``."""
    path = Path(model_path)
    return path.with_name(path.stem + RECORD_SUFFIX)


def settings_digest(settings: dict[str, Any]) -> str:
    """Digest of the training settings and of the training code (:mod:`.xception`)."""
    from lfhelpers.models import features, xception

    return spec_digest({"settings": settings, "code": code_digest(xception, features),
                        "version": RECORD_VERSION})


def _digests(train: pd.DataFrame) -> list[str]:
    if "sha256" not in train.columns:
        raise ConfigError("The training rows need a sha256 column (a manifest from notebook 01 "
                          "or ensure_manifest has one).")
    return sorted(set(train["sha256"].astype(str)))


def write_record(model_path: str | os.PathLike[str], train: pd.DataFrame,
                 settings: dict[str, Any]) -> Path:
    """Write what the model at ``model_path`` was trained on, beside it (atomically).

    Parameters
    ----------
    model_path : path-like
        The saved ``.keras`` file.
    train : pandas.DataFrame
        The training split it was trained on (``sha256``, ``label``); augmented copies of those
        photos need no rows of their own.
    settings : dict
        Everything that shapes the training (the notebook's parameters).

    Returns
    -------
    pathlib.Path
        The record written.
    """
    path = record_path(model_path)
    write_json(path, {"version": RECORD_VERSION, "settings": settings_digest(settings),
                      "classes": sorted({str(c) for c in train["label"]}),
                      "photos": _digests(train)})
    return path


@dataclass
class Decision:
    """What :func:`reuse_decision` found."""

    keep: bool  #: the saved model may be kept
    reason: str  #: one sentence for the notebook
    n_added: int = 0  #: training photos the model has not seen
    n_removed: int = 0  #: photos it was trained on that left the training split


def reuse_decision(model_path: str | os.PathLike[str], train: pd.DataFrame,
                   manifest: pd.DataFrame, settings: dict[str, Any], retrain: str = "auto",
                   retrain_fraction: float = 0.05) -> Decision:
    """Keep the classifier saved at ``model_path``, or train again? (See the module.)

    Parameters
    ----------
    model_path : path-like
        Where notebook 03 saved its model last time.
    train : pandas.DataFrame
        The current training rows (``sha256``, ``label``).
    manifest : pandas.DataFrame
        The whole current manifest (``sha256``, ``split``), to find trained-on photos that are
        now held out.
    settings : dict
        The training settings (compared by digest with the record's).
    retrain : {"auto", "always", "never"}
        ``"always"``: never keep; ``"never"``: keep whenever the model is compatible (same
        classes, settings and code, no trained-on photo held out), however many photos changed.
    retrain_fraction : float
        ``"auto"`` keeps the model while the added plus removed training photos are at most
        this fraction of the photos it was trained on.

    Returns
    -------
    Decision
    """
    if retrain not in RETRAIN_MODES:
        raise ConfigError(f"retrain must be one of {RETRAIN_MODES}, not {retrain!r}.")
    path, record_file = Path(model_path), record_path(model_path)
    if retrain == "always":
        return Decision(False, "retrain='always': training.")
    if not path.is_file() or not record_file.is_file():
        return Decision(False, f"no saved model with a training record at {path}: training.")
    try:
        record = json.loads(record_file.read_text(encoding="utf-8"))
        before = set(record["photos"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return Decision(False, f"the training record {record_file.name} is unreadable ({exc}): "
                               "training.")
    if record.get("version") != RECORD_VERSION or record.get("settings") != settings_digest(
            settings):
        return Decision(False, "the training settings or code changed since the saved model: "
                               "training.")
    now = set(_digests(train))
    if sorted({str(c) for c in train["label"]}) != record.get("classes"):
        return Decision(False, "the classes changed since the saved model: training.")
    held_out = set(manifest.loc[manifest["split"].isin(["val", "test"]), "sha256"].astype(str))
    if before & held_out:
        return Decision(False, f"{len(before & held_out)} photo(s) the saved model was trained "
                               "on are now held out: training.")
    added, removed = len(now - before), len(before - now)
    changed = added + removed
    if retrain == "auto" and changed > retrain_fraction * len(before):
        return Decision(False, f"{added} training photo(s) added and {removed} removed, more "
                               f"than retrain_fraction={retrain_fraction:g} of the "
                               f"{len(before)} the saved model was trained on: training.",
                        added, removed)
    return Decision(True, f"kept the saved model: trained on {len(before)} photos; {added} "
                          f"added and {removed} removed since ({changed / len(before):.1%}, "
                          f"retrain_fraction={retrain_fraction:g}). Set retrain='always' to "
                          "train again.", added, removed)


def publish_kept(model_path: str | os.PathLike[str],
                 dest: str | os.PathLike[str]) -> list[Path]:
    """Copy a kept model, its labels and its record to ``dest`` (byte copies, atomically).

    Parameters
    ----------
    model_path : path-like
        The kept ``.keras`` file.
    dest : path-like
        Where the run's copy goes (nothing is copied when it is the same file).

    Returns
    -------
    list of pathlib.Path
        The copies (``dest`` first), or the kept files when ``dest`` is the same path.
    """
    from lfhelpers.models.predict import labels_path

    src, dest = Path(model_path), Path(dest)
    pairs = [(src, dest), (labels_path(src), labels_path(dest)),
             (record_path(src), record_path(dest))]
    if dest.exists() and dest.resolve() == src.resolve():
        return [s for s, _ in pairs]
    for s, d in pairs:
        with open(s, "rb") as src, atomic_write(d, "wb") as out:
            shutil.copyfileobj(src, out)
    return [d for _, d in pairs]

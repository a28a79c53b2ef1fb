"""Which feature extractor to search with, and a check that the classifier fits the data.

A fine-tuned classifier (notebook 03) is a good extractor only for the categories it was
trained on: used on another data set (a classifier of USB sticks and umbrellas on photos of
pets) its vectors and its "top-3 categories" are wrong in ways nothing downstream notices.
:func:`classifier_fits` compares the classifier's labels (``<stem>.labels.json`` beside the
``.keras`` file) with the data set's, and :func:`choose_extractor` drops the classifier when
they differ and says in one sentence which extractor is used and why.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lfhelpers.errors import ConfigError

FINETUNED_NAMES = ("finetuned", "classifier")
NOT_CNN = ("haralick",)


def classifier_labels(model_path: str | os.PathLike[str]) -> list[str] | None:
    """The labels in ``<stem>.labels.json`` next to a ``.keras`` model (``None``: no file)."""
    path = Path(model_path)
    labels_file = path.with_name(path.stem + ".labels.json")
    if not labels_file.is_file():
        return None
    try:
        return [str(x) for x in json.loads(labels_file.read_text(encoding="utf-8"))["labels"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def classifier_fits(model_path: str | os.PathLike[str] | None,
                    labels: Sequence[str]) -> tuple[bool, str]:
    """Whether the classifier at ``model_path`` was trained on exactly these labels.

    Returns
    -------
    ok : bool
    reason : str
        A sentence for the reader (what is missing or different).
    """
    if not model_path or not Path(model_path).is_file():
        return False, f"no fine-tuned classifier at {str(model_path)!r}"
    name = Path(model_path).name
    trained = classifier_labels(model_path)
    if trained is None:
        return False, (f"{name} has no readable {Path(model_path).stem}.labels.json, so its "
                       "categories cannot be checked against the data")
    data = sorted(set(map(str, labels)))
    if sorted(set(trained)) == data:
        return True, f"{name} was trained on this data set's {len(data)} labels"
    extra, missing = sorted(set(trained) - set(data)), sorted(set(data) - set(trained))
    return False, (f"{name} was trained on other labels (its {len(trained)}: "
                   f"{', '.join(trained[:6])}{', ...' if len(trained) > 6 else ''}; "
                   f"not in the data: {len(extra)}, data labels it does not know: "
                   f"{len(missing)}, e.g. {', '.join(missing[:3]) or '-'})")


@dataclass
class ExtractorChoice:
    """Result of :func:`choose_extractor`.

    Attributes
    ----------
    backbones : list of str
        Extractors to compute (the classifier left out when it does not fit).
    main : str
        The extractor used for search and clustering.
    classifier_ok : bool
        The classifier fits the data: its categories may feed the matcher.
    reason : str
        Which extractor and why, for the top of the notebook.
    notes : list of str
    """

    backbones: list[str]
    main: str
    classifier_ok: bool
    reason: str
    notes: list[str] = field(default_factory=list)


def choose_extractor(backbones: Sequence[str], classifier_model: str | os.PathLike[str] | None,
                     labels: Sequence[str], main_features: str = "") -> ExtractorChoice:
    """Pick the search extractor: the first fitting CNN of ``backbones`` (or ``main_features``).

    Parameters
    ----------
    backbones : sequence of str
        Extractors asked for, in order of preference (``finetuned``, ``xception``, ...).
    classifier_model : path-like, optional
        Notebook 03's ``.keras`` model.
    labels : sequence of str
        The data set's labels.
    main_features : str
        An explicit choice; it must be among the usable extractors.

    Raises
    ------
    ConfigError
        When no CNN extractor is left, or ``main_features`` is not usable.
    """
    ok, why = classifier_fits(classifier_model, labels)
    wanted = [b for b in backbones if b]
    notes = []
    usable = list(wanted)
    if any(b.lower() in FINETUNED_NAMES for b in wanted) and not ok:
        usable = [b for b in wanted if b.lower() not in FINETUNED_NAMES]
        notes.append(f"fine-tuned classifier not used: {why}")
    cnn = [b for b in usable if b.lower() not in NOT_CNN]
    if main_features:
        if main_features not in usable:
            raise ConfigError(f"main_features={main_features!r} is not usable here "
                              f"({'; '.join(notes) or 'not among backbones'}); choose one of "
                              f"{usable}.")
        main = main_features
        reason = f"{main}: chosen by the main_features parameter"
    elif cnn:
        main = cnn[0]
        reason = (f"{main}: {why}" if main.lower() in FINETUNED_NAMES else
                  f"{main}: the first CNN extractor of {wanted} that fits the data")
    else:
        raise ConfigError(f"No CNN extractor to search with among {wanted} "
                          f"({'; '.join(notes) or 'add xception or mobilenet'}).")
    if notes and main.lower() not in FINETUNED_NAMES:
        reason += f" ({notes[0]})"
    return ExtractorChoice(usable, main, ok, reason, notes)

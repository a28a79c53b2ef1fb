"""Profiles, notebook discovery and the parameters each notebook gets."""

from __future__ import annotations

import ast
import difflib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = ROOT / "notebooks"
PACKAGE_DIR = Path(__file__).resolve().parents[1]
PROFILES_FILE = PACKAGE_DIR / "profiles.yaml"
GRAPH_FILE = PACKAGE_DIR / "graph.yaml"
NOTEBOOK_PATTERN = re.compile(r"^(\d\d)_[^/]+\.ipynb$")


def parse_value(text: str) -> Any:
    """Parse a ``-p`` value: ``true``/``false`` to bool, then int, then float, else str.

    Parameters
    ----------
    text : str
        The text after ``name=``.

    Returns
    -------
    bool, int, float or str
    """
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """Turn ``["name=value", ...]`` into a dict of parsed values.

    Raises
    ------
    ConfigError
        When an item has no ``=`` or an empty name.
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"-p expects name=value, got {pair!r}.")
        out[name.strip()] = parse_value(value)
    return out


def load_profiles(path: str | os.PathLike[str] = PROFILES_FILE) -> dict[str, dict]:
    """Read the profiles file: ``{profile: {"all" | notebook stem: {param: value}}}``."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must map profile names to settings.")
    return data


def discover_notebooks(notebook_dir: str | os.PathLike[str] = NOTEBOOK_DIR) -> list[Path]:
    """The numbered notebooks ``NN_name.ipynb`` of a folder, in number order."""
    folder = Path(notebook_dir)
    found = sorted(p for p in folder.glob("*.ipynb") if NOTEBOOK_PATTERN.match(p.name))
    if not found:
        raise ConfigError(f"No numbered notebooks (NN_name.ipynb) in {folder}.")
    return found


def _names(spec: str | Iterable[str]) -> list[str]:
    return [w.strip() for w in (spec.split(",") if isinstance(spec, str) else spec) if w.strip()]


def _matches(stem: str, wanted: str) -> bool:
    return stem == wanted or stem.split("_")[0] == wanted.zfill(2)


def select_notebooks(notebooks: Sequence[Path], only: str | Iterable[str] | None) -> list[Path]:
    """Keep the notebooks whose number or stem is listed in ``only`` (``"01,03"``)."""
    if not only:
        return list(notebooks)
    wanted = _names(only)
    chosen = [nb for nb in notebooks if any(_matches(nb.stem, w) for w in wanted)]
    missing = [w for w in wanted if not any(_matches(nb.stem, w) for nb in notebooks)]
    if missing:
        names = ", ".join(nb.stem for nb in notebooks)
        raise ConfigError(f"--only names no notebook: {', '.join(missing)} (have: {names}).")
    return chosen


def match_stems(stems: Sequence[str], spec: str | Iterable[str], option: str) -> set[str]:
    """The stems named by ``spec`` (numbers or stems, ``"02,06"``); unknown names are an error.

    Parameters
    ----------
    stems : sequence of str
        The notebooks there are.
    spec : str or iterable of str
        What the user wrote.
    option : str
        The option's name, for the error message (``"--force"``).

    Returns
    -------
    set of str

    Raises
    ------
    ConfigError
        When a name matches no notebook.
    """
    wanted = _names(spec)
    missing = [w for w in wanted if not any(_matches(s, w) for s in stems)]
    if missing:
        raise ConfigError(f"{option} names no selected notebook: {', '.join(missing)} "
                          f"(have: {', '.join(stems)}).")
    return {s for s in stems if any(_matches(s, w) for w in wanted)}


def _substitute(value: Any, mapping: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        for key, repl in mapping.items():
            value = value.replace("{" + key + "}", repl)
    return value


def notebook_parameters(
    stem: str,
    declared: Iterable[str],
    profile: Mapping[str, Any],
    overrides: Mapping[str, Any],
    out_param: str,
    root: str | os.PathLike[str] = ROOT,
) -> dict[str, Any]:
    """The parameters one notebook gets: profile ``all``, profile entry, ``-p``, ``out_dir``.

    Only parameters the notebook declares are passed. ``{out}`` and ``{root}`` in string values
    are replaced by the run's output folder and the project folder.
    """
    declared = set(declared)
    merged: dict[str, Any] = {}
    merged.update(profile.get("all") or {})
    merged.update(profile.get(stem) or {})
    merged.update(overrides)
    merged["out_dir"] = out_param
    mapping = {"out": out_param, "root": str(root)}
    return {k: _substitute(v, mapping) for k, v in merged.items() if k in declared}


def declared_parameters(notebook: str | os.PathLike[str]) -> dict[str, Any]:
    """The parameters of a notebook's ``parameters`` cell with their default values.

    Defaults that are Python literals are evaluated (``"x"`` -> ``'x'``, ``[1, 3]`` -> list);
    any other expression gives ``None``.

    Parameters
    ----------
    notebook : path-like
        A notebook file.

    Returns
    -------
    dict
        Parameter name to default value, in the cell's order.
    """
    import papermill as pm

    out: dict[str, Any] = {}
    for name, info in pm.inspect_notebook(str(notebook)).items():
        try:
            out[name] = ast.literal_eval(str(info.get("default", "None")))
        except (ValueError, SyntaxError, TypeError):
            out[name] = None
    return out


def check_overrides(overrides: Mapping[str, Any], declared: Mapping[str, Iterable[str]]) -> None:
    """Stop before anything runs when a ``-p`` name is no parameter of a selected notebook.

    Parameters
    ----------
    overrides : mapping
        The ``-p`` values.
    declared : mapping
        Notebook stem to the names of its parameters (the selected notebooks only).

    Raises
    ------
    ConfigError
        For ``-p out_dir`` (use ``--out``) and for an unknown name; the message lists the valid
        names, the closest to the typo first.
    """
    valid = sorted({name for names in declared.values() for name in names} - {"out_dir"})
    if "out_dir" in overrides:
        raise ConfigError("-p out_dir is set by the runner; choose the run folder with --out DIR.")
    for name in overrides:
        if name in valid:
            continue
        ranked = sorted(valid, key=lambda v: (-difflib.SequenceMatcher(None, name, v).ratio(), v))
        close = difflib.get_close_matches(name, valid, n=3)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise ConfigError(
            f"-p {name}: no selected notebook ({', '.join(declared)}) has this parameter.{hint}\n"
            f"Valid names, closest first: {', '.join(ranked)}")

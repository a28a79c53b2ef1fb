"""The notebook graph: what each notebook reads and writes, and the order that follows.

The graph is declared in ``lfhelpers/graph.yaml`` (beside ``profiles.yaml``) in terms of the
notebooks' parameters::

    02_augmentation:
      reads: ["{data_dir}"]
      writes: ["{aug_dir}"]
    07_explore:
      after: all          # every earlier notebook, whatever it writes

A notebook depends on another when one of its read paths equals, contains or lies inside one of
the other's write paths (and two notebooks that write overlapping paths run in number order).
``reads`` must exist when the notebook starts (:func:`missing_inputs` checks them before a run
starts anything); ``may_read`` paths are used when they are there (dependencies all the same).
A template naming a parameter the notebook lacks, or one whose value is empty, gives no path;
``fallbacks`` say what an empty parameter means: another template, optionally rewritten by the
first matching regular expression (pure data, so the runner needs no stage's code)::

    fallbacks:
      aug_dir:
        from: "{data_dir}"
        rewrite: [['^(.*/)?clean/([^/]+)/*$', '\\1augmented/\\2'], ['^(.*?)/*$', '\\1_augmented']]

A notebook with no entry depends on every notebook before it.
"""

from __future__ import annotations

import os
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

#: The keys a notebook's entry may have.
ENTRY_KEYS = ("reads", "may_read", "writes", "scratch", "after")


@dataclass(frozen=True)
class Entry:
    """One notebook's declaration in the graph file."""

    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    scratch: tuple[str, ...] = ()
    after: tuple[str, ...] | str = ()
    may_read: tuple[str, ...] = ()


@dataclass(frozen=True)
class Fallback:
    """What an empty parameter means: ``template``, then the first ``rewrite`` that matches.

    ``rewrite`` holds ``(pattern, replacement)`` pairs of :func:`re.sub`, applied once to the
    filled template (with ``/`` separators).
    """

    template: str
    rewrite: tuple[tuple[str, str], ...] = ()

    def resolve(self, values: Mapping[str, Any]) -> str | None:
        """The parameter's value by this rule; ``None`` when the template names no path."""
        text = resolve_template(self.template, values)
        if text is None:
            return None
        text = text.replace(os.sep, "/")
        for pattern, replacement in self.rewrite:
            if re.search(pattern, text):
                return re.sub(pattern, replacement, text, count=1)
        return text


@dataclass
class GraphSpec:
    """The content of a graph file."""

    entries: dict[str, Entry] = field(default_factory=dict)
    fallbacks: dict[str, Fallback] = field(default_factory=dict)


@dataclass
class Node:
    """A notebook in the resolved graph.

    ``reads`` holds every input path (``reads`` and ``may_read`` of its entry); ``needs`` maps
    the ones that must exist before it starts to the template that named them.
    """

    stem: str
    reads: list[Path]
    writes: list[Path]
    declared: bool
    deps: set[str] = field(default_factory=set)
    needs: dict[Path, str] = field(default_factory=dict)


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None or value == ():
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"{where} must be a string or a list of strings, got {value!r}.")


def load_graph(path: str | os.PathLike[str] | None) -> GraphSpec:
    """Read a graph file; a missing file (or ``None``) gives an empty graph.

    Parameters
    ----------
    path : path-like or None
        The YAML file: ``{notebook stem: {reads, writes, scratch, after}, fallbacks: {...}}``.

    Returns
    -------
    GraphSpec

    Raises
    ------
    ConfigError
        When the file is not shaped as described.
    """
    if path is None or not Path(path).is_file():
        return GraphSpec()
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must map notebook stems to reads/writes.")
    spec = GraphSpec(fallbacks={str(k): _fallback(v, f"{path}: fallbacks.{k}")
                                for k, v in (data.pop("fallbacks", None) or {}).items()})
    for stem, item in data.items():
        item = item or {}
        unknown = set(item) - set(ENTRY_KEYS) if isinstance(item, dict) else set()
        if not isinstance(item, dict) or unknown:
            raise ConfigError(f"{path}: entry {stem} may only have {', '.join(ENTRY_KEYS)} "
                              f"(got {sorted(unknown) or item!r}).")
        after = item.get("after") or ()
        spec.entries[str(stem)] = Entry(
            reads=_strings(item.get("reads"), f"{path}: {stem}.reads"),
            may_read=_strings(item.get("may_read"), f"{path}: {stem}.may_read"),
            writes=_strings(item.get("writes"), f"{path}: {stem}.writes"),
            scratch=_strings(item.get("scratch"), f"{path}: {stem}.scratch"),
            after=after if after == "all" else _strings(after, f"{path}: {stem}.after"))
    return spec


def _fallback(value: Any, where: str) -> Fallback:
    """A ``fallbacks`` entry: a template, or ``{from: template, rewrite: [[pattern, repl]]}``."""
    if isinstance(value, str):
        return Fallback(value)
    if not isinstance(value, dict) or not isinstance(value.get("from"), str) or \
            set(value) - {"from", "rewrite"}:
        raise ConfigError(f"{where} must be a template or {{from: template, rewrite: "
                          f"[[pattern, replacement], ...]}}, got {value!r}.")
    rules = []
    for rule in value.get("rewrite") or []:
        if not (isinstance(rule, list) and len(rule) == 2 and all(isinstance(r, str)
                                                                   for r in rule)):
            raise ConfigError(f"{where}.rewrite: each rule is [pattern, replacement], "
                              f"got {rule!r}.")
        try:
            re.compile(rule[0])
        except re.error as exc:
            raise ConfigError(f"{where}.rewrite: bad pattern {rule[0]!r}: {exc}") from None
        rules.append((rule[0], rule[1]))
    return Fallback(value["from"], tuple(rules))


def _fields(template: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name]
    except ValueError as exc:
        raise ConfigError(f"Bad path template {template!r} in the graph file: {exc}") from None


def resolve_template(template: str, values: Mapping[str, Any],
                     fallbacks: Mapping[str, Fallback] | None = None) -> str | None:
    """Fill a path template with parameter values; ``None`` when it cannot name a path.

    Parameters
    ----------
    template : str
        E.g. ``"{models_dir}/{model_name}.keras"``.
    values : mapping
        Parameter values of the notebook (its defaults updated with what it is given).
    fallbacks : mapping, optional
        Parameter name to the :class:`Fallback` used when its value is empty.

    Returns
    -------
    str or None
        ``None`` when a named parameter is missing or empty (without a usable fallback).
    """
    filled: dict[str, str] = {}
    for name in _fields(template):
        value = values.get(name)
        if (value is None or value == "") and fallbacks and name in fallbacks:
            value = fallbacks[name].resolve(values)
        if value is None or value == "" or isinstance(value, bool | list | dict):
            return None
        filled[name] = str(value)
    return template.format_map(filled)


def _path(text: str, workdir: Path) -> Path:
    path = Path(text).expanduser()
    return Path(os.path.normpath(path if path.is_absolute() else workdir / path))


def _overlap(a: Path, b: Path) -> bool:
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def build_graph(
    stems: Sequence[str],
    values: Mapping[str, Mapping[str, Any]],
    spec: GraphSpec,
    workdir: str | os.PathLike[str],
) -> dict[str, Node]:
    """Resolve every notebook's paths and dependencies.

    Parameters
    ----------
    stems : sequence of str
        All notebooks, in number order.
    values : mapping
        Stem to the notebook's parameter values (defaults updated with what it is given).
    spec : GraphSpec
        The declared graph.
    workdir : path-like
        The kernels' working folder: relative paths are relative to it.

    Returns
    -------
    dict
        Stem to :class:`Node`, in number order.
    """
    workdir = Path(workdir)
    nodes: dict[str, Node] = {}
    for stem in stems:
        entry = spec.entries.get(stem)
        vals = values.get(stem, {})

        def paths(templates: tuple[str, ...], vals: Mapping[str, Any] = vals) -> list[Path]:
            out = []
            for template in templates:
                text = resolve_template(template, vals, spec.fallbacks)
                if text is not None and _path(text, workdir) not in out:
                    out.append(_path(text, workdir))
            return out

        needs: dict[Path, str] = {}
        for template in entry.reads if entry else ():
            for path in paths((template,)):
                needs.setdefault(path, template)
        nodes[stem] = Node(stem, paths(entry.reads + entry.may_read) if entry else [],
                           paths(entry.writes) if entry else [], declared=entry is not None,
                           needs=needs)
    for i, stem in enumerate(stems):
        node, entry = nodes[stem], spec.entries.get(stem)
        earlier = list(stems[:i])
        if entry is None or entry.after == "all":
            node.deps.update(earlier)
        else:
            for name in entry.after:
                hits = [s for s in stems if s == name or s.split("_")[0] == name.zfill(2)]
                node.deps.update(h for h in hits if h != stem)
        for other in stems:
            if other == stem:
                continue
            up = nodes[other]
            if any(_overlap(r, w) for r in node.reads for w in up.writes):
                node.deps.add(other)
            elif other in earlier and any(_overlap(w, v) for w in node.writes for v in up.writes):
                node.deps.add(other)
    topological_order(nodes)
    return nodes


def topological_order(nodes: Mapping[str, Node], only: Sequence[str] | None = None) -> list[str]:
    """The notebooks in an order that respects their dependencies, number order otherwise.

    Parameters
    ----------
    nodes : mapping
        The graph of :func:`build_graph`.
    only : sequence of str, optional
        Order just these (dependencies on other notebooks are ignored).

    Raises
    ------
    ConfigError
        When the dependencies form a cycle.
    """
    todo = [s for s in nodes if only is None or s in only]
    done: list[str] = []
    while todo:
        ready = [s for s in todo if not (nodes[s].deps & set(todo))]
        if not ready:
            raise ConfigError("The notebook graph has a cycle among "
                              f"{', '.join(todo)}; check reads/writes in the graph file.")
        done.append(ready[0])
        todo.remove(ready[0])
    return done


def upstream(nodes: Mapping[str, Node], stem: str) -> set[str]:
    """Every notebook ``stem`` depends on, directly or not."""
    seen: set[str] = set()
    stack = list(nodes[stem].deps)
    while stack:
        s = stack.pop()
        if s not in seen:
            seen.add(s)
            stack.extend(nodes[s].deps)
    return seen


def chain_lengths(nodes: Mapping[str, Node], stems: Sequence[str]) -> dict[str, int]:
    """For each of ``stems``, the notebooks on its longest chain of dependants among ``stems``.

    A notebook nothing in ``stems`` depends on counts 1; one that a notebook of chain 2 depends
    on counts 3, and so on. Run side by side, the notebook with the longest chain decides when
    the run ends (with no timings to go by, each notebook counts the same).
    """
    chosen = set(stems)
    below = {s: [t for t in chosen if s in nodes[t].deps] for s in chosen}
    length: dict[str, int] = {}

    def chain(stem: str) -> int:
        if stem not in length:
            length[stem] = 1 + max((chain(t) for t in below[stem]), default=0)
        return length[stem]

    return {s: chain(s) for s in stems}


@dataclass(frozen=True)
class MissingInput:
    """A path a selected notebook needs that is not there and that no selected notebook makes."""

    stem: str
    template: str
    path: Path
    makers: tuple[str, ...]


def missing_inputs(nodes: Mapping[str, Node], selected: Sequence[str]) -> list[MissingInput]:
    """The inputs (``reads``) of the selected notebooks that do not exist yet.

    An input written by a selected notebook (the notebook itself included) is fine: it will
    exist by the time its reader starts. ``makers`` are the notebooks that write it.

    Parameters
    ----------
    nodes : mapping
        The graph of :func:`build_graph`.
    selected : sequence of str
        The notebooks of this run.
    """
    found = []
    for stem in selected:
        for path, template in nodes[stem].needs.items():
            if path.exists() or any(_overlap(path, w) for s in selected
                                    for w in nodes[s].writes):
                continue
            makers = tuple(s for s in nodes if any(_overlap(path, w) for w in nodes[s].writes))
            found.append(MissingInput(stem, template, path, makers))
    return found


def selection_with_makers(nodes: Mapping[str, Node], selected: Sequence[str]) -> list[str]:
    """``selected`` plus the notebooks that make their missing inputs (and theirs), in order."""
    chosen = set(selected)
    while True:
        extra = {m for miss in missing_inputs(nodes, [s for s in nodes if s in chosen])
                 for m in miss.makers[:1]} - chosen
        if not extra:
            return [s for s in nodes if s in chosen]
        chosen |= extra

"""Fingerprints of notebook runs: what a rerun into the same folder may skip.

A notebook's fingerprint, stored after each successful run in ``<out>/.cache/<stem>.json``, holds

* ``source``: a hash of its cells (type, source, tags; outputs and metadata do not count);
* ``parameters``: the values it runs with (its defaults updated with the resolved parameters
  it is given, so `-p x=<its default>` changes nothing);
* ``code``: a hash per ``lfhelpers`` file it runs: the modules its cells import
  (``from lfhelpers.x import ...``, ``from lfhelpers import x``) and, transitively, every
  ``lfhelpers`` module those import (lazy imports inside functions included; a subpackage counts
  as all its files), plus ``lfhelpers/__init__.py``;
* ``reads``: a signature per path it reads (a file: size and modification time; a folder: a hash
  of the relative path, size and modification time of every file below it, hidden ones left
  out), taken when the run ends, so nothing is ever re-hashed from its content;
* ``upstream``: the ``stamp`` of each notebook it depends on, as it was when it ran;
* ``writes``: the paths it writes, each of which must still exist;
* ``stamp``: a fresh id of this run, which downstream notebooks record.

A fingerprint that cannot be read or is not shaped as above (a truncated write, an edit by
hand) is ignored with a logged warning: its notebook simply runs again.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import os
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..fsutil import write_json

CACHE_DIR = ".cache"
PACKAGE = "lfhelpers"
#: Fields of a fingerprint that map names to values.
_MAPPINGS = ("parameters", "code", "reads", "upstream")

log = logging.getLogger(__name__)
_warned: set[tuple[str, int, int]] = set()


def record_path(out: Path, stem: str) -> Path:
    """Where the fingerprint of ``stem`` lives in a run folder."""
    return out / CACHE_DIR / f"{stem}.json"


def record_problem(record: Any) -> str | None:
    """What is wrong with the shape of a stored fingerprint; ``None`` when it is usable."""
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not an object"
    for key in _MAPPINGS:
        if not isinstance(record.get(key, {}), dict):
            return f"its {key} is not a mapping"
    writes = record.get("writes", [])
    if not (isinstance(writes, list) and all(isinstance(w, str) for w in writes)):
        return "its writes are not a list of paths"
    if not isinstance(record.get("stamp"), str):
        return "it has no stamp"
    return None


def damaged_reason(out: Path, stem: str) -> str | None:
    """Why the fingerprint file of ``stem`` is unusable; ``None`` when absent or fine."""
    path = record_path(out, stem)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return f"unreadable ({exc})"
    try:
        return record_problem(json.loads(text))
    except ValueError as exc:
        return f"not valid JSON ({exc})"


def load_record(out: Path, stem: str) -> dict | None:
    """The stored fingerprint of ``stem`` in ``out``, or ``None``.

    A damaged one (see :func:`damaged_reason`) counts as absent, with a logged warning.
    """
    path = record_path(out, stem)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if record_problem(record) is None:
            return record
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        pass
    try:
        key = (str(path), path.stat().st_mtime_ns, path.stat().st_size)
    except OSError:
        key = (str(path), 0, 0)
    if key not in _warned:
        _warned.add(key)
        log.warning("Ignoring the damaged fingerprint %s (%s): %s will run again.", path,
                    damaged_reason(out, stem), stem)
    return None


def forget(out: Path, stem: str) -> None:
    """Remove a fingerprint (before a notebook runs: a failed run must leave none)."""
    record_path(out, stem).unlink(missing_ok=True)


def source_digest(notebook: str | os.PathLike[str]) -> str:
    """A hash of a notebook's cells: type, source and tags (not outputs, not metadata)."""
    nb = json.loads(Path(notebook).read_text(encoding="utf-8"))
    cells = [[c.get("cell_type"), "".join(c.get("source", "")),
              sorted(c.get("metadata", {}).get("tags", []))] for c in nb.get("cells", [])]
    return hashlib.sha256(json.dumps(cells).encode()).hexdigest()


def plain(value: Any) -> Any:
    """A JSON round trip (tuples become lists), so stored and new values compare equal."""
    return json.loads(json.dumps(value, default=str))


# --------------------------------------------------------------------------- code


def _parse(text: str) -> ast.AST | None:
    cleaned = "\n".join("pass" if line.lstrip().startswith(("%", "!")) else line
                        for line in text.splitlines())
    try:
        return ast.parse(cleaned)
    except SyntaxError:
        return None


def _imported(tree: ast.AST, package: str) -> set[str]:
    """Dotted ``lfhelpers`` module names a module or cell imports (``package``: its own)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names
                         if a.name == PACKAGE or a.name.startswith(PACKAGE + "."))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            if module != PACKAGE and not module.startswith(PACKAGE + "."):
                continue
            found.add(module)
            found.update(f"{module}.{a.name}" for a in node.names)
    return found


def _files(module: str, package_dir: Path) -> list[Path]:
    parts = module.split(".")[1:]
    if not parts:  # the package itself: its __init__.py is always counted
        return []
    rel = Path(*parts)
    as_file = package_dir / rel.with_suffix(".py")
    if as_file.is_file():
        return [as_file]
    folder = package_dir / rel
    if (folder / "__init__.py").is_file():
        return sorted(folder.rglob("*.py"))
    return []


def _package_of(path: Path, package_dir: Path) -> str:
    """The dotted package a module file belongs to (its relative imports start there)."""
    rel = path.relative_to(package_dir).with_suffix("")
    return ".".join([PACKAGE, *rel.parts[:-1]])


@lru_cache(maxsize=256)
def _module_imports(path: Path, mtime_ns: int, package_dir: Path) -> frozenset[str]:
    tree = _parse(path.read_text(encoding="utf-8"))
    return frozenset(_imported(tree, _package_of(path, package_dir)) if tree else ())


def code_files(notebook: str | os.PathLike[str], package_dir: Path) -> list[Path]:
    """The ``lfhelpers`` files a notebook runs (see the module docstring).

    Parameters
    ----------
    notebook : path-like
        The source notebook.
    package_dir : pathlib.Path
        The ``lfhelpers`` folder the kernel imports.

    Returns
    -------
    list of pathlib.Path
        Sorted; always includes ``__init__.py``.
    """
    nb = json.loads(Path(notebook).read_text(encoding="utf-8"))
    modules: set[str] = set()
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        text = "".join(cell.get("source", ""))
        tree = _parse(text)
        if tree is not None:
            modules |= _imported(tree, PACKAGE)
        else:  # a cell Python cannot parse: fall back to the import lines
            for m in re.finditer(r"^\s*from\s+(lfhelpers[\w.]*)\s+import\s+([\w, ]+)", text,
                                 re.M):
                modules.add(m.group(1))
                modules.update(f"{m.group(1)}.{n.strip()}" for n in m.group(2).split(","))
    seen: set[Path] = {package_dir / "__init__.py"}
    todo = [f for m in modules for f in _files(m, package_dir)]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in _module_imports(path, path.stat().st_mtime_ns, package_dir):
            todo.extend(_files(module, package_dir))
    return sorted(p for p in seen if p.is_file())


def code_digests(files: Iterable[Path], package_dir: Path) -> dict[str, str]:
    """``{"lfhelpers/x.py": sha256}`` for the given files."""
    return {f"{PACKAGE}/{p.relative_to(package_dir).as_posix()}":
            hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


# --------------------------------------------------------------------------- data


def path_signature(path: Path) -> str:
    """A cheap signature of a file or folder: sizes and modification times, no content.

    Parameters
    ----------
    path : pathlib.Path
        A file, a folder (every non-hidden file below it counts) or a missing path.

    Returns
    -------
    str
        ``"absent"``, ``"file:<size>:<mtime_ns>"`` or ``"dir:<n files>:<sha256>"``.
    """
    try:
        st = path.stat()
    except OSError:
        return "absent"
    if not path.is_dir():
        return f"file:{st.st_size}:{st.st_mtime_ns}"
    digest = hashlib.sha256()
    count = 0
    for folder, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = os.path.relpath(folder, path)
        for name in sorted(files):
            if name.startswith("."):
                continue
            try:
                fst = os.stat(os.path.join(folder, name))
            except OSError:
                continue
            digest.update(f"{rel}/{name}\0{fst.st_size}\0{fst.st_mtime_ns}\n".encode())
            count += 1
    return f"dir:{count}:{digest.hexdigest()}"


# --------------------------------------------------------------------------- fingerprints


def fingerprint(
    notebook: Path,
    parameters: Mapping[str, Any],
    reads: Sequence[Path],
    writes: Sequence[Path],
    upstream: Mapping[str, str | None],
    package_dir: Path,
) -> dict[str, Any]:
    """The fingerprint of a notebook as things stand now (see the module docstring)."""
    return {
        "source": source_digest(notebook),
        "parameters": plain(dict(parameters)),
        "code": code_digests(code_files(notebook, package_dir), package_dir),
        "reads": {str(p): path_signature(p) for p in reads},
        "upstream": dict(upstream),
        "writes": [str(p) for p in writes],
    }


def changes(old: Mapping[str, Any], new: Mapping[str, Any], show: Any = str) -> list[str]:
    """Why ``new`` differs from the stored ``old``: short sentences, most telling first.

    Parameters
    ----------
    old, new : mapping
        A stored record and a fresh :func:`fingerprint`.
    show : callable
        Turns a path string into what the user sees (e.g. relative to the project).

    Returns
    -------
    list of str
        Empty when nothing changed.
    """
    reasons: list[str] = []
    if old.get("source") != new["source"]:
        reasons.append("notebook source changed")
    before, after = old.get("parameters") or {}, new["parameters"]
    for name in sorted(set(before) | set(after)):
        if name not in after:
            reasons.append(f"parameter {name} no longer given")
        elif name not in before:
            reasons.append(f"parameter {name} newly given")
        elif before[name] != after[name]:
            reasons.append(f"parameter {name} changed")
    before, after = old.get("code") or {}, new["code"]
    for name in sorted(set(before) | set(after)):
        if before.get(name) != after.get(name):
            reasons.append(f"{name} changed" if name in before and name in after
                           else f"now runs {name}" if name in after else f"no longer runs {name}")
    before, after = old.get("reads") or {}, new["reads"]
    for name in after:
        if before.get(name) != after[name]:
            what = "missing" if after[name] == "absent" else "changed"
            reasons.append(f"input {show(name)} {what}")
    before, after = old.get("upstream") or {}, new["upstream"]
    for name in sorted(after):
        if after[name] and before.get(name) != after[name]:
            reasons.append(f"upstream {name} ran since")
    return reasons


def missing_outputs(record: Mapping[str, Any]) -> list[str]:
    """The recorded write paths that no longer exist (the run made all of them)."""
    return [p for p in record.get("writes", []) if not Path(p).exists()]


def save_record(out: Path, stem: str, print_: Mapping[str, Any], seconds: float) -> dict:
    """Store a successful run's fingerprint with a fresh stamp; return the record.

    Only the declared writes that exist after the run are recorded as its outputs: a notebook
    that had no cause to make one (01 reading a local folder makes no ``raw_dir`` copy) is not
    run again for its absence.
    """
    record = {**print_, "writes": [p for p in print_.get("writes", []) if Path(p).exists()],
              "stamp": uuid.uuid4().hex, "seconds": round(seconds, 1),
              "finished_utc": datetime.now(UTC).isoformat(timespec="seconds")}
    write_json(record_path(out, stem), record)
    return record

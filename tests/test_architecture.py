"""The package's shape: layers that hold, no import cycles, no reaching into private names.

Every module belongs to one layer of :data:`LAYERS` (the shared base at the bottom, the
commands at the top) and may import only from its own layer or the ones below it; inside
``similarity`` the folders have an order of their own (:data:`SIMILARITY_LAYERS`).

The import graph is read from the source with :mod:`ast` (every ``import`` inside the package,
at module level or inside functions), so the check costs milliseconds and needs no TensorFlow.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "lfhelpers"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(current: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(modules: dict[str, Path]) -> dict[str, set[tuple[str, str]]]:
    """``{module: {(imported module, imported name or "")}}`` for imports inside the package."""
    found: dict[str, set[tuple[str, str]]] = {}
    for name, path in modules.items():
        edges: set[tuple[str, str]] = set()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                edges |= {(a.name, "") for a in node.names if a.name.startswith("lfhelpers")}
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(name, path.name == "__init__.py", node)
                if not target.startswith("lfhelpers"):
                    continue
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    edges.add((sub, "") if sub in modules else (target, alias.name))
        found[name] = {(m, n) for m, n in edges if m in modules and m != name}
    return found


#: Layers from the bottom up: a module may import its own layer and those below, never above.
LAYERS = [
    {"", "errors", "paths", "fsutil", "store", "images", "http", "metrics", "plots"},  # shared base
    {"pipeline"},  # the generic notebook runner: knows no stage
    {"data"},
    {"crawl"},
    {"augment"},
    {"color"},
    {"models"},
    {"similarity"},
    {"audit"},
    {"explore"},
    {"cli", "__main__"},
]
#: Inside ``similarity``: features < search < evaluation, plots < cluster, matcher, batch < the
#: extractor comparison and the commands.
SIMILARITY_LAYERS = [
    {"", "features"},
    {"search"},
    {"evaluation", "plots"},
    {"cluster", "matcher", "batch"},
    {"compare", "commands"},
]


def _rank(module: str) -> tuple[int, int]:
    parts = module.split(".")[1:] + ["", ""]
    top = next(i for i, names in enumerate(LAYERS) if parts[0] in names)
    sub = 0
    if parts[0] == "similarity":
        sub = next(i for i, names in enumerate(SIMILARITY_LAYERS) if parts[1] in names)
    return top, sub


def test_every_module_has_a_layer():
    unplaced = []
    for module in _modules():
        try:
            _rank(module)
        except StopIteration:
            unplaced.append(module)
    assert not unplaced, f"modules in no layer of LAYERS: {unplaced}"


def test_imports_point_down_the_layers():
    upward = sorted(f"{module} -> {target}"
                    for module, edges in _imports(_modules()).items()
                    for target, _ in edges
                    if _rank(target) > _rank(module))
    assert not upward, "imports that run back up the layers:\n" + "\n".join(upward)


def test_the_layer_check_sees_function_level_imports():
    # the audit imports the CNN extractor inside a function (it is heavy): the graph has it
    edges = _imports(_modules())["lfhelpers.audit.labels"]
    assert ("lfhelpers.similarity.features.cnn", "") in edges


def test_no_import_cycle():
    modules = _modules()
    graph = {m: {t for t, _ in edges if not modules[t].name == "__init__.py"}
             for m, edges in _imports(modules).items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_no_module_uses_another_modules_private_names():
    offenders = [f"{module} imports {name} from {target}"
                 for module, edges in _imports(_modules()).items()
                 for target, name in edges
                 if name.startswith("_") and not name.startswith("__")]
    assert not offenders, "\n".join(offenders)


def test_help_lists_every_verb_fast():
    proc = subprocess.run([sys.executable, "-m", "lfhelpers", "--help"], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0
    for verb in ("run", "fetch", "clean", "audit", "crawl", "color", "predict", "embed", "index",
                 "search"):
        assert f"    {verb} " in proc.stdout, verb
    # --help of every verb must not import TensorFlow (it takes seconds)
    code = ("import sys; from lfhelpers.cli import build_parser\n"
            "try:\n    build_parser().parse_args(['predict', '--help'])\n"
            "except SystemExit:\n    pass\n"
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         timeout=60).stdout.strip().splitlines()[-1]
    assert out == "False"

"""The project folder: relative paths in notebook parameters are relative to it.

A notebook opened in JupyterLab runs in ``notebooks/``, papermill may run it anywhere, the
runner runs it at the project root. :func:`use_project_root`, called by the first cell of every
notebook, makes the project folder the working folder, so that ``data/clean/lostnet`` and
``reports/runs/manual`` mean the same folders whichever way the notebook is run, and nothing is
written under ``notebooks/``.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable that names the project folder explicitly.
ROOT_ENV = "LF_PROJECT_ROOT"


def _is_root(folder: Path) -> bool:
    return (folder / "pyproject.toml").is_file() and (folder / "lfhelpers").is_dir()


def project_root(start: str | os.PathLike[str] | None = None) -> Path:
    """Return the project folder.

    Parameters
    ----------
    start : path-like, optional
        Where to start looking (default: the working folder).

    Returns
    -------
    pathlib.Path
        ``$LF_PROJECT_ROOT`` when set; else the nearest folder at or above ``start`` that holds
        ``pyproject.toml`` and ``lfhelpers/``; else the folder the package was installed from
        (an editable install); else ``start`` itself.
    """
    value = os.environ.get(ROOT_ENV, "").strip()
    if value:
        return Path(value).expanduser().resolve()
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if _is_root(folder):
            return folder
    package_parent = Path(__file__).resolve().parent.parent
    if _is_root(package_parent):
        return package_parent
    return here


def use_project_root(start: str | os.PathLike[str] | None = None) -> Path:
    """Make :func:`project_root` (from ``start``) the working folder; returns it.

    The first cell of every notebook calls this.
    """
    root = project_root(start)
    os.chdir(root)
    return root


def project_path(path: str | os.PathLike[str]) -> Path:
    """``path`` resolved against the project folder when it is relative."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else project_root() / path

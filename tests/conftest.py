"""Shared pytest configuration: nbval settings and small fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config, items):
    """nbval: compare stdout and results of checked cells, never stderr (progress bars, logs)."""
    for item in items:
        parent = getattr(item, "parent", None)
        if parent is not None and hasattr(parent, "skip_compare") and "stderr" not in (
            parent.skip_compare
        ):
            parent.skip_compare = (*parent.skip_compare, "stderr")


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The offline data mirror (``LF_DATA_MIRROR``); skips the test when it is not set."""
    value = os.environ.get("LF_DATA_MIRROR")
    if not value or not Path(value).is_dir():
        pytest.skip("needs the real data: set LF_DATA_MIRROR to the offline datasets folder")
    return Path(value)


@pytest.fixture(scope="session")
def synthetic_raw(tmp_path_factory) -> Path:
    """A synthetic raw class-folder set with every awkward input (read-only by convention)."""
    from lfhelpers.data.fixtures import make_synthetic_dataset

    raw = tmp_path_factory.mktemp("raw")
    make_synthetic_dataset(raw, n_per_class=16, size=80, seed=3, with_bad_files=True)
    return raw

"""Shared pytest configuration: nbval settings and small fixtures."""

from __future__ import annotations

import os
import subprocess
import sys
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


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory) -> str:
    """A fixed random MobileNet weights file (cacheable, unlike weights='none'): built at 64 px,
    usable at any input size."""
    from lfhelpers.models import backbones

    backbones.set_seed(0)
    model, _, _ = backbones.build_backbone("mobilenet", 64, None)
    path = tmp_path_factory.mktemp("w") / "random_mobilenet.weights.h5"
    model.save_weights(path)
    return str(path)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """The ``smoke`` profile run once per test session: every notebook, models and caches.

    ``LF_SMOKE_RUN=<folder>`` reuses a finished smoke run instead (``python -m lfhelpers run
    --profile smoke --out <folder>``), e.g. while working on one test file.
    """
    reuse = os.environ.get("LF_SMOKE_RUN", "").strip()
    if reuse:
        folder = Path(reuse).resolve()
        if not (folder / "run.json").is_file():
            pytest.fail(f"LF_SMOKE_RUN={reuse} holds no finished run (run.json missing).")
        return folder
    out = tmp_path_factory.mktemp("smoke") / "run"
    proc = subprocess.run([sys.executable, "-m", "lfhelpers", "run", "--profile", "smoke",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=2400)
    if proc.returncode != 0:
        pytest.fail("the smoke run failed:\n" + proc.stdout[-3000:] + proc.stderr[-3000:])
    return out


@pytest.fixture(scope="session")
def explore_params(smoke_run) -> dict:
    """Notebook 07's parameters under the smoke profile, for the session's smoke run."""
    from lfhelpers.pipeline import load_profiles, notebook_parameters

    declared = ["data_dir", "out_dir", "seed", "run_dir", "classifier_model", "color_model",
                "cache_dir", "color_source"]
    return notebook_parameters("07_explore", declared, load_profiles()["smoke"], {},
                               str(smoke_run))

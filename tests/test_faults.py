"""Killed in the middle, run again: the same result as an uninterrupted run, nothing lost.

Each test starts a real ``python -m lfhelpers`` command, sends it ``SIGKILL`` as soon as it has
begun writing its output, runs it again to the end, and compares with a run that was never
interrupted: the same manifest (``clean``), the same shards (``embed``), the same answers from
the index (``index``); the raw folder is never changed and no partial file is taken for a
finished one. (The whole pipeline under ``kill -9`` costs minutes: ``benchmarks/`` is the place
for it; the runner's own damaged-cache handling is tested in ``test_pipeline.py``.)
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lfhelpers.data.fixtures import make_synthetic_dataset

# Keras' own numpy conversion warns under NumPy 2 (not ours to fix)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

ROOT = Path(__file__).resolve().parent.parent
SIZE = 64


def _tree(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``folder``."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "lfhelpers", *args]


def _run(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(_command(*args), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


def _killed(out: Path, *args: str, started: str = "*", timeout: float = 300) -> bool:
    """Start the command, ``SIGKILL`` it once ``out`` holds a file matching ``started``.

    Returns whether it was killed while working (``False``: it finished first).
    """
    proc = subprocess.Popen(_command(*args), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and any(p.is_file() for p in out.rglob(started)):
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(30)
                return proc.returncode == -signal.SIGKILL
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    return False


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("raw")
    make_synthetic_dataset(folder, n_per_class=14, size=96, seed=5, with_bad_files=True)
    return folder


@pytest.mark.slow
def test_clean_killed_then_rerun_gives_the_same_manifest(raw, tmp_path):
    before = _tree(raw)
    _run("clean", str(raw), "--out", str(tmp_path / "reference"), "--min-per-class", "4")
    killed = _killed(tmp_path / "clean", "clean", str(raw), "--out", str(tmp_path / "clean"),
                     "--min-per-class", "4")
    _run("clean", str(raw), "--out", str(tmp_path / "clean"), "--min-per-class", "4")
    reference = pd.read_csv(tmp_path / "reference" / "manifest.csv", keep_default_na=False)
    again = pd.read_csv(tmp_path / "clean" / "manifest.csv", keep_default_na=False)
    assert killed, "clean finished before it could be killed"
    pd.testing.assert_frame_equal(again, reference)
    assert _tree(raw) == before, "the raw folder changed"
    for path in again["path"]:  # every photo the manifest lists is there, whole
        assert (tmp_path / "clean" / path).is_file()
    assert _tree(tmp_path / "clean" / "_quarantine") == _tree(tmp_path / "reference" /
                                                              "_quarantine")


@pytest.mark.slow
def test_embed_and_index_killed_then_rerun_give_the_same_vectors_and_answers(
        raw, weights_file, tmp_path):
    from lfhelpers.similarity.batch.shards import read_embeddings

    photos = tmp_path / "photos"  # readable photos only: the raw set holds broken files too
    _run("clean", str(raw), "--out", str(photos), "--min-per-class", "4")
    common = ["--backbone", "mobilenet", "--weights", weights_file, "--image-size", str(SIZE),
              "--partition-size", "8", "--quiet"]
    _run("embed", str(photos), "--out", str(tmp_path / "emb_ref"), *common)
    killed = _killed(tmp_path / "emb", "embed", str(photos), "--out", str(tmp_path / "emb"),
                     *common, started="part-*.parquet")
    _run("embed", str(photos), "--out", str(tmp_path / "emb"), *common)
    ref_rows, ref = read_embeddings(tmp_path / "emb_ref")
    rows, vectors = read_embeddings(tmp_path / "emb")
    assert killed, "embed finished before it could be killed"
    order = rows.set_index("path").index.get_indexer(ref_rows["path"])
    assert (order >= 0).all() and len(rows) == len(ref_rows)
    np.testing.assert_allclose(vectors[order], ref, atol=1e-5)

    index_args = ["--cache-dir", str(tmp_path / "cache")]
    _run("index", str(tmp_path / "emb_ref"), "--out", str(tmp_path / "idx_ref"), *index_args)
    _killed(tmp_path / "idx", "index", str(tmp_path / "emb"), "--out", str(tmp_path / "idx"),
            *index_args)
    _run("index", str(tmp_path / "emb"), "--out", str(tmp_path / "idx"), *index_args)
    queries = list(ref_rows["path"][:3])
    answers = [_run("search", str(tmp_path / folder), *queries, "--k", "4", *index_args).stdout
               for folder in ("idx_ref", "idx")]
    assert [json.loads(line) for line in answers[0].splitlines()] == \
        [json.loads(line) for line in answers[1].splitlines()]

"""Tests of the one nearest-neighbour index (lfhelpers.similarity.search.index, .backends)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lfhelpers.errors import ConfigError, DataError
from lfhelpers.similarity.search.backends import available_backends, resolve_backend
from lfhelpers.similarity.search.distances import distance_matrix, nearest_from_matrix
from lfhelpers.similarity.search.index import NeighbourIndex

ALL = ["exact", "sklearn", "faiss-flat", "faiss-hnsw", "faiss-ivf", "hnswlib"]


def clustered(n: int = 300, d: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((10, d)) * 3
    return (centres[rng.integers(0, 10, n)] + rng.standard_normal((n, d))).astype(np.float32)


def need(backend: str) -> None:
    if backend not in available_backends():
        pytest.skip(f"{backend} is not installed (optional extra `search`)")


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("backend", ALL)
def test_every_backend_agrees_with_the_distance_matrix(backend, metric):
    need(backend)
    x = clustered()
    d_ref, i_ref = nearest_from_matrix(distance_matrix(x, metric), k=5)
    index = NeighbourIndex(metric, backend, n_jobs=1, nlist=8, nprobe=8).fit(x)
    d, i = index.kneighbors(None, k=5) if backend != "faiss-ivf" else index.search(
        x, 5, exclude=np.arange(len(x)))
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(i, i_ref, strict=True)])
    assert recall >= (0.999 if backend in ("exact", "sklearn", "faiss-flat") else 0.95)
    np.testing.assert_allclose(d[:, 0], d_ref[:, 0], rtol=1e-3, atol=1e-4)
    assert not (i == np.arange(len(x))[:, None]).any()  # leave-one-out: never itself


@pytest.mark.parametrize("backend", ALL)
def test_save_and_load_give_the_same_answers(backend, tmp_path):
    need(backend)
    x = clustered(200)
    index = NeighbourIndex("cosine", backend, n_jobs=1, nlist=4).fit(x)
    d1, i1 = index.search(x[:20], 7)
    folder = index.save(tmp_path / "idx")
    info = json.loads((folder / "index.json").read_text())
    assert info["params"]["backend"] == index.backend_ and info["n_items"] == 200
    if backend == "faiss-ivf":
        assert {"nlist", "nprobe", "encoding"} <= set(info["params"])
    again = NeighbourIndex.load(folder)
    d2, i2 = again.search(x[:20], 7)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(d1, d2, atol=1e-5)


def test_auto_is_exact_when_small_and_approximate_when_large():
    assert resolve_backend("auto", 10) in ("exact", "faiss-flat")
    if "faiss-ivf" in available_backends():
        assert resolve_backend("auto", 10, exact_below=5) == "faiss-ivf"
    assert resolve_backend("ivf") == "faiss-ivf" or "faiss-ivf" not in available_backends()


def test_errors_say_what_to_do(tmp_path):
    x = clustered(20)
    with pytest.raises(ConfigError, match="Unknown backend"):
        NeighbourIndex(backend="annoyish").fit(x)
    with pytest.raises(DataError, match="call fit"):
        NeighbourIndex().search(x, 1)
    index = NeighbourIndex().fit(x)
    with pytest.raises(DataError, match="k=20"):
        index.search(x[:1], 20, exclude=[0])
    with pytest.raises(DataError, match=r"\(m, 16\)"):
        index.search(np.ones((1, 3)), 1)
    with pytest.raises(DataError, match="lfhelpers index"):
        NeighbourIndex.load(tmp_path)

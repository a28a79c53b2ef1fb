"""Tests of :mod:`lfhelpers.data.sources`, :mod:`~lfhelpers.data.download` and
:mod:`~lfhelpers.data.archives`: download, safe extraction, mirror and local sources.

Network-free: downloads hit a small HTTP server on 127.0.0.1 that can answer Range requests,
fail its first requests with 503, cut a response off, or serve a wrong body.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import tarfile
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lfhelpers.cli import main as cli_main
from lfhelpers.data import download as download_mod
from lfhelpers.data import sources
from lfhelpers.data.fixtures import make_synthetic_dataset
from lfhelpers.data.sources import Dataset, download, fetch, safe_extract
from lfhelpers.errors import DataError, DownloadError, NetworkUnavailableError, UnsafeArchiveError

#: Read before the autouse fixture below hides it from the other tests.
REAL_MIRROR = os.environ.get("LF_DATA_MIRROR")

PAYLOAD = bytes(range(256)) * 40  # 10,240 bytes
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


# ------------------------------------------------------------------------------------------
# a local HTTP server


class _State:
    """What the test server serves and how it misbehaves."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.fail_first: dict[str, int] = {}  # path -> number of 503 answers before success
        self.retry_after: dict[str, str] = {}  # path -> Retry-After header of those answers
        self.cut_at: dict[str, int] = {}  # path -> bytes sent before dropping (first time only)
        self.wrong_body: dict[str, bytes] = {}  # path -> body served instead of the real one
        self.ignore_range: set[str] = set()
        self.no_length: set[str] = set()  # no Content-Length: the body ends when the socket does
        self.log: list[tuple[str, str | None]] = []  # (path, Range header)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection; closing ends the body

    def log_message(self, *args: object) -> None:  # keep pytest output quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        state: _State = self.server.state  # type: ignore[attr-defined]
        path = self.path
        state.log.append((path, self.headers.get("Range")))
        if path not in state.files:
            self.send_error(404)
            return
        if state.fail_first.get(path, 0) > 0:
            state.fail_first[path] -= 1
            self.send_response(503)
            if path in state.retry_after:
                self.send_header("Retry-After", state.retry_after[path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = state.wrong_body.get(path, state.files[path])
        status, payload, extra = 200, body, {}
        range_header = self.headers.get("Range")
        if range_header and path not in state.ignore_range:
            start = int(range_header.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.end_headers()
                return
            status, payload = 206, body[start:]
            extra["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("ETag", '"v1"')
        if path not in state.no_length:
            self.send_header("Content-Length", str(len(payload)))
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        cut = state.cut_at.pop(path, None)
        self.wfile.write(payload if cut is None else payload[:cut])
        self.wfile.flush()


class _Server:
    def __init__(self) -> None:
        self.state = _State()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.state = self.state  # type: ignore[attr-defined]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def serve(self, path: str, body: bytes) -> str:
        self.state.files[path] = body
        return self.url(path)

    def requests_for(self, path: str) -> list[str | None]:
        return [rng for p, rng in self.state.log if p == path]


@pytest.fixture
def server():
    srv = _Server()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Run in a temporary folder, without a mirror or URL overrides, with fast retries."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LF_DATA_MIRROR", raising=False)
    for key in list(os.environ):
        if key.startswith(sources.URL_ENV_PREFIX):
            monkeypatch.delenv(key)
    monkeypatch.setattr(download_mod, "RETRY_BACKOFF_S", 0.01)


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/data.tar.gz"


# ------------------------------------------------------------------------------------------
# archives


ROOT = "toy-repo-0123abc"
SUBDIR = f"{ROOT}/datasets/train"
TOY_FILES = {
    f"{SUBDIR}/apple/a1.jpg": b"apple-1",
    f"{SUBDIR}/apple/a2.jpg": b"apple-2",
    f"{SUBDIR}/열쇠/k1.jpg": "열쇠-1".encode(),
    f"{SUBDIR}/unwanted/u1.jpg": b"unwanted",
    f"{SUBDIR}/notes.txt": b"not a class",
    f"{ROOT}/README.md": b"readme",
}


def _tar_bytes(files: dict[str, bytes], extra: list[tarfile.TarInfo] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in sorted({str(Path(n).parent) for n in files}):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return buf.getvalue()


def _zip_bytes(files: dict[str, bytes], extra: list[zipfile.ZipInfo] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        for info in extra or []:
            zf.writestr(info, b"/etc/passwd")
    return buf.getvalue()


def _toy_dataset(url: str, **kw) -> Dataset:
    fields = dict(
        name="toy", url=url, kind="archive", filename="toy.tar.gz", subdir=SUBDIR,
        classes=("apple", "열쇠"), sha256=None, size_limit=1 << 20,
    )
    fields.update(kw)
    return Dataset(**fields)


@pytest.fixture
def register(monkeypatch):
    """Add a data set to the registry for one test."""

    def _register(dataset: Dataset) -> Dataset:
        monkeypatch.setitem(sources.DATASETS, dataset.name, dataset)
        return dataset

    return _register


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ------------------------------------------------------------------------------------------
# download


def test_download_writes_the_file_atomically_and_checks_sha256(server, tmp_path):
    url = server.serve("/f.bin", PAYLOAD)
    out = download(url, tmp_path / "dl" / "f.bin", sha256=PAYLOAD_SHA, progress=False)
    assert out.read_bytes() == PAYLOAD
    assert sorted(p.name for p in out.parent.iterdir()) == ["f.bin"]  # no .part left


def test_interrupted_download_resumes_with_range(server, tmp_path):
    big = PAYLOAD * 30  # 307 kB: several reads, so some bytes are on disk when the cut comes
    url = server.serve("/big.bin", big)
    server.state.cut_at["/big.bin"] = 200_000
    out = download(url, tmp_path / "big.bin", sha256=hashlib.sha256(big).hexdigest(),
                   retries=2, progress=False)
    assert out.read_bytes() == big
    first, second = server.requests_for("/big.bin")
    assert first is None
    resumed_at = int(second.removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= 200_000


def test_partial_file_from_an_earlier_run_is_resumed(server, tmp_path):
    url = server.serve("/f.bin", PAYLOAD)
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD[:700])
    download(url, tmp_path / "f.bin", sha256=PAYLOAD_SHA, progress=False)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
    assert server.requests_for("/f.bin") == ["bytes=700-"]


def test_server_ignoring_range_restarts_from_the_beginning(server, tmp_path):
    url = server.serve("/f.bin", PAYLOAD)
    server.state.ignore_range.add("/f.bin")
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD[:700])
    download(url, tmp_path / "f.bin", sha256=PAYLOAD_SHA, progress=False)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD  # not prefixed by the old 700 bytes


def test_partial_file_as_long_as_the_file_restarts_after_416(server, tmp_path):
    url = server.serve("/f.bin", PAYLOAD)
    (tmp_path / "f.bin.part").write_bytes(b"x" * len(PAYLOAD))
    download(url, tmp_path / "f.bin", sha256=PAYLOAD_SHA, progress=False)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
    assert server.requests_for("/f.bin") == [f"bytes={len(PAYLOAD)}-", None]


def test_503_answers_are_retried(server, tmp_path):
    url = server.serve("/f.bin", PAYLOAD)
    server.state.fail_first["/f.bin"] = 2
    download(url, tmp_path / "f.bin", retries=3, progress=False)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
    assert len(server.requests_for("/f.bin")) == 3


def test_persistent_503_is_a_download_error_not_a_network_error(server, tmp_path):
    url = server.serve("/f.bin", PAYLOAD)
    server.state.fail_first["/f.bin"] = 99
    with pytest.raises(DownloadError, match="503") as info:
        download(url, tmp_path / "f.bin", retries=1, progress=False)
    assert not isinstance(info.value, NetworkUnavailableError)
    assert len(server.requests_for("/f.bin")) == 2


def test_retry_after_is_honoured(server, tmp_path):
    url = server.serve("/f.bin", PAYLOAD)
    server.state.fail_first["/f.bin"] = 1
    server.state.retry_after["/f.bin"] = "1"
    started = time.monotonic()
    download(url, tmp_path / "f.bin", retries=2, progress=False)
    assert time.monotonic() - started >= 0.9  # not the 0.01 s back-off
    assert len(server.requests_for("/f.bin")) == 2


def test_unreadable_retry_after_falls_back_to_the_back_off(server, tmp_path):
    url = server.serve("/f.bin", PAYLOAD)
    server.state.fail_first["/f.bin"] = 2
    server.state.retry_after["/f.bin"] = "soon"
    download(url, tmp_path / "f.bin", retries=2, progress=False)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_retry_after_beyond_the_ceiling_is_not_awaited(server, tmp_path):
    url = server.serve("/f.bin", PAYLOAD)
    server.state.fail_first["/f.bin"] = 5
    server.state.retry_after["/f.bin"] = "3600"
    started = time.monotonic()
    with pytest.raises(DownloadError, match="asks to wait 3600 s"):
        download(url, tmp_path / "f.bin", retries=3, progress=False)
    assert time.monotonic() - started < 5
    assert len(server.requests_for("/f.bin")) == 1


def test_http_404_is_not_retried(server, tmp_path):
    with pytest.raises(DownloadError, match="404"):
        download(server.url("/missing"), tmp_path / "f.bin", progress=False)
    assert len(server.requests_for("/missing")) == 1


def test_checksum_mismatch_raises_and_keeps_no_file(server, tmp_path):
    url = server.serve("/f.bin", PAYLOAD)
    server.state.wrong_body["/f.bin"] = b"<html>rate limited</html>"
    with pytest.raises(DownloadError, match="Checksum mismatch"):
        download(url, tmp_path / "f.bin", sha256=PAYLOAD_SHA, progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("announced", [True, False], ids=["content-length", "streamed"])
def test_size_limit_aborts_and_removes_the_partial_file(server, tmp_path, announced):
    url = server.serve("/big.bin", PAYLOAD * 20)  # 200 kB, beyond one 64 kB read
    if not announced:
        server.state.no_length.add("/big.bin")
    with pytest.raises(DownloadError, match="size limit"):
        download(url, tmp_path / "big.bin", size_limit=100_000, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_host_raises_network_unavailable(tmp_path):
    with pytest.raises(NetworkUnavailableError, match="Could not reach"):
        download(_closed_port_url(), tmp_path / "f.bin", retries=1, progress=False)


# ------------------------------------------------------------------------------------------
# safe extraction


def test_safe_extract_keeps_only_subdir_and_listed_classes(tmp_path):
    archive = tmp_path / "toy.tar.gz"
    archive.write_bytes(_tar_bytes(TOY_FILES))
    out = safe_extract(archive, tmp_path / "out", subdir=SUBDIR, keep=["apple", "열쇠"])
    assert _tree(out) == {"apple/a1.jpg": b"apple-1", "apple/a2.jpg": b"apple-2",
                          "열쇠/k1.jpg": "열쇠-1".encode()}


def test_safe_extract_missing_class_is_an_error(tmp_path):
    archive = tmp_path / "toy.tar.gz"
    archive.write_bytes(_tar_bytes(TOY_FILES))
    with pytest.raises(DataError, match="lacks the class"):
        safe_extract(archive, tmp_path / "out", subdir=SUBDIR, keep=["apple", "pear"])
    assert not (tmp_path / "out").exists()


def _symlink(name: str, target: str, hard: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    return info


def _fifo(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.FIFOTYPE
    return info


def _evil_file(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 4
    return info


@pytest.mark.parametrize(
    "make_member, reason",
    [
        (lambda tmp: _evil_file(f"{SUBDIR}/apple/../../../../evil.txt"), "'..'"),
        (lambda tmp: _evil_file("../evil.txt"), "'..'"),
        (lambda tmp: _evil_file(str(tmp / "evil.txt")), "absolute"),
        (lambda tmp: _symlink(f"{SUBDIR}/apple/link.jpg", "/etc/passwd"), "symbolic link"),
        (lambda tmp: _symlink(f"{SUBDIR}/apple/hard.jpg", "/etc/passwd", hard=True), "hard link"),
        (lambda tmp: _fifo(f"{SUBDIR}/apple/pipe"), "FIFO"),
    ],
    ids=["nested-traversal", "traversal", "absolute", "symlink", "hardlink", "fifo"],
)
def test_malicious_tar_is_refused_and_nothing_is_written(tmp_path, make_member, reason):
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(_tar_bytes(TOY_FILES, extra=[make_member(tmp_path)]))
    with pytest.raises(UnsafeArchiveError, match=reason):
        safe_extract(archive, tmp_path / "out" / "dest", subdir=SUBDIR)
    assert not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "out" / "dest").exists()
    leftovers = list((tmp_path / "out").iterdir()) if (tmp_path / "out").exists() else []
    assert leftovers == []  # no half-written temporary folder either


def test_link_outside_the_kept_subdir_does_not_block_extraction(tmp_path):
    archive = tmp_path / "repo.tar.gz"
    archive.write_bytes(_tar_bytes(TOY_FILES, extra=[_symlink(f"{ROOT}/docs-link", "README.md")]))
    out = safe_extract(archive, tmp_path / "out", subdir=SUBDIR, keep=["apple"])
    assert sorted(_tree(out)) == ["apple/a1.jpg", "apple/a2.jpg"]


def _zip_symlink(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = 0o120777 << 16
    return info


@pytest.mark.parametrize(
    "member, reason",
    [
        (zipfile.ZipInfo("../../evil.txt"), "'..'"),
        (zipfile.ZipInfo("..\\evil.txt"), "'..'"),
        (_zip_symlink(f"{SUBDIR}/apple/link.jpg"), "symbolic link"),
    ],
    ids=["traversal", "backslash-traversal", "symlink"],
)
def test_malicious_zip_is_refused_and_nothing_is_written(tmp_path, member, reason):
    archive = tmp_path / "evil.zip"
    archive.write_bytes(_zip_bytes(TOY_FILES, extra=[member]))
    with pytest.raises(UnsafeArchiveError, match=reason):
        safe_extract(archive, tmp_path / "out" / "dest", subdir=SUBDIR)
    assert not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "out" / "dest").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) in (["evil.zip"], ["evil.zip", "out"])
    leftovers = list((tmp_path / "out").iterdir()) if (tmp_path / "out").exists() else []
    assert leftovers == []


def test_not_an_archive_is_a_data_error(tmp_path):
    archive = tmp_path / "page.tar.gz"
    archive.write_bytes(b"<html>not found</html>")
    with pytest.raises(DataError, match="neither a tar nor a zip"):
        safe_extract(archive, tmp_path / "out")


# ------------------------------------------------------------------------------------------
# fetch: download path


def test_fetch_downloads_and_extracts_a_tar_gz(server, register, tmp_path):
    url = server.serve("/toy.tar.gz", _tar_bytes(TOY_FILES))
    register(_toy_dataset(url))
    out = fetch("toy", progress=False)
    assert out == Path("data/raw/toy")
    assert sorted(_tree(out)) == [".lf_fetch.json", "apple/a1.jpg", "apple/a2.jpg", "열쇠/k1.jpg"]
    marker = json.loads((out / ".lf_fetch.json").read_text(encoding="utf-8"))
    assert (marker["name"], marker["source"], marker["files"]) == ("toy", url, 3)
    assert len(list(Path("data/cache/downloads").iterdir())) == 1

    # A second call finds the marker and neither downloads nor extracts again.
    n_requests = len(server.state.log)
    assert fetch("toy", progress=False) == out
    assert len(server.state.log) == n_requests


def test_fetch_downloads_and_extracts_a_zip(server, register, tmp_path):
    url = server.serve("/toy.zip", _zip_bytes(TOY_FILES))
    register(_toy_dataset(url, filename="toy.zip"))
    out = fetch("toy", tmp_path / "elsewhere", progress=False)
    assert sorted(_tree(out)) == [".lf_fetch.json", "apple/a1.jpg", "apple/a2.jpg", "열쇠/k1.jpg"]


def test_fetch_url_can_be_overridden(server, register, monkeypatch):
    register(_toy_dataset("http://127.0.0.1:9/never-used.tar.gz"))
    url = server.serve("/override.tar.gz", _tar_bytes(TOY_FILES))
    monkeypatch.setenv("LF_DATASET_URL_TOY", url)
    assert (fetch("toy", progress=False) / "apple" / "a1.jpg").exists()
    url2 = server.serve("/arg.tar.gz", _tar_bytes(TOY_FILES))
    fetch("toy", "data/raw/toy2", url=url2, progress=False)  # the argument wins
    assert server.requests_for("/arg.tar.gz") == [None]


def test_fetch_single_file_with_known_sha256(server, register):
    url = server.serve("/colorData.json", PAYLOAD)
    register(Dataset(name="colors", url=url, kind="file", filename="colorData.json",
                     sha256=PAYLOAD_SHA, size_limit=1 << 20))
    out = fetch("colors", progress=False)
    assert (out / "colorData.json").read_bytes() == PAYLOAD


def test_fetch_refuses_a_malicious_archive(server, register):
    evil = _tar_bytes(TOY_FILES, extra=[_evil_file(f"{SUBDIR}/apple/../../../../../evil.txt")])
    register(_toy_dataset(server.serve("/evil.tar.gz", evil)))
    with pytest.raises(UnsafeArchiveError):
        fetch("toy", progress=False)
    assert not Path("data/raw/toy").exists()
    assert not Path("evil.txt").exists() and not Path("data/evil.txt").exists()
    assert [p.name for p in Path("data/raw").iterdir()] == []  # no staging folder left


def test_fetch_removes_an_unreadable_cached_download(server, register):
    register(_toy_dataset(server.serve("/toy.tar.gz", b"<html>error page</html>")))
    with pytest.raises(DataError, match="neither a tar nor a zip"):
        fetch("toy", progress=False)
    assert list(Path("data/cache/downloads").iterdir()) == []


def test_fetch_without_network_or_mirror_says_how_to_set_the_mirror(register):
    url = _closed_port_url()
    register(_toy_dataset(url))
    with pytest.raises(NetworkUnavailableError) as info:
        fetch("toy", progress=False)
    message = str(info.value)
    assert "LF_DATA_MIRROR=" in message and url in message
    assert "lostnet/" in message  # says what the mirror folder must hold


def test_fetch_will_not_overwrite_a_folder_it_did_not_make(server, register):
    register(_toy_dataset(server.serve("/toy.tar.gz", _tar_bytes(TOY_FILES))))
    Path("data/raw/toy").mkdir(parents=True)
    Path("data/raw/toy/mine.txt").write_text("user data")
    with pytest.raises(DataError, match="not made by fetch"):
        fetch("toy", progress=False)
    assert Path("data/raw/toy/mine.txt").read_text() == "user data"


# ------------------------------------------------------------------------------------------
# fetch: mirror and local folders


@pytest.fixture
def mirror(tmp_path) -> Path:
    root = tmp_path / "mirror"
    make_synthetic_dataset(root / "toy", n_per_class=2, size=32)
    for path in sorted(root.rglob("*"), reverse=True):  # a read-only mirror
        path.chmod(0o555 if path.is_dir() else 0o444)
    yield root
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def test_mirror_is_copied_then_reused(mirror, register, monkeypatch):
    register(_toy_dataset("http://127.0.0.1:9/unused.tar.gz"))
    monkeypatch.setenv("LF_DATA_MIRROR", str(mirror))
    out = fetch("toy", progress=False)
    copied = {k: v for k, v in _tree(out).items() if not k.startswith(".")}
    assert copied == _tree(mirror / "toy")
    assert len(copied) == 8
    marker = json.loads((out / ".lf_fetch.json").read_text(encoding="utf-8"))
    assert marker["method"] == "mirror" and marker["files"] == 8

    def no_copy(*args, **kwargs):
        raise AssertionError("the mirror was copied a second time")

    monkeypatch.setattr(sources, "_copy_tree", no_copy)
    assert fetch("toy", progress=False) == out


def test_earlier_fetch_is_reused_offline_once_the_mirror_is_unset(mirror, register,
                                                                  monkeypatch):
    register(_toy_dataset("http://127.0.0.1:9/unreachable.tar.gz"))
    out = fetch("toy", mirror=mirror, progress=False)
    monkeypatch.delenv("LF_DATA_MIRROR", raising=False)
    assert fetch("toy", progress=False) == out  # no network needed for a rerun


def test_incomplete_copy_is_refreshed(mirror, register):
    register(_toy_dataset("http://127.0.0.1:9/unused.tar.gz"))
    out = fetch("toy", mirror=mirror, progress=False)
    victim = next(out.rglob("*.jpg"))
    victim.unlink()
    fetch("toy", mirror=mirror, progress=False)
    assert victim.exists()


def test_photos_added_to_a_fetched_copy_are_never_replaced(mirror, register):
    """A rerun must not delete photos a person put into the fetched folder."""
    register(_toy_dataset("http://127.0.0.1:9/unused.tar.gz"))
    out = fetch("toy", mirror=mirror, progress=False)
    first = next(out.rglob("*.jpg"))
    added = first.with_name("my_new_photo.jpg")
    added.write_bytes(first.read_bytes())
    with pytest.raises(DataError, match="my_new_photo.jpg.*Nothing was changed"):
        fetch("toy", mirror=mirror, progress=False)
    assert added.exists() and first.exists()


def test_missing_mirror_folder_is_a_clear_error(tmp_path, register):
    register(_toy_dataset("http://127.0.0.1:9/unused.tar.gz"))
    with pytest.raises(DataError, match=str(tmp_path / "nowhere" / "toy")):
        fetch("toy", mirror=tmp_path / "nowhere", progress=False)


def test_local_folder_is_returned_untouched(tmp_path):
    local = tmp_path / "my photos"
    make_synthetic_dataset(local, n_per_class=2, size=32)
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in local.rglob("*")}
    assert fetch(local, progress=False) == local
    assert fetch(str(local), mirror=tmp_path / "nowhere", progress=False) == local
    after = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in local.rglob("*")}
    assert after == before
    assert not Path("data").exists()


def test_unknown_name_is_a_clear_error():
    with pytest.raises(DataError, match="neither a known data set"):
        fetch("no-such-set", progress=False)


def test_cli_prints_the_folder_and_class_counts(mirror, register, capsys):
    register(_toy_dataset("http://127.0.0.1:9/unused.tar.gz"))
    assert cli_main(["fetch", "toy", "--dest", "raw/toy", "--mirror", str(mirror), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == str(Path("raw/toy"))
    assert "4 classes, 8 images" in out and "열쇠고리" in out


def test_cli_reports_errors_on_stderr_with_status_2(capsys):
    assert cli_main(["fetch", "no-such-set", "--quiet"]) == 2
    captured = capsys.readouterr()
    assert "neither a known data set" in captured.err and captured.out == ""


# ------------------------------------------------------------------------------------------
# the registry and the real mirror


def test_registry_entries_are_pinned_public_sources():
    assert set(sources.DATASETS) >= {"lostnet", "caltech101_5", "codingtrain_colors"}
    for ds in sources.DATASETS.values():
        assert ds.url.startswith("https://") and ds.size_limit > 0 and ds.citation
    assert sources.DATASETS["codingtrain_colors"].sha256 is not None
    assert len(sources.DATASETS["lostnet"].classes) == 8


@pytest.mark.realdata
@pytest.mark.skipif(not REAL_MIRROR, reason="LF_DATA_MIRROR is not set (no real data mirror)")
def test_real_mirror_lostnet_has_the_8_classes(tmp_path):
    out = fetch("lostnet", tmp_path / "lostnet", mirror=REAL_MIRROR, progress=False)
    counts = sources.summarize(out)
    assert sorted(counts) == sorted(sources.DATASETS["lostnet"].classes)
    assert all(n > 50 for n in counts.values())


@pytest.mark.realdata
@pytest.mark.skipif(not REAL_MIRROR, reason="LF_DATA_MIRROR is not set (no real data mirror)")
def test_real_mirror_colors_match_the_registered_checksum(tmp_path):
    out = fetch("codingtrain_colors", tmp_path / "colors", mirror=REAL_MIRROR, progress=False)
    data = json.loads((out / "colorData.json").read_text(encoding="utf-8"))
    assert len(data["entries"]) == 5643

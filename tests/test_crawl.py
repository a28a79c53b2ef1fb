"""Tests of :mod:`lfhelpers.crawl` against the fixture site in ``tests/fixtures/crawl/site``.

Every request goes to an HTTP server started here on 127.0.0.1. It serves the static fixture
files and misbehaves on purpose: ``/img/busy.jpg`` answers 429 (``Retry-After: 1``) once when a
test asks for it, ``/img/moved.jpg`` redirects to another host name (``localhost``),
``/img/wrongtype.jpg`` is sent as ``text/html``, and paths can be made to fail with 503, to
redirect, or to stream without a length. A second server, addressed as ``localhost``, stands
for another host.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd
import pytest
from PIL import Image

from lfhelpers.cli import main as cli_main
from lfhelpers.crawl import crawl, crawl_samples, load_config, read_items
from lfhelpers.crawl.fetchers import StaticFetcher, check_image, find_browser
from lfhelpers.crawl.names import map_category, safe_name, url_hash
from lfhelpers.crawl.politeness import PoliteClient, Skip
from lfhelpers.errors import ConfigError, DataError
from lfhelpers.http import make_retry

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "crawl"
SITE = FIXTURES / "site"

#: (category folder, title) of the images the fixture site yields with site.yaml.
EXPECTED_SAVED = {
    ("가방", "검정 가죽 가방"),
    ("지갑", "갈색 반지갑"),
    ("휴대폰", "아이폰 12 (파란색)"),
    ("지갑", "지갑 / ../../탈출?*"),
    ("열쇠", "자동차 열쇠"),
    ("휴대폰", "흰색 휴대폰"),
    ("카드", "학생증"),
}
#: title -> reason of the items that are not saved.
EXPECTED_SKIPPED = {
    "교통카드": "undecodable",  # truncated JPEG
    "여행 가방": "too_large",  # over limits.max_bytes
    "갤럭시 S21": "wrong_content_type",  # an HTML page sent as text/html
    "회색 백팩": "robots",  # under /private/
    "신용카드": "offsite",  # redirect to another host
    "카드지갑": "duplicate_url",  # same image URL as 검정 가죽 가방
    "현관 열쇠": "duplicate_image",  # same bytes under another URL
    "장우산": "unmapped_category",  # 기타물품 is not mapped and unmapped: drop
}


# ------------------------------------------------------------------------------------------
# the fixture server


class _Site:
    def __init__(self) -> None:
        self.log: list[dict] = []
        self.throttle_busy = False  # answer 429 to the first /img/busy.jpg (costs 1 s)
        self.fail: dict[str, tuple[int, str | None]] = {}  # path -> (status, Retry-After)
        self.redirect: dict[str, str] = {}  # path -> Location of a 301 answer
        self.robots: str | None = None  # served as /robots.txt instead of the fixture file
        self.lock = threading.Lock()
        self.base = ""
        self.port = 0

    def paths(self, host: str | None = None) -> list[str]:
        return [r["path"] for r in self.log if host is None or r["host"] == host]


class _Handler(SimpleHTTPRequestHandler):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=str(SITE), **kwargs)

    def log_message(self, *args: object) -> None:  # keep pytest output quiet
        pass

    def _send(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        site: _Site = self.server.site  # type: ignore[attr-defined]
        path = urlsplit(self.path).path
        with site.lock:
            site.log.append({"path": path, "host": self.headers.get("Host", "").split(":")[0],
                             "ua": self.headers.get("User-Agent", ""), "t": time.monotonic()})
        if path in site.fail:
            status, retry_after = site.fail[path]
            headers = {"Content-Length": "0"}
            if retry_after is not None:
                headers["Retry-After"] = retry_after
            return self._send(status, headers)
        if path in site.redirect:
            return self._send(301, {"Location": site.redirect[path], "Content-Length": "0"})
        if path == "/robots.txt" and site.robots is not None:
            body = site.robots.encode()
            return self._send(200, {"Content-Type": "text/plain",
                                    "Content-Length": str(len(body))}, body)
        if path == "/img/busy.jpg" and site.throttle_busy:
            site.throttle_busy = False
            return self._send(429, {"Retry-After": "1", "Content-Length": "0"})
        if path == "/img/moved.jpg":
            return self._send(302, {"Location": f"http://localhost:{site.port}/img/bag1.jpg",
                                    "Content-Length": "0"})
        if path == "/img/wrongtype.jpg":
            body = (SITE / "img" / "wrongtype.jpg").read_bytes()
            return self._send(200, {"Content-Type": "text/html; charset=utf-8",
                                    "Content-Length": str(len(body))}, body)
        if path == "/img/stream-big.jpg":  # no Content-Length: the body ends with the socket
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.end_headers()
            for _ in range(8):
                self.wfile.write(b"\xff" * 4096)
            return None
        return super().do_GET()


@contextlib.contextmanager
def _serve(host_name: str) -> Iterator[_Site]:
    """Serve the fixture site on 127.0.0.1, addressed by ``host_name`` in its URLs."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    state = _Site()
    state.port = server.server_address[1]
    state.base = f"http://{host_name}:{state.port}/"
    server.site = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture()
def site():
    """The fixture site on 127.0.0.1 (a fresh server, and misbehaviour state, per test)."""
    with _serve("127.0.0.1") as state:
        yield state


@pytest.fixture()
def other_host():
    """A second server, addressed as ``localhost``: a host the site's config does not allow."""
    with _serve("localhost") as state:
        yield state


def _config(site: _Site, name: str = "site.yaml", **overrides):
    return load_config(FIXTURES / name, base_url=site.base, **overrides)


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def _saved(out: Path) -> set[tuple[str, str]]:
    items = read_items(out)
    saved = items[items["status"] == "saved"]
    return {(f.split("/")[0], t) for f, t in zip(saved["file"], saved["title"], strict=True)}


def _stable(items: pd.DataFrame) -> pd.DataFrame:
    return items.drop(columns=["fetched_at"]).reset_index(drop=True)


# ------------------------------------------------------------------------------------------
# names, categories, configuration


@pytest.mark.parametrize(("text", "expected"), [
    ("검정 가죽 가방", "검정 가죽 가방"),
    ("../../etc/passwd", "etc_passwd"),
    ("..", "item"),
    ("", "item"),
    (".hidden", "hidden"),
    ("a/b\\c:d*e?f\"g<h>i|j", "a_b_c_d_e_f_g_h_i_j"),
    ("tab\tand\nnewline\x00\x07", "tab and newline"),
    ("CON", "_CON"),
    ("nul.txt", "_nul.txt"),
    ("trailing dots... ", "trailing dots"),
    ("e\u0301", "\u00e9"),  # NFC
])
def test_safe_name_makes_one_harmless_path_component(text, expected):
    assert safe_name(text) == expected


def test_safe_name_cuts_long_unicode_on_a_character_boundary():
    name = safe_name("가" * 100, max_bytes=40)
    assert name == "가" * 13 and len(name.encode()) <= 40


def test_map_category_exact_prefix_drop_and_unmapped():
    mapping = {"가방": "bag", "가방 > 쇼핑백": "shopping bag", "현금": None}
    assert map_category("가방 > 쇼핑백", mapping) == ("shopping bag", "")
    assert map_category("가방 >  여성용가방", mapping) == ("bag", "")
    assert map_category("현금 > 원화", mapping) == (None, "dropped_category")
    assert map_category("우산", mapping, "keep") == ("우산", "")
    assert map_category("우산", mapping, "drop") == (None, "unmapped_category")
    assert map_category("우산", mapping, "기타") == ("기타", "")
    assert map_category("  ", mapping) == (None, "no_category")


def test_yaml_and_toml_configs_read_the_same_fields():
    yaml_cfg, toml_cfg = load_config(FIXTURES / "site.yaml"), load_config(FIXTURES / "site.toml")
    assert yaml_cfg.fields == toml_cfg.fields
    assert yaml_cfg.detail_fields == toml_cfg.detail_fields
    labels = ("가방", "지갑", "휴대폰", "카드", "열쇠")
    assert yaml_cfg.categories == toml_cfg.categories == {k: k for k in labels}
    assert yaml_cfg.detail_fields["image"].attr == ("src",) and yaml_cfg.detail_fields["image"].url
    assert toml_cfg.page_url(toml_cfg.start[0], 2).endswith("/list/page2.html")


@pytest.mark.parametrize(("data", "message"), [
    ({"start": "http://a.test/", "items": "li", "fields": {"image": "img@src"}, "color": 1},
     "Unknown key"),
    ({"start": "http://a.test/", "items": "li", "fields": {"category": ".c"}}, "'image'"),
    ({"start": "http://a.test/", "items": "li", "fields": {"image": "img@src"}}, "'category'"),
    ({"start": "list.html", "items": "li", "fields": {"image": "i@src", "category": ".c"}},
     "base_url"),
    ({"start": "http://a.test/", "items": "li", "fields": {"image": "i@src", "category": ".c"},
      "pagination": {"template": "http://a.test/list"}}, "{page}"),
    ({"start": "http://a.test/", "items": "li", "fields": {"image": "i@src", "category": ".c"},
      "fetcher": "chrome"}, "fetcher"),
    ({"start": "http://a.test/", "items": "li", "fields": {"image": "i@src", "category": ".c"},
      "http": {"delay": "soon"}}, "http.delay"),
])
def test_invalid_configs_are_refused_with_the_key_named(data, message):
    with pytest.raises(ConfigError, match=message):
        load_config(data)


def test_missing_or_broken_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.toml"
    bad.write_text("start = [\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="Cannot parse"):
        load_config(bad)


def test_check_image_content_type_and_decode():
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), "red").save(buf, "PNG")
    png = buf.getvalue()
    assert check_image(png, "image/png") == ("PNG", 40, 30)
    assert check_image(png, "application/octet-stream")[0] == "PNG"
    for body, ctype, reason in [(png, "text/html", "wrong_content_type"),
                                (png, "image/svg+xml", "wrong_content_type"),
                                (png[: len(png) // 2], "image/png", "undecodable"),
                                (b"<html></html>", "image/jpeg", "undecodable"),
                                (b"", "image/jpeg", "undecodable")]:
        with pytest.raises(Skip) as info:
            check_image(body, ctype)
        assert info.value.reason == reason
    with pytest.raises(Skip) as info:
        check_image(png, "image/png", max_pixels=100)
    assert info.value.reason == "too_many_pixels"


def test_retry_after_in_seconds_or_as_a_date_and_never_below_the_delay():
    from urllib3 import HTTPResponse

    retry = make_retry(min_wait=0.5)

    def asked(value: str) -> float | None:
        return retry.get_retry_after(HTTPResponse(headers={"Retry-After": value}))

    assert asked("3") == 3.0
    assert asked("Wed, 21 Oct 2015 07:28:00 GMT") == 0.5  # in the past: the per-host delay
    assert asked("soon") is None  # unreadable: urllib3's back-off instead


# ------------------------------------------------------------------------------------------
# the polite client


def test_same_site_rule_and_schemes_need_no_request(site):
    client = PoliteClient(_config(site))
    for url, reason in [("file:///etc/passwd", "bad_url"), ("javascript:alert(1)", "bad_url"),
                        ("http://example.org/img/a.jpg", "offsite")]:
        with pytest.raises(Skip) as info:
            client.check(url)
        assert info.value.reason == reason
    assert site.log == []
    config = _config(site)
    config.allowed_hosts = ["*.cdn.test"]
    client = PoliteClient(config)
    assert client.host_allowed("http://img.cdn.test/a.jpg")
    assert not client.host_allowed("http://cdn.test.evil/a.jpg")


def test_byte_limit_holds_without_content_length(site):
    client = PoliteClient(_config(site))
    with pytest.raises(Skip) as info:
        client.fetch(site.base + "img/stream-big.jpg", limit=10_000)
    assert info.value.reason == "too_large"


def test_per_host_rate_limit_spaces_requests(site):
    config = _config(site)
    config.http.delay = 0.3
    client = PoliteClient(config)
    for page in ("list/page1.html", "list/page2.html", "list/page3.html"):
        client.fetch(site.base + page, limit=100_000)
    times = [r["t"] for r in site.log]
    assert [r["path"] for r in site.log][0] == "/robots.txt"
    assert len(times) == 4
    assert min(b - a for a, b in zip(times, times[1:], strict=False)) >= 0.25


def test_pages_in_euc_kr_are_decoded(site):
    final, html = StaticFetcher(PoliteClient(_config(site)), 100_000).page(
        site.base + "list/euc-kr.html")
    assert final.endswith("/list/euc-kr.html")
    assert "학생증" in html and "카드 &gt; 신분증" in html


def test_5xx_is_retried_then_given_up_and_long_retry_after_is_not_awaited(site):
    site.fail["/list/page1.html"] = (503, None)
    site.fail["/list/page2.html"] = (429, "3600")
    client = PoliteClient(_config(site))  # retries: 2, backoff 0.1 s
    with pytest.raises(Skip) as info:
        client.fetch(site.base + "list/page1.html", limit=100_000)
    assert info.value.reason == "http_503"
    assert site.paths().count("/list/page1.html") == 3
    started = time.monotonic()
    with pytest.raises(Skip) as info:
        client.fetch(site.base + "list/page2.html", limit=100_000)
    assert info.value.reason == "http_429" and "max_retry_after" in info.value.note
    assert site.paths().count("/list/page2.html") == 1 and time.monotonic() - started < 5


def test_robots_txt_redirect_to_another_host_is_followed_for_robots_txt_only(site, other_host):
    """RFC 9309 asks crawlers to follow robots.txt redirects, across hosts too; the rules found
    there are the redirecting site's. Nothing but robots.txt is fetched from the other host."""
    site.redirect["/robots.txt"] = other_host.base + "robots.txt"
    other_host.robots = "User-agent: lfhelpers\nDisallow: /list/page2.html\n"
    client = PoliteClient(_config(site))
    assert client.fetch(site.base + "list/page1.html", limit=100_000).status == 200
    with pytest.raises(Skip) as info:
        client.fetch(site.base + "list/page2.html", limit=100_000)
    assert info.value.reason == "robots"
    with pytest.raises(Skip) as info:  # the other host itself stays off limits
        client.fetch(other_host.base + "list/page1.html", limit=100_000)
    assert info.value.reason == "offsite"
    assert other_host.paths() == ["/robots.txt"]
    assert site.paths() == ["/robots.txt", "/list/page1.html"]


def test_robots_txt_redirect_loop_means_disallowed(site):
    site.redirect["/robots.txt"] = site.base + "robots.txt"
    client = PoliteClient(_config(site))
    with pytest.raises(Skip) as info:
        client.fetch(site.base + "list/page1.html", limit=100_000)
    assert info.value.reason == "robots_unreachable"
    assert site.paths() == ["/robots.txt"] * (client.options.max_redirects + 1)


def test_retries_keep_the_per_host_delay_and_are_counted(site):
    config = _config(site)
    config.http.delay = 0.3
    site.fail["/list/page1.html"] = (503, None)
    client = PoliteClient(config)
    with pytest.raises(Skip) as info:
        client.fetch(site.base + "list/page1.html", limit=100_000)
    assert info.value.reason == "http_503"
    times = [r["t"] for r in site.log]
    assert len(times) == 4 and client.n_requests == 4  # robots.txt, then 1 + 2 retries
    assert min(b - a for a, b in zip(times, times[1:], strict=False)) >= 0.25


def test_retries_after_a_5xx_back_off_from_the_first_one_and_double(site):
    """urllib3 2 retries the first time without waiting; ours waits the back-off, then 2x."""
    config = _config(site)
    config.http.delay, config.http.backoff, config.http.retries = 0.0, 0.2, 2
    site.fail["/list/page1.html"] = (500, None)
    client = PoliteClient(config)
    with pytest.raises(Skip) as info:
        client.fetch(site.base + "list/page1.html", limit=100_000)
    assert info.value.reason == "http_500"
    times = [r["t"] for r in site.log if r["path"] == "/list/page1.html"]
    assert len(times) == 3
    first, second = times[1] - times[0], times[2] - times[1]
    assert first >= 0.19 and second >= 0.39, (first, second)
    assert first < 1.0 and second < 1.5  # the configured back-off, not something much longer


def test_retry_after_still_wins_over_the_back_off(site):
    config = _config(site)
    config.http.delay, config.http.backoff, config.http.retries = 0.0, 0.05, 1
    site.fail["/list/page1.html"] = (503, "1")
    client = PoliteClient(config)
    with pytest.raises(Skip):
        client.fetch(site.base + "list/page1.html", limit=100_000)
    times = [r["t"] for r in site.log if r["path"] == "/list/page1.html"]
    assert len(times) == 2 and times[1] - times[0] >= 0.95


def test_unreachable_robots_txt_means_disallowed_and_is_retried_later(site, tmp_path):
    site.fail["/robots.txt"] = (503, None)
    summary = crawl(_config(site), tmp_path / "out", progress=False)
    assert summary.page_errors == {"robots_unreachable": 1} and summary.items == 0
    assert all(p == "/robots.txt" for p in site.paths())
    del site.fail["/robots.txt"]
    summary = crawl(_config(site), tmp_path / "out", progress=False)
    assert summary.saved == len(EXPECTED_SAVED)


# ------------------------------------------------------------------------------------------
# crawling the fixture site


def test_static_crawl_of_the_fixture_site(site, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    out = tmp_path / "runs" / "raw"
    before = _tree(tmp_path)
    site.throttle_busy = True

    summary = crawl(_config(site), out, progress=False)

    # what lands on disk: one folder per mapped (Korean) category, decodable images only
    assert _saved(out) == EXPECTED_SAVED
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(
        [".crawl", "가방", "열쇠", "지갑", "카드", "휴대폰"])
    items = read_items(out)
    assert len(items) == 15
    for row in items[items["status"] == "saved"].itertuples():
        path = out / row.file
        assert hashlib.sha256(path.read_bytes()).hexdigest() == row.sha256
        with Image.open(path) as img:
            img.load()
            assert img.size == (int(row.width), int(row.height))
        assert row.image_url.startswith(site.base) and row.detail_url.startswith(site.base)
    # the sidecar keeps every field, detail-page fields included
    first = items.iloc[0]
    assert (first.category, first.raw_category, first.date, first.place, first.number) == (
        "가방", "가방 > 여성용가방", "2024-05-01", "서울역 3번 출구", "F2024-0001")
    tag = url_hash(site.base + "img/bag1.jpg")
    assert first.file == f"가방/검정 가죽 가방_{tag}.jpg"
    reasons = dict(zip(items["title"], items["reason"], strict=True))
    assert {t: reasons[t] for t in EXPECTED_SKIPPED} == EXPECTED_SKIPPED
    dup = items.set_index("title").loc["현관 열쇠"]
    assert dup.duplicate_of.startswith("열쇠/자동차 열쇠_")

    # the summary adds up
    assert (summary.listing_pages, summary.detail_pages, summary.items) == (3, 15, 15)
    assert summary.saved == len(EXPECTED_SAVED) and summary.already_saved == 0
    assert dict(summary.skipped) == {r: 1 for r in EXPECTED_SKIPPED.values()}
    assert summary.requests == len(site.log)
    table = summary.to_frame()
    assert table.loc["images saved now", "count"] == 7
    assert json.loads((out / ".crawl" / "summary.json").read_text())["saved"] == 7

    # manners: robots.txt read once and obeyed, the tool named, the other host never asked,
    # the 429 answered after the Retry-After delay, each listing page fetched once
    paths = site.paths()
    assert paths.count("/robots.txt") == 1 and paths[0] == "/robots.txt"
    assert not any(p.startswith("/private/") for p in paths)
    assert site.paths("localhost") == []
    assert all(r["ua"].startswith("lfhelpers/") for r in site.log)
    busy = [r["t"] for r in site.log if r["path"] == "/img/busy.jpg"]
    assert len(busy) == 2 and busy[1] - busy[0] >= 0.9
    assert [paths.count(f"/list/page{n}.html") for n in (1, 2, 3)] == [1, 1, 1]
    assert paths.count("/img/bag1.jpg") == 1  # the duplicate URL was not fetched again

    # nothing outside the output folder, no temporary files left
    after = _tree(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("runs/raw/")} == before
    assert not [p for p in out.rglob("*.tmp")]
    assert not (out / ".crawl" / "lock").exists()


def test_rerun_is_idempotent_and_sends_no_request(site, tmp_path):
    out = tmp_path / "raw"
    crawl(_config(site), out, progress=False)
    files, sidecar = _tree(out / "가방"), (out / "items.csv").read_bytes()
    n_requests = len(site.log)

    summary = crawl(_config(site), out, progress=False)

    assert len(site.log) == n_requests and summary.requests == 0
    assert summary.saved == 0 and summary.already_saved == len(EXPECTED_SAVED)
    assert summary.pages_from_cache == 3
    assert dict(summary.skipped) == {r: 1 for r in EXPECTED_SKIPPED.values()}
    assert _tree(out / "가방") == files
    assert (out / "items.csv").read_bytes() == sidecar


def test_refresh_fetches_listing_pages_again_but_not_saved_images(site, tmp_path):
    out = tmp_path / "raw"
    crawl(_config(site), out, progress=False)
    n = len(site.log)
    summary = crawl(_config(site), out, progress=False, refresh=True)
    assert sorted(site.paths()[n:]) == ["/list/page1.html", "/list/page2.html",
                                        "/list/page3.html", "/robots.txt"]
    assert summary.already_saved == len(EXPECTED_SAVED)


def test_resume_after_an_interruption(site, tmp_path, monkeypatch):
    out = tmp_path / "raw"
    real_read = PoliteClient._read_body
    calls = {"images": 0}

    def interrupted_read(self, response, limit, url):
        if "/img/" in url:
            calls["images"] += 1
            if calls["images"] == 6:  # in the middle of the sixth image download
                raise KeyboardInterrupt
        return real_read(self, response, limit, url)

    monkeypatch.setattr(PoliteClient, "_read_body", interrupted_read)
    site.throttle_busy = True
    with pytest.raises(KeyboardInterrupt):
        crawl(_config(site), out, progress=False)
    monkeypatch.setattr(PoliteClient, "_read_body", real_read)

    partial = read_items(out)  # the sidecar is written even when interrupted
    assert 0 < (partial["status"] == "saved").sum() < len(EXPECTED_SAVED)
    assert not (out / ".crawl" / "lock").exists()
    # a hard stop can leave a temporary file behind: the rerun removes it
    stale = out / "가방" / ".검정 가죽 가방.jpg.x1y2.tmp"
    stale.write_bytes(b"partial")
    saved_before = set(partial.loc[partial["status"] == "saved", "image_url"])
    n_log = len(site.log)

    summary = crawl(_config(site), out, progress=False)

    assert _saved(out) == EXPECTED_SAVED
    assert summary.already_saved == len(saved_before)
    assert summary.saved == len(EXPECTED_SAVED) - len(saved_before)
    assert not stale.exists()
    resumed = site.paths()[n_log:]
    assert not {urlsplit(u).path for u in saved_before} & set(resumed)
    assert "/list/page1.html" not in resumed and "/items/1.html" not in resumed  # cached
    # the result equals an uninterrupted crawl
    fresh = tmp_path / "fresh"
    crawl(_config(site), fresh, progress=False)
    pd.testing.assert_frame_equal(_stable(read_items(out)), _stable(read_items(fresh)))
    assert {k: v[0] for k, v in _tree(out).items() if not k.startswith(".crawl")} == {
        k: v[0] for k, v in _tree(fresh).items() if not k.startswith(".crawl")}


def test_a_deleted_image_is_fetched_again(site, tmp_path):
    out = tmp_path / "raw"
    crawl(_config(site), out, progress=False)
    items = read_items(out).set_index("title")
    (out / items.loc["자동차 열쇠", "file"]).unlink()
    n = len(site.log)
    summary = crawl(_config(site), out, progress=False)
    assert summary.saved == 1 and site.paths()[n:] == ["/robots.txt", "/img/key1.jpg"]
    assert (out / items.loc["자동차 열쇠", "file"]).is_file()
    assert read_items(out).set_index("title").loc["현관 열쇠", "reason"] == "duplicate_image"


def test_template_pagination_from_toml_and_page_limit(site, tmp_path):
    crawl(_config(site, "site.toml"), tmp_path / "toml", progress=False)
    assert _saved(tmp_path / "toml") == EXPECTED_SAVED
    n = len(site.log)
    summary = crawl(_config(site, max_pages=1), tmp_path / "one", progress=False)
    assert summary.listing_pages == 1 and summary.items == 5
    assert "/list/page2.html" not in site.paths()[n:]


def test_ignore_robots_is_an_explicit_choice(site, tmp_path):
    crawl(_config(site), tmp_path / "raw", progress=False, ignore_robots=True)
    assert ("가방", "회색 백팩") in _saved(tmp_path / "raw")
    assert "/robots.txt" not in site.paths()


def test_transient_failures_are_retried_on_the_next_run(site, tmp_path):
    site.fail["/img/card1.jpg"] = (503, None)
    summary = crawl(_config(site), tmp_path / "raw", progress=False)
    assert summary.skipped["http_503"] == 1
    assert site.paths().count("/img/card1.jpg") == 3  # first try and two retries
    del site.fail["/img/card1.jpg"]
    summary = crawl(_config(site), tmp_path / "raw", progress=False)
    assert summary.saved == 1 and _saved(tmp_path / "raw") == EXPECTED_SAVED


def test_hostile_category_and_title_stay_inside_out(site, tmp_path):
    config = _config(site)
    config.categories["가방"] = "../../밖으로"
    config.unmapped = "keep"
    out = tmp_path / "a" / "raw"
    crawl(config, out, progress=False)
    assert {p.relative_to(tmp_path).parts[:2] for p in tmp_path.rglob("*")} <= {
        ("a",), ("a", "raw")}
    assert (out / "밖으로").is_dir()
    umbrella = read_items(out).set_index("title").loc["장우산"]  # unmapped: keep
    assert (umbrella.category, umbrella.reason) == ("기타물품 > 우산", "duplicate_url")


def test_changed_category_mapping_moves_saved_files_without_requests(site, tmp_path):
    out = tmp_path / "raw"
    crawl(_config(site), out, progress=False)
    n = len(site.log)
    config = _config(site)
    config.categories["가방"] = "bag"
    summary = crawl(config, out, progress=False)
    assert len(site.log) == n and summary.already_saved == len(EXPECTED_SAVED)
    assert not (out / "가방").exists() or not any((out / "가방").iterdir())
    items = read_items(out).set_index("title")
    assert items.loc["검정 가죽 가방", "file"].startswith("bag/")
    assert (out / items.loc["검정 가죽 가방", "file"]).is_file()


def test_jsonl_sidecar_and_sample_grid(site, tmp_path):
    config = _config(site)
    config.sidecar = "jsonl"
    crawl(config, tmp_path / "raw", progress=False)
    assert (tmp_path / "raw" / "items.jsonl").exists()
    assert not (tmp_path / "raw" / "items.csv").exists()
    assert len(read_items(tmp_path / "raw")) == 15
    fig = crawl_samples(tmp_path / "raw", n=4, seed=0)
    assert fig is not None and len([a for a in fig.axes if a.images]) == 4


def test_a_second_crawl_into_the_same_folder_is_refused(site, tmp_path):
    out = tmp_path / "raw"
    (out / ".crawl").mkdir(parents=True)
    (out / ".crawl" / "lock").write_text(str(os.getppid()))
    with pytest.raises(DataError, match="Another crawl"):
        crawl(_config(site), out, progress=False)
    (out / ".crawl" / "lock").write_text("999999999")  # a process that is gone
    assert crawl(_config(site), out, progress=False).saved == len(EXPECTED_SAVED)


def test_crawl_command_line(site, tmp_path, capsys):
    out = tmp_path / "raw"
    argv = [str(FIXTURES / "site.yaml"), "--out", str(out), "--base-url", site.base, "--quiet"]
    assert cli_main(["crawl", *argv]) == 0
    printed = capsys.readouterr().out
    assert "images saved now" in printed and "items.csv" in printed
    assert cli_main(["crawl", str(tmp_path / "missing.yaml"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cleanup_reads_the_crawl_result(site, tmp_path):
    from lfhelpers.data import folder_counts

    out = tmp_path / "raw"
    crawl(_config(site), out, progress=False)
    counts = folder_counts(out)  # items.csv and .crawl/ are ignored
    assert counts.to_dict() == {"가방": 1, "열쇠": 1, "지갑": 2, "카드": 1, "휴대폰": 2}


# ------------------------------------------------------------------------------------------
# the browser fetcher


def _need_browser() -> None:
    pytest.importorskip("selenium", reason="selenium is not installed: pip install -e '.[crawl]'")
    binary, driver = find_browser()
    if not binary or not driver:
        pytest.skip("Chromium and chromedriver are not installed "
                    "(apt-get install chromium chromium-driver)")


def test_javascript_listing_needs_the_browser_fetcher(site, tmp_path, caplog):
    static = _config(site, "js.yaml", fetcher="static")
    summary = crawl(static, tmp_path / "static", progress=False)
    assert summary.items == 0
    assert "fetcher: browser" in caplog.text

    _need_browser()
    summary = crawl(_config(site, "js.yaml"), tmp_path / "browser", progress=False)
    assert summary.items == 3 and summary.saved == 3
    assert _saved(tmp_path / "browser") == {("가방", "보라색 쇼핑백"), ("지갑", "노란 지갑"),
                                           ("열쇠", "하늘색 열쇠고리")}
    assert all(r["ua"].startswith("lfhelpers/") for r in site.log)
    # the browser loads pages only; images come through the polite client, once each
    assert [site.paths().count(f"/img/js{i}.jpg") for i in (1, 2, 3)] == [1, 1, 1]
    # a rerun reads the rendered page from the cache: no browser, no request
    n = len(site.log)
    summary = crawl(_config(site, "js.yaml"), tmp_path / "browser", progress=False)
    assert summary.already_saved == 3 and len(site.log) == n


# ------------------------------------------------------------------------------------------
# the example configurations for users


def test_example_configs_are_valid_and_the_listing_example_works(site, tmp_path):
    examples = Path(__file__).resolve().parent.parent / "examples" / "crawl"
    portal = load_config(examples / "korean_portal.yaml")
    assert portal.fetcher == "browser" and len(portal.start) == 18
    assert portal.page_url(portal.start[0], 3).endswith("list?category=PRA000&page=3")
    config = load_config(examples / "listing_site.yaml", base_url=site.base)
    config.http.delay = 0
    summary = crawl(config, tmp_path / "raw", progress=False)
    assert summary.saved == len(EXPECTED_SAVED)
    assert {folder for folder, _ in _saved(tmp_path / "raw")} == {"bag", "wallet", "phone",
                                                                  "card", "key"}


@pytest.mark.slow
def test_notebook_01_crawls_then_cleans(site, tmp_path):
    """Notebook 01 with ``crawl_config`` crawls the fixture site into raw_dir and cleans it."""
    from lfhelpers.pipeline import run_pipeline

    config = tmp_path / "site.yaml"
    config.write_text((FIXTURES / "site.yaml").read_text(encoding="utf-8").replace(
        "http://127.0.0.1:8765/", site.base), encoding="utf-8")
    out = tmp_path / "run"
    result = run_pipeline(profile="smoke", only="01", out_dir=out, html=False, echo=False,
                          overrides={"crawl_config": str(config), "source": "",
                                     "min_per_class": 2})
    figures = result.metrics["01_crawl_cleanup"]
    assert figures["crawl"]["saved"] == len(EXPECTED_SAVED)
    assert figures["n_raw"] == figures["n_clean"] == len(EXPECTED_SAVED)
    assert (out / "data" / "raw" / "items.csv").is_file()
    assert (out / "figures" / "01_crawl_samples.png").is_file()

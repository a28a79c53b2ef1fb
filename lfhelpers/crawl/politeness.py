"""The crawler's HTTP client: robots.txt, a per-host rate limit, retries, limits, redirects.

:class:`PoliteClient` keeps the crawl's manners. robots.txt is honoured
(``ignore_robots=True`` / ``--ignore-robots`` is the only override; an unreachable robots.txt
counts as "disallow all"); one request at a time, at most one per ``http.delay`` per host
(robots.txt ``Crawl-delay`` wins when longer); a User-Agent naming the tool; timeouts; a byte
limit per file. Retries are urllib3's (:func:`lfhelpers.http.make_session`): network errors,
read timeouts and HTTP 408/425/429/5xx answers are retried with exponential back-off, never
sooner than the host's delay, honouring ``Retry-After`` up to ``http.max_retry_after``.

Redirects are followed by hand and every hop is checked against the same-site rule and
robots.txt, so pages and images come only from the configured hosts. robots.txt itself is the
exception RFC 9309 (section 2.3.1.2) asks for: its redirects are followed, to another host too,
for at most ``http.max_redirects`` hops; the file found at the end holds the rules of the host
that redirected, and nothing else is fetched from the other host.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit
from urllib.robotparser import RobotFileParser

import requests

from lfhelpers.crawl.config import CrawlConfig
from lfhelpers.http import (
    PRODUCT,
    RETRY_STATUSES,
    Retry,
    is_timeout,
    make_session,
    mount,
    session_retry,
    short_reason,
    split_timeout,
)

log = logging.getLogger(__name__)

#: The product token robots.txt rules are matched against.
ROBOTS_AGENT = "lfhelpers"
USER_AGENT = f"{PRODUCT} (lost-and-found workbook crawler)"
#: Largest robots.txt read, in bytes (RFC 9309 asks for at least 500 KiB).
ROBOTS_MAX_BYTES = 512_000


class Skip(Exception):  # noqa: N818 - a control-flow signal, not an error a user sees
    """An item, page or image is skipped; ``reason`` is a short key used in the summary."""

    def __init__(self, reason: str, note: str = ""):
        super().__init__(f"{reason}: {note}" if note else reason)
        self.reason = reason
        self.note = note


@dataclass
class Fetched:
    """A completed HTTP answer."""

    url: str
    status: int
    content_type: str
    charset: str | None
    body: bytes


def _content_type(headers: Mapping[str, str]) -> tuple[str, str | None]:
    raw = headers.get("Content-Type", "")
    kind = raw.split(";", 1)[0].strip().lower()
    match = re.search(r"charset=[\"']?([\w.:-]+)", raw, re.I)
    return kind, match.group(1) if match else None


class PoliteClient:
    """An HTTP client that keeps the crawl's manners: robots.txt, rate limit, retries, limits.

    Parameters
    ----------
    config : CrawlConfig
        Hosts, HTTP options and limits.
    ignore_robots : bool
        Do not read robots.txt (an explicit user decision).
    session : requests.Session, optional
        A session to configure and use (its retry adapters and User-Agent are replaced); a
        new one otherwise.
    sleep : callable
        ``time.sleep`` for the per-host delay (replaceable in tests).
    """

    def __init__(self, config: CrawlConfig, ignore_robots: bool = False,
                 session: requests.Session | None = None, sleep: Any = time.sleep):
        self.config = config
        self.options = config.http
        self.ignore_robots = ignore_robots
        contact = f"; +{self.options.contact}" if self.options.contact else ""
        self.user_agent = USER_AGENT.replace(")", f"{contact})")
        self.session = make_session(
            self.options.retries, self.options.backoff, RETRY_STATUSES, self.user_agent,
            max_retry_after=self.options.max_retry_after, min_wait=self.options.delay,
            on_retry=self._retrying, session=session)
        self.hosts = config.hosts()
        self.sleep = sleep
        self.n_requests = 0
        self._next_at: dict[str, float] = {}
        self._robots: dict[str, RobotFileParser] = {}
        self._unreachable: set[str] = set()
        self._delay: dict[str, float] = {}

    def host_allowed(self, url: str) -> bool:
        """Whether the same-site rule lets the crawl fetch ``url``."""
        host = (urlsplit(url).hostname or "").lower()
        if not self.config.same_site:
            return bool(host)
        for allowed in self.hosts:
            if host == allowed:
                return True
            if allowed.startswith(("*.", ".")) and host.endswith(allowed.lstrip("*")):
                return True
        return False

    def check(self, url: str) -> None:
        """Raise :class:`Skip` unless ``url`` may be fetched (scheme, same site, robots.txt)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Skip("bad_url", url[:200])
        if not self.host_allowed(url):
            raise Skip("offsite", f"{parts.hostname} is not an allowed host")
        if not self.robots_allows(url):
            if f"{parts.scheme}://{parts.netloc}" in self._unreachable:
                raise Skip("robots_unreachable", f"robots.txt of {parts.hostname} could not be "
                           "read; rerun later")
            raise Skip("robots", f"robots.txt of {parts.hostname} disallows {parts.path}")

    def robots_allows(self, url: str) -> bool:
        """Whether robots.txt of ``url``'s host allows this crawler to fetch it."""
        if self.ignore_robots:
            return True
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin not in self._robots:
            self._robots[origin] = self._read_robots(origin)
            delay = self._robots[origin].crawl_delay(ROBOTS_AGENT)
            if delay:
                self._slow_down(origin, min(float(delay), self.options.max_retry_after))
        return self._robots[origin].can_fetch(ROBOTS_AGENT, url)

    def _slow_down(self, origin: str, delay: float) -> None:
        """Space requests to ``origin`` (and its retries) by at least ``delay`` seconds."""
        netloc = urlsplit(origin).netloc
        self._delay[netloc] = delay
        retry = session_retry(self.session, origin)
        if retry is not None and delay > retry.min_wait:
            mount(self.session, origin + "/", retry.new(min_wait=delay))

    def _read_robots(self, origin: str) -> RobotFileParser:
        """Fetch and parse ``origin``'s robots.txt, following its redirects (RFC 9309)."""
        parser = RobotFileParser(origin + "/robots.txt")
        url = origin + "/robots.txt"
        try:
            for _ in range(self.options.max_redirects + 1):
                response = self._get(url)
                if not (response.is_redirect and response.headers.get("Location")):
                    break
                response.close()
                url = urljoin(url, response.headers["Location"])
                if urlsplit(url).scheme not in ("http", "https"):
                    raise Skip("robots_unreachable", f"redirected to {url[:200]}")
                if urlsplit(url).netloc != urlsplit(origin).netloc:
                    log.info("robots.txt of %s redirects to %s; following it (RFC 9309)",
                             origin, url)
            else:
                raise Skip("robots_unreachable", "too many redirects")
            status = response.status_code
            if status == 200:
                body = self._read_body(response, ROBOTS_MAX_BYTES, url)
                parser.parse(body.decode("utf-8", "replace").splitlines())
            elif status in (401, 403):
                parser.disallow_all = True
            elif 400 <= status < 500:
                parser.allow_all = True
            else:
                raise Skip("robots_unreachable", f"HTTP {status}")
            response.close()
        except Skip as exc:
            self._unreachable.add(origin)
            log.warning("robots.txt of %s could not be read (%s): treating every path as "
                        "disallowed. Rerun later, or pass --ignore-robots if you may crawl it.",
                        origin, exc)
            parser.disallow_all = True
        return parser

    def pace(self, url: str) -> None:
        """Wait until ``url``'s host may be asked again, and count the request about to go."""
        netloc = urlsplit(url).netloc
        ready = self._next_at.get(netloc, 0.0)
        now = time.monotonic()
        if ready > now:
            self.sleep(ready - now)
        self._done(netloc)
        self.n_requests += 1

    def _done(self, netloc: str) -> None:
        """The next request to ``netloc`` waits its delay from now."""
        delay = max(self.options.delay, self._delay.get(netloc, 0.0))
        self._next_at[netloc] = time.monotonic() + delay

    def _retrying(self, retry: Retry, url: str, response: Any, error: Exception | None) -> None:
        """urllib3 is about to retry: count the request and say why."""
        self.n_requests += 1
        what = f"answered {response.status}" if response is not None else \
            f"failed ({short_reason(error) if error else 'unknown'})"
        log.info("%s %s; retrying in %.1f s", url, what, retry.wait_before_next(response))

    def _get(self, url: str) -> requests.Response:
        """One GET (urllib3 retries included); redirects are not followed."""
        self.pace(url)
        try:
            response = self.session.get(url, stream=True, allow_redirects=False,
                                        timeout=split_timeout(self.options.timeout))
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise Skip("timeout" if is_timeout(exc) else "network", short_reason(exc)) from exc
        except requests.RequestException as exc:
            raise Skip("bad_url", str(exc)[:200]) from exc
        finally:
            self._done(urlsplit(url).netloc)
        status = response.status_code
        if status not in RETRY_STATUSES:
            return response
        response.close()
        retry = session_retry(self.session, url)
        asked = retry.get_retry_after(response.raw) if retry is not None else None
        if asked is not None and asked > self.options.max_retry_after:
            raise Skip(f"http_{status}", f"the server asks to wait {asked:.0f} s, more than "
                       f"http.max_retry_after ({self.options.max_retry_after:.0f} s)")
        raise Skip(f"http_{status}", f"still {status} after {self.options.retries} retries")

    def _read_body(self, response: requests.Response, limit: int, url: str) -> bytes:
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > limit:
            response.close()
            raise Skip("too_large", f"{int(length):,} bytes > limit {limit:,}")
        deadline = time.monotonic() + self.options.file_timeout
        chunks, size = [], 0
        try:
            for chunk in response.iter_content(65536):
                size += len(chunk)
                if size > limit:
                    raise Skip("too_large", f"more than the limit of {limit:,} bytes")
                if time.monotonic() > deadline:
                    raise Skip("timeout", f"slower than http.file_timeout for {url}")
                chunks.append(chunk)
        except (requests.ConnectionError, requests.Timeout,
                requests.exceptions.ChunkedEncodingError) as exc:
            raise Skip("network", f"connection lost while reading: {short_reason(exc)}") from exc
        finally:
            response.close()
        return b"".join(chunks)

    def fetch(self, url: str, limit: int) -> Fetched:
        """GET ``url`` politely, following redirects that pass :meth:`check`.

        Raises
        ------
        Skip
            ``robots``, ``offsite``, ``bad_url``, ``http_<status>``, ``network``, ``timeout``,
            ``too_large`` or ``too_many_redirects``.
        """
        current = url
        for _ in range(self.options.max_redirects + 1):
            self.check(current)
            response = self._get(current)
            if response.is_redirect and response.headers.get("Location"):
                target = urljoin(current, response.headers["Location"])
                response.close()
                try:
                    self.check(target)
                except Skip as exc:
                    raise Skip(exc.reason, f"redirected to {target}: {exc.note}") from None
                current = target
                continue
            if response.status_code != 200:
                response.close()
                raise Skip(f"http_{response.status_code}", current)
            kind, charset = _content_type(response.headers)
            body = self._read_body(response, limit, current)
            return Fetched(current, response.status_code, kind, charset, body)
        raise Skip("too_many_redirects", url)

    def close(self) -> None:
        """Close the HTTP session."""
        self.session.close()

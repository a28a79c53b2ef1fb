"""The one HTTP retry policy: a ``requests`` session whose retries are urllib3's.

Both the data-set downloader (:mod:`lfhelpers.data.download`) and the crawler
(:mod:`lfhelpers.crawl.politeness`) get their session from :func:`make_session`, so they retry
the same way:

* connection errors, read timeouts and the answers in :data:`RETRY_STATUSES` are retried up to
  ``total`` times, by :class:`urllib3.util.Retry`;
* the wait before a retry is the server's ``Retry-After`` (seconds or an HTTP date) when it
  sends one, else an exponential back-off of ``backoff_factor * 2 ** (n - 1)`` seconds before
  retry ``n`` (``backoff_factor``, then twice, four times that ...; capped by urllib3's
  ``backoff_max``). Unlike urllib3 2, which retries the first time without waiting, the first
  retry waits too, so an overloaded server is not hit again at once. Every wait is at least
  ``min_wait`` (a crawler's per-host delay);
* a ``Retry-After`` longer than ``max_retry_after`` is not awaited: the retries end at once and
  the caller gets that answer (its status and header) to report;
* when the retries are used up on a status, the last answer is returned (not an exception), so
  the caller can name the status; a connection that keeps failing raises the ``requests``
  exception, which :func:`is_unreachable` and :func:`short_reason` help to explain.

Redirects are the caller's business: requests follows them for a plain ``get`` (the
downloader); the crawler asks for ``allow_redirects=False`` and checks every hop itself.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable, Iterable
from itertools import takewhile
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import (
    ConnectTimeoutError,
    InvalidHeader,
    MaxRetryError,
    NewConnectionError,
    ResponseError,
)
from urllib3.exceptions import TimeoutError as Urllib3Timeout
from urllib3.util import Retry as _Urllib3Retry

from lfhelpers import __version__

log = logging.getLogger(__name__)

#: HTTP statuses worth retrying: request timeout, too early, too many requests, server errors.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
#: Longest wait for a connection when a caller gives one read timeout, in seconds.
CONNECT_TIMEOUT_S = 10.0
#: The User-Agent product token of every request this package sends.
PRODUCT = f"lfhelpers/{__version__}"

#: ``on_retry(retry, url, response, error)``: told of every retry before its wait.
RetryHook = Callable[["Retry", str, Any, "Exception | None"], None]


class Retry(_Urllib3Retry):
    """urllib3's :class:`~urllib3.util.Retry` with a ceiling on ``Retry-After``, a floor on
    every wait and a hook called before each retry.

    Parameters
    ----------
    *args, **kwargs
        Those of :class:`urllib3.util.Retry`.
    max_retry_after : float, optional
        A ``Retry-After`` longer than this many seconds ends the retries at once.
    min_wait : float
        Shortest wait before a retry, in seconds.
    on_retry : callable, optional
        ``on_retry(retry, url, response, error)`` before each retry (``retry`` is the new
        state: ``len(retry.history)`` retries so far).
    """

    def __init__(self, *args: Any, max_retry_after: float | None = None, min_wait: float = 0.0,
                 on_retry: RetryHook | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.max_retry_after = max_retry_after
        self.min_wait = float(min_wait)
        self.on_retry = on_retry

    def new(self, **kw: Any) -> Retry:
        """A copy with some settings changed (urllib3 calls it on every retry)."""
        kw.setdefault("max_retry_after", self.max_retry_after)
        kw.setdefault("min_wait", self.min_wait)
        kw.setdefault("on_retry", self.on_retry)
        return super().new(**kw)

    def get_retry_after(self, response: Any) -> float | None:
        """Seconds asked for by ``Retry-After``; None when absent or unreadable."""
        try:
            asked = super().get_retry_after(response)
        except InvalidHeader:
            return None
        return None if asked is None else max(asked, self.min_wait)

    def get_backoff_time(self) -> float:
        """Seconds to wait before the next retry when the server sent no ``Retry-After``.

        ``backoff_factor * 2 ** (n - 1)`` for the ``n``-th consecutive failure (redirects do
        not count), plus urllib3's jitter, at most ``backoff_max``, never below ``min_wait``.
        urllib3 2 waits nothing before the first retry; here it waits ``backoff_factor``.
        """
        failures = len(list(takewhile(lambda h: h.redirect_location is None,
                                      reversed(self.history))))
        if failures == 0:
            return self.min_wait
        wait = self.backoff_factor * 2 ** (failures - 1)
        if self.backoff_jitter:
            wait += random.random() * self.backoff_jitter
        return max(min(wait, self.backoff_max), self.min_wait)

    def increment(self, method: str | None = None, url: str | None = None,
                  response: Any = None, error: Exception | None = None, _pool: Any = None,
                  _stacktrace: Any = None) -> Retry:
        """Count one failed attempt; refuse to wait longer than ``max_retry_after``."""
        if response is not None and self.max_retry_after is not None:
            asked = self.get_retry_after(response)
            if asked is not None and asked > self.max_retry_after:
                reason = ResponseError(f"Retry-After {asked:.0f} s exceeds "
                                       f"{self.max_retry_after:.0f} s")
                raise MaxRetryError(_pool, url or "", reason)  # type: ignore[arg-type]
        new = super().increment(method, url, response, error, _pool, _stacktrace)
        if self.on_retry is not None:
            self.on_retry(new, url or "", response, error)
        return new

    def wait_before_next(self, response: Any = None) -> float:
        """The wait urllib3 is about to make before the next attempt, in seconds."""
        asked = self.get_retry_after(response) if response is not None else None
        return asked if asked else self.get_backoff_time()


def make_retry(
    total: int = 3,
    backoff_factor: float = 1.0,
    status_forcelist: Iterable[int] = RETRY_STATUSES,
    allowed_methods: Iterable[str] = ("GET", "HEAD"),
    *,
    max_retry_after: float | None = 120.0,
    min_wait: float = 0.0,
    on_retry: RetryHook | None = None,
) -> Retry:
    """The retry policy of :func:`make_session` (see the module docstring for its schedule)."""
    return Retry(
        total=int(total), backoff_factor=float(backoff_factor),
        status_forcelist=frozenset(status_forcelist), allowed_methods=frozenset(allowed_methods),
        raise_on_status=False, respect_retry_after_header=True,
        max_retry_after=max_retry_after, min_wait=min_wait, on_retry=on_retry,
    )


def make_session(
    total: int = 3,
    backoff_factor: float = 1.0,
    status_forcelist: Iterable[int] = RETRY_STATUSES,
    user_agent: str = f"{PRODUCT} (lost-and-found workbook)",
    allowed_methods: Iterable[str] = ("GET", "HEAD"),
    *,
    max_retry_after: float | None = 120.0,
    min_wait: float = 0.0,
    on_retry: RetryHook | None = None,
    session: requests.Session | None = None,
) -> requests.Session:
    """Return a ``requests`` session that retries through :class:`Retry`.

    Parameters
    ----------
    total : int
        Retries after the first attempt (connection errors, read timeouts and retried
        statuses together).
    backoff_factor : float
        Base of the exponential back-off, in seconds: ``backoff_factor * 2 ** (n - 1)`` before
        retry ``n`` (the first retry waits ``backoff_factor``).
    status_forcelist : iterable of int
        Statuses to retry; :data:`RETRY_STATUSES` by default.
    user_agent : str
        The ``User-Agent`` header.
    allowed_methods : iterable of str
        Methods that may be retried.
    max_retry_after : float, optional
        Longest ``Retry-After`` awaited, in seconds; a longer one ends the retries at once.
        ``None``: no ceiling.
    min_wait : float
        Shortest wait before any retry, in seconds.
    on_retry : callable, optional
        Called before each retry (see :class:`Retry`), e.g. to log or count it.
    session : requests.Session, optional
        Configure this session instead of a new one (its http and https adapters are
        replaced).

    Returns
    -------
    requests.Session
    """
    session = session if session is not None else requests.Session()
    adapter = HTTPAdapter(max_retries=make_retry(
        total, backoff_factor, status_forcelist, allowed_methods,
        max_retry_after=max_retry_after, min_wait=min_wait, on_retry=on_retry))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = user_agent
    return session


def mount(session: requests.Session, prefix: str, retry: Retry) -> None:
    """Make ``session`` retry URLs starting with ``prefix`` (a scheme or an origin) by ``retry``.

    A longer prefix wins, so a crawler can give one host a longer ``min_wait``.
    """
    session.mount(prefix, HTTPAdapter(max_retries=retry))


def session_retry(session: requests.Session, url: str) -> Retry | None:
    """The :class:`Retry` policy ``session`` applies to ``url`` (None if it is not ours)."""
    retry = getattr(session.get_adapter(url), "max_retries", None)
    return retry if isinstance(retry, Retry) else None


def split_timeout(timeout: float | tuple[float, float]) -> tuple[float, float]:
    """``(connect, read)`` timeouts; one number is the read timeout and caps the connect one."""
    if isinstance(timeout, tuple):
        return timeout
    return (min(CONNECT_TIMEOUT_S, float(timeout)), float(timeout))


def root_cause(exc: BaseException) -> BaseException:
    """The innermost reason of a ``requests`` / urllib3 error (``MaxRetryError.reason`` ...)."""
    reason: BaseException = exc
    for _ in range(10):
        inner = getattr(reason, "reason", None)
        if not isinstance(inner, BaseException) and getattr(reason, "args", None):
            first = reason.args[0]
            inner = first if isinstance(first, BaseException) else None
        if inner is None or inner is reason:
            break
        reason = inner
    return reason


def is_unreachable(exc: BaseException) -> bool:
    """Whether a request failed before a connection was made (DNS, refused, connect timeout)."""
    return isinstance(root_cause(exc), ConnectTimeoutError) or isinstance(
        exc, requests.exceptions.ConnectTimeout)


def is_timeout(exc: BaseException) -> bool:
    """Whether a request failed because the server was too slow (connect or read timeout)."""
    cause = root_cause(exc)
    return isinstance(exc, requests.Timeout) or (
        isinstance(cause, Urllib3Timeout) and not isinstance(cause, NewConnectionError))


def short_reason(exc: BaseException) -> str:
    """A one-line, human-readable reason for a failed request."""
    text = str(root_cause(exc))
    text = re.sub(r"^<[^>]*object at 0x[0-9a-f]+>:\s*", "", text)
    text = re.sub(r"^HTTPS?Connection\([^)]*\):\s*", "", text)
    return text[:200]

"""A polite, resumable crawler for lost-and-found listing sites.

:func:`crawl` reads a declarative site configuration (YAML or TOML; the keys are described in
:mod:`lfhelpers.crawl.config`), walks the listing pages, reads each item's fields (and,
optionally, its detail page), maps the site's category to a label and saves the item's photo as
``OUT/<label>/<title>_<hash>.<ext>``: a raw class-folder set ready for
:func:`lfhelpers.data.prepare_dataset`. A sidecar, ``OUT/items.csv`` (or ``items.jsonl``),
keeps every field, the source URLs and the outcome of every item; the crawl state lives in the
hidden folder ``OUT/.crawl/``. The cleanup step ignores both. HTTP manners (robots.txt, rate
limit, retries, the same-site rule) are :class:`~lfhelpers.crawl.politeness.PoliteClient`'s.

Every image is checked for its content type and decoded completely before it is kept; URLs are
de-duplicated; file and folder names made from the site's text keep their Unicode but lose
path separators, control characters, leading dots and reserved device names, and every write
is checked to stay inside the output folder.

Resume: images are written atomically, every processed item is appended to a journal
(``.crawl/journal.jsonl``) and fetched pages are cached (``.crawl/pages/``). A rerun of the same
command reads listing and detail pages from the cache, skips saved images (a saved file moves
when the category mapping changed) and retries only items that failed for a transient reason
(network, 408, 425, 429, 5xx): a rerun of a finished crawl sends no request at all.
``refresh=True`` (``--refresh``) fetches the listing pages again to pick up new items.

Command line: ``python -m lfhelpers crawl CONFIG --out DIR`` (see :func:`crawl_command`).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import os
import re
import sys
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pandas as pd
import requests
from bs4 import BeautifulSoup
from tqdm import tqdm

from lfhelpers.crawl.config import SIDECARS, CrawlConfig, load_config
from lfhelpers.crawl.fetchers import IMAGE_FORMATS, BrowserFetcher, StaticFetcher, check_image
from lfhelpers.crawl.names import map_category, norm_category, normalize_url, safe_name, url_hash
from lfhelpers.crawl.politeness import PoliteClient, Skip
from lfhelpers.crawl.store import (
    STATE_DIR,
    CrawlState,
    inside,
    lock,
    remove_stale_temp,
    write_sidecar,
)
from lfhelpers.errors import LFError
from lfhelpers.fsutil import atomic_write, write_json
from lfhelpers.http import RETRY_STATUSES

log = logging.getLogger(__name__)

_STANDARD_FIELDS = {"category", "image", "title", "date", "place"}
#: Skip reasons worth another try on a rerun.
_TRANSIENT = re.compile(r"^(detail_)?(network|timeout|browser_error|robots_unreachable|http_(?:"
                        + "|".join(str(s) for s in sorted(RETRY_STATUSES)) + r"))$")
#: Skip reasons that depend on the category mapping only (re-evaluated on a rerun).
_CATEGORY_REASONS = ("no_category", "dropped_category", "unmapped_category")


@dataclass
class CrawlSummary:
    """What one crawl run did.

    Attributes
    ----------
    out_dir : Path
        The output folder.
    listing_pages, pages_from_cache, detail_pages : int
        Listing pages read (of them, from the cache) and detail pages read.
    items : int
        Items found on the listing pages.
    saved : int
        Images saved by this run.
    already_saved : int
        Images a previous run had saved (resume).
    requests : int
        HTTP requests and browser page loads of this run.
    skipped : Counter
        Items without a saved image, per reason.
    page_errors : Counter
        Listing pages that could not be read, per reason.
    """

    out_dir: Path
    listing_pages: int = 0
    pages_from_cache: int = 0
    detail_pages: int = 0
    items: int = 0
    saved: int = 0
    already_saved: int = 0
    requests: int = 0
    skipped: Counter = field(default_factory=Counter)
    page_errors: Counter = field(default_factory=Counter)

    @property
    def images(self) -> int:
        """Images on disk for the items crawled (new and already saved)."""
        return self.saved + self.already_saved

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly figures (for ``metrics.json``)."""
        return {"listing_pages": self.listing_pages, "pages_from_cache": self.pages_from_cache,
                "detail_pages": self.detail_pages, "items": self.items, "saved": self.saved,
                "already_saved": self.already_saved, "images": self.images,
                "requests": self.requests, "skipped": dict(sorted(self.skipped.items())),
                "page_errors": dict(sorted(self.page_errors.items()))}

    def to_frame(self) -> pd.DataFrame:
        """A two-column table (what, count) for notebooks and the command line."""
        rows = [("listing pages", self.listing_pages),
                ("  of them from the cache", self.pages_from_cache),
                ("detail pages", self.detail_pages), ("items", self.items),
                ("images saved now", self.saved), ("images saved before", self.already_saved),
                ("requests", self.requests)]
        rows += [(f"skipped: {k}", v) for k, v in sorted(self.skipped.items())]
        rows += [(f"page failed: {k}", v) for k, v in sorted(self.page_errors.items())]
        return pd.DataFrame(rows, columns=["what", "count"]).set_index("what")


class _Crawler:
    def __init__(self, config: CrawlConfig, out: Path, *, ignore_robots: bool, refresh: bool,
                 progress: bool, session: requests.Session | None):
        self.config = config
        self.out = out
        self.refresh = refresh
        self.progress = progress
        self.client = PoliteClient(config, ignore_robots=ignore_robots, session=session)
        self.fetcher: StaticFetcher | BrowserFetcher = (
            BrowserFetcher(self.client, config.browser) if config.fetcher == "browser"
            else StaticFetcher(self.client, config.limits.max_page_bytes))
        self.details = StaticFetcher(self.client, config.limits.max_page_bytes)
        if config.fetcher == "browser":
            self.details = self.fetcher  # type: ignore[assignment]
        self.state = CrawlState(out)
        self.summary = CrawlSummary(out_dir=out)
        self.ignore = [re.compile(p) for p in config.ignore_images]
        # outcome of every image URL and the file of every saved content hash, from the journal
        self.by_image: dict[str, dict[str, Any]] = {}
        self.by_sha: dict[str, str] = {}
        for rec in self.state.records.values():
            self._remember(rec)
        self.seen_items: set[str] = set()
        self.bar: Any = None

    def _remember(self, rec: dict[str, Any]) -> None:
        if rec.get("status") == "saved":
            self.by_sha.setdefault(rec["sha256"], rec["file"])
        if (rec.get("image_checked") and rec.get("image_url")
                and rec.get("reason") not in ("duplicate_url", "duplicate_image")
                and not _TRANSIENT.match(rec.get("reason") or "")):
            self.by_image.setdefault(normalize_url(rec["image_url"]), rec)

    def _page(self, url: str, fetcher: StaticFetcher | BrowserFetcher, use_cache: bool,
              listing: bool = True) -> tuple[str, BeautifulSoup, bool]:
        cached = self.state.cached_page(url) if use_cache else None
        if cached is not None:
            final, html = cached
            return final, BeautifulSoup(html, "html.parser"), True
        final, html = fetcher.page(url, listing=listing)
        self.state.store_page(url, final, html)
        return final, BeautifulSoup(html, "html.parser"), False

    def _listing_pages(self) -> Iterator[tuple[str, BeautifulSoup, dict[str, str]]]:
        """Yield ``(url, soup, start entry)`` for every listing page, within the page limit."""
        seen: set[str] = set()
        limit = self.config.limits.max_pages
        for first_url, entry in self.config.start_pages():
            page_no = self.config.first_page
            url: str | None = first_url
            while url is not None:
                if self.summary.listing_pages >= limit:
                    log.info("Page limit (limits.max_pages = %d) reached.", limit)
                    return
                key = normalize_url(url)
                if key in seen:
                    break
                seen.add(key)
                try:
                    final, soup, cached = self._page(url, self.fetcher, not self.refresh)
                except Skip as exc:
                    self.summary.page_errors[exc.reason] += 1
                    log.warning("Listing page %s skipped: %s", url, exc)
                    soup = None
                if soup is not None:
                    self.summary.listing_pages += 1
                    self.summary.pages_from_cache += cached
                    n_items = len(soup.select(self.config.items))
                    if n_items == 0:
                        hint = (" The page has scripts: if the listing is rendered by "
                                "JavaScript, set `fetcher: browser`."
                                if soup.find("script") and self.config.fetcher == "static" else "")
                        log.warning("No items match %r on %s.%s", self.config.items, url, hint)
                    yield final, soup, entry
                url = self._next_page(url, soup, entry, page_no)
                page_no += 1

    def _next_page(self, url: str, soup: BeautifulSoup | None, entry: Mapping[str, str],
                   page_no: int) -> str | None:
        config = self.config
        if config.template:
            last = config.last_page
            if last is None and (soup is None or not soup.select(config.items)):
                return None
            if last is not None and page_no >= last:
                return None
            return config.page_url(entry, page_no + 1)
        if config.next_selector and soup is not None:
            link = soup.select_one(config.next_selector)
            href = link.get("href") if link is not None else None
            if href:
                return urljoin(url, str(href))
        return None

    def run(self) -> CrawlSummary:
        with tqdm(desc=f"crawl {self.config.name}", unit="item", disable=not self.progress,
                  dynamic_ncols=True) as self.bar:
            for page_url, soup, entry in self._listing_pages():
                for index, element in enumerate(soup.select(self.config.items)):
                    if self.config.limits.max_items and (
                            self.summary.items >= self.config.limits.max_items):
                        log.info("Item limit (limits.max_items) reached.")
                        return self.summary
                    self._item(page_url, index, element, entry)
        return self.summary

    def _item(self, page_url: str, index: int, element: Any, entry: Mapping[str, str]) -> None:
        fields = {name: spec.extract(element, page_url) for name, spec in
                  self.config.fields.items()}
        detail_url = (self.config.detail_link.extract(element, page_url)
                      if self.config.detail_link else "")
        key = (normalize_url(detail_url) if detail_url else
               normalize_url(fields["image"]) if fields.get("image") else f"{page_url}#{index}")
        if key in self.seen_items:
            return  # the same item listed twice in this run
        self.seen_items.add(key)
        self.summary.items += 1
        self.bar.update(1)
        previous = self.state.records.get(key)
        if previous is not None and self._reuse(previous):
            self._count(previous)
            return
        rec = {"key": key, "page_url": page_url, "detail_url": detail_url}
        try:
            if detail_url:
                fields.update(self._detail(detail_url))
            self._fill(rec, fields, entry)
            self._image(rec)
        except Skip as exc:
            rec.update(status="skipped", reason=exc.reason, note=exc.note)
            level = logging.INFO if exc.reason.startswith(("duplicate", "unmapped", "dropped")
                                                          ) else logging.WARNING
            log.log(level, "Item %s skipped (%s)%s", detail_url or rec.get("image_url") or key,
                    exc.reason, f": {exc.note}" if exc.note else "")
        rec.setdefault("fetched_at", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        self.state.record(rec)
        self._remember(rec)
        self._count(rec, new=True)

    def _count(self, rec: Mapping[str, Any], new: bool = False) -> None:
        if rec.get("status") == "saved":
            if new:
                self.summary.saved += 1
            else:
                self.summary.already_saved += 1
        else:
            self.summary.skipped[rec.get("reason") or "unknown"] += 1
        self.bar.set_postfix(pages=self.summary.listing_pages, saved=self.summary.images,
                             skipped=sum(self.summary.skipped.values()), refresh=False)

    def _reuse(self, rec: dict[str, Any]) -> bool:
        """Whether a journalled item needs no new work (a saved file may move to a new label)."""
        if rec.get("status") != "saved":
            if rec.get("reason") in _CATEGORY_REASONS:
                label, _ = map_category(rec.get("raw_category", ""), self.config.categories,
                                        self.config.unmapped)
                return label is None
            return not _TRANSIENT.match(rec.get("reason") or "")
        path = self.out / rec["file"]
        if not path.is_file():
            return False
        label, _ = map_category(rec.get("raw_category", ""), self.config.categories,
                                self.config.unmapped)
        if label and label != rec.get("category"):
            target = inside(self.out, self.out / safe_name(label, fallback="unknown") / path.name)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            rec = {**rec, "category": label, "file": target.relative_to(self.out).as_posix()}
            self.state.record(rec)
            self.by_sha[rec["sha256"]] = rec["file"]
            self.by_image[normalize_url(rec["image_url"])] = rec
        return True

    def _detail(self, url: str) -> dict[str, str]:
        try:
            final, soup, _ = self._page(url, self.details, True, listing=False)
        except Skip as exc:
            raise Skip(f"detail_{exc.reason}", exc.note) from None
        self.summary.detail_pages += 1
        values = {name: spec.extract(soup, final) for name, spec in
                  self.config.detail_fields.items()}
        return {k: v for k, v in values.items() if v}

    def _fill(self, rec: dict[str, Any], fields: dict[str, str], entry: Mapping[str, str]
              ) -> None:
        raw_category = fields.get("category") or entry.get("category", "")
        rec["raw_category"] = norm_category(raw_category)
        for name in ("title", "date", "place"):
            rec[name] = fields.get(name, "")
        rec["image_url"] = fields.get("image", "")
        rec["extra"] = {k: v for k, v in fields.items() if k not in _STANDARD_FIELDS}
        label, reason = map_category(raw_category, self.config.categories, self.config.unmapped)
        rec["category"] = label or ""
        if label is None:
            raise Skip(reason, rec["raw_category"])

    def _image(self, rec: dict[str, Any]) -> None:
        url = rec["image_url"]
        if not url:
            raise Skip("no_image")
        if any(p.search(url) for p in self.ignore):
            raise Skip("ignored_image", url)
        norm = normalize_url(url)
        earlier = self.by_image.get(norm)
        if earlier is not None and (earlier["key"] == rec["key"] or earlier.get("status") == "saved"
                                    and not (self.out / earlier["file"]).is_file()):
            earlier = None  # this item's own earlier outcome, or a saved file deleted since
        if earlier is not None:
            if earlier.get("status") == "saved":
                rec["duplicate_of"] = earlier["file"]
                raise Skip("duplicate_url", f"same image URL as {earlier['file']}")
            raise Skip(earlier["reason"], f"{earlier.get('note', '')} (same image URL as an "
                       "earlier item)".strip())
        rec["image_checked"] = True
        got = self.client.fetch(url, self.config.limits.max_bytes)
        fmt, width, height = check_image(got.body, got.content_type, self.config.limits.max_pixels)
        sha = hashlib.sha256(got.body).hexdigest()
        rec.update(sha256=sha, bytes=len(got.body), width=width, height=height, format=fmt)
        if sha in self.by_sha and (self.out / self.by_sha[sha]).is_file():
            rec["duplicate_of"] = self.by_sha[sha]
            raise Skip("duplicate_image", f"same bytes as {self.by_sha[sha]}")
        folder = safe_name(rec["category"], fallback="unknown")
        if folder in SIDECARS.values():
            folder = f"_{folder}"
        stem = safe_name(rec.get("title") or "", max_bytes=80, fallback="")
        name = f"{stem}_{url_hash(url)}" if stem else url_hash(url)
        target = inside(self.out, self.out / folder / f"{name}{IMAGE_FORMATS[fmt]}")
        with atomic_write(target, "wb") as fh:
            fh.write(got.body)
        rec.update(status="saved", reason="", file=target.relative_to(self.out).as_posix())

    def close(self) -> None:
        self.summary.requests = self.client.n_requests
        with contextlib.suppress(Exception):
            self.fetcher.close()
        self.client.close()
        self.state.close()


def crawl(
    config: str | os.PathLike[str] | Mapping[str, Any] | CrawlConfig,
    out_dir: str | os.PathLike[str],
    *,
    ignore_robots: bool = False,
    refresh: bool = False,
    progress: bool = True,
    session: requests.Session | None = None,
) -> CrawlSummary:
    """Crawl a listing site into ``out_dir/<label>/`` with a sidecar; resumable.

    Parameters
    ----------
    config : path-like, mapping or CrawlConfig
        The site configuration (see the module docstring and :func:`load_config`).
    out_dir : path-like
        Output folder (created). Nothing is written outside it.
    ignore_robots : bool
        Do not read robots.txt. Only when you have the site's permission.
    refresh : bool
        Fetch listing pages again instead of reading them from the cache.
    progress : bool
        Show a progress bar.
    session : requests.Session, optional
        HTTP session to use (tests).

    Returns
    -------
    CrawlSummary
        Pages, items, images saved and skips by reason; also in ``out_dir/.crawl/summary.json``.

    Raises
    ------
    ConfigError
        On an invalid configuration or a missing browser.
    DataError
        When another crawl writes to the same folder.
    """
    config = load_config(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / STATE_DIR).mkdir(exist_ok=True)
    with lock(out / STATE_DIR):
        remove_stale_temp(out)
        crawler = _Crawler(config, out, ignore_robots=ignore_robots, refresh=refresh,
                           progress=progress, session=session)
        try:
            summary = crawler.run()
        finally:
            crawler.close()
            write_sidecar(out, config.sidecar)
        write_json(out / STATE_DIR / "summary.json",
                   {"name": config.name, "config": config.fingerprint(), **summary.as_dict()})
    return summary


def crawl_command(args: argparse.Namespace) -> int:
    """Command line ``python -m lfhelpers crawl CONFIG --out DIR``: crawl, print the summary.

    Parameters
    ----------
    args : argparse.Namespace
        ``config``, ``out``, the overrides ``base_url``, ``fetcher``, ``max_pages`` and
        ``max_items``, and the flags ``ignore_robots``, ``refresh`` and ``quiet``.

    Returns
    -------
    int
        0 on success, 2 on an error a user can act on, 130 when interrupted (rerun the same
        command to resume).
    """
    try:
        config = load_config(args.config, base_url=args.base_url, fetcher=args.fetcher,
                             max_pages=args.max_pages, max_items=args.max_items)
        summary = crawl(config, args.out, ignore_robots=args.ignore_robots, refresh=args.refresh,
                        progress=not args.quiet)
    except LFError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted; rerun the same command to resume (state in {args.out}/.crawl).",
              file=sys.stderr)
        return 130
    print(summary.to_frame().to_string())
    print(f"images in {args.out}; sidecar: {args.out / SIDECARS[config.sidecar]}")
    return 0

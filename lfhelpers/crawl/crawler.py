"""A polite, resumable crawler for lost-and-found listing sites.

:func:`crawl` reads a declarative site configuration (YAML or TOML), walks the listing pages,
reads each item's fields (and, optionally, its detail page), maps the site's category to a
label and saves the item's photo as ``OUT/<label>/<title>_<hash>.<ext>``: a raw class-folder
set ready for :func:`lfhelpers.dataset.prepare_dataset`. A sidecar, ``OUT/items.csv`` (or
``items.jsonl``), keeps every field, the source URLs and the outcome of every item; the crawl
state lives in the hidden folder ``OUT/.crawl/``. The cleanup step ignores both.

Command line: ``python -m lfhelpers crawl CONFIG --out DIR`` (see :func:`crawl_main`).

Configuration
-------------
A minimal YAML configuration::

    name: city-lost-and-found
    base_url: "https://lost.example/"          # relative URLs below are joined to this
    start: ["list?page=1"]                      # listing URL(s)
    pagination:
      next: "a.next"                            # CSS selector of the next-page link
    items: "li.item"                            # one element per item on a listing page
    fields:                                     # CSS selector (text), or "selector@attribute"
      title: "a.title"
      category: ".cat"
      date: ".date"
      image: "img@src"
    categories:                                 # site category -> label (prefix match)
      가방: bag
      지갑: wallet
    unmapped: drop                              # keep (site category as label) | drop | <label>

Keys (every key but ``start`` and ``items`` is optional):

``name``
    Shown in the progress bar and the summary.
``base_url``
    Base of relative URLs in ``start`` and ``pagination.template``.
``start``
    A URL or a list of entries; an entry is a URL or a mapping with ``url`` and any parameters
    for the URL template (for example ``{category: 가방, code: PRA000}``). An entry's
    ``category`` is the category of its items when the page does not name one.
``pagination``
    ``next``: selector of the next-page link, followed until it repeats or ``max_pages``;
    ``template``: a URL with ``{page}`` (and the start entry's parameters), for pages ``first``
    (default 1) to ``last`` (default: until a page has no items).
``items``
    CSS selector of the item elements of a listing page.
``fields``
    Name -> spec. A spec is a selector string (``".cat"``: its text), ``"img@src"`` (an
    attribute), or a mapping with ``selector``, ``attr`` (a name or a list tried in order,
    ``text`` for the text), ``regex`` (keep group 1, or the match), ``default``, ``value`` (a
    constant) and ``url`` (join to the page URL; on by default for ``image`` and for ``href`` /
    ``src`` attributes). An empty selector means the item element itself. ``category`` and
    ``image`` have a meaning; ``title``, ``date`` and ``place`` get their own sidecar columns;
    any other name becomes an extra column.
``detail``
    ``link``: spec of the item's detail-page URL (e.g. ``"a.title@href"``); ``fields``: specs
    read on the detail page, whose non-empty values replace the listing's.
``categories``, ``unmapped``
    Category mapping: an exact key wins, otherwise the longest key the site's category starts
    with (so ``가방`` matches ``가방 > 여성용가방``). A key mapped to ``null`` or ``""`` drops
    those items. ``unmapped``: ``keep`` (default), ``drop``, or one label for all the others.
``ignore_images``
    Regular expressions of image URLs to skip (placeholders such as ``noimage.gif``).
``fetcher``
    ``static`` (default: requests + BeautifulSoup) or ``browser`` (Selenium + headless
    Chromium, for listings rendered by JavaScript; ``pip install -e '.[crawl]'`` and the
    ``chromium`` and ``chromium-driver`` packages).
``browser``
    ``wait_for`` (CSS selector to wait for before reading a page; default: ``items``),
    ``timeout`` (seconds), ``binary``, ``driver`` (paths; defaults: ``LF_CHROMIUM``,
    ``LF_CHROMEDRIVER`` or the ``PATH``).
``same_site``, ``allowed_hosts``
    Only hosts of ``base_url`` and ``start`` (plus ``allowed_hosts``; ``*.cdn.example`` allows
    sub-domains) are fetched, redirects included, unless ``same_site: false``.
``http``
    ``delay`` (seconds between two requests to one host; robots.txt ``Crawl-delay`` wins when
    longer; default 1), ``timeout`` (seconds per read; 20), ``file_timeout`` (seconds per file;
    120), ``retries`` (3), ``backoff`` (first wait in seconds, doubled each retry; 1),
    ``max_retry_after`` (longest ``Retry-After`` honoured; 120), ``max_redirects`` (5),
    ``contact`` (an address or URL added to the User-Agent).
``limits``
    ``max_pages`` (listing pages; 100), ``max_items`` (0: no limit), ``max_bytes`` (per image;
    10 MB), ``max_page_bytes`` (per page; 5 MB), ``max_pixels`` (per image; 40 M).
``sidecar``
    ``csv`` (default) or ``jsonl``.

Politeness and safety
---------------------
robots.txt is honoured (``ignore_robots=True`` / ``--ignore-robots`` is the only override; an
unreachable robots.txt counts as "disallow all"); one request at a time, at most one per
``delay`` per host; a User-Agent naming the tool; timeouts; retries with exponential back-off
on 429 and 5xx answers, honouring ``Retry-After``; a byte limit per file; every image is checked
for its content type and decoded completely before it is kept; redirects are followed by hand
and each hop is checked against the same-site rule and robots.txt; URLs are de-duplicated; file
and folder names made from the site's text keep their Unicode but lose path separators,
control characters, leading dots and reserved device names, and every write is checked to stay
inside the output folder.

Resume
------
Images are written atomically, every processed item is appended to a journal
(``.crawl/journal.jsonl``) and fetched pages are cached (``.crawl/pages/``). A rerun of the same
command reads listing and detail pages from the cache, skips saved images (a saved file moves
when the category mapping changed) and retries only items that failed for a transient reason
(network, 429, 5xx): a rerun of a finished crawl sends no request at all. ``refresh=True``
(``--refresh``) fetches the listing pages again to pick up new items.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import hashlib
import io
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import unicodedata
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urldefrag, urljoin, urlsplit, urlunsplit
from urllib.robotparser import RobotFileParser

import pandas as pd
import requests
from bs4 import BeautifulSoup
from PIL import Image
from tqdm import tqdm

from lfhelpers import __version__
from lfhelpers.errors import ConfigError, DataError, LFError
from lfhelpers.fsutil import atomic_write, write_json

if TYPE_CHECKING:
    import matplotlib.pyplot as plt

log = logging.getLogger(__name__)

#: The product token robots.txt rules are matched against.
ROBOTS_AGENT = "lfhelpers"
USER_AGENT = f"{ROBOTS_AGENT}/{__version__} (lost-and-found workbook crawler)"

STATE_DIR = ".crawl"
SIDECARS = {"csv": "items.csv", "jsonl": "items.jsonl"}

#: Sidecar columns before the site's extra fields, and after them.
LEAD_COLUMNS = ["file", "category", "raw_category", "title", "date", "place"]
TAIL_COLUMNS = ["image_url", "detail_url", "page_url", "status", "reason", "note",
                "duplicate_of", "sha256", "bytes", "width", "height", "format", "fetched_at"]
_STANDARD_FIELDS = {"category", "image", "title", "date", "place"}

#: Decoded image format -> file extension of the saved file.
IMAGE_FORMATS = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp",
                 "BMP": ".bmp", "TIFF": ".tif"}
_BINARY_TYPES = {"", "application/octet-stream", "binary/octet-stream"}
_HTML_TYPES = {"text/html", "application/xhtml+xml", "application/xml", "text/xml"}
_URL_ATTRS = {"href", "src", "data-src", "data-original", "data-lazy-src", "data-url"}
_RESERVED_NAMES = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                   *(f"LPT{i}" for i in range(1, 10))}
#: Skip reasons worth another try on a rerun.
_TRANSIENT = re.compile(r"^(detail_)?(network|timeout|http_429|http_5\d\d|browser_error|"
                        r"robots_unreachable)$")
#: Skip reasons that depend on the category mapping only (re-evaluated on a rerun).
_CATEGORY_REASONS = ("no_category", "dropped_category", "unmapped_category")

#: Chromium flags for a quiet, headless, throw-away browser.
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--blink-settings=imagesEnabled=false")


# --------------------------------------------------------------------------------------------
# configuration


@dataclass
class FieldSpec:
    """How to read one field from an item element (see the module docstring).

    Parameters
    ----------
    selector : str
        CSS selector inside the item element; ``""`` is the element itself.
    attr : tuple of str
        Attributes tried in order; ``"text"`` is the element's text.
    regex : str, optional
        Keep group 1 (or the whole match) of the first match; no match gives ``default``.
    default : str
        Value when nothing is found.
    value : str, optional
        A constant (the element is not read).
    url : bool
        Join the value to the page URL.
    """

    selector: str = ""
    attr: tuple[str, ...] = ("text",)
    regex: str | None = None
    default: str = ""
    value: str | None = None
    url: bool = False

    @classmethod
    def parse(cls, name: str, spec: Any) -> FieldSpec:
        """Build a spec from a config value (a string or a mapping)."""
        if isinstance(spec, str):
            selector, attr = spec, "text"
            match = re.fullmatch(r"(.*?)@([\w:-]+)", spec.strip())
            if match:
                selector, attr = match.group(1).strip(), match.group(2)
            data: dict[str, Any] = {"selector": selector, "attr": attr}
        elif isinstance(spec, Mapping):
            data = dict(spec)
        else:
            raise ConfigError(f"Field {name!r}: expected a selector string or a mapping, got "
                              f"{type(spec).__name__}.")
        _check_keys(data, {"selector", "attr", "regex", "default", "value", "url"},
                    f"fields.{name}")
        attr = data.get("attr", "text")
        attrs = tuple(str(a) for a in ([attr] if isinstance(attr, str) else attr))
        if not attrs:
            raise ConfigError(f"Field {name!r}: attr must name at least one attribute.")
        regex = data.get("regex")
        if regex is not None:
            try:
                re.compile(str(regex))
            except re.error as exc:
                raise ConfigError(f"Field {name!r}: bad regex {regex!r}: {exc}.") from exc
        url = data.get("url", name == "image" or bool(set(attrs) & _URL_ATTRS))
        value = data.get("value")
        return cls(selector=str(data.get("selector", "") or ""), attr=attrs,
                   regex=None if regex is None else str(regex),
                   default=str(data.get("default", "") or ""),
                   value=None if value is None else str(value), url=bool(url))

    def extract(self, element: Any, base_url: str) -> str:
        """Read the field from a BeautifulSoup element; ``base_url`` resolves relative URLs."""
        if self.value is not None:
            return self.value
        target = element.select_one(self.selector) if self.selector else element
        if target is None:
            return self.default
        text = ""
        for attr in self.attr:
            if attr == "text":
                raw: Any = target.get_text(" ")
            else:
                raw = target.get(attr)
                raw = " ".join(raw) if isinstance(raw, list) else raw
            text = " ".join(unicodedata.normalize("NFC", str(raw or "")).split())
            if text:
                break
        if text and self.regex:
            match = re.search(self.regex, text)
            text = "" if match is None else (match.group(1) if match.groups() else match.group(0))
            text = (text or "").strip()
        if text and self.url:
            text = urljoin(base_url, text)
        return text or self.default


@dataclass
class HttpOptions:
    """Politeness and robustness settings of the HTTP client (see the module docstring)."""

    delay: float = 1.0
    timeout: float = 20.0
    file_timeout: float = 120.0
    retries: int = 3
    backoff: float = 1.0
    max_retry_after: float = 120.0
    max_redirects: int = 5
    contact: str = ""


@dataclass
class Limits:
    """Size limits of a crawl (see the module docstring)."""

    max_pages: int = 100
    max_items: int = 0
    max_bytes: int = 10_000_000
    max_page_bytes: int = 5_000_000
    max_pixels: int = 40_000_000


@dataclass
class BrowserOptions:
    """Settings of the Selenium fetcher (see the module docstring)."""

    wait_for: str = ""
    timeout: float = 20.0
    binary: str = ""
    driver: str = ""


@dataclass
class CrawlConfig:
    """A validated site configuration; build it with :func:`load_config`."""

    start: list[dict[str, str]]
    items: str
    fields: dict[str, FieldSpec]
    name: str = "crawl"
    base_url: str = ""
    next_selector: str = ""
    template: str = ""
    first_page: int = 1
    last_page: int | None = None
    detail_link: FieldSpec | None = None
    detail_fields: dict[str, FieldSpec] = field(default_factory=dict)
    categories: dict[str, str | None] = field(default_factory=dict)
    unmapped: str = "keep"
    ignore_images: list[str] = field(default_factory=list)
    fetcher: str = "static"
    browser: BrowserOptions = field(default_factory=BrowserOptions)
    same_site: bool = True
    allowed_hosts: list[str] = field(default_factory=list)
    http: HttpOptions = field(default_factory=HttpOptions)
    limits: Limits = field(default_factory=Limits)
    sidecar: str = "csv"

    def start_pages(self) -> list[tuple[str, dict[str, str]]]:
        """The first listing URL of every start entry, with the entry's parameters."""
        pages = []
        for entry in self.start:
            url = self.page_url(entry, self.first_page) if self.template else entry["url"]
            pages.append((url, entry))
        return pages

    def page_url(self, entry: Mapping[str, str], page: int) -> str:
        """The listing URL of ``page`` for a start entry (template pagination)."""
        try:
            url = self.template.format_map({**entry, "page": page})
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"pagination.template {self.template!r} needs {exc}; add it to "
                              "each start entry.") from exc
        return urljoin(self.base_url, url)

    def hosts(self) -> set[str]:
        """Host names the crawl may fetch from (when ``same_site``)."""
        hosts = {h.lower() for h in self.allowed_hosts}
        for url in [self.base_url, *(u for u, _ in self.start_pages())]:
            if url and urlsplit(url).hostname:
                hosts.add(urlsplit(url).hostname.lower())
        return hosts

    def fingerprint(self) -> str:
        """A short hash of the settings that decide what is extracted."""
        text = json.dumps([self.start, self.items, repr(self.fields), repr(self.detail_fields),
                           repr(self.detail_link), self.template, self.next_selector],
                          sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


_TOP_KEYS = {"name", "base_url", "start", "pagination", "items", "fields", "detail", "categories",
             "unmapped", "ignore_images", "fetcher", "browser", "same_site", "allowed_hosts",
             "http", "limits", "sidecar"}


def _check_keys(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"Unknown key(s) in {where}: {', '.join(map(str, unknown))}. Valid keys: "
                          f"{', '.join(sorted(allowed))}.")


def _section(data: Mapping[str, Any], key: str, cls: type, where: str) -> Any:
    raw = data.get(key) or {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}{key} must be a mapping.")
    names = set(cls.__dataclass_fields__)
    _check_keys(raw, names, f"{where}{key}")
    defaults = cls()
    values = {}
    for name, value in raw.items():
        kind = type(getattr(defaults, name))
        try:
            values[name] = kind(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}{key}.{name}: expected {kind.__name__}, got {value!r}."
                              ) from exc
    return cls(**values)


def _parse_fields(raw: Any, where: str) -> dict[str, FieldSpec]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping of field name -> selector.")
    return {str(k): FieldSpec.parse(str(k), v) for k, v in raw.items()}


def _read_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"Crawl config {path} does not exist.")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - YAML and TOML raise their own types
        raise ConfigError(f"Cannot parse crawl config {path}: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ConfigError(f"Crawl config {path} must hold a mapping of settings.")
    return dict(data)


def load_config(
    source: str | os.PathLike[str] | Mapping[str, Any] | CrawlConfig,
    *,
    base_url: str | None = None,
    fetcher: str | None = None,
    max_pages: int | None = None,
    max_items: int | None = None,
) -> CrawlConfig:
    """Read and validate a crawl configuration.

    Parameters
    ----------
    source : path-like, mapping or CrawlConfig
        A ``.yaml``/``.yml`` or ``.toml`` file, or the same settings as a mapping.
    base_url, fetcher, max_pages, max_items : optional
        Override the file's values (command-line options).

    Returns
    -------
    CrawlConfig

    Raises
    ------
    ConfigError
        On a missing file, a syntax error, an unknown key or an invalid value; the message
        names the key.
    """
    if isinstance(source, CrawlConfig):
        config = copy.deepcopy(source)
    else:
        data = dict(source) if isinstance(source, Mapping) else _read_config_file(Path(source))
        config = _config_from_dict(data)
    if base_url is not None:
        config.base_url = base_url
        config.start = [{**e, "url": urljoin(base_url, e["raw_url"])} if e.get("raw_url") else e
                        for e in config.start]
    if fetcher is not None:
        config.fetcher = _choice(fetcher, ("static", "browser"), "fetcher")
    if max_pages is not None:
        config.limits.max_pages = int(max_pages)
    if max_items is not None:
        config.limits.max_items = int(max_items)
    return config


def _choice(value: Any, options: tuple[str, ...], key: str) -> str:
    if str(value) not in options:
        raise ConfigError(f"{key} must be one of {', '.join(options)}, got {value!r}.")
    return str(value)


def _config_from_dict(data: Mapping[str, Any]) -> CrawlConfig:
    _check_keys(data, _TOP_KEYS, "the crawl config")
    for key in ("start", "items"):
        if not data.get(key):
            raise ConfigError(f"The crawl config needs {key!r} (see `python -m lfhelpers crawl "
                              "--help` and examples/crawl/).")
    base_url = str(data.get("base_url") or "")
    if base_url and urlsplit(base_url).scheme not in ("http", "https"):
        raise ConfigError(f"base_url must be an http(s) URL, got {base_url!r}.")
    pagination = data.get("pagination") or {}
    if not isinstance(pagination, Mapping):
        raise ConfigError("pagination must be a mapping (next, template, first, last).")
    _check_keys(pagination, {"next", "template", "first", "last"}, "pagination")
    template = str(pagination.get("template") or "")
    if template and "{page}" not in template:
        raise ConfigError(f"pagination.template must contain {{page}}, got {template!r}.")
    start_raw = data["start"]
    start_list = [start_raw] if isinstance(start_raw, str | Mapping) else list(start_raw)
    start: list[dict[str, str]] = []
    for entry in start_list:
        item = {"url": entry} if isinstance(entry, str) else dict(entry)
        item = {str(k): str(v) for k, v in item.items() if v is not None}
        if not template and not item.get("url"):
            raise ConfigError(f"Start entry {entry!r} needs a url (or use pagination.template).")
        if item.get("url"):
            item["raw_url"] = item["url"]
            item["url"] = urljoin(base_url, item["url"])
            if urlsplit(item["url"]).scheme not in ("http", "https"):
                raise ConfigError(f"Start URL {item['url']!r} is not an absolute http(s) URL; "
                                  "set base_url or write the full URL.")
        start.append(item)
    fields = _parse_fields(data.get("fields"), "fields")
    detail = data.get("detail") or {}
    if not isinstance(detail, Mapping):
        raise ConfigError("detail must be a mapping (link, fields).")
    _check_keys(detail, {"link", "fields"}, "detail")
    detail_link = FieldSpec.parse("link", detail["link"]) if detail.get("link") else None
    if detail_link is not None:
        detail_link.url = True
    detail_fields = _parse_fields(detail.get("fields"), "detail.fields")
    if detail_fields and detail_link is None:
        raise ConfigError("detail.fields needs detail.link (the selector of the detail-page URL).")
    if "image" not in fields and "image" not in detail_fields:
        raise ConfigError("Define the field 'image' (in fields or detail.fields), e.g. "
                          "image: \"img@src\".")
    has_category = "category" in fields or "category" in detail_fields
    if not has_category and not all(e.get("category") for e in start):
        raise ConfigError("Define the field 'category', or give every start entry a category.")
    categories = data.get("categories") or {}
    if not isinstance(categories, Mapping):
        raise ConfigError("categories must be a mapping of site category -> label.")
    ignore = data.get("ignore_images") or []
    ignore = [ignore] if isinstance(ignore, str) else [str(p) for p in ignore]
    for pattern in ignore:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"ignore_images: bad regex {pattern!r}: {exc}.") from exc
    allowed = data.get("allowed_hosts") or []
    config = CrawlConfig(
        start=start,
        items=str(data["items"]),
        fields=fields,
        name=str(data.get("name") or "crawl"),
        base_url=base_url,
        next_selector=str(pagination.get("next") or ""),
        template=template,
        first_page=int(pagination.get("first", 1)),
        last_page=None if pagination.get("last") is None else int(pagination["last"]),
        detail_link=detail_link,
        detail_fields=detail_fields,
        categories={_norm_category(k): (None if v is None or not str(v).strip() else str(v))
                    for k, v in categories.items()},
        unmapped=str(data.get("unmapped", "keep")),
        ignore_images=ignore,
        fetcher=_choice(data.get("fetcher", "static"), ("static", "browser"), "fetcher"),
        browser=_section(data, "browser", BrowserOptions, ""),
        same_site=bool(data.get("same_site", True)),
        allowed_hosts=[str(h).lower() for h in ([allowed] if isinstance(allowed, str)
                                                else allowed)],
        http=_section(data, "http", HttpOptions, ""),
        limits=_section(data, "limits", Limits, ""),
        sidecar=_choice(data.get("sidecar", "csv"), tuple(SIDECARS), "sidecar"),
    )
    if not config.browser.wait_for:
        config.browser.wait_for = config.items
    if config.http.retries < 0 or config.http.delay < 0 or config.limits.max_pages < 1:
        raise ConfigError("http.retries and http.delay must be >= 0 and limits.max_pages >= 1.")
    return config


# --------------------------------------------------------------------------------------------
# names and categories


def safe_name(text: str, max_bytes: int = 120, fallback: str = "item") -> str:
    """Make a file or folder name from untrusted text, keeping its Unicode.

    Path separators and characters Windows forbids become ``_``; control characters are
    dropped; white space is collapsed; leading dots (hidden files, ``..``) and trailing dots
    and spaces are removed; reserved device names (``CON``, ``NUL``, ``COM1`` ...) get a ``_``
    prefix; the result is cut to ``max_bytes`` of UTF-8 on a character boundary.

    Parameters
    ----------
    text : str
        Any text (a category, a title).
    max_bytes : int
        Longest result in UTF-8 bytes.
    fallback : str
        Used when nothing is left.

    Returns
    -------
    str
        A single path component, never empty, ``.`` or ``..``.
    """
    s = unicodedata.normalize("NFC", str(text))
    s = "".join("" if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn") and c not in
                "\t\n\r" else c for c in s)
    s = re.sub(r'[\\/:*?"<>|\x00]', "_", s)
    s = re.sub(r"\s+", " ", s)
    s = re.sub(r"_{2,}", "_", s).strip(" ._")
    s = s.encode("utf-8")[:max_bytes].decode("utf-8", "ignore").rstrip(" .")
    if not s:
        s = fallback
    if s.split(".")[0].strip().upper() in _RESERVED_NAMES:
        s = f"_{s}"
    return s


def _norm_category(text: Any) -> str:
    return " ".join(unicodedata.normalize("NFC", str(text)).split())


def map_category(raw: str, mapping: Mapping[str, str | None], unmapped: str = "keep"
                 ) -> tuple[str | None, str]:
    """Map a site category to a label.

    Parameters
    ----------
    raw : str
        The category text found on the site (e.g. ``가방 > 여성용가방``).
    mapping : mapping
        Site category -> label; ``None`` drops. An exact key wins, else the longest key that
        ``raw`` starts with.
    unmapped : str
        ``keep`` (the site category is the label), ``drop``, or a label for the others.

    Returns
    -------
    (label or None, reason)
        ``reason`` is ``""``, ``no_category``, ``dropped_category`` or ``unmapped_category``.
    """
    raw = _norm_category(raw)
    if not raw:
        return None, "no_category"
    key = raw if raw in mapping else next(
        (k for k in sorted(mapping, key=len, reverse=True) if k and raw.startswith(k)), None)
    if key is not None:
        label = mapping[key]
        return (label, "") if label else (None, "dropped_category")
    if unmapped == "drop":
        return None, "unmapped_category"
    return (raw if unmapped == "keep" else unmapped), ""


def normalize_url(url: str) -> str:
    """URL without fragment, with a lower-case scheme and host and no default port."""
    url = urldefrag(url.strip())[0]
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.port and not (parts.scheme == "http" and parts.port == 80
                           or parts.scheme == "https" and parts.port == 443):
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme.lower(), host, parts.path or "/", parts.query, ""))


def _url_hash(url: str) -> str:
    return hashlib.sha1(normalize_url(url).encode("utf-8")).hexdigest()[:10]  # noqa: S324


# --------------------------------------------------------------------------------------------
# HTTP


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


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


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
        For tests; a new session otherwise.
    sleep : callable
        ``time.sleep`` (replaceable in tests).
    """

    def __init__(self, config: CrawlConfig, ignore_robots: bool = False,
                 session: requests.Session | None = None, sleep: Any = time.sleep):
        self.config = config
        self.options = config.http
        self.ignore_robots = ignore_robots
        self.session = session or requests.Session()
        contact = f"; +{self.options.contact}" if self.options.contact else ""
        self.user_agent = USER_AGENT.replace(")", f"{contact})")
        self.session.headers["User-Agent"] = self.user_agent
        self.hosts = config.hosts()
        self.sleep = sleep
        self.n_requests = 0
        self._next_at: dict[str, float] = {}
        self._robots: dict[str, RobotFileParser] = {}
        self._unreachable: set[str] = set()
        self._delay: dict[str, float] = {}

    # ----- rules

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
                self._delay[parts.netloc] = min(float(delay), self.options.max_retry_after)
        return self._robots[origin].can_fetch(ROBOTS_AGENT, url)

    def _read_robots(self, origin: str) -> RobotFileParser:
        parser = RobotFileParser(origin + "/robots.txt")
        url = origin + "/robots.txt"
        try:
            for _ in range(self.options.max_redirects + 1):
                response = self._get(url)
                if response.is_redirect and response.headers.get("Location"):
                    url = urljoin(url, response.headers["Location"])
                    response.close()
                    continue
                break
            else:
                raise Skip("robots_unreachable", "too many redirects")
            status = response.status_code
            if status == 200:
                body = self._read_body(response, 512_000, url)
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

    # ----- requests

    def _wait(self, netloc: str) -> None:
        now = time.monotonic()
        ready = self._next_at.get(netloc, 0.0)
        if ready > now:
            self.sleep(ready - now)
        delay = max(self.options.delay, self._delay.get(netloc, 0.0))
        self._next_at[netloc] = time.monotonic() + delay

    def _postpone(self, netloc: str, seconds: float) -> None:
        self._next_at[netloc] = max(self._next_at.get(netloc, 0.0), time.monotonic() + seconds)

    def _get(self, url: str) -> requests.Response:
        """One GET with retries on network errors, 429 and 5xx; redirects are not followed."""
        netloc = urlsplit(url).netloc
        timeout = (min(10.0, self.options.timeout), self.options.timeout)
        failure = Skip("network")
        for attempt in range(self.options.retries + 1):
            self._wait(netloc)
            self.n_requests += 1
            try:
                response = self.session.get(url, stream=True, timeout=timeout,
                                            allow_redirects=False)
            except (requests.ConnectionError, requests.Timeout) as exc:
                failure = Skip("timeout" if isinstance(exc, requests.Timeout) else "network",
                               str(exc)[:200])
                self._postpone(netloc, self.options.backoff * 2 ** attempt)
                continue
            except requests.RequestException as exc:
                raise Skip("bad_url", str(exc)[:200]) from exc
            status = response.status_code
            if status != 429 and status < 500:
                return response
            asked = _retry_after(response.headers.get("Retry-After"))
            response.close()
            if asked is not None and asked > self.options.max_retry_after:
                raise Skip(f"http_{status}", f"the server asks to wait {asked:.0f} s, more than "
                           f"http.max_retry_after ({self.options.max_retry_after:.0f} s)")
            wait = asked if asked is not None else self.options.backoff * 2 ** attempt
            failure = Skip(f"http_{status}", f"still {status} after "
                           f"{self.options.retries} retries")
            log.info("%s answered %d; retrying in %.1f s", url, status, wait)
            self._postpone(netloc, wait)
        raise failure

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
            raise Skip("network", f"connection lost while reading: {exc}"[:200]) from exc
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


# --------------------------------------------------------------------------------------------
# page fetchers


class StaticFetcher:
    """Fetch pages with plain HTTP (requests); the default, needs no browser."""

    def __init__(self, client: PoliteClient, max_bytes: int):
        self.client = client
        self.max_bytes = max_bytes

    def page(self, url: str, listing: bool = True) -> tuple[str, str]:
        """Return ``(final URL, HTML text)`` of a page, or raise :class:`Skip`."""
        got = self.client.fetch(url, self.max_bytes)
        if got.content_type and got.content_type not in _HTML_TYPES:
            raise Skip("not_html", f"{got.content_type} at {got.url}")
        soup = BeautifulSoup(got.body, "html.parser", from_encoding=got.charset)
        return got.url, str(soup)

    def close(self) -> None:
        """Nothing to release."""


def find_browser(binary: str = "", driver: str = "") -> tuple[str, str]:
    """Locate Chromium and chromedriver: arguments, ``LF_CHROMIUM``/``LF_CHROMEDRIVER``, PATH.

    Returns
    -------
    (binary, driver) : tuple of str
        Paths; an empty string where nothing was found.
    """
    binary = binary or os.environ.get("LF_CHROMIUM", "") or next(
        (p for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
         if (p := shutil.which(name))), "")
    driver = driver or os.environ.get("LF_CHROMEDRIVER", "") or shutil.which("chromedriver") or ""
    return binary, driver


class BrowserFetcher:
    """Fetch pages with headless Chromium through Selenium, for JavaScript-rendered listings.

    The browser loads pages only (images are switched off and downloaded by the polite HTTP
    client); robots.txt, the same-site rule and the rate limit are checked before each page
    and the final URL after it.
    """

    def __init__(self, client: PoliteClient, options: BrowserOptions):
        self.client = client
        self.options = options
        self.driver: Any = None
        self._profile: str | None = None

    def _start(self) -> Any:
        try:
            from selenium import webdriver
            from selenium.webdriver.chrome.service import Service
        except ImportError as exc:
            raise ConfigError("fetcher: browser needs Selenium: pip install -e '.[crawl]'."
                              ) from exc
        binary, driver = find_browser(self.options.binary, self.options.driver)
        if not binary or not driver:
            raise ConfigError(
                "fetcher: browser needs Chromium and chromedriver (Debian/Ubuntu: "
                "`apt-get install chromium chromium-driver`), or set LF_CHROMIUM and "
                "LF_CHROMEDRIVER (or browser.binary and browser.driver) to their paths.")
        self._profile = tempfile.mkdtemp(prefix="lf-chromium-")
        opts = webdriver.ChromeOptions()
        opts.binary_location = binary
        for arg in (*CHROMIUM_ARGS, f"--user-data-dir={self._profile}",
                    f"--user-agent={self.client.user_agent}"):
            opts.add_argument(arg)
        try:
            self.driver = webdriver.Chrome(options=opts, service=Service(executable_path=driver))
        except Exception as exc:  # noqa: BLE001 - selenium raises many types here
            shutil.rmtree(self._profile, ignore_errors=True)
            raise ConfigError(f"Could not start headless Chromium ({binary}, {driver}): "
                              f"{str(exc).strip()[:300]}") from exc
        self.driver.set_page_load_timeout(self.options.timeout)
        return self.driver

    def page(self, url: str, listing: bool = True) -> tuple[str, str]:
        """Load ``url`` in the browser and return ``(final URL, rendered HTML)``.

        On a listing page the browser waits for ``browser.wait_for`` to appear.
        """
        from selenium.common.exceptions import TimeoutException, WebDriverException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.ui import WebDriverWait

        self.client.check(url)
        driver = self.driver or self._start()
        self.client._wait(urlsplit(url).netloc)
        self.client.n_requests += 1
        try:
            driver.get(url)
        except TimeoutException as exc:
            raise Skip("timeout", f"browser page load of {url}") from exc
        except WebDriverException as exc:
            raise Skip("browser_error", str(exc).strip()[:200]) from exc
        if listing and self.options.wait_for:
            try:
                WebDriverWait(driver, self.options.timeout).until(
                    expected_conditions.presence_of_element_located(
                        (By.CSS_SELECTOR, self.options.wait_for)))
            except TimeoutException:
                log.warning("%r did not appear on %s within %.0f s; reading the page as it is.",
                            self.options.wait_for, url, self.options.timeout)
        final = driver.current_url
        try:
            self.client.check(final)
        except Skip as exc:
            raise Skip(exc.reason, f"the browser ended on {final}: {exc.note}") from None
        return final, driver.page_source

    def close(self) -> None:
        """Quit the browser and remove its throw-away profile."""
        if self.driver is not None:
            with contextlib.suppress(Exception):
                self.driver.quit()
            self.driver = None
        if self._profile:
            shutil.rmtree(self._profile, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# images


def check_image(body: bytes, content_type: str, max_pixels: int = 40_000_000
                ) -> tuple[str, int, int]:
    """Check that downloaded bytes are a complete raster image of an accepted type.

    Parameters
    ----------
    body : bytes
        The downloaded file.
    content_type : str
        The ``Content-Type`` the server sent (media type only).
    max_pixels : int
        Larger images are refused before they are decoded.

    Returns
    -------
    (format, width, height)
        PIL's format name (a key of :data:`IMAGE_FORMATS`) and the size.

    Raises
    ------
    Skip
        ``wrong_content_type``, ``undecodable``, ``unsupported_format`` or ``too_many_pixels``.
    """
    if not (content_type in _BINARY_TYPES
            or content_type.startswith("image/") and content_type != "image/svg+xml"):
        raise Skip("wrong_content_type", f"{content_type} instead of an image")
    if not body:
        raise Skip("undecodable", "empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(body)) as img:
                fmt, (width, height) = str(img.format), img.size
                if fmt not in IMAGE_FORMATS:
                    raise Skip("unsupported_format", fmt)
                if width * height > max_pixels:
                    raise Skip("too_many_pixels", f"{width}x{height} > {max_pixels:,} pixels")
                img.load()
    except Skip:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning, EOFError) as exc:
        note = re.sub(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "the data", str(exc))
        raise Skip("undecodable", note[:200]) from exc
    return fmt, width, height


# --------------------------------------------------------------------------------------------
# state on disk


class _State:
    """The journal of processed items and the page cache under ``OUT/.crawl``."""

    def __init__(self, out: Path):
        self.out = out
        self.dir = out / STATE_DIR
        self.pages_dir = self.dir / "pages"
        self.pages_dir.mkdir(parents=True, exist_ok=True)
        self.journal_path = self.dir / "journal.jsonl"
        self.records: dict[str, dict[str, Any]] = {}
        if self.journal_path.exists():
            with open(self.journal_path, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line cut off by a hard stop
                    if isinstance(rec, dict) and rec.get("key"):
                        self.records[rec["key"]] = rec  # dict keeps first-seen order
        self._journal = open(self.journal_path, "a", encoding="utf-8")  # noqa: SIM115

    def record(self, rec: dict[str, Any]) -> None:
        self.records[rec["key"]] = rec
        self._journal.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self._journal.flush()
        os.fsync(self._journal.fileno())

    def _page_file(self, url: str) -> Path:
        digest = hashlib.sha256(normalize_url(url).encode()).hexdigest()[:24]
        return self.pages_dir / f"{digest}.json"

    def cached_page(self, url: str) -> tuple[str, str] | None:
        path = self._page_file(url)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return data["final_url"], data["html"]
        except (OSError, ValueError, KeyError):
            return None

    def store_page(self, url: str, final_url: str, html: str) -> None:
        write_json(self._page_file(url), {"url": url, "final_url": final_url, "html": html})

    def close(self) -> None:
        self._journal.close()


@contextlib.contextmanager
def _lock(state_dir: Path) -> Iterator[None]:
    path = state_dir / "lock"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(path.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            alive = False
            if pid > 0 and pid != os.getpid():
                try:
                    os.kill(pid, 0)
                    alive = True
                except ProcessLookupError:
                    alive = False
                except PermissionError:
                    alive = True
            if alive:
                raise DataError(f"Another crawl (process {pid}) is writing to "
                                f"{state_dir.parent}; wait for it or remove {path}.") from None
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))
        break
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _remove_stale_temp(out: Path) -> None:
    """Delete temporary files an interrupted run left (``.name.XXXX.tmp`` of atomic writes)."""
    folders = [out, out / STATE_DIR / "pages",
               *(p for p in out.iterdir() if p.is_dir() and not p.is_symlink())]
    for folder in folders:
        for tmp in folder.glob(".*.tmp"):
            if tmp.is_file():
                tmp.unlink(missing_ok=True)


def _inside(root: Path, path: Path) -> Path:
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise DataError(f"Refusing to write {path}: it resolves outside the output folder {root}.")
    return path


# --------------------------------------------------------------------------------------------
# the crawl


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
        self.state = _State(out)
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

    # ----- pages

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

    # ----- items

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
            target = _inside(self.out, self.out / safe_name(label, fallback="unknown") / path.name)
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
        rec["raw_category"] = _norm_category(raw_category)
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
        name = f"{stem}_{_url_hash(url)}" if stem else _url_hash(url)
        target = _inside(self.out, self.out / folder / f"{name}{IMAGE_FORMATS[fmt]}")
        with atomic_write(target, "wb") as fh:
            fh.write(got.body)
        rec.update(status="saved", reason="", file=target.relative_to(self.out).as_posix())

    def close(self) -> None:
        self.summary.requests = self.client.n_requests
        with contextlib.suppress(Exception):
            self.fetcher.close()
        self.client.close()
        self.state.close()


def _rows(records: Mapping[str, Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    extras: dict[str, None] = {}
    rows = []
    for rec in records.values():
        row = {k: rec.get(k, "") for k in (*LEAD_COLUMNS, *TAIL_COLUMNS)}
        row.update(rec.get("extra") or {})
        extras.update(dict.fromkeys(rec.get("extra") or {}))
        rows.append(row)
    return rows, [*LEAD_COLUMNS, *(e for e in extras if e not in LEAD_COLUMNS + TAIL_COLUMNS),
                  *TAIL_COLUMNS]


def write_sidecar(out_dir: str | os.PathLike[str], fmt: str = "csv") -> Path:
    """(Re)write ``OUT/items.csv`` or ``OUT/items.jsonl`` from the crawl journal, atomically.

    Parameters
    ----------
    out_dir : path-like
        A crawl output folder.
    fmt : str
        ``csv`` or ``jsonl``.

    Returns
    -------
    pathlib.Path
        The sidecar: one row per item, saved or not, in crawl order.
    """
    out = Path(out_dir)
    state = _State(out)
    state.close()
    rows, columns = _rows(state.records)
    path = out / SIDECARS[fmt]
    if fmt == "csv":
        with atomic_write(path, newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    else:
        with atomic_write(path) as fh:
            for row in rows:
                fh.write(json.dumps({c: row.get(c, "") for c in columns}, ensure_ascii=False)
                         + "\n")
    other = out / SIDECARS["jsonl" if fmt == "csv" else "csv"]
    other.unlink(missing_ok=True)
    return path


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
    with _lock(out / STATE_DIR):
        _remove_stale_temp(out)
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


# --------------------------------------------------------------------------------------------
# reading the result


def read_items(out_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """Read the sidecar of a crawl (``items.csv`` or ``items.jsonl``) as strings.

    Raises
    ------
    DataError
        When ``out_dir`` holds no sidecar.
    """
    out = Path(out_dir)
    if (out / SIDECARS["csv"]).exists():
        return pd.read_csv(out / SIDECARS["csv"], dtype=str, keep_default_na=False)
    if (out / SIDECARS["jsonl"]).exists():
        return pd.read_json(out / SIDECARS["jsonl"], lines=True, dtype=False).astype(str)
    raise DataError(f"No crawl sidecar (items.csv or items.jsonl) in {out}; run the crawl first.")


def crawl_samples(out_dir: str | os.PathLike[str], n: int = 12, seed: int = 0,
                  ncols: int = 6) -> plt.Figure | None:
    """A grid of saved images, spread over the categories, titled with category and title.

    Parameters
    ----------
    out_dir : path-like
        A crawl output folder.
    n : int
        Most images shown.
    seed : int
        Which images are picked.
    ncols : int
        Grid columns.

    Returns
    -------
    matplotlib.figure.Figure or None
        None when nothing was saved.
    """
    from lfhelpers.plots import image_grid, setup_fonts

    setup_fonts()
    items = read_items(out_dir)
    saved = items[items["status"] == "saved"]
    if saved.empty:
        return None
    shuffled = saved.sample(frac=1.0, random_state=seed)
    shuffled = shuffled.assign(_rank=shuffled.groupby("category").cumcount())
    picked = shuffled.sort_values(["_rank", "category"], kind="stable").head(n)
    titles = [f"{r.category}\n{r.title[:12]}" for r in picked.itertuples()]
    suptitle = f"Crawled images ({len(saved)} saved, {len(picked)} shown)"
    return image_grid([Path(out_dir) / f for f in picked["file"]], titles=titles, ncols=ncols,
                      size=1.9, suptitle=suptitle)


# --------------------------------------------------------------------------------------------
# command line


def crawl_command(args: argparse.Namespace) -> int:
    """Command line ``python -m lfhelpers crawl CONFIG --out DIR``.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line (:mod:`lfhelpers.cli`).

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


"""The crawl configuration: a declarative description of a listing site (YAML or TOML).

:func:`load_config` reads and validates it into a :class:`CrawlConfig`; an unknown key or a bad
value is a :class:`~lfhelpers.errors.ConfigError` that names the key.

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
    Pages and images are fetched only from the hosts of ``base_url`` and ``start`` (plus
    ``allowed_hosts``; ``*.cdn.example`` allows sub-domains), redirects included, unless
    ``same_site: false``. robots.txt is the one exception: as RFC 9309 asks, a robots.txt that
    redirects is followed (at most ``http.max_redirects`` hops, to any http(s) host), and the
    file found there holds the rules of the host that redirected; nothing else is fetched from
    the other host.
``http``
    ``delay`` (seconds between two requests to one host, retries included; robots.txt
    ``Crawl-delay`` wins when longer; default 1), ``timeout`` (seconds per read; 20),
    ``file_timeout`` (seconds per file; 120), ``retries`` (3), ``backoff`` (back-off factor
    in seconds: retry ``n`` after a failure waits ``backoff * 2 ** (n - 1)``, so the first
    retry waits ``backoff``, the second twice that ..., never less than ``delay``; 1),
    ``max_retry_after`` (longest ``Retry-After`` awaited; a longer one ends the retries at
    once; 120), ``max_redirects`` (5), ``contact`` (an address
    or URL added to the User-Agent).
``limits``
    ``max_pages`` (listing pages; 100), ``max_items`` (0: no limit), ``max_bytes`` (per image;
    10 MB), ``max_page_bytes`` (per page; 5 MB), ``max_pixels`` (per image; 40 M).
``sidecar``
    ``csv`` (default) or ``jsonl``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from lfhelpers.crawl.names import norm_category
from lfhelpers.errors import ConfigError

#: Sidecar format -> file name in the output folder.
SIDECARS = {"csv": "items.csv", "jsonl": "items.jsonl"}
_URL_ATTRS = {"href", "src", "data-src", "data-original", "data-lazy-src", "data-url"}


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

    delay: float = 1.0  # seconds between two requests to one host
    timeout: float = 20.0  # seconds per read
    file_timeout: float = 120.0  # seconds per file
    retries: int = 3
    backoff: float = 1.0  # seconds before the first retry, doubling after
    max_retry_after: float = 120.0  # seconds
    max_redirects: int = 5
    contact: str = ""  # an address or URL added to the User-Agent


@dataclass
class Limits:
    """Size limits of a crawl (see the module docstring)."""

    max_pages: int = 100  # listing pages
    max_items: int = 0  # 0: no limit
    max_bytes: int = 10_000_000  # per image
    max_page_bytes: int = 5_000_000  # per page
    max_pixels: int = 40_000_000  # per image


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
        categories={norm_category(k): (None if v is None or not str(v).strip() else str(v))
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

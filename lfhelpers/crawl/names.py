"""Names from untrusted site text, category mapping and URL keys."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping
from typing import Any
from urllib.parse import urldefrag, urlsplit, urlunsplit

_RESERVED_NAMES = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                   *(f"LPT{i}" for i in range(1, 10))}


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


def norm_category(text: Any) -> str:
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
    raw = norm_category(raw)
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


def url_hash(url: str) -> str:
    return hashlib.sha1(normalize_url(url).encode("utf-8")).hexdigest()[:10]  # noqa: S324

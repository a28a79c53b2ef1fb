"""Page fetchers (plain HTTP or headless Chromium) and the check of downloaded images."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
import warnings
from typing import Any

from bs4 import BeautifulSoup
from PIL import Image

from lfhelpers.crawl.config import BrowserOptions
from lfhelpers.crawl.politeness import PoliteClient, Skip
from lfhelpers.errors import ConfigError, DataError
from lfhelpers.images import open_image

log = logging.getLogger(__name__)

#: Decoded image format -> file extension of the saved file.
IMAGE_FORMATS = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp",
                 "BMP": ".bmp", "TIFF": ".tif"}
#: Chromium flags for a quiet, headless, throw-away browser.
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--blink-settings=imagesEnabled=false")
_BINARY_TYPES = {"", "application/octet-stream", "binary/octet-stream"}
_HTML_TYPES = {"text/html", "application/xhtml+xml", "application/xml", "text/xml"}


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
        self.client.pace(url)
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

    The header gives the format and size; the whole image is then decoded by
    :func:`lfhelpers.images.open_image`, the loader every later stage uses, so a kept file is
    one they can read.

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
            with Image.open(io.BytesIO(body)) as img:  # the header only
                fmt, (width, height) = str(img.format), img.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning, EOFError) as exc:
        raise Skip("undecodable", "unknown or damaged image format") from exc
    if fmt not in IMAGE_FORMATS:
        raise Skip("unsupported_format", fmt)
    if width * height > max_pixels:
        raise Skip("too_many_pixels", f"{width}x{height} > {max_pixels:,} pixels")
    try:
        open_image(body, max_pixels=max_pixels)
    except DataError as exc:
        raise Skip("undecodable", str(exc).removeprefix("<image> ")[:200]) from exc
    return fmt, width, height

"""Crawling a lost-and-found listing site into class folders (``data/raw/<label>/``).

config      the site configuration (YAML or TOML) and the reference of its keys
names       file names from site text, category mapping, URL keys
politeness  the HTTP client: robots.txt, per-host delay, retries (lfhelpers.http), limits
fetchers    static (requests) and browser (Selenium + Chromium) page fetchers, image check
store       journal, page cache, lock and the ``items.csv`` sidecar under the output folder
crawler     the resumable crawl and the ``crawl`` command
samples     reading the sidecar back and a grid of crawled images
"""

from lfhelpers.crawl.config import CrawlConfig, load_config
from lfhelpers.crawl.crawler import CrawlSummary, crawl
from lfhelpers.crawl.samples import crawl_samples, read_items
from lfhelpers.crawl.store import write_sidecar

__all__ = ["CrawlConfig", "CrawlSummary", "crawl", "crawl_samples", "load_config", "read_items",
           "write_sidecar"]

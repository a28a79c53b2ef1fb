"""Crawling a lost-and-found listing site into class folders (``data/raw/<label>/``).

crawler    configuration, polite HTTP client, static and browser fetchers, the resumable crawl,
           the ``items.csv`` sidecar and the ``crawl`` command
"""

from lfhelpers.crawl.crawler import (
    CrawlConfig,
    CrawlSummary,
    crawl,
    crawl_samples,
    load_config,
    read_items,
    write_sidecar,
)

__all__ = ["CrawlConfig", "CrawlSummary", "crawl", "crawl_samples", "load_config", "read_items",
           "write_sidecar"]

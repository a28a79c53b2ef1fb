"""Exception types raised by :mod:`lfhelpers`.

Every error a user can act on derives from :class:`LFError`; its message says what was wrong
and what to do about it.
"""

from __future__ import annotations


class LFError(Exception):
    """Base class of every error raised on purpose by :mod:`lfhelpers`."""


class ConfigError(LFError):
    """A parameter, profile or configuration file is invalid."""


class DataError(LFError):
    """Input data is missing, empty or unusable (for example a class too small to split)."""


class DownloadError(LFError):
    """A download failed: HTTP error, size limit exceeded or checksum mismatch."""


class NetworkUnavailableError(DownloadError):
    """The public source cannot be reached and no offline mirror is configured."""


class UnsafeArchiveError(LFError):
    """An archive holds a member that would escape the destination (traversal, link, device)."""


class PipelineError(LFError):
    """A notebook of the pipeline failed; the message names the notebook and the cell."""


class BusyError(LFError):
    """A resource is in use by another process (e.g. another run writing into the same folder)."""

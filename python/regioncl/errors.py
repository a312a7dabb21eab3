"""The exceptions of the package.

Every error about a file names it: ``str(e)`` says what is wrong and where, and ``e.path`` (the
file) and ``e.record`` (the record index inside that shard, when one is concerned) carry the same
facts for code. File-system failures are the built-in :class:`OSError` subclasses
(``FileNotFoundError``, ``PermissionError``, ...) with ``filename`` set.
"""

from __future__ import annotations

__all__ = [
    "ChecksumError",
    "ConfigError",
    "DataError",
    "Error",
    "ForkError",
    "FormatError",
    "LimitError",
    "ManifestError",
]


class Error(Exception):
    """Base class of the package's own errors."""

    path: str | None
    """The file concerned, if any."""
    record: int | None
    """The record index inside that shard (or dataset), if one is concerned."""

    def __init__(self, message: str, path: str | None = None, record: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.record = record


class FormatError(Error, ValueError):
    """A shard file is truncated, corrupt, foreign or of an unsupported version."""


class ChecksumError(Error, ValueError):
    """Bytes on disk no longer match their stored crc32c (a record, or a whole shard file)."""


class ManifestError(Error, ValueError):
    """A dataset's ``manifest.json`` is invalid or disagrees with its shard files."""


class LimitError(Error, ValueError):
    """Untrusted input exceeds a bound checked before anything is allocated."""


class ConfigError(Error, ValueError):
    """A bad setting: a recipe, a batch size, a rank, a conversion option, ..."""


class DataError(Error, RuntimeError):
    """A record could not be used: it failed to decode (``strict=True``), or it and all of its
    substitutes did."""


class ForkError(Error, RuntimeError):
    """A loader used in a process forked after it started: its worker threads exist only in the
    parent. Create the loader in the process that iterates it."""

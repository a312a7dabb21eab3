"""`regioncl.convert`: image folders to shards, the converter of ``regioncl convert``."""

from __future__ import annotations

import os
from dataclasses import dataclass

from regioncl import _native

__all__ = ["ConvertSummary", "convert"]


@dataclass(frozen=True)
class ConvertSummary:
    """What a conversion did."""

    records: int
    """Records in the dataset."""
    classes: int
    """Classes (first-level directories, or labels of the list file)."""
    shards: int
    """Shard files."""
    bytes: int
    """Total size of the shard files."""
    stored: int
    """JPEGs stored byte-for-byte."""
    converted: int
    """Images (PNG, CMYK JPEG, ...) re-encoded as RGB JPEG at their size."""
    resized: int
    """Images resized to ``max_side`` and re-encoded."""
    skipped: list[tuple[str, str]]
    """Files that could not be used: ``(path relative to the source, reason)``; also listed in
    ``skipped.tsv`` in the output directory."""
    ignored: int
    """Hidden files, non-image files and files outside class directories."""
    empty_classes: list[str]
    """Classes without any image."""
    seconds: float
    """Time this run took."""
    already_complete: bool
    """The output directory already held this dataset: nothing was done."""


def convert(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | None = None,
    threads: int | None = None,
    max_side: int | None = None,
    quality: int | None = None,
    shard_size: int | None = None,
    progress: bool = True,
) -> ConvertSummary:
    """Converts images into a dataset directory of shards, as ``regioncl convert`` does.

    ``src`` is an ImageFolder tree (``src/<class>/**/<image>``; labels are the class directories
    in sorted order) or, with ``root``, a list file of ``relative/path<TAB>label`` lines. JPEGs are
    stored as they are; other formats (and, with ``max_side``, larger images) are re-encoded at
    ``quality`` (default 95). Files that cannot be read are skipped and reported, never fatal.
    The output is byte-identical whatever ``threads`` (default: all cores); an interrupted
    conversion resumes where it stopped when run again. ``shard_size`` is the target shard size in
    bytes (default 512 MiB). With ``progress``, a line on stderr shows where it stands.

    The GIL is released while it runs; Ctrl-C stops it (raising :class:`KeyboardInterrupt`) and
    leaves ``out`` resumable.

    Raises :class:`~regioncl.ConfigError` for bad settings or an ``out`` that holds something else,
    :class:`OSError` when the input cannot be listed or the output written.
    """
    summary = _native.convert(
        os.fspath(src),
        os.fspath(out),
        root=None if root is None else os.fspath(root),
        threads=threads,
        max_side=max_side,
        quality=quality,
        shard_size=shard_size,
        progress=progress,
    )
    return ConvertSummary(**summary)

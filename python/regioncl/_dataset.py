"""`regioncl.Dataset`: a converted dataset, memory-mapped."""

from __future__ import annotations

import os
from functools import cached_property

import torch
from torch.utils.dlpack import from_dlpack

from regioncl import _native

__all__ = ["Dataset"]


class Dataset:
    """A dataset directory written by :func:`regioncl.convert` or ``regioncl convert``: the
    manifest and its shard files, memory-mapped and validated on opening (every shard's header
    and index, every label against the classes).

    ``len(ds)`` records; ``ds[i]`` is ``(encoded bytes, label)``; :attr:`labels` and
    :attr:`sizes` come from the shard index without decoding anything.

    Raises :class:`FileNotFoundError` for a missing directory or manifest,
    :class:`~regioncl.FormatError` for a corrupt or foreign shard (naming the file and the record),
    :class:`~regioncl.ManifestError` for a manifest that disagrees with its shards.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._native = _native.Dataset(os.fspath(path))

    def __len__(self) -> int:
        return len(self._native)

    def __getitem__(self, index: int) -> tuple[bytes, int]:
        return self._native[index]

    def __repr__(self) -> str:
        return f"regioncl.Dataset({str(self.path)!r}, records={len(self)}, classes={len(self.classes)})"

    @property
    def path(self) -> str:
        """The dataset directory."""
        return self._native.path

    @cached_property
    def classes(self) -> list[str]:
        """Class names, indexed by label."""
        return self._native.classes

    @cached_property
    def labels(self) -> torch.Tensor:
        """Every record's label: int64 ``[N]``."""
        return from_dlpack(self._native.labels_capsule())

    @cached_property
    def sizes(self) -> torch.Tensor:
        """Every record's stored ``(width, height)``: int32 ``[N, 2]``."""
        return from_dlpack(self._native.sizes_capsule())

    def verify(self) -> None:
        """Reads every byte and checks each shard file against the crc32c in the manifest.

        Raises :class:`~regioncl.ChecksumError` naming the shard on a mismatch.
        """
        self._native.verify()

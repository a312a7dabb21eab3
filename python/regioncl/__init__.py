"""regioncl: a multi-view image loader for self-supervised pretraining in PyTorch.

Memory-mapped shards (:func:`convert`, :class:`Dataset`), augmentations planned ahead from a seed
(:mod:`regioncl.recipes`), decoded and rendered by Rust threads, and batches handed to torch
without a copy (:class:`Loader`). See the README's Python section for a tour.
"""

from regioncl._convert import ConvertSummary, convert
from regioncl._dataset import Dataset
from regioncl.errors import (
    ChecksumError,
    ConfigError,
    DataError,
    Error,
    ForkError,
    FormatError,
    LimitError,
    ManifestError,
)

__all__ = [
    "ChecksumError",
    "ConfigError",
    "ConvertSummary",
    "DataError",
    "Dataset",
    "Error",
    "ForkError",
    "FormatError",
    "LimitError",
    "ManifestError",
    "convert",
]

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
from regioncl.loader import (
    Batch,
    Loader,
    LoaderStats,
    RegionSwap,
    Substitution,
    Swap,
    ViewParams,
)
from regioncl import recipes
from regioncl.recipes import Recipe, View

__all__ = [
    "Batch",
    "ChecksumError",
    "ConfigError",
    "ConvertSummary",
    "DataError",
    "Dataset",
    "Error",
    "ForkError",
    "FormatError",
    "LimitError",
    "Loader",
    "LoaderStats",
    "ManifestError",
    "Recipe",
    "RegionSwap",
    "Substitution",
    "Swap",
    "View",
    "ViewParams",
    "convert",
    "recipes",
]

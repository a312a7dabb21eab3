"""Fixtures: real photos (``make data``) converted once per session into shards."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import regioncl

REPO = Path(__file__).resolve().parents[2]
# Cargo's output directory: CARGO_TARGET_DIR when set (relative to the repository, as cargo reads
# it when run there by `make pytest`), else the repository's own target/.
TARGET = REPO / os.environ.get("CARGO_TARGET_DIR", "target")


def data_dir() -> Path:
    return Path(os.environ.get("REGIONCL_DATA", REPO / ".cache" / "data"))


@pytest.fixture(scope="session")
def imagenet_like() -> Path:
    """The ImageNet-like ImageFolder tree (2,000 JPEGs in 10 classes, cut from real photos)."""
    path = data_dir() / "imagenet-like"
    if not path.is_dir():
        pytest.fail(f"{path}: missing; run `make data`")
    return path


@pytest.fixture(scope="session")
def shards(imagenet_like: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ImageNet-like tree as a dataset of several 8 MiB shards."""
    out = tmp_path_factory.mktemp("shards") / "imagenet-like"
    summary = regioncl.convert(imagenet_like, out, threads=2, shard_size=8 << 20, progress=False)
    assert summary.records == 2000 and summary.shards > 1
    return out


@pytest.fixture(scope="session")
def dataset(shards: Path) -> regioncl.Dataset:
    return regioncl.Dataset(shards)


@pytest.fixture(scope="session")
def small_path(imagenet_like: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One class of the tree (200 JPEGs) in two shards: for tests that run whole epochs."""
    src = tmp_path_factory.mktemp("one-class")
    (src / "n00000000").symlink_to(imagenet_like / "n00000000")
    out = src.parent / "one-class-shards"
    summary = regioncl.convert(src, out, threads=2, shard_size=4 << 20, progress=False)
    assert summary.records == 200 and summary.shards == 2
    return out


@pytest.fixture(scope="session")
def small(small_path: Path) -> regioncl.Dataset:
    return regioncl.Dataset(small_path)

"""convert, Dataset and the errors that name the file and the record."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import regioncl


def test_convert_reports_what_it_did(imagenet_like: Path, shards: Path, tmp_path: Path) -> None:
    # A second run over a finished output does nothing and says so.
    again = regioncl.convert(imagenet_like, shards, threads=1, shard_size=8 << 20, progress=False)
    assert again.already_complete and again.records == 2000 and again.classes == 10
    # A broken file among good ones is skipped with its reason, never fatal.
    src = tmp_path / "src"
    shutil.copytree(imagenet_like / "n00000000", src / "a")
    (src / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    summary = regioncl.convert(src, tmp_path / "out", threads=2, progress=False)
    assert summary.records == len(list((imagenet_like / "n00000000").iterdir()))
    assert [p for p, _ in summary.skipped] == ["a/broken.jpg"]


def test_dataset_exposes_records_labels_and_sizes(dataset: regioncl.Dataset) -> None:
    assert len(dataset) == 2000 and dataset.classes == [f"n{i:08d}" for i in range(10)]
    assert dataset.labels.dtype == torch.int64 and dataset.labels.shape == (2000,)
    assert torch.bincount(dataset.labels).tolist() == [200] * 10
    assert dataset.sizes.dtype == torch.int32 and dataset.sizes.shape == (2000, 2)
    data, label = dataset[7]
    assert data[:2] == b"\xff\xd8" and label == dataset.labels[7].item()
    assert dataset[-1] == dataset[1999]
    with pytest.raises(IndexError):
        dataset[2000]
    dataset.verify()


def test_bad_path_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as e:
        regioncl.Dataset(tmp_path / "nowhere")
    assert e.value.filename == str(tmp_path / "nowhere" / "manifest.json")


def _copy(shards: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the dataset to damage, and its first shard file."""
    out = tmp_path / "copy"
    shutil.copytree(shards, out)
    return out, sorted(out.glob("shard-*.rcl"))[0]


def test_corrupt_shard_names_the_file(shards: Path, tmp_path: Path) -> None:
    out, shard = _copy(shards, tmp_path)
    raw = bytearray(shard.read_bytes())
    raw[20] ^= 0xFF  # a header field: the header checksum no longer matches
    shard.write_bytes(raw)
    with pytest.raises(regioncl.FormatError) as e:
        regioncl.Dataset(out)
    assert isinstance(e.value, ValueError) and e.value.path == str(shard)
    assert str(shard) in str(e.value) and "checksum" in str(e.value)


def test_truncated_shard_is_a_format_error(shards: Path, tmp_path: Path) -> None:
    out, shard = _copy(shards, tmp_path)
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(regioncl.FormatError, match="truncated"):
        regioncl.Dataset(out)


def test_flipped_record_byte_fails_verify(shards: Path, tmp_path: Path) -> None:
    out, shard = _copy(shards, tmp_path)
    raw = bytearray(shard.read_bytes())
    raw[5000] ^= 0x01  # inside the first records' bytes
    shard.write_bytes(raw)
    ds = regioncl.Dataset(out)  # opening reads headers and the index only
    with pytest.raises(regioncl.ChecksumError) as e:
        ds.verify()
    assert e.value.path == str(shard)

"""The Loader: the same bytes as the Rust pipeline, zero copy, exact resume, rank shares, the
errors, and the colour module against the CPU ops."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import regioncl
from regioncl import recipes

from conftest import TARGET

SMALL = recipes.mocov2(64)


def digest(batch: regioncl.Batch) -> str:
    h = hashlib.sha256()
    for v in batch.views:
        h.update(v.cpu().contiguous().numpy().tobytes())
    h.update(batch.labels.cpu().numpy().tobytes())
    h.update(batch.indices.numpy().tobytes())
    return h.hexdigest()


def test_bytes_equal_the_rust_pipeline(shards: Path) -> None:
    """The u8 views Python sees are the bytes the loader crate's own pipeline writes for the same
    plan (python/examples/pipeline_bytes.rs, built by `make pytest`)."""
    exe = TARGET / "release" / "examples" / "pipeline_bytes"
    assert exe.exists(), f"{exe}: run `cargo build --release -p regioncl-py --examples`"
    recipe = recipes.byol(64)
    loader = regioncl.Loader(shards, recipe, 24, seed=3, threads=2, colour="none", dtype="uint8")
    seen = hashlib.sha256()
    for batch, _ in zip(loader, range(3)):
        for v in batch.views:  # [B, 3, H, W] views of the loader's NHWC buffer
            seen.update(v.permute(0, 2, 3, 1).contiguous().numpy().tobytes())
    args = [str(shards), recipe.to_json(colour_on_cpu=False), "24", "3", "1", "3"]
    rust = subprocess.run([exe, *args], check=True, capture_output=True).stdout
    assert len(rust) == 3 * 2 * 24 * 64 * 64 * 3
    assert hashlib.sha256(rust).hexdigest() == seen.hexdigest()
    # The CPU-coloured float views are the pipeline's too.
    cpu = regioncl.Loader(shards, recipe, 24, seed=3, threads=2)
    args[1] = recipe.to_json(colour_on_cpu=True)
    rust = subprocess.run([exe, *args[:-1], "1"], check=True, capture_output=True).stdout
    first = next(iter(cpu))
    assert b"".join(v.numpy().tobytes() for v in first.views) == rust


def test_views_are_the_loaders_buffers(dataset: regioncl.Dataset) -> None:
    """Zero copy: every view tensor's storage is one of the ring's buffers, which cycle (no
    allocation per batch)."""
    for colour, dtype in (("none", "uint8"), ("cpu", "float32")):
        loader = regioncl.Loader(dataset, SMALL, 20, threads=2, prefetch=3, colour=colour, dtype=dtype)
        ring = {addr for addr, _ in loader.buffers()}
        assert len(ring) == 3 * 2  # prefetch sets of one buffer per view
        seen = set()
        for batch, _ in zip(loader, range(12)):
            for v in batch.views:
                assert v.untyped_storage().data_ptr() in ring
                seen.add(v.data_ptr())
            assert all(addr % 4096 == 0 for addr in ring)
        assert seen == ring


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_resident_memory_is_flat_over_epochs(small: regioncl.Dataset) -> None:
    """After the first epoch warms every buffer, four more epochs add no memory. A leaked batch
    would add its 2 x 25 x 112 x 112 x 3 bytes (1.9 MiB) per step, 60 MiB over the four epochs;
    the bound leaves room for allocator noise."""
    loader = regioncl.Loader(small, recipes.mocov2(112), 25, threads=2, colour="none", dtype="uint8")
    steps = 0
    after = []
    for _ in range(5):
        for batch in loader:
            steps += 1
            assert batch.views[0].shape == (25, 3, 112, 112)
        after.append(rss_mib())
    assert steps == 5 * len(loader) == 5 * 8
    assert max(after[1:]) - after[0] < 16, after


def test_resume_is_exact_for_any_thread_count(small: regioncl.Dataset) -> None:
    settings = dict(seed=7, colour="none", dtype="uint8")
    full = regioncl.Loader(small, SMALL, 10, threads=2, **settings)  # type: ignore[arg-type]
    want = [digest(b) for _ in range(2) for b in full]
    assert len(want) == 40 and len(set(want)) == 40
    first = regioncl.Loader(small, SMALL, 10, threads=1, **settings)  # type: ignore[arg-type]
    got = [digest(b) for b in first]
    it = iter(first)
    got += [digest(next(it)) for _ in range(7)]
    state = first.state_dict()
    assert (state["epoch"], state["step"]) == (1, 7)
    resumed = regioncl.Loader(small, SMALL, 10, threads=3, **settings)  # type: ignore[arg-type]
    resumed.load_state_dict(state)
    got += [digest(b) for b in resumed]
    assert got == want
    with pytest.raises(ValueError, match="seed"):
        regioncl.Loader(small, SMALL, 10).load_state_dict(state)


def test_rank_shares_are_disjoint_equal_slices_of_the_global_batch(
    small: regioncl.Dataset,
) -> None:
    one = regioncl.Loader(small, SMALL, 16, seed=1, threads=2, colour="none", dtype="uint8")
    ranks = [
        regioncl.Loader(
            small, SMALL, 16, seed=1, rank=r, world_size=2, threads=1, colour="none", dtype="uint8"
        )
        for r in range(2)
    ]
    assert len(ranks[0]) == len(ranks[1]) == len(one) == 200 // 16
    shares: list[list[int]] = [[], []]
    for g, b0, b1 in zip(one, ranks[0], ranks[1]):
        assert b0.views[0].shape[0] == b1.views[0].shape[0] == 8
        assert torch.equal(torch.cat([b0.indices, b1.indices]), g.indices)
        assert torch.equal(torch.cat([b0.views[1], b1.views[1]]), g.views[1])
        shares[0] += b0.indices.tolist()
        shares[1] += b1.indices.tolist()
    assert not set(shares[0]) & set(shares[1]) and len(set(shares[0])) == len(shares[0])


def test_rank_defaults_come_from_the_environment(
    dataset: regioncl.Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    loader = regioncl.Loader(dataset, SMALL, 64, threads=1)
    assert (loader.rank, loader.world_size) == (1, 4)
    assert next(iter(loader)).views[0].shape[0] == 16


def test_colour_module_matches_the_cpu_ops(dataset: regioncl.Dataset) -> None:
    """regioncl.torch on the u8 views and planned parameters equals the workers' CPU colour ops
    (colour="cpu") on the same plan; every op is drawn often."""
    view = replace(
        SMALL.views[0], jitter_p=0.9, grayscale_p=0.3, blur_p=0.6, solarize_p=0.3, hue=0.5
    )
    recipe = regioncl.Recipe((view, replace(view, width=40, height=48)))
    cpu = regioncl.Loader(dataset, recipe, 50, seed=5, threads=2, colour="cpu")
    gpu = regioncl.Loader(dataset, recipe, 50, seed=5, threads=2, colour="gpu")
    for a, b, _ in zip(cpu, gpu, range(2)):
        for va, vb, p in zip(a.views, b.views, b.params):
            assert bool(p.solarize.any()) and bool((p.blur_sigma > 0).any())
            assert va.shape == vb.shape and vb.dtype == torch.float32
            assert float((va - vb).abs().max()) < 1e-4


def test_batch_params_describe_the_views(dataset: regioncl.Dataset) -> None:
    loader = regioncl.Loader(dataset, SMALL, 32, threads=2, colour="none", dtype="uint8", region_swap=None)
    batch = next(iter(loader))
    sizes = dataset.sizes[batch.indices]
    for p in batch.params:
        x, y, w, h = p.crop.unbind(1)
        assert bool(((x + w <= sizes[:, 0]) & (y + h <= sizes[:, 1]) & (w > 0) & (h > 0)).all())
        assert sorted(p.jitter_order[0].tolist()) == [0, 1, 2, 3]
    assert batch.swap is None
    swapped = regioncl.Loader(
        dataset, recipes.mocov2(224), 32, threads=2, colour="none", dtype="uint8", region_swap=True
    )
    swap = next(iter(swapped)).swap
    assert swap is not None and 3 <= swap.grid[2] <= 5
    assert swap.pairing.tolist() == list(range(31, -1, -1))


def test_a_corrupt_record_is_replaced_or_raises_when_strict(shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(shards, out)
    shard = sorted(out.glob("shard-*.rcl"))[0]
    raw = bytearray(shard.read_bytes())
    raw[5000] ^= 0x01  # inside the first records' bytes
    shard.write_bytes(raw)
    ds = regioncl.Dataset(out)
    loose = regioncl.Loader(ds, SMALL, 500, shuffle=False, threads=2)
    batch = next(iter(loose))
    assert len(batch.substitutions) == 1 and loose.stats.substitutions == 1
    assert "crc32c" in batch.substitutions[0].reason
    strict = regioncl.Loader(ds, SMALL, 500, shuffle=False, threads=2, strict=True)
    with pytest.raises(regioncl.ChecksumError) as e:
        next(iter(strict))
    assert e.value.path == str(shard) and e.value.record == batch.substitutions[0].failed


def test_use_after_fork_is_a_clear_error(dataset: regioncl.Dataset) -> None:
    loader = regioncl.Loader(dataset, SMALL, 32, threads=1)
    next(iter(loader))  # the threads run in this process
    pid = os.fork()
    if pid == 0:  # the child: the loader must refuse, not hang
        code = 1
        try:
            next(iter(loader))
        except regioncl.ForkError as e:
            code = 0 if "fork" in str(e) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert next(iter(loader)).views[0].shape[0] == 32  # the parent's loader still works


def test_bad_settings_are_config_errors(dataset: regioncl.Dataset) -> None:
    with pytest.raises(regioncl.ConfigError, match="batch"):
        regioncl.Loader(dataset, SMALL, 4000)
    with pytest.raises(ValueError, match="colour"):
        regioncl.Loader(dataset, SMALL, 32, dtype="uint8")
    with pytest.raises(ValueError, match="pin_memory"):
        regioncl.Loader(dataset, SMALL, 32, pin_memory=True)
    with pytest.raises(regioncl.ConfigError):
        regioncl.Loader(dataset, regioncl.Recipe((replace(SMALL.views[0], hue=0.7),)), 32)


def test_presets_are_the_rust_loaders() -> None:
    assert regioncl.View(224) == recipes.mocov2(224).views[0]
    byol = recipes.byol(224)
    assert [v.blur_p for v in byol.views] == [1.0, pytest.approx(0.1)]
    dino = recipes.dino(2, 6)
    assert [v.width for v in dino.views] == [224] * 2 + [96] * 6
    assert {v.interpolation for v in dino.views} == {"bicubic"}
    assert recipes.eval_center(256, 224).center_resize == 256
    with pytest.raises(TypeError, match="unknown"):
        regioncl.View(224, flip=0.5)  # type: ignore[call-arg]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_uploads_from_pinned_buffers(dataset: regioncl.Dataset) -> None:
    loader = regioncl.Loader(dataset, SMALL, 32, threads=2, colour="gpu", device="cuda")
    host = regioncl.Loader(dataset, SMALL, 32, threads=2, colour="gpu")
    for a, b, _ in zip(loader, host, range(6)):
        assert a.views[0].is_cuda and a.labels.is_cuda
        assert float((a.views[0].cpu() - b.views[0]).abs().max()) < 1e-4


def test_eval_crop_matches_torchvision(dataset: regioncl.Dataset) -> None:
    """recipes.eval_center(256, 224) against torchvision's Resize(256) + CenterCrop(224) on PIL
    images (the ImageNet evaluation transform): within 1 level per pixel."""
    from PIL import Image
    import torchvision.transforms as T

    tv = T.Compose([T.Resize(256), T.CenterCrop(224), T.PILToTensor()])
    loader = regioncl.Loader(
        dataset, recipes.eval_center(256, 224), 16, shuffle=False, drop_last=False,
        threads=2, colour="none", dtype="uint8",
    )
    batch = next(iter(loader))
    assert batch.indices.tolist() == list(range(16))
    worst = 0
    for i in range(16):
        img = Image.open(io.BytesIO(dataset[i][0])).convert("RGB")
        want = tv(img).to(torch.int16)
        diff = (batch.views[0][i].to(torch.int16) - want).abs()
        worst = max(worst, int(diff.max()))
    assert worst <= 1

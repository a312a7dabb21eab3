"""`regioncl.Loader`: planned, multi-view batches from shards, handed to torch without a copy."""

from __future__ import annotations

import collections
import json
import os
from dataclasses import dataclass
from typing import Any, Iterator, Literal, Sequence

import torch
from torch import Tensor
from torch.utils.dlpack import from_dlpack

from regioncl import _native
from regioncl import torch as rtorch
from regioncl._dataset import Dataset
from regioncl.recipes import Recipe

__all__ = ["Batch", "Loader", "LoaderStats", "RegionSwap", "Substitution", "Swap", "ViewParams"]

Colour = Literal["cpu", "gpu", "none"]


@dataclass(frozen=True)
class ViewParams:
    """The planned parameters of one view, per sample (host tensors, batch first)."""

    crop: Tensor
    """int32 ``[B, 4]``: the crop ``(x, y, width, height)`` in pixels of the stored image."""
    flip: Tensor
    """bool ``[B]``: mirrored left-right (the loader's pixels already are)."""
    jitter: Tensor
    """float32 ``[B, 4]``: brightness, contrast, saturation factors and hue shift; ``(1, 1, 1,
    0)`` (the identity) where the jitter is not applied."""
    jitter_order: Tensor
    """int64 ``[B, 4]``: the order the four jitter ops run in (0 brightness, 1 contrast,
    2 saturation, 3 hue)."""
    grayscale: Tensor
    """bool ``[B]``."""
    blur_sigma: Tensor
    """float32 ``[B]``: the Gaussian blur's sigma in output pixels; 0 where there is no blur."""
    solarize: Tensor
    """bool ``[B]``."""


@dataclass(frozen=True)
class Swap:
    """The RegionCL swap of a batch: one box for the whole batch, and the pairing."""

    grid: tuple[int, int, int, int]
    """``(x, y, width, height)`` of the box on the feature map, in cells."""
    pixels: tuple[int, int, int, int]
    """``(x, y, width, height)`` of the box on the query view (view 0), in pixels."""
    pairing: Tensor
    """int64 ``[B]``: sample ``i``'s box is pasted from sample ``pairing[i]``."""


@dataclass(frozen=True)
class Substitution:
    """A bad record the loader replaced (training; ``strict=True`` raises instead)."""

    sample: int
    failed: int
    replacement: int
    reason: str


@dataclass(frozen=True)
class Batch:
    """One step's views and everything planned for them."""

    views: list[Tensor]
    """One tensor per view of the recipe, ``[B, 3, H, W]`` (see :class:`Loader` for dtype and
    device)."""
    labels: Tensor
    """int64 ``[B]``: class labels (on the loader's device)."""
    indices: Tensor
    """int64 ``[B]``: the records' indices in the dataset."""
    params: list[ViewParams]
    """Per view, the planned crop, flip and colour parameters."""
    swap: Swap | None
    """The RegionCL swap box and pairing, when the loader plans one."""
    epoch: int
    step: int
    substitutions: list[Substitution]


@dataclass(frozen=True)
class RegionSwap:
    """The RegionCL swap box planned per batch (Xu et al. 2022, Section 3.1): a box of
    ``min_cells..max_cells`` feature cells per side on a grid of ``stride`` pixels, the same for
    the whole batch, and a pairing that reverses the batch inside each of ``bn_groups`` groups.
    ``sampler="official"`` reproduces the released code; ``"aligned"`` is grid-aligned."""

    stride: int = 32
    min_cells: int = 3
    max_cells: int = 5
    sampler: Literal["official", "aligned"] = "official"
    bn_groups: int = 1


@dataclass(frozen=True)
class LoaderStats:
    """Throughput and where the time goes. Worker times are summed over threads."""

    samples: int
    batches: int
    threads: int
    elapsed: float
    read: float
    decode: float
    render: float
    wait: float
    """Seconds the consumer waited for data."""
    substitutions: int
    skipped: int

    @property
    def samples_per_sec(self) -> float:
        return self.samples / max(self.elapsed, 1e-9)


def _rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None and world_size is not None:
        return rank, world_size
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        r, w = dist.get_rank(), dist.get_world_size()
    else:
        r, w = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    return (r if rank is None else rank), (w if world_size is None else world_size)


def _dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        value = getattr(torch, dtype)
    except AttributeError:
        value = None
    if not isinstance(value, torch.dtype):
        raise ValueError(f"dtype {dtype!r} is not a torch dtype")
    return value


class Loader:
    """Batches of planned views from a :class:`~regioncl.Dataset`, made by Rust threads.

    Every random choice (order, crops, flips, colour, swap boxes) is drawn ahead from ``seed`` and
    the position in the run, never from a thread's state: the same dataset, recipe and seed give
    the same bytes whatever ``threads``, and :meth:`state_dict` resumes mid-epoch exactly.

    - ``batch_size`` is the **global** batch: rank ``r`` of ``world_size`` gets the ``r``-th
      ``batch_size / world_size`` samples of every global batch, so the global batches do not
      depend on the world size, the rank shares are disjoint, and every rank gets ``len(loader)``
      batches. ``rank`` and ``world_size`` default to torch.distributed's when it is
      initialised, else to the ``RANK`` and ``WORLD_SIZE`` variables, else to one process.
    - ``colour``: ``"cpu"`` (the workers apply the recipe's colour ops and normalise with
      ``mean``/``std``), ``"gpu"`` (geometry on the CPU, then :func:`regioncl.torch.colour` on
      ``device``), or ``"none"`` (geometry only: your own augmentations, see the README).
    - Views are ``[B, 3, H, W]``: ``float32`` (or ``dtype``) normalised with ``"cpu"`` and
      ``"gpu"``; with ``"none"``, ``uint8`` pixels (``dtype="uint8"``, a channels_last view of
      the loader's buffer) or ``[0, 1]`` floats. ``channels_last`` asks for that memory format.
    - ``device``: None keeps the batches on the host, as views of the loader's own buffers (no
      copy). ``"cuda"`` uploads them non-blocking from pinned buffers (``pin_memory`` defaults to
      True there) and keeps each host buffer until its copy is done.
    - ``shuffle=False`` reads in stored order; ``drop_last=False`` keeps each epoch's last partial
      batch (evaluation).
    - ``prefetch`` batches are prepared ahead: the ring of buffers, the only memory that grows
      with it. A view tensor holds its buffer until it dies, so keep fewer than ``prefetch``
      batches alive (the loader raises rather than waits forever).
    - A bad record is replaced by a planned substitute and counted (:attr:`stats`,
      :attr:`Batch.substitutions`); with ``strict=True`` it raises, naming the file and record.
    - ``region_swap``: plan RegionCL's swap box per batch (``True`` for the paper's settings, or
      a :class:`RegionSwap`); it is returned in :attr:`Batch.swap`.

    Iterating runs to the end of the current epoch; the next iteration continues with the next
    epoch. The GIL is released while waiting for a batch. A loader does not survive ``fork()``:
    using it in a forked child raises :class:`~regioncl.ForkError`.
    """

    def __init__(
        self,
        dataset: Dataset | str | os.PathLike[str],
        recipe: Recipe,
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
        threads: int | None = None,
        prefetch: int = 4,
        colour: Colour = "cpu",
        dtype: str | torch.dtype = "float32",
        channels_last: bool = False,
        pin_memory: bool | None = None,
        device: str | torch.device | None = None,
        region_swap: RegionSwap | bool | None = None,
        strict: bool = False,
        mean: Sequence[float] = rtorch.IMAGENET_MEAN,
        std: Sequence[float] = rtorch.IMAGENET_STD,
    ) -> None:
        if colour not in ("cpu", "gpu", "none"):
            raise ValueError(f"colour {colour!r}: expected 'cpu', 'gpu' or 'none'")
        self.dtype = _dtype(dtype)
        if self.dtype == torch.uint8 and colour != "none":
            raise ValueError("dtype uint8 needs colour='none' (colour ops make floats)")
        if not (self.dtype == torch.uint8 or self.dtype.is_floating_point):
            raise ValueError(f"dtype {self.dtype}: expected uint8 or a float type")
        self.device = None if device is None else torch.device(device)
        self.pin_memory = (
            self.device is not None and self.device.type == "cuda"
            if pin_memory is None
            else pin_memory
        )
        if self.pin_memory and (self.device is None or self.device.type != "cuda"):
            raise ValueError(
                "pin_memory needs device='cuda': the loader uploads from pinned buffers itself and "
                "recycles a buffer only once its copy is done"
            )
        if prefetch < 2:
            raise ValueError(f"prefetch {prefetch}: at least 2 (one to fill, one to hold)")
        self.dataset = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
        self.recipe = recipe
        self.colour: Colour = colour
        self.channels_last = channels_last
        self.mean, self.std = tuple(mean), tuple(std)
        self.seed = seed
        self.batch_size = batch_size
        self.rank, self.world_size = _rank_world(rank, world_size)
        self.prefetch = prefetch
        swap = RegionSwap() if region_swap is True else region_swap or None
        self._builder = _native.Builder(
            self.dataset._native,
            recipe.to_json(colour_on_cpu=colour == "cpu"),
            batch_size,
            seed=seed,
            shuffle=shuffle,
            drop_last=drop_last,
            rank=self.rank,
            world=self.world_size,
            threads=threads or 0,
            prefetch=prefetch,
            strict=strict,
            region_swap=None if swap is None else self._swap_json(swap),
            mean=list(self.mean),
            std=list(self.std),
        )
        self._steps = self._builder.steps_per_epoch()
        self._epoch, self._step = 0, 0
        self._pipeline: _native.Pipeline | None = None
        # Host batches whose non-blocking upload may still be running, with the event after it.
        self._in_flight: collections.deque[tuple[torch.cuda.Event, list[Tensor]]] = (
            collections.deque()
        )

    def _swap_json(self, swap: RegionSwap) -> str:
        query = self.recipe.views[0]
        return json.dumps(
            {
                "swap": {
                    "stride": swap.stride,
                    "min_cells": swap.min_cells,
                    "max_cells": swap.max_cells,
                    "sampler": swap.sampler,
                    "view_width": query.width,
                    "view_height": query.height,
                },
                "bn_groups": swap.bn_groups,
            }
        )

    def __len__(self) -> int:
        """Steps per epoch (the same on every rank)."""
        return self._steps

    def __repr__(self) -> str:
        return (
            f"regioncl.Loader({len(self.dataset)} records, {len(self.recipe.views)} views, "
            f"batch {self.batch_size}, rank {self.rank}/{self.world_size}, {self._steps} steps "
            f"per epoch, at epoch {self._epoch} step {self._step})"
        )

    @property
    def epoch(self) -> int:
        """The epoch of the next batch."""
        return self._epoch

    def __iter__(self) -> Iterator[Batch]:
        epoch = self._epoch
        while self._epoch == epoch:
            yield self._next()

    def _running(self) -> _native.Pipeline:
        if self._pipeline is None:
            pinned = None
            if self.pin_memory:
                def pinned(n: int) -> Tensor:
                    return torch.empty(n, dtype=torch.uint8, pin_memory=True)
            self._pipeline = self._builder.start(self._epoch, self._step, pinned)
        return self._pipeline

    def _next(self) -> Batch:
        raw = self._running().next()
        if raw is None:  # the pipeline runs without an end epoch
            raise RuntimeError("regioncl: the loader's pipeline ended")
        (epoch, step, capsules, labels, indices, ints, floats, swap, pairing, subs) = raw
        host = [from_dlpack(c) for c in capsules]
        params = self._params(from_dlpack(ints), from_dlpack(floats))
        labels_t = from_dlpack(labels)
        if self.device is not None:
            labels_t = labels_t.to(self.device, non_blocking=True)
            views = [v.to(self.device, non_blocking=True) for v in host]
            if self.device.type == "cuda":
                event = torch.cuda.Event()  # type: ignore[no-untyped-call]
                event.record()
                self._in_flight.append((event, host))
                self._reap()
        else:
            views = host
        batch = Batch(
            views=[self._finish(v, p) for v, p in zip(views, params)],
            labels=labels_t,
            indices=from_dlpack(indices),
            params=params,
            swap=None if swap is None else Swap(swap[0], swap[1], from_dlpack(pairing)),
            epoch=epoch,
            step=step,
            substitutions=[Substitution(*s) for s in subs],
        )
        self._epoch, self._step = (epoch, step + 1) if step + 1 < self._steps else (epoch + 1, 0)
        return batch

    def _reap(self) -> None:
        """Lets go of host buffers whose upload finished; waits for the oldest when holding more
        would leave the workers no buffer to fill."""
        while self._in_flight and (
            len(self._in_flight) > self.prefetch - 2
            or self._in_flight[0][0].query()  # type: ignore[no-untyped-call]
        ):
            event, _ = self._in_flight.popleft()
            event.synchronize()

    @staticmethod
    def _params(ints: Tensor, floats: Tensor) -> list[ViewParams]:
        # ints [V, B, 11]: x, y, w, h, flip, grayscale, solarize, order x4; floats [V, B, 5]
        return [
            ViewParams(
                crop=ints[v, :, 0:4],
                flip=ints[v, :, 4].bool(),
                jitter=floats[v, :, 0:4],
                jitter_order=ints[v, :, 7:11].long(),
                grayscale=ints[v, :, 5].bool(),
                blur_sigma=floats[v, :, 4],
                solarize=ints[v, :, 6].bool(),
            )
            for v in range(ints.shape[0])
        ]

    def _finish(self, view: Tensor, params: ViewParams) -> Tensor:
        memory = torch.channels_last if self.channels_last else torch.contiguous_format
        if self.colour == "cpu":  # float [B, 3, H, W], normalised by the workers
            out = view if self.dtype == torch.float32 else view.to(self.dtype)
            return out.contiguous(memory_format=memory) if self.channels_last else out
        nchw = view.permute(0, 3, 1, 2)  # uint8 [B, 3, H, W], channels_last strides: no copy
        if self.colour == "gpu":
            return rtorch.colour(
                nchw,
                params,
                mean=self.mean,
                std=self.std,
                dtype=self.dtype,
                channels_last=self.channels_last,
            )
        if self.dtype == torch.uint8:
            return nchw
        return (nchw.to(self.dtype) / 255.0).contiguous(memory_format=memory)

    def state_dict(self) -> dict[str, Any]:
        """The position of the next batch (and the settings it is valid for): loading it into a
        loader of the same dataset, recipe, seed and batch size continues with exactly the batches
        this one would have produced, whatever the thread count or world size."""
        return {
            "epoch": self._epoch,
            "step": self._step,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "records": len(self.dataset),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continues from a :meth:`state_dict`."""
        for key, mine in (
            ("seed", self.seed),
            ("batch_size", self.batch_size),
            ("records", len(self.dataset)),
        ):
            if state[key] != mine:
                raise ValueError(
                    f"load_state_dict: the state is for {key} {state[key]}, this loader has {mine}"
                )
        if not 0 <= state["step"] < self._steps:
            raise ValueError(f"load_state_dict: step {state['step']} of {self._steps}")
        self.close()
        self._epoch, self._step = int(state["epoch"]), int(state["step"])

    @property
    def stats(self) -> LoaderStats:
        """Throughput and per-stage time of the running pipeline (zeros before it starts)."""
        if self._pipeline is None:
            return LoaderStats(0, 0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0)
        return LoaderStats(**self._pipeline.stats())

    def buffers(self) -> list[tuple[int, int]]:
        """``(address, length)`` of the ring's buffers: a batch's host views live there."""
        return self._running().buffers()

    def close(self) -> None:
        """Stops the worker threads (also done when the loader is collected). Iterating again
        starts them again at the current position."""
        for event, _ in self._in_flight:
            event.synchronize()
        self._in_flight.clear()
        if self._pipeline is not None:
            self._pipeline.close()
            self._pipeline = None

    def __del__(self) -> None:
        pipeline = getattr(self, "_pipeline", None)
        if pipeline is not None:
            pipeline.close()

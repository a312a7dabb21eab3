"""``python -m regioncl.bench DATASET --recipe mocov2|geometry|dino``: samples/s of the package, of
the Rust pipeline alone (``regioncl bench loader``) and of a torchvision DataLoader on the same
records and cores, measured in the same run (runs interleaved, medians and ratios reported).

Recipes (the same work for all three):

- ``geometry``: two 224 px views, RandomResizedCrop (0.2, 1) + flip, uint8 out (the colour ops
  then run on the GPU);
- ``mocov2``: MoCo v2's full augmentation on the CPU, two normalised float views;
- ``dino``: DINO's multi-crop geometry, 2 x 224 px (scale 0.4-1) + 6 x 96 px (0.05-0.4) crops +
  flip, uint8 out (bilinear, as ``regioncl bench loader --recipe multi-crop``).

The torchvision baseline decodes with PIL in ``threads`` DataLoader worker processes, as MoCo's
and DINO's training scripts do.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import time
from dataclasses import replace
from typing import Any, Callable

import torch

from regioncl import recipes
from regioncl._dataset import Dataset
from regioncl.loader import Loader
from regioncl.recipes import Recipe

RUST_RECIPE = {"geometry": "geometry", "mocov2": "mocov2", "dino": "multi-crop"}


def recipe(name: str) -> tuple[Recipe, str]:
    """The package's recipe and colour mode for ``name``."""
    geometry: dict[str, Any] = dict(jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, solarize_p=0.0)
    if name == "geometry":
        return Recipe((replace(recipes.mocov2(224).views[0], **geometry),) * 2), "none"
    if name == "mocov2":
        return recipes.mocov2(224), "cpu"
    views = tuple(
        replace(v, interpolation="bilinear", **geometry) for v in recipes.dino(2, 6).views
    )
    return Recipe(views), "none"


def package(ds: Dataset, name: str, threads: int, batch: int, batches: int) -> float:
    r, colour = recipe(name)
    dtype = "uint8" if colour == "none" else "float32"
    loader = Loader(ds, r, batch, threads=threads, colour=colour, dtype=dtype)  # type: ignore[arg-type]
    it = (b for _ in range(1 << 30) for b in loader)
    for _ in range(min(len(loader), batches)):  # warm-up: page cache, threads, allocator
        next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    rate = batches * batch / (time.perf_counter() - t0)
    loader.close()
    return rate


def rust(exe: str, path: str, name: str, threads: int, batch: int, batches: int) -> float:
    out = subprocess.run(
        [exe, "bench", "loader", path, "--recipe", RUST_RECIPE[name], "--threads", str(threads),
         "--batch", str(batch), "--batches", str(batches), "--runs", "1", "--json"],
        check=True, capture_output=True, text=True,
    ).stdout
    return float(json.loads(out)["samples_per_sec"])


class _TorchvisionViews(torch.utils.data.Dataset[Any]):
    def __init__(self, ds: Dataset, transforms: list[Callable[[Any], torch.Tensor]]) -> None:
        self.ds, self.transforms = ds, transforms

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> list[torch.Tensor]:
        from PIL import Image

        data, _ = self.ds[i]
        img = Image.open(io.BytesIO(data)).convert("RGB")
        return [t(img) for t in self.transforms]


def _blur(img: Any) -> Any:
    from PIL import ImageFilter

    return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(0.1, 2.0)))


def torchvision_transforms(name: str) -> list[Callable[[Any], torch.Tensor]]:
    import torchvision.transforms as T  # type: ignore[import-untyped]

    if name == "mocov2":  # moco/main_moco.py --aug-plus
        t = T.Compose([
            T.RandomResizedCrop(224, scale=(0.2, 1.0)),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.RandomApply([_blur], p=0.5),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        ])
        return [t, t]
    r, _ = recipe(name)
    return [
        T.Compose([
            T.RandomResizedCrop((v.height, v.width), scale=v.scale, ratio=v.ratio),
            T.RandomHorizontalFlip(),
            T.PILToTensor(),
        ])
        for v in r.views
    ]


def torchvision(ds: Dataset, name: str, threads: int, batch: int, batches: int) -> float:
    loader = torch.utils.data.DataLoader(
        _TorchvisionViews(ds, torchvision_transforms(name)), batch_size=batch, shuffle=True,
        num_workers=threads, drop_last=True, persistent_workers=True, prefetch_factor=4,
    )
    seen, n, t0 = 0, 0, 0.0
    warmup = 3
    while n < warmup + batches:
        for views in loader:
            n += 1
            if n == warmup:
                t0 = time.perf_counter()
            elif n > warmup:
                seen += views[0].shape[0]
            if n >= warmup + batches:
                break
    return seen / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m regioncl.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset")
    ap.add_argument("--recipe", choices=sorted(RUST_RECIPE), default="mocov2")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=20, help="timed batches per run")
    ap.add_argument("--runs", type=int, default=3)
    built = os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "regioncl")
    ap.add_argument("--regioncl", default=shutil.which("regioncl") or built,
                    help="the regioncl binary (for its `bench loader`)")
    ap.add_argument("--no-torchvision", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    ds = Dataset(args.dataset)
    rows: dict[str, list[float]] = {"package": [], "rust": [], "torchvision": []}
    for _ in range(args.runs):
        rows["package"].append(package(ds, args.recipe, args.threads, args.batch, args.batches))
        rows["rust"].append(rust(args.regioncl, args.dataset, args.recipe, args.threads, args.batch, args.batches))
        if not args.no_torchvision:
            rows["torchvision"].append(torchvision(ds, args.recipe, args.threads, args.batch, args.batches))
    med = {k: statistics.median(v) for k, v in rows.items() if v}
    print(f"dataset      {args.dataset} ({len(ds)} records), recipe {args.recipe}, "
          f"{args.threads} threads, batch {args.batch}, {args.runs} interleaved runs (medians)")

    def show(name: str, note: str) -> None:
        print(f"{name:<12} {med[name]:8.0f} samples/s  {note} runs {[round(x) for x in rows[name]]}")

    def ratio(base: str) -> float:  # the median of the per-run ratios: same run, same machine state
        return statistics.median(p / b for p, b in zip(rows["package"], rows[base]))

    show("package", "")
    show("rust", "(regioncl bench loader, same threads)")
    print(f"ratio        {ratio('rust'):8.3f} x the Rust pipeline")
    if rows["torchvision"]:
        show("torchvision", f"(DataLoader, {args.threads} workers, PIL)")
        print(f"ratio        {ratio('torchvision'):8.2f} x torchvision")

if __name__ == "__main__":
    main()

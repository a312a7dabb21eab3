"""The PyTorch baseline of `regioncl bench loader`: the same job with a torch DataLoader and
torchvision transforms (PIL), on the same JPEG bytes (read from the regioncl shards) and cores.

Recipes (two views per sample, as MoCo v2's TwoCropsTransform, but for eval):
  geometry  RandomResizedCrop(size, scale=(0.2, 1)) + RandomHorizontalFlip, uint8 tensor out
  mocov2    MoCo v2's full augmentation (moco/main_moco.py, aug_plus): RandomResizedCrop,
            ColorJitter(0.4,0.4,0.4,0.1) p=0.8, RandomGrayscale 0.2, GaussianBlur (PIL) p=0.5
            sigma in [0.1, 2], RandomHorizontalFlip, ToTensor, Normalize
  eval      one view: Resize(round(size * 256 / 224)) + CenterCrop(size), uint8 tensor out

Prints one JSON line: samples/s over the timed batches (after a warm-up).
"""
import argparse
import io
import json
import os
import random
import sys
import time

import torch
import torchvision.transforms as T
from PIL import Image, ImageFilter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from regioncl_shards import Dataset  # noqa: E402


class GaussianBlur:
    """MoCo v2's blur: PIL's GaussianBlur with radius = sigma ~ U(0.1, 2.0)."""

    def __call__(self, x):
        return x.filter(ImageFilter.GaussianBlur(radius=random.uniform(0.1, 2.0)))


def transform(recipe, size):
    if recipe == "eval":
        return T.Compose([T.Resize(round(size * 256 / 224)), T.CenterCrop(size), T.PILToTensor()])
    if recipe == "geometry":
        return T.Compose([T.RandomResizedCrop(size, scale=(0.2, 1.0)), T.RandomHorizontalFlip(), T.PILToTensor()])
    normalize = T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.2, 1.0)),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
        T.RandomApply([GaussianBlur()], p=0.5),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        normalize,
    ])


class Views(torch.utils.data.Dataset):
    def __init__(self, root, recipe, size):
        self.ds = Dataset(root)
        self.t = transform(recipe, size)
        self.views = 1 if recipe == "eval" else 2

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        data, label = self.ds.record(i)
        img = Image.open(io.BytesIO(data)).convert("RGB")
        return [self.t(img) for _ in range(self.views)], label


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset")
    ap.add_argument("--recipe", choices=["geometry", "mocov2", "eval"], default="geometry")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    ds = Views(args.dataset, args.recipe, args.size)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=args.batch, shuffle=True, num_workers=args.workers, drop_last=True,
        persistent_workers=True, prefetch_factor=4,
    )
    seen, t0, n = 0, None, 0
    while n < args.warmup + args.batches:
        for views, _ in loader:
            n += 1
            if n == args.warmup:
                t0 = time.perf_counter()
            elif n > args.warmup:
                seen += views[0].shape[0]
            if n >= args.warmup + args.batches:
                break
    dt = time.perf_counter() - t0
    print(json.dumps({"samples": seen, "seconds": dt, "samples_per_sec": seen / dt,
                      "workers": args.workers, "recipe": args.recipe, "batch": args.batch}))


if __name__ == "__main__":
    main()

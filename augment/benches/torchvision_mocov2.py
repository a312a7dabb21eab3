#!/usr/bin/env python3
"""The MoCo v2 augmentation as the reference code runs it (torchvision transforms on PIL images,
moco/main_moco.py), for the baseline row of examples/decode_bench.rs.

Usage: torchvision_mocov2.py FILE_LIST RUNS

FILE_LIST holds one JPEG path per line. The files are read into memory; each pass decodes every file
with PIL (ImageFolder's loader: open + convert("RGB")) and makes two augmented views (TwoCropsTransform),
on one thread. Prints the median images/s over RUNS passes, after one warm-up pass.
"""

import io
import random
import sys
import time

import torch
from PIL import Image, ImageFilter
from torchvision import transforms


class GaussianBlur:
    """moco.loader.GaussianBlur: PIL's blur with radius = sigma ~ U(0.1, 2.0)."""

    def __init__(self, sigma=(0.1, 2.0)):
        self.sigma = sigma

    def __call__(self, x):
        return x.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))


AUGMENTATION = transforms.Compose([
    transforms.RandomResizedCrop(224, scale=(0.2, 1.0)),
    transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
    transforms.RandomGrayscale(p=0.2),
    transforms.RandomApply([GaussianBlur([0.1, 2.0])], p=0.5),
    transforms.RandomHorizontalFlip(),
    transforms.ToTensor(),
    transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
])


def main():
    torch.set_num_threads(1)
    random.seed(0)
    torch.manual_seed(0)
    with open(sys.argv[1]) as f:
        paths = [line for line in f.read().splitlines() if line]
    runs = int(sys.argv[2])
    files = []
    for p in paths:
        with open(p, "rb") as f:
            files.append(f.read())

    def one_pass():
        start = time.perf_counter()
        for data in files:
            img = Image.open(io.BytesIO(data)).convert("RGB")
            AUGMENTATION(img)
            AUGMENTATION(img)
        return len(files) / (time.perf_counter() - start)

    one_pass()
    rates = sorted(one_pass() for _ in range(runs))
    print(rates[len(rates) // 2])


if __name__ == "__main__":
    main()

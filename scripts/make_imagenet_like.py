"""Cuts real photos into an ImageNet-like ImageFolder tree (deterministic).

Each output file is a random window of one source photo, downscaled so that its longer side is about
300-500 px (ImageNet's typical 500x375 and smaller), saved as baseline JPEG q90 with 4:2:0 chroma.
Classes are groups of source photos, so a class is a "scene"; there are ten.

usage: make_imagenet_like.py PHOTOS_DIR OUT_DIR [--per-class N] [--classes C] [--seed S]
"""
import argparse
import os
import random

from PIL import Image


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("photos")
    ap.add_argument("out")
    ap.add_argument("--per-class", type=int, default=200)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    photos = sorted(f for f in os.listdir(args.photos) if f.lower().endswith((".jpg", ".jpeg")))
    rng = random.Random(args.seed)
    groups = [photos[c :: args.classes] for c in range(args.classes)]
    for c, group in enumerate(groups):
        cdir = os.path.join(args.out, f"n{c:08d}")
        os.makedirs(cdir, exist_ok=True)
        sources = [Image.open(os.path.join(args.photos, p)).convert("RGB") for p in group]
        for i in range(args.per_class):
            src = sources[i % len(sources)]
            w, h = src.size
            aspect = rng.choice([4 / 3, 3 / 4, 1.0, 3 / 2, 2 / 3, 4 / 3, 4 / 3])
            frac = rng.uniform(0.15, 0.9)
            cw = int(min(w, (frac * w * h * aspect) ** 0.5))
            ch = int(min(h, cw / aspect))
            x = rng.randint(0, w - cw)
            y = rng.randint(0, h - ch)
            crop = src.crop((x, y, x + cw, y + ch))
            long_side = rng.randint(300, 500)
            scale = long_side / max(cw, ch)
            size = (max(1, round(cw * scale)), max(1, round(ch * scale)))
            crop = crop.resize(size, Image.BILINEAR, reducing_gap=2.0)
            crop.save(os.path.join(cdir, f"img_{i:05d}.jpg"), quality=90, subsampling=2)


if __name__ == "__main__":
    main()

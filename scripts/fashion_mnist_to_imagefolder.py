#!/usr/bin/env python3
"""Writes Fashion-MNIST (the IDX files of Debian's dataset-fashion-mnist) as an ImageFolder tree.

    OUT/train/<class>/<index>.png   60,000 images
    OUT/test/<class>/<index>.png    10,000 images
    OUT/train-<N>.tsv               with --subset N: a balanced subset of train/ as a list file

Classes are the ten Fashion-MNIST names in label order, prefixed with the label so that a sorted
directory listing (what `regioncl convert` does) gives label i to class i: `0-t-shirt`, ...,
`9-ankle-boot`. Images are 28x28 8-bit grayscale PNGs; `<index>` is the sample's position in its
IDX file (zero-padded). The output is deterministic: the same IDX files give byte-identical PNGs.

--per-class N writes only the first N images of every class of each split (small test sets).
--subset N lists the first N/10 images of every class in IDX order (`relative/path<TAB>label`
lines, the input of `regioncl convert --list`): `make demo` pretrains on such a subset to fit the
CPU budget. An existing, complete OUT (marker file) is reused.
"""

import argparse
import gzip
import os
import shutil
import struct
import sys

import numpy as np
from PIL import Image

CLASSES = [
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
]
MARKER = ".complete"


def read_idx(path):
    """Reads an IDX file (gzip): returns a uint8 array of its shape."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 4:
        raise ValueError(f"{path}: truncated header")
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {data[:4].hex()})")
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path}: {body.size} bytes for shape {dims}")
    return body.reshape(dims)


def class_dir(label):
    return f"{label}-{CLASSES[label]}"


def file_name(i, n):
    return f"{i:0{len(str(n))}d}.png"


def write_split(images, labels, out, per_class):
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    for label in range(len(CLASSES)):
        os.makedirs(os.path.join(out, class_dir(label)), exist_ok=True)
    counts = [0] * len(CLASSES)
    for i, (img, label) in enumerate(zip(images, labels)):
        label = int(label)
        if per_class is not None and counts[label] >= per_class:
            continue
        counts[label] += 1
        # PNG without time stamps or other metadata: byte-identical across runs.
        path = os.path.join(out, class_dir(label), file_name(i, len(images)))
        Image.fromarray(img, mode="L").save(path, optimize=False)
    return sum(counts)


def write_subset(labels, n, path):
    """A balanced list of the first n/10 train images of every class (IDX order)."""
    per_class = n // len(CLASSES)
    counts = [0] * len(CLASSES)
    lines = []
    for i, label in enumerate(labels):
        label = int(label)
        if counts[label] < per_class:
            counts[label] += 1
            lines.append(f"{class_dir(label)}/{file_name(i, len(labels))}\t{label}\n")
    if min(counts) < per_class:
        raise ValueError(f"class with only {min(counts)} images for a subset of {n}")
    with open(path, "w") as f:
        f.writelines(lines)
    return len(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("idx_dir", help="directory of the four *-ubyte.gz files")
    p.add_argument("out", help="output root (train/ and test/ are created)")
    p.add_argument("--subset", type=int, action="append", default=[], metavar="N",
                   help="also write OUT/train-N.tsv, a balanced list of N train images (repeatable)")
    p.add_argument("--per-class", type=int, default=None, metavar="N",
                   help="write only the first N images of every class of each split")
    args = p.parse_args()
    for n in args.subset:
        if not len(CLASSES) <= n <= 60000:
            p.error(f"--subset {n}: must be in {len(CLASSES)}..=60000")
        if args.per_class is not None and n // len(CLASSES) > args.per_class:
            p.error(f"--subset {n} lists more images per class than --per-class writes")
    marker = os.path.join(args.out, MARKER)
    stamp = f"fashion-mnist imagefolder v1 per-class={args.per_class}\n"
    if not os.path.exists(marker) or open(marker).read() != stamp:
        write_all(args.idx_dir, args.out, args.per_class)
        with open(marker, "w") as f:
            f.write(stamp)
    else:
        print(f"fashion-mnist: {args.out} exists, kept", file=sys.stderr)
    for n in args.subset:
        labels = read_idx(os.path.join(args.idx_dir, "train-labels-idx1-ubyte.gz"))
        path = os.path.join(args.out, f"train-{n}.tsv")
        k = write_subset(labels, n, path)
        print(f"fashion-mnist: {k} train images listed in {path}", file=sys.stderr)


def write_all(idx_dir, out, per_class):
    for split, stem in {"train": "train", "test": "t10k"}.items():
        images = read_idx(os.path.join(idx_dir, f"{stem}-images-idx3-ubyte.gz"))
        labels = read_idx(os.path.join(idx_dir, f"{stem}-labels-idx1-ubyte.gz"))
        if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.ndim != 1:
            raise ValueError(f"{stem}: unexpected shapes {images.shape}, {labels.shape}")
        if labels.max() >= len(CLASSES):
            raise ValueError(f"{stem}: label {labels.max()} out of range")
        dest = os.path.join(out, split)
        if os.path.isdir(dest):
            shutil.rmtree(dest)  # a partial earlier run: start this split afresh
        n = write_split(images, labels, dest, per_class)
        print(f"fashion-mnist: {split}: {n} PNGs in {dest}", file=sys.stderr)


if __name__ == "__main__":
    main()

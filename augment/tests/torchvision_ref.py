#!/usr/bin/env python3
"""torchvision 0.26 reference outputs for regioncl-augment's integration tests (tests/main.rs).

Usage: torchvision_ref.py DIR

Reads DIR/cases.json, a list of cases, and writes DIR/out_<id>.bin (raw, native little-endian) for
each. Images are raw files: u8 [H, W, 3] on input.

  {"id": 0, "kind": "resize", "src": "a.rgb", "w": W, "h": H,
   "crop": [top, left, height, width], "out": [out_h, out_w], "flip": bool, "pil": bool,
   "filter": "bilinear" | "bicubic"}
      -> u8 [out_h, out_w, 3]: F.resized_crop(..., filter, antialias=True), then hflip, on a uint8
         tensor (float32 inside, one rounding; bilinear only) or, with "pil", on a PIL image (PIL's
         fixed point: BILINEAR, or BICUBIC as DINO's RandomResizedCrop uses it)
  {"id": 1, "kind": "color", "src": "v.rgb", "w": W, "h": H, "ops": [["brightness", 1.2], ...]}
      -> f32 [3, H, W]: x = u8 / 255, then each op with torchvision's tensor functional op:
         brightness f | contrast f | saturation f | hue s | grayscale | blur sigma
         (kernel 2 * ceil(3 sigma) + 1) | solarize t | normalize (ImageNet mean/std)
  {"id": 2, "kind": "decode_pil", "path": "/x.jpg"}
      -> u8 [H, W, 3]: PIL's decode converted to RGB, preceded by two u32 (width, height)
  {"id": 3, "kind": "center", "path": "/x.jpg", "resize": 256, "crop": 224}
      -> u8 [crop, crop, 3]: the ImageNet evaluation transform, Resize(resize) + CenterCrop(crop),
         on PIL's decode converted to RGB
"""

import json
import math
import os
import sys

import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def load_u8(directory, case):
    raw = np.fromfile(os.path.join(directory, case["src"]), dtype=np.uint8)
    return torch.from_numpy(raw.reshape(case["h"], case["w"], 3)).permute(2, 0, 1).contiguous()


def resize(directory, case):
    img = load_u8(directory, case)
    top, left, height, width = case["crop"]
    if case.get("pil"):
        # The MoCo reference pipeline: torchvision's transforms on a PIL image.
        pil = Image.fromarray(img.permute(1, 2, 0).numpy())
        mode = {"bilinear": InterpolationMode.BILINEAR,
                "bicubic": InterpolationMode.BICUBIC}[case["filter"]]
        out = F.resized_crop(pil, top, left, height, width, case["out"], interpolation=mode)
        if case["flip"]:
            out = F.hflip(out)
        return np.asarray(out).tobytes()
    # uint8 tensor: torchvision resizes in float32 and rounds once at the end.
    out = F.resized_crop(img, top, left, height, width, case["out"],
                         interpolation=InterpolationMode.BILINEAR, antialias=True)
    if case["flip"]:
        out = F.hflip(out)
    return out.permute(1, 2, 0).contiguous().numpy().tobytes()


def color(directory, case):
    img = load_u8(directory, case).to(torch.float32).div(255)
    for op in case["ops"]:
        name, args = op[0], op[1:]
        if name == "brightness":
            img = F.adjust_brightness(img, args[0])
        elif name == "contrast":
            img = F.adjust_contrast(img, args[0])
        elif name == "saturation":
            img = F.adjust_saturation(img, args[0])
        elif name == "hue":
            img = F.adjust_hue(img, args[0])
        elif name == "grayscale":
            img = F.rgb_to_grayscale(img, num_output_channels=3)
        elif name == "blur":
            k = 2 * math.ceil(3 * args[0]) + 1
            img = F.gaussian_blur(img, [k, k], [args[0], args[0]])
        elif name == "solarize":
            img = F.solarize(img, args[0])
        elif name == "normalize":
            img = F.normalize(img, MEAN, STD)
        else:
            raise ValueError(f"unknown op {name}")
    return img.contiguous().numpy().astype("<f4").tobytes()


def decode_pil(_directory, case):
    with Image.open(case["path"]) as im:
        rgb = np.asarray(im.convert("RGB"))
    h, w, _ = rgb.shape
    return np.array([w, h], dtype="<u4").tobytes() + rgb.tobytes()


def center(_directory, case):
    t = torchvision.transforms.Compose(
        [torchvision.transforms.Resize(case["resize"]), torchvision.transforms.CenterCrop(case["crop"])]
    )
    with Image.open(case["path"]) as im:
        return np.asarray(t(im.convert("RGB"))).tobytes()


def main():
    if not torchvision.__version__.startswith("0.26"):
        sys.exit(f"torchvision_ref.py: torchvision 0.26 expected, found {torchvision.__version__}")
    torch.set_num_threads(1)
    directory = sys.argv[1]
    with open(os.path.join(directory, "cases.json")) as f:
        cases = json.load(f)
    kinds = {"resize": resize, "color": color, "decode_pil": decode_pil, "center": center}
    for case in cases:
        data = kinds[case["kind"]](directory, case)
        with open(os.path.join(directory, f"out_{case['id']}.bin"), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Loads a `regioncl export --to timm` file into timm's own model and compares features.

    timm_check.py --model swin_tiny_patch4_window7_224 --weights OUT.pth \
        --input x.npy --features f.npy [--kwargs '{"img_size": 64, ...}']

Builds `timm.create_model(MODEL, pretrained=False, **kwargs)` (its classifier head included), loads
the exported state dict with `strict=False`, and runs the images `x` (normalised, [B, 3, H, W])
through it in eval mode: `forward_head(forward_features(x), pre_logits=True)`, the pooled final
stage for Swin and the class token for ViT. Prints one JSON line: the missing and unexpected keys,
the number of tensors, and the largest difference from our features `f` ([B, D]).
"""

import argparse
import json

import numpy as np
import timm
import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--features", required=True)
    ap.add_argument("--kwargs", default="{}")
    args = ap.parse_args()

    torch.set_num_threads(1)
    sd = torch.load(args.weights, map_location="cpu", weights_only=True)
    model = timm.create_model(args.model, pretrained=False, **json.loads(args.kwargs))
    result = model.load_state_dict(sd, strict=False)
    model.eval()
    x = torch.from_numpy(np.load(args.input))
    ours = torch.from_numpy(np.load(args.features))
    with torch.no_grad():
        theirs = model.forward_head(model.forward_features(x), pre_logits=True)
    print(
        json.dumps(
            {
                "type": type(sd).__name__,
                "num_tensors": len(sd),
                "missing": sorted(result.missing_keys),
                "unexpected": sorted(result.unexpected_keys),
                "features_shape": list(theirs.shape),
                "max_abs_diff": float((theirs - ours).abs().max()),
                "max_abs_feature": float(theirs.abs().max()),
            }
        )
    )


if __name__ == "__main__":
    main()

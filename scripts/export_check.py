#!/usr/bin/env python3
"""Checks the files of `regioncl export` with the real consumers' code; prints one JSON object.

    export_check.py --arch resnet50 --torchvision B.pth [--input X.npy --features F.npy]
                    [--detectron2 B.pkl] [--checkpoint MODEL.safetensors --prefix encoder_q.0.]
                    [--oracle-torchvision O.pth] [--oracle-detectron2 O.pkl]

torchvision: loads B.pth into `torchvision.models.<arch>()` with `strict=False` and reports the
missing and unexpected keys; with --input / --features (an input batch and the pooled backbone
features our model computed for it, as .npy), runs torchvision's network in eval mode with
`fc = Identity` on the same input and reports the largest absolute difference.

detectron2: unpickles B.pkl, checks the container ({"model", "__author__", "matching_heuristics"})
and compares every array with the torchvision state dict renamed by MoCo's own rule
(moco/detection/convert-pretrain-to-detectron2.py), reporting keys that differ in name, shape or
value.
"""

import argparse
import json
import os
import pickle
import sys

import numpy as np
import torch
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_pickle import read_safetensors  # noqa: E402


def moco_d2_name(k):
    """MoCo's convert-pretrain-to-detectron2.py, verbatim in effect."""
    if "layer" not in k:
        k = "stem." + k
    for t in [1, 2, 3, 4]:
        k = k.replace("layer{}".format(t), "res{}".format(t + 1))
    for t in [1, 2, 3]:
        k = k.replace("bn{}".format(t), "conv{}.norm".format(t))
    k = k.replace("downsample.0", "shortcut")
    k = k.replace("downsample.1", "shortcut.norm")
    return k


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--arch", choices=["resnet18", "resnet50"], required=True)
    p.add_argument("--torchvision", required=True)
    p.add_argument("--input")
    p.add_argument("--features")
    p.add_argument("--detectron2")
    p.add_argument("--checkpoint")
    p.add_argument("--prefix", default="encoder_q.0.")
    p.add_argument("--oracle-torchvision")
    p.add_argument("--oracle-detectron2")
    args = p.parse_args()
    out = {}

    state = torch.load(args.torchvision, map_location="cpu", weights_only=True)
    out["type"] = type(state).__name__
    out["num_tensors"] = len(state)
    out["has_running_stats"] = any(k.endswith("running_var") for k in state)
    model = getattr(torchvision.models, args.arch)()
    result = model.load_state_dict(state, strict=False)
    out["missing"] = sorted(result.missing_keys)
    out["unexpected"] = sorted(result.unexpected_keys)
    # torch.save(model.state_dict()) order, fc left out.
    reference = getattr(torchvision.models, args.arch)().state_dict()
    want_order = [k for k in reference if not k.startswith("fc.")]
    out["torchvision_order"] = list(state) == want_order

    if args.input and args.features:
        x = torch.from_numpy(np.load(args.input))
        ours = torch.from_numpy(np.load(args.features))
        model.fc = torch.nn.Identity()
        model.eval()
        with torch.no_grad():
            theirs = model(x)
        out["features_shape"] = list(theirs.shape)
        out["max_abs_diff"] = float((theirs - ours).abs().max())
        out["max_abs_feature"] = float(ours.abs().max())

    if args.detectron2:
        with open(args.detectron2, "rb") as f:
            obj = pickle.load(f)
        out["d2_container"] = sorted(obj.keys())
        out["d2_matching_heuristics"] = obj.get("matching_heuristics")
        d2 = obj["model"]
        out["d2_num_keys"] = len(d2)
        out["d2_all_numpy"] = all(isinstance(v, np.ndarray) for v in d2.values())
        want = {moco_d2_name(k): v.numpy() for k, v in state.items()}
        out["d2_missing"] = sorted(set(want) - set(d2))
        out["d2_extra"] = sorted(set(d2) - set(want))
        out["d2_mismatched"] = sorted(
            k for k in set(want) & set(d2)
            if want[k].shape != d2[k].shape or not np.array_equal(want[k], d2[k])
        )
        out["d2_sample"] = {
            k: list(d2[k].shape)
            for k in ["stem.conv1.weight", "stem.conv1.norm.running_mean", "res2.0.conv1.weight",
                      "res2.0.shortcut.weight", "res2.0.shortcut.norm.weight", "res5.2.conv3.norm.bias"]
            if k in d2
        }
    if args.checkpoint:
        stored = {
            k[len(args.prefix):]: torch.from_numpy(v)
            for k, v in read_safetensors(args.checkpoint).items()
            if k.startswith(args.prefix)
        }
        out["ckpt_missing"] = sorted(set(stored) - set(state))
        out["ckpt_extra"] = sorted(set(state) - set(stored))
        out["ckpt_mismatched"] = sorted(
            k for k in set(stored) & set(state)
            if stored[k].dtype != state[k].dtype or not torch.equal(stored[k], state[k])
        )

    if args.oracle_torchvision:
        oracle = torch.load(args.oracle_torchvision, map_location="cpu", weights_only=True)
        mapped = torch.load(args.torchvision, mmap=True, weights_only=True)
        out["oracle_keys_equal"] = set(oracle) == set(state) == set(mapped)
        out["oracle_mismatched"] = sorted(
            k for k in oracle
            if any(k not in s or s[k].dtype != oracle[k].dtype or s[k].shape != oracle[k].shape
                   or not torch.equal(s[k], oracle[k]) for s in (state, mapped))
        )

    if args.oracle_detectron2:
        with open(args.oracle_detectron2, "rb") as f:
            oracle = pickle.load(f)
        with open(args.detectron2, "rb") as f:
            ours = pickle.load(f, encoding="latin1")  # as detectron2's checkpointer reads it
        out["d2_oracle_container"] = {k: v for k, v in oracle.items() if k != "model"} == {
            k: v for k, v in ours.items() if k != "model"
        }
        out["d2_oracle_mismatched"] = sorted(
            k for k in set(oracle["model"]) | set(ours["model"])
            if k not in oracle["model"] or k not in ours["model"]
            or oracle["model"][k].dtype != ours["model"][k].dtype
            or not np.array_equal(oracle["model"][k], ours["model"][k])
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()

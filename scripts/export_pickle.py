#!/usr/bin/env python3
"""The tests' oracle for `regioncl export`: what torch.save and pickle.dump write for the tensors of
a safetensors file (`regioncl export --out FILE.safetensors`). regioncl writes its .pth and .pkl
files itself; tests/tests/export.rs compares them with these.

    export_pickle.py --format torchvision IN.safetensors OUT.pth
        torch.save(state_dict) of torch tensors: what
        torchvision.models.resnet50().load_state_dict(torch.load(OUT), strict=False) takes.
    export_pickle.py --format detectron2 IN.safetensors OUT.pkl
        pickle.dump({"model": {name: numpy array}, "__author__": ..., "matching_heuristics": True})
        as MoCo's convert-pretrain-to-detectron2.py writes it (docs/method.md 9.4).

The names are already final (regioncl renames them); this script only changes the container. It
reads safetensors itself (an 8-byte little-endian header length, a JSON header, raw little-endian
data), so it needs numpy, and torch only for the torchvision format.
"""

import argparse
import json
import os
import pickle
import struct
import sys

import numpy as np

DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def read_safetensors(path):
    """Returns {name: numpy array} in the file's data order."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: truncated")
    (n,) = struct.unpack("<Q", data[:8])
    if 8 + n > len(data):
        raise ValueError(f"{path}: header of {n} bytes past the end")
    header = json.loads(data[8 : 8 + n])
    header.pop("__metadata__", None)
    body = memoryview(data)[8 + n :]
    out = {}
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        dtype = DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"{path}: {name}: unsupported dtype {info['dtype']}")
        start, end = info["data_offsets"]
        if not 0 <= start <= end <= len(body):
            raise ValueError(f"{path}: {name}: offsets {start}..{end} outside the data")
        arr = np.frombuffer(body[start:end], dtype=np.dtype(dtype).newbyteorder("<"))
        out[name] = arr.reshape(info["shape"]).astype(dtype, copy=True)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--format", choices=["torchvision", "detectron2"], required=True)
    p.add_argument("--author", default="regioncl")
    p.add_argument("input")
    p.add_argument("output")
    args = p.parse_args()
    arrays = read_safetensors(args.input)
    tmp = f"{args.output}.tmp-{os.getpid()}"
    if args.format == "torchvision":
        import torch

        state = {k: torch.from_numpy(v) for k, v in arrays.items()}
        torch.save(state, tmp)
    else:
        obj = {"model": arrays, "__author__": args.author, "matching_heuristics": True}
        with open(tmp, "wb") as f:
            pickle.dump(obj, f)
    os.replace(tmp, args.output)
    print(f"export: {len(arrays)} tensors -> {args.output} ({args.format})", file=sys.stderr)


if __name__ == "__main__":
    main()

"""Reads a regioncl dataset (manifest.json + shard files, format v1) from Python.

The layout is documented in loader/src/shard/format.rs: a 64-byte header, the record bytes, then one
32-byte little-endian index entry per record (offset u64, length u32, label u32, width u32,
height u32, crc32c u32, reserved u32). Used by the PyTorch baselines so that they read exactly the
same JPEG bytes as the Rust loader.
"""
import json
import mmap
import os
import struct

HEADER = struct.Struct("<8sIIQQII20sI")
ENTRY = struct.Struct("<QIIIIII")


class Dataset:
    """Random access to (jpeg_bytes, label) by global index."""

    def __init__(self, root):
        with open(os.path.join(root, "manifest.json")) as f:
            self.manifest = json.load(f)
        self.root = root
        self.entries = []  # (shard number, offset, length, label, width, height)
        self._maps = None
        for s, info in enumerate(self.manifest["shards"]):
            with open(os.path.join(root, info["file"]), "rb") as f:
                head = HEADER.unpack(f.read(HEADER.size))
                magic, version, _, n, index_offset = head[:5]
                if magic != b"RCLSHARD" or version != 1:
                    raise ValueError(f"{info['file']}: not a version-1 regioncl shard")
                f.seek(index_offset)
                raw = f.read(n * ENTRY.size)
            for i in range(n):
                off, length, label, w, h, _crc, _ = ENTRY.unpack_from(raw, i * ENTRY.size)
                self.entries.append((s, off, length, label, w, h))

    def __len__(self):
        return len(self.entries)

    def _map(self, s):
        # Mapped lazily, so that each DataLoader worker process maps the files itself.
        if self._maps is None:
            self._maps = {}
        if s not in self._maps:
            path = os.path.join(self.root, self.manifest["shards"][s]["file"])
            with open(path, "rb") as f:
                self._maps[s] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return self._maps[s]

    def record(self, i):
        s, off, length, label, _w, _h = self.entries[i]
        return self._map(s)[off : off + length], label

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_maps"] = None
        return state

"""MoCo v2 (Chen et al. 2020, arXiv:2003.04297) in plain PyTorch, fed by regioncl.

The model follows facebookresearch/moco (builder.py): a query encoder and a momentum key encoder
(ResNet with a 2-layer MLP head), a queue of K negative keys, InfoNCE at temperature T. The loader
plans MoCo v2's two views per image (recipes.mocov2); their colour ops run on the GPU with
``--colour gpu`` (the default on CUDA) or in the loader's CPU threads. Checkpoints carry the
loader's state_dict, so ``--resume`` continues with exactly the batches of an uninterrupted run.

    python examples/python/moco_v2.py SHARDS --epochs 200 --batch 256          # one GPU
    python examples/python/moco_v2.py SHARDS --arch resnet18 --size 64 --batch 32 \\
        --queue 1024 --steps 5 --device cpu                                     # a smoke run

Multi-GPU (torchrun): the loader takes its rank from torch.distributed, ``--batch`` is the global
batch; wrap ``model`` in DistributedDataParallel and gather keys before the queue update, as
moco/builder.py does (left out here to keep the file short).
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import time

import torch
import torch.nn.functional as F
import torchvision

import regioncl
from regioncl import recipes


class MoCo(torch.nn.Module):
    """MoCo v2: encoders f_q and f_k (momentum m), a queue of K keys, temperature T."""

    def __init__(self, arch: str, dim: int = 128, K: int = 65536, m: float = 0.999, T: float = 0.2):
        super().__init__()
        self.K, self.m, self.T = K, m, T
        self.encoder_q = torchvision.models.__dict__[arch](num_classes=dim)
        hidden = self.encoder_q.fc.weight.shape[1]
        self.encoder_q.fc = torch.nn.Sequential(
            torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), self.encoder_q.fc
        )
        self.encoder_k = copy.deepcopy(self.encoder_q)
        for p in self.encoder_k.parameters():
            p.requires_grad = False
        self.register_buffer("queue", F.normalize(torch.randn(dim, K), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @torch.no_grad()
    def _momentum_update(self) -> None:
        for q, k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            k.mul_(self.m).add_(q.detach(), alpha=1.0 - self.m)

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor) -> None:
        n, ptr = keys.shape[0], int(self.queue_ptr)
        idx = torch.arange(ptr, ptr + n, device=keys.device) % self.K
        self.queue[:, idx] = keys.T
        self.queue_ptr[0] = (ptr + n) % self.K

    def forward(self, im_q: torch.Tensor, im_k: torch.Tensor) -> torch.Tensor:
        q = F.normalize(self.encoder_q(im_q), dim=1)  # [B, dim]
        with torch.no_grad():
            self._momentum_update()
            k = F.normalize(self.encoder_k(im_k), dim=1)  # [B, dim]
        l_pos = (q * k).sum(dim=1, keepdim=True)  # [B, 1]
        l_neg = q @ self.queue.clone().detach()  # [B, K]
        logits = torch.cat([l_pos, l_neg], dim=1) / self.T
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        self._enqueue(k)
        return F.cross_entropy(logits, labels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", help="a dataset directory from regioncl.convert / regioncl convert")
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=256, help="global batch")
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--steps", type=int, default=0, help="stop after this many steps (0: all)")
    ap.add_argument("--lr", type=float, default=0.03, help="for a batch of 256")
    ap.add_argument("--queue", type=int, default=65536)
    ap.add_argument("--threads", type=int, default=None, help="loader threads (default: all)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--colour", choices=["cpu", "gpu"], default=None)
    ap.add_argument("--checkpoint", default="moco_v2.pt")
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args()

    device = torch.device(args.device)
    colour = args.colour or ("gpu" if device.type == "cuda" else "cpu")
    loader = regioncl.Loader(
        args.data,
        recipes.mocov2(args.size),
        args.batch,
        threads=args.threads,
        colour=colour,
        device=device if device.type == "cuda" else None,
        channels_last=device.type == "cuda",
    )
    model = MoCo(args.arch, K=args.queue).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    lr = args.lr * args.batch / 256
    optimizer = torch.optim.SGD(model.parameters(), lr, momentum=0.9, weight_decay=1e-4)
    if args.resume and os.path.exists(args.checkpoint):
        state = torch.load(args.checkpoint, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        loader.load_state_dict(state["loader"])
        print(f"resumed at epoch {loader.epoch}")

    total = args.epochs * len(loader)
    position = loader.state_dict()
    step = position["epoch"] * len(loader) + position["step"]  # global step, resumed or not
    while loader.epoch < args.epochs:
        epoch = loader.epoch
        t0 = time.perf_counter()
        for batch in loader:
            for g in optimizer.param_groups:  # cosine schedule, per step
                g["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * step / total))
            im_q, im_k = batch.views
            loss = model(im_q.to(device), im_k.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if step % 10 == 0 or args.steps:
                rate = (batch.step + 1) * args.batch / (time.perf_counter() - t0)
                print(f"epoch {epoch} step {batch.step}/{len(loader)} loss {loss.item():.4f} "
                      f"{rate:.0f} img/s, data wait {loader.stats.wait:.1f} s", flush=True)
            if args.steps and step >= args.steps:
                break
        torch.save(
            {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "loader": loader.state_dict()},
            args.checkpoint,
        )
        if args.steps and step >= args.steps:
            break


if __name__ == "__main__":
    main()

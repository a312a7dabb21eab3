"""DINO (Caron et al. 2021, arXiv:2104.14294) multi-crop self-distillation, fed by regioncl.

The loader plans DINO's crops per image (recipes.dino: 2 global 224 px views with the asymmetric
blur/solarize of DataAugmentationDINO, and local 96 px views, bicubic), colours them on the GPU
(or in its CPU threads) and hands them over as one tensor per view. The training step follows
facebookresearch/dino main_dino.py: the teacher sees the global views, the student all views,
the teacher's outputs are centred and sharpened, and the teacher is an EMA of the student.

    python examples/python/dino_multicrop.py SHARDS --epochs 100 --batch 256
    python examples/python/dino_multicrop.py SHARDS --arch resnet18 --global-size 64 \\
        --local-size 32 --batch 16 --out-dim 256 --steps 3 --device cpu        # a smoke run
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import replace

import torch
import torch.nn.functional as F
import torchvision

import regioncl
from regioncl import recipes


class Head(torch.nn.Module):
    """DINOHead: a 3-layer MLP to a bottleneck, then a weight-normalised prototype layer."""

    def __init__(self, dim: int, out_dim: int, hidden: int = 2048, bottleneck: int = 256):
        super().__init__()
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(dim, hidden), torch.nn.GELU(),
            torch.nn.Linear(hidden, hidden), torch.nn.GELU(),
            torch.nn.Linear(hidden, bottleneck),
        )
        self.last = torch.nn.utils.parametrizations.weight_norm(
            torch.nn.Linear(bottleneck, out_dim, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(F.normalize(self.mlp(x), dim=-1))


def network(arch: str, out_dim: int) -> torch.nn.Module:
    backbone = torchvision.models.__dict__[arch]()
    dim = backbone.fc.weight.shape[1]
    backbone.fc = torch.nn.Identity()
    return torch.nn.Sequential(backbone, Head(dim, out_dim))


def forward_crops(net: torch.nn.Module, views: list[torch.Tensor]) -> torch.Tensor:
    """One forward pass per resolution (DINO's MultiCropWrapper): [sum of B, out_dim]."""
    out, start = [], 0
    while start < len(views):
        end = start
        while end < len(views) and views[end].shape[-1] == views[start].shape[-1]:
            end += 1
        out.append(net(torch.cat(views[start:end])))
        start = end
    return torch.cat(out)


def dino_loss(student: torch.Tensor, teacher: torch.Tensor, center: torch.Tensor,
              n_global: int, n_views: int, t_s: float = 0.1, t_t: float = 0.04) -> torch.Tensor:
    s = (student / t_s).log_softmax(dim=-1).chunk(n_views)
    t = F.softmax((teacher - center) / t_t, dim=-1).detach().chunk(n_global)
    terms = [(-ti * si).sum(dim=-1).mean() for i, ti in enumerate(t)
             for v, si in enumerate(s) if v != i]
    return torch.stack(terms).mean()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data")
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--local-views", type=int, default=6)
    ap.add_argument("--global-size", type=int, default=224)
    ap.add_argument("--local-size", type=int, default=96)
    ap.add_argument("--batch", type=int, default=256, help="global batch")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--steps", type=int, default=0, help="stop after this many steps (0: all)")
    ap.add_argument("--out-dim", type=int, default=65536)
    ap.add_argument("--lr", type=float, default=0.0005, help="for a batch of 256 (AdamW)")
    ap.add_argument("--momentum", type=float, default=0.996, help="teacher EMA")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()

    device = torch.device(args.device)
    recipe = recipes.dino(2, args.local_views)
    sizes = [args.global_size] * 2 + [args.local_size] * args.local_views
    recipe = regioncl.Recipe(tuple(replace(v, width=s, height=s) for v, s in zip(recipe.views, sizes)))
    loader = regioncl.Loader(
        args.data, recipe, args.batch, threads=args.threads,
        colour="gpu" if device.type == "cuda" else "cpu",
        device=device if device.type == "cuda" else None,
    )
    student = network(args.arch, args.out_dim).to(device)
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad = False
    center = torch.zeros(1, args.out_dim, device=device)
    optimizer = torch.optim.AdamW(student.parameters(), lr=args.lr * args.batch / 256, weight_decay=0.04)
    n_views = len(recipe.views)
    step = 0
    while loader.epoch < args.epochs:
        for batch in loader:
            views = [v.to(device) for v in batch.views]  # 2 global, then the local views
            with torch.no_grad():
                t_out = forward_crops(teacher, views[:2])
            s_out = forward_crops(student, views)
            loss = dino_loss(s_out, t_out, center, 2, n_views)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                for ps, pt in zip(student.parameters(), teacher.parameters()):
                    pt.mul_(args.momentum).add_(ps.detach(), alpha=1 - args.momentum)
                center.mul_(0.9).add_(t_out.mean(dim=0, keepdim=True), alpha=0.1)
            step += 1
            print(f"epoch {batch.epoch} step {batch.step}/{len(loader)} loss {loss.item():.4f}",
                  flush=True)
            if args.steps and step >= args.steps:
                return


if __name__ == "__main__":
    main()

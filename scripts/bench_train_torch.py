#!/usr/bin/env python3
"""The training step of the six methods in PyTorch eager: the baseline of `regioncl bench train`.

Same work per step as the Rust trainer (trainer/src/method/*.rs), on random u8 NHWC input in
pinned memory with a fresh plan per step:
  H2D copy (non-blocking) -> colour ops on the GPU with per-sample parameters (jitter in per-sample
  order, grayscale, blur, flip, normalize) -> region swap on the query view -> query encoder twice
  (originals, composites) -> mask pooling -> projector -> EMA of the key encoder (trainable params)
  -> shuffled key forward -> fp32 InfoNCE head (instance + region with the detached intra negative)
  -> backward -> SGD (momentum 0.9, wd 1e-4) -> enqueue.
DenseCL / RegionCL-D add the dense 1x1-conv head on both encoders, the backbone-feature argmax
correspondence, the dense InfoNCE against the second queue (lambda 0.5; region weight 0.5) and the
pooled dense keys' enqueue. SimSiam / RegionCL-S: one encoder with the 3-layer BN projector (2048-d)
and the predictor, plain BN over the whole batch (SyncBN on one GPU), two view forwards and, for
RegionCL-S, the composite forward whose canvas / paste predictions regress onto the other view.
bf16 autocast and channels_last on CUDA; split BN with S groups (`--bn-splits 1` = plain BN), in
two formulations: `demo` (the MoCo CIFAR notebook's reshape to [N/S, S*C, H, W], interleaved
groups; the pairing is reversed inside those groups) and `chunked` (one batch_norm per contiguous
chunk, as the Rust trainer does).

Prints one table line and one JSON line. Time on the same card as the Rust benchmark, in the same
call.
"""

import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class SplitBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics come from `splits` groups of the batch."""

    def __init__(self, num_features, splits, impl):
        super().__init__(num_features)
        self.splits, self.impl = splits, impl

    def forward(self, x):
        s = self.splits
        if not self.training or s == 1:
            return super().forward(x)
        n, c, h, w = x.shape
        rm = self.running_mean.repeat(s)
        rv = self.running_var.repeat(s)
        if self.impl == "demo":
            # reshape, not view: a channels_last activation has no [N/S, S*C, H, W] view, so this
            # copies to NCHW and back (the cost the Rust trainer's chunked BN avoids).
            y = F.batch_norm(x.reshape(-1, c * s, h, w), rm, rv, self.weight.repeat(s), self.bias.repeat(s),
                             True, self.momentum, self.eps).reshape(n, c, h, w)
        else:
            m = n // s
            rm, rv = rm.view(s, c), rv.view(s, c)
            y = torch.cat([F.batch_norm(x[i * m:(i + 1) * m], rm[i], rv[i], self.weight, self.bias, True,
                                        self.momentum, self.eps) for i in range(s)])
        self.running_mean.copy_(rm.view(s, c).mean(0))
        self.running_var.copy_(rv.view(s, c).mean(0))
        return y


class Encoder(nn.Module):
    def __init__(self, arch, splits, impl, dim=128, head="mlp"):
        super().__init__()
        norm = (lambda c: SplitBatchNorm(c, splits, impl)) if splits > 1 else nn.BatchNorm2d
        net = getattr(torchvision.models, arch)(norm_layer=norm, zero_init_residual=head == "simsiam")
        feat = net.fc.in_features
        net.fc = nn.Identity()
        net.avgpool = nn.Identity()
        self.backbone = nn.Sequential(*list(net.children())[:-2])
        if head == "simsiam":  # 3-layer projector with BN, last BN without affine (SimSiam)
            self.mlp = nn.Sequential(
                nn.Linear(feat, feat, bias=False), nn.BatchNorm1d(feat), nn.ReLU(inplace=True),
                nn.Linear(feat, feat, bias=False), nn.BatchNorm1d(feat), nn.ReLU(inplace=True),
                nn.Linear(feat, dim, bias=False), nn.BatchNorm1d(dim, affine=False))
        else:
            self.mlp = nn.Sequential(nn.Linear(feat, feat), nn.ReLU(inplace=True), nn.Linear(feat, dim))
        if head == "dense":  # DenseCL's dense head
            self.mlp2 = nn.Sequential(nn.Conv2d(feat, feat, 1), nn.ReLU(inplace=True), nn.Conv2d(feat, dim, 1))

    def features(self, x):
        return self.backbone(x)


def cells(f):
    """[B, C, G, G] -> [B, G*G, C] (a view under channels_last)."""
    return f.permute(0, 2, 3, 1).flatten(1, 2)


def gray(x):
    return (0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


def rgb2hsv(img):
    r, g, b = img.unbind(1)
    maxc, minc = img.amax(1), img.amin(1)
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    crd = torch.where(eqc, ones, cr)
    rc, gc, bc = (maxc - r) / crd, (maxc - g) / crd, (maxc - b) / crd
    h = (maxc == r) * (bc - gc) + ((maxc == g) & (maxc != r)) * (2.0 + rc - bc) \
        + ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    return torch.stack((torch.fmod(h / 6.0 + 1.0, 1.0), s, maxc), 1)


def hsv2rgb(img):
    h, s, v = img.unbind(1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int32) % 6
    p = (v * (1.0 - s)).clamp(0, 1)
    q = (v * (1.0 - s * f)).clamp(0, 1)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0, 1)
    mask = (i.unsqueeze(1) == torch.arange(6, device=i.device).view(-1, 1, 1)).to(img.dtype)
    a = torch.stack((torch.stack((v, q, p, p, t, v), 1), torch.stack((t, v, v, q, p, p), 1),
                     torch.stack((p, p, t, v, v, q), 1)), 1)
    return torch.einsum("nijk,nxijk->nxjk", mask, a)


def jitter_op(op, x, f):
    if op == 0:
        return (x * f).clamp(0, 1)
    if op == 1:
        m = gray(x).mean((1, 2, 3), keepdim=True)
        return (f * x + (1 - f) * m).clamp(0, 1)
    if op == 2:
        return (f * x + (1 - f) * gray(x)).clamp(0, 1)
    hsv = rgb2hsv(x)
    return hsv2rgb(torch.stack(((hsv[:, 0] + f.view(-1, 1, 1)) % 1.0, hsv[:, 1], hsv[:, 2]), 1))


def plan(b, gen):
    """MoCo v2 colour parameters for b samples (host side, like the Rust planner)."""
    r = lambda: torch.rand(b, generator=gen)
    jit = r() < 0.8
    factors = torch.stack([0.6 + 0.8 * r(), 0.6 + 0.8 * r(), 0.6 + 0.8 * r(), -0.1 + 0.2 * r()], 1)
    order = torch.stack([torch.randperm(4, generator=gen) for _ in range(b)])
    return dict(jit=jit, factors=factors, order=order, gray=r() < 0.2, blur=r() < 0.5,
                sigma=0.1 + 1.9 * r(), flip=r() < 0.5)


def colour(u8, p, channels_last):
    dev = u8.device
    x = u8.permute(0, 3, 1, 2).float().contiguous() / 255.0

    def apply(mask, fn):
        idx = mask.nonzero().flatten()
        if len(idx):
            di = idx.to(dev, non_blocking=True)
            x.index_copy_(0, di, fn(x.index_select(0, di), idx))

    apply(p["flip"], lambda s, _: s.flip(3))
    for pos in range(4):
        for op in range(4):
            m = p["jit"] & (p["order"][:, pos] == op)
            apply(m, lambda s, idx, op=op: jitter_op(op, s, p["factors"][idx, op].to(dev, non_blocking=True).view(-1, 1, 1, 1)))
    apply(p["gray"], lambda s, _: gray(s).expand(-1, 3, -1, -1).contiguous())

    def blur(s, idx):
        sig = p["sigma"][idx]
        k = 2 * math.ceil(3 * float(sig.max())) + 1
        xs = torch.arange(k, dtype=torch.float32) - k // 2
        ker = torch.exp(-0.5 * (xs.view(1, -1) / sig.view(-1, 1)) ** 2)
        ker = (ker / ker.sum(1, keepdim=True)).repeat_interleave(3, 0).to(dev, non_blocking=True)
        n, _, h, w = s.shape
        pad = k // 2
        y = F.pad(s, (pad, pad, pad, pad), mode="reflect").reshape(1, n * 3, h + 2 * pad, w + 2 * pad)
        y = F.conv2d(y, ker.view(n * 3, 1, 1, k), groups=n * 3)
        y = F.conv2d(y, ker.view(n * 3, 1, k, 1), groups=n * 3)
        return y.view(n, 3, h, w)

    apply(p["blur"], blur)
    mean = torch.tensor(MEAN, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=dev).view(1, 3, 1, 1)
    y = (x - mean) / std
    return y.contiguous(memory_format=torch.channels_last) if channels_last else y


def pairing(b, splits, impl):
    idx = torch.arange(b)
    if impl == "demo" and splits > 1:  # groups are n mod S: reverse inside each residue class
        m = b // splits
        return (idx % splits) + splits * (m - 1 - idx // splits)
    m = b // splits
    return (idx // m) * m + (m - 1 - idx % m)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--method", choices=["regionclm", "mocov2", "regioncld", "densecl", "regioncls",
                                         "simsiam"], default="regionclm")
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--bn-splits", type=int, default=8)
    ap.add_argument("--bn-impl", choices=["demo", "chunked"], default="demo")
    ap.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--no-channels-last", action="store_true")
    ap.add_argument("--queue", type=int, default=65536)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()

    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    cl = cuda and not a.no_channels_last
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    siamese = a.method in ("simsiam", "regioncls")
    dense = a.method in ("densecl", "regioncld")
    region = a.method in ("regionclm", "regioncld", "regioncls")
    splits = 1 if siamese else a.bn_splits  # SimSiam: SyncBN = plain BN over the batch on one GPU
    b, s = a.batch, a.size
    if siamese:
        enc = Encoder(a.arch, 1, a.bn_impl, dim=2048, head="simsiam").to(dev)
        pred = nn.Sequential(nn.Linear(2048, 512, bias=False), nn.BatchNorm1d(512), nn.ReLU(inplace=True),
                             nn.Linear(512, 2048)).to(dev)
        if cl:
            enc = enc.to(memory_format=torch.channels_last)
        init_lr = 0.05 * b / 256
        opt = torch.optim.SGD([{"params": enc.parameters()}, {"params": pred.parameters(), "fix_lr": True}],
                              lr=init_lr, momentum=0.9, weight_decay=1e-4)
    else:
        head = "dense" if dense else "mlp"
        enc_q = Encoder(a.arch, splits, a.bn_impl, head=head).to(dev)
        enc_k = Encoder(a.arch, splits, a.bn_impl, head=head).to(dev)
        enc_k.load_state_dict(enc_q.state_dict())
        for p in enc_k.parameters():
            p.requires_grad_(False)
        if cl:
            enc_q, enc_k = enc_q.to(memory_format=torch.channels_last), enc_k.to(memory_format=torch.channels_last)
        q_params, k_params = list(enc_q.parameters()), list(enc_k.parameters())
        queue = F.normalize(torch.randn(128, a.queue, device=dev), dim=0)
        queue2 = F.normalize(torch.randn(128, a.queue, device=dev), dim=0) if dense else None
        ptr = 0
        lr = (0.15 * b / 1024) if a.method == "regionclm" else (0.03 * b / 256)
        opt = torch.optim.SGD(enc_q.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    host = [torch.randint(0, 256, (b, s, s, 3), dtype=torch.uint8) for _ in range(2)]
    if cuda:
        host = [h.pin_memory() for h in host]
    gen = torch.Generator().manual_seed(0)
    pi = pairing(b, splits, a.bn_impl).to(dev)
    stride, grid = 32, s // 32
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and a.precision == "bf16")

    def ce0(lg):
        return (torch.logsumexp(lg, 1) - lg[:, 0]).mean()

    def region_pool(features, im_q):
        w, h = (int(v) for v in torch.randint(max(1, grid - 4), max(2, grid - 1), (2,), generator=gen))
        x0, y0 = (int(torch.randint(0, grid - w + 1, (1,), generator=gen)),
                  int(torch.randint(0, grid - h + 1, (1,), generator=gen)))
        comp = im_q.clone()
        ys, xs = slice(y0 * stride, (y0 + h) * stride), slice(x0 * stride, (x0 + w) * stride)
        comp[:, :, ys, xs] = im_q[pi][:, :, ys, xs]
        fm = features(comp).float()
        bb = fm[:, :, y0:y0 + h, x0:x0 + w].mean((2, 3))
        aa = (grid * grid * fm.mean((2, 3)) - w * h * bb) / (grid * grid - w * h)
        return aa, bb

    def siamese_step():
        plans = [plan(b, gen) for _ in range(2)]
        u8 = [h.to(dev, non_blocking=True) for h in host]
        x1, x2 = colour(u8[0], plans[0], cl), colour(u8[1], plans[1], cl)
        with amp:
            z1 = enc.mlp(enc.features(x1).mean((2, 3)))
            z2 = enc.mlp(enc.features(x2).mean((2, 3)))
            p1, p2 = pred(z1), pred(z2)
            if region:
                aa, bb = region_pool(enc.features, x1)
                p_r = pred(enc.mlp(torch.cat([aa, bb])))
        with torch.autocast("cuda", enabled=False):
            cos = lambda p, z: F.cosine_similarity(p.float(), z.detach().float(), dim=1).mean()
            loss = -0.5 * (cos(p1, z2) + cos(p2, z1))
            if region:
                rows = torch.cat([p_r[:b], p_r[b:][pi]])
                loss = loss - cos(rows, torch.cat([z2, z2]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    def contrast_step():
        nonlocal ptr
        plans = [plan(b, gen) for _ in range(2)]
        u8 = [h.to(dev, non_blocking=True) for h in host]
        im_q, im_k = colour(u8[0], plans[0], cl), colour(u8[1], plans[1], cl)
        with amp:
            fq = enc_q.features(im_q)
            q = F.normalize(enc_q.mlp(fq.float().mean((2, 3))).float(), dim=1)
            if dense:
                q_grid = F.normalize(cells(enc_q.mlp2(fq)).float(), dim=2)
            if region:
                aa, bb = region_pool(enc_q.features, im_q)
                z = F.normalize(enc_q.mlp(torch.cat([aa, bb])).float(), dim=1)
                za, zb = z[:b], z[b:]
            with torch.no_grad():
                torch._foreach_mul_(k_params, 0.999)
                torch._foreach_add_(k_params, q_params, alpha=0.001)
                idx = torch.randperm(b, generator=gen).to(dev, non_blocking=True)
                inv = torch.argsort(idx)
                fk = enc_k.features(im_k[idx])
                k = F.normalize(enc_k.mlp(fk.float().mean((2, 3))).float(), dim=1)[inv]
                if dense:
                    kd = enc_k.mlp2(fk)
                    k2 = F.normalize(kd.float().mean((2, 3)), dim=1)[inv]
                    k_grid = F.normalize(cells(kd).float(), dim=2)[inv]
                    k_b = F.normalize(cells(fk).float(), dim=2)[inv]
        with torch.autocast("cuda", enabled=False):
            loss = ce0(torch.cat([(q * k).sum(1, keepdim=True), q @ queue], 1) / 0.2)
            if dense:
                q_b = F.normalize(cells(fq.detach()).float(), dim=2)
                j = torch.bmm(q_b, k_b.transpose(1, 2)).argmax(2)
                pos = (q_grid * k_grid.gather(1, j.unsqueeze(2).expand(-1, -1, q_grid.size(2)))).sum(2)
                rows = q_grid.reshape(-1, q_grid.size(2))
                loss_d = ce0(torch.cat([pos.reshape(-1, 1), rows @ queue2], 1) / 0.2)
                loss = 0.5 * loss + 0.5 * loss_d
            if region:
                c, nc, p, np_ = za, zb.detach(), zb[pi], za[pi].detach()
                qs, ns = torch.cat([c, p]), torch.cat([nc, np_])
                kk = torch.cat([k, k])
                lr_ = torch.cat([(qs * kk).sum(1, keepdim=True), (qs * ns).sum(1, keepdim=True), qs @ queue], 1) / 0.2
                loss = loss + (0.5 if dense else 1.0) * ce0(lr_)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        queue[:, ptr:ptr + b] = k.T
        if dense:
            queue2[:, ptr:ptr + b] = k2.T
        ptr = (ptr + b) % a.queue
        return loss.item()

    step = siamese_step if siamese else contrast_step

    for _ in range(a.warmup):
        step()
    t0 = time.perf_counter()
    last = None
    for _ in range(a.steps):
        last = step()
    secs = time.perf_counter() - t0
    img_s = a.steps * b / secs
    name = torch.cuda.get_device_name(dev) if cuda else "cpu"
    print(f"torch-eager {a.method:<10} {a.arch:<9} batch {b} size {s} bn_splits {splits} "
          f"({a.bn_impl}) {a.precision}{' channels_last' if cl else ''} on {name}: "
          f"{img_s:.1f} img/s, {1000 * secs / a.steps:.2f} ms/step")
    print(json.dumps(dict(impl="torch-eager", method=a.method, arch=a.arch, batch=b, size=s,
                          bn_splits=splits, bn_impl=a.bn_impl, precision=a.precision,
                          channels_last=cl, device=name, img_per_s=img_s,
                          ms_per_step=1000 * secs / a.steps, last_loss=last)))


if __name__ == "__main__":
    main()

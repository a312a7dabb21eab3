"""The planned colour augmentation in plain PyTorch, for whatever device the pixels are on.

The loader plans every random choice ahead; with ``colour="gpu"`` it hands over geometry-only
``uint8`` views and each batch's :class:`~regioncl.ViewParams`, and :func:`colour` applies the
colour part on the device: ColorJitter in each sample's own order, grayscale, Gaussian blur,
solarize, then normalisation. The semantics are torchvision 0.26's tensor ops on float ``[0, 1]``
images, which are those of the loader's CPU path (``colour="cpu"``); the package's tests check the
two against each other on the same plan.

Vectorised over the batch: the parameters are on the host, so for each op (and each position of
the jitter order) the samples it applies to are known without a device sync; each op runs once on
those samples and is written back, so a sample pays only for the ops it has.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
from torch import Tensor

if TYPE_CHECKING:
    from regioncl.loader import ViewParams

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Colour", "colour", "gaussian_kernel"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# torchvision's grayscale weights on float tensors (R, G, B).
_GRAY = (0.2989, 0.587, 0.114)
_SOLARIZE_THRESHOLD = 0.5
_BRIGHTNESS, _CONTRAST, _SATURATION, _HUE = 0, 1, 2, 3


def gaussian_kernel(sigma: float) -> Tensor:
    """The loader's 1-D blur kernel: ``2 * ceil(3 sigma) + 1`` taps of ``exp(-x^2 / 2 sigma^2)``,
    normalised to sum 1, in float32 (torchvision's ``_get_gaussian_kernel1d``)."""
    s = torch.tensor(sigma, dtype=torch.float32)
    half = int(torch.ceil(3.0 * s).item())
    x = (torch.arange(2 * half + 1, dtype=torch.float32) - half) / s
    k = torch.exp(-0.5 * (x * x))
    return k / k.sum()


def _gray(x: Tensor) -> Tensor:
    # [n, 3, H, W] -> [n, 1, H, W]
    return (x[:, 0] * _GRAY[0] + x[:, 1] * _GRAY[1] + x[:, 2] * _GRAY[2]).unsqueeze(1)


def _blend(a: Tensor, b: Tensor, f: Tensor) -> Tensor:
    # torchvision's _blend with a per-sample ratio f: [n, 1, 1, 1]
    return (f * a + (1.0 - f) * b).clamp(0.0, 1.0)


def _rgb_to_hsv(img: Tensor) -> Tensor:
    # torchvision's _rgb2hsv, batched: [n, 3, H, W] -> [n, 3, H, W] (h, s, v)
    r, g, b = img.unbind(1)
    maxc = img.amax(1)
    minc = img.amin(1)
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    cr_divisor = torch.where(eqc, ones, cr)
    rc = (maxc - r) / cr_divisor
    gc = (maxc - g) / cr_divisor
    bc = (maxc - b) / cr_divisor
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return torch.stack((h, s, maxc), 1)


def _hsv_to_rgb(hsv: Tensor) -> Tensor:
    # torchvision's _hsv2rgb, batched
    h, s, v = hsv.unbind(1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int32) % 6
    p = torch.clamp(v * (1.0 - s), 0.0, 1.0)
    q = torch.clamp(v * (1.0 - s * f), 0.0, 1.0)
    t = torch.clamp(v * (1.0 - s * (1.0 - f)), 0.0, 1.0)
    mask = i.unsqueeze(1) == torch.arange(6, device=i.device).view(-1, 1, 1)  # [n, 6, H, W]
    a1 = torch.stack((v, q, p, p, t, v), 1)
    a2 = torch.stack((t, v, v, q, p, p), 1)
    a3 = torch.stack((p, p, t, v, v, q), 1)
    a4 = torch.stack((a1, a2, a3), 1)  # [n, 3, 6, H, W]
    return torch.einsum("...ijk,...xijk->...xjk", mask.to(hsv.dtype), a4)


def _jitter(op: int, x: Tensor, f: Tensor) -> Tensor:
    if op == _BRIGHTNESS:
        return (x * f).clamp(0.0, 1.0)
    if op == _CONTRAST:
        return _blend(x, _gray(x).mean(dim=(1, 2, 3), keepdim=True), f)
    if op == _SATURATION:
        return _blend(x, _gray(x), f)
    hsv = _rgb_to_hsv(x)
    h = torch.remainder(hsv[:, 0] + f.view(-1, 1, 1), 1.0)
    return _hsv_to_rgb(torch.stack((h, hsv[:, 1], hsv[:, 2]), 1))


def _apply(x: Tensor, idx: Tensor, op: object) -> None:
    """``x[idx] = op(x[idx])`` for the samples ``idx`` (host int64), in place."""
    if idx.numel() == 0:
        return
    ix = idx.to(x.device, non_blocking=True)
    x.index_copy_(0, ix, op(x.index_select(0, ix)))  # type: ignore[operator]


def _blur(x: Tensor, idx: Tensor, sigmas: Sequence[float]) -> None:
    if idx.numel() == 0:
        return
    kernels = [gaussian_kernel(s) for s in sigmas]
    kmax = max(k.numel() for k in kernels)
    pad = kmax // 2
    n, _, h, w = x.shape
    # One kernel per sample and channel, centred and zero-padded to the longest: [n * 3, kmax].
    taps = torch.zeros(len(kernels), 3, kmax)
    for s, k in enumerate(kernels):
        off = (kmax - k.numel()) // 2
        taps[s, :, off : off + k.numel()] = k
    groups = 3 * len(kernels)
    kw = taps.view(groups, 1, 1, kmax).to(x.device, non_blocking=True)
    kh = kw.view(groups, 1, kmax, 1)

    def op(sub: Tensor) -> Tensor:
        # Reflect padding by the largest half-width; where the image is narrower than that,
        # torch's reflect pad cannot go, so fold the indices as the CPU path does.
        padded = _reflect_pad(sub, pad).reshape(1, groups, h + 2 * pad, w + 2 * pad)
        rows = torch.nn.functional.conv2d(padded, kw, groups=groups)
        return torch.nn.functional.conv2d(rows, kh, groups=groups).reshape(-1, 3, h, w)

    _apply(x, idx, op)


def _reflect_index(n: int, pad: int, device: torch.device) -> Tensor:
    i = torch.arange(-pad, n + pad, device=device)
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    m = torch.remainder(i, period)
    return torch.where(m < n, m, period - m)


def _reflect_pad(x: Tensor, pad: int) -> Tensor:
    h, w = x.shape[-2:]
    if pad < h and pad < w:
        return torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="reflect")
    rows = _reflect_index(h, pad, x.device)
    cols = _reflect_index(w, pad, x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


def colour(
    views: Tensor,
    params: ViewParams,
    *,
    mean: Sequence[float] | None = IMAGENET_MEAN,
    std: Sequence[float] | None = IMAGENET_STD,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
) -> Tensor:
    """Colour-augments and normalises one view of a batch, from the batch's planned parameters.

    ``views`` are the geometry-only ``uint8`` views ``[B, 3, H, W]`` (any memory format, any
    device); ``params`` are that view's :class:`~regioncl.ViewParams` (host tensors). Returns
    float ``[B, 3, H, W]`` on the same device: ``(x - mean) / std`` after the colour ops, or the
    ``[0, 1]`` values when ``mean`` and ``std`` are None. The flip is not applied here: the loader
    already flipped the pixels.
    """
    b = views.shape[0]
    if views.dim() != 4 or views.shape[1] != 3 or views.dtype != torch.uint8:
        raise ValueError(f"colour: expected uint8 [B, 3, H, W] views, got {views.dtype} {list(views.shape)}")
    if params.flip.shape[0] != b:
        raise ValueError(f"colour: {params.flip.shape[0]} parameter sets for a batch of {b}")
    with torch.no_grad():
        x = views.to(torch.float32).contiguous() / 255.0  # [B, 3, H, W] in [0, 1]
        identity = torch.tensor([1.0, 1.0, 1.0, 0.0])
        active = params.jitter != identity  # [B, 4] per op: not the identity, so applied
        if bool((params.jitter[:, _HUE].abs() > 0.5).any()):
            raise ValueError("colour: a hue shift outside [-0.5, 0.5]")
        for pos in range(4):
            for op in (_BRIGHTNESS, _CONTRAST, _SATURATION, _HUE):
                sel = (params.jitter_order[:, pos] == op) & active[:, op]
                idx = sel.nonzero().squeeze(1)
                if idx.numel():
                    f = params.jitter[idx, op].view(-1, 1, 1, 1).to(x.device, non_blocking=True)
                    _apply(x, idx, lambda s, op=op, f=f: _jitter(op, s, f))
        _apply(x, params.grayscale.nonzero().squeeze(1), lambda s: _gray(s).expand(-1, 3, -1, -1))
        blurred = (params.blur_sigma > 0).nonzero().squeeze(1)
        _blur(x, blurred, params.blur_sigma[blurred].tolist())
        _apply(
            x,
            params.solarize.nonzero().squeeze(1),
            lambda s: torch.where(s >= _SOLARIZE_THRESHOLD, 1.0 - s, s),
        )
        if mean is not None and std is not None:
            m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1).to(x.device, non_blocking=True)
            sd = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1).to(x.device, non_blocking=True)
            x = (x - m) / sd
        x = x.to(dtype)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x


class Colour(torch.nn.Module):
    """:func:`colour` as a module: ``Colour()(views, params)``."""

    def __init__(
        self,
        mean: Sequence[float] | None = IMAGENET_MEAN,
        std: Sequence[float] | None = IMAGENET_STD,
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.mean = mean
        self.std = std
        self.dtype = dtype
        self.channels_last = channels_last

    def forward(self, views: Tensor, params: ViewParams) -> Tensor:
        return colour(
            views,
            params,
            mean=self.mean,
            std=self.std,
            dtype=self.dtype,
            channels_last=self.channels_last,
        )

"""Batched photometric ops with one random parameter per sample.

torchvision's ``adjust_*`` functions take one scalar factor for the whole
batch; SSL augmentation needs a different factor per image. These functions
take a ``[B]`` factor tensor and apply it with broadcasting, so a batch costs a
handful of kernels on any device. The maths follows torchvision's tensor
kernels exactly (``_blend``, ITU-R 601 grey, PIL's HSV conversion), which the
unit tests check image by image. Inputs are float images in ``[0, 1]``,
``[B, 3, H, W]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# ITU-R 601-2 luma, as torchvision's rgb_to_grayscale.
_LUMA = (0.2989, 0.587, 0.114)


def _per_sample(f: Tensor, x: Tensor) -> Tensor:
    return f.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


def _blend(x: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    f = _per_sample(factor, x)
    return (f * x + (1.0 - f) * other).clamp_(0.0, 1.0)


def grayscale(x: Tensor) -> Tensor:
    """Luma ``[B, 1, H, W]`` of an RGB batch (a one-channel batch is its own luma)."""
    if x.shape[-3] == 1:
        return x
    r, g, b = x.unbind(dim=-3)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(-3)


def adjust_brightness(x: Tensor, factor: Tensor) -> Tensor:
    return (x * _per_sample(factor, x)).clamp_(0.0, 1.0)


def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    mean = grayscale(x).mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(x, mean, factor)


def adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    return _blend(x, grayscale(x), factor)


def _rgb_to_hsv(x: Tensor) -> Tensor:
    r, g, _ = x.unbind(dim=-3)
    minc, maxc = torch.aminmax(x, dim=-3)
    eqc = maxc == minc
    ones = torch.ones_like(maxc)
    s = (maxc - minc) / torch.where(eqc, ones, maxc)
    rng = torch.where(eqc, ones, maxc - minc).unsqueeze(-3)
    rc, gc, bc = ((maxc.unsqueeze(-3) - x) / rng).unbind(dim=-3)
    neq_r = maxc != r
    eq_g = maxc == g
    hr = (bc - gc) * (~neq_r)
    hg = (2.0 + rc - bc) * (eq_g & neq_r)
    hb = (4.0 + gc - rc) * (neq_r & ~eq_g)
    h = ((hr + hg + hb) / 6.0 + 1.0).fmod(1.0)
    return torch.stack((h, s, maxc), dim=-3)


def _hsv_to_rgb(hsv: Tensor) -> Tensor:
    h, s, v = hsv.unbind(dim=-3)
    h6 = h * 6.0
    i = torch.floor(h6)
    f = h6 - i
    i = i.to(torch.int64).remainder(6)
    p = ((1.0 - s) * v).clamp(0.0, 1.0)
    q = ((1.0 - s * f) * v).clamp(0.0, 1.0)
    t = ((1.0 - s * (1.0 - f)) * v).clamp(0.0, 1.0)
    vpqt = torch.stack((v, p, q, t), dim=-3)  # [B, 4, H, W]
    # Which of v, p, q, t each of r, g, b takes in each of the 6 hue sectors.
    select = torch.tensor([[0, 2, 1, 1, 3, 0], [3, 0, 0, 2, 1, 1], [1, 1, 3, 0, 0, 2]], device=hsv.device)
    idx = select[:, i].movedim(0, -3)  # [B, 3, H, W]
    return vpqt.gather(-3, idx)


def adjust_hue(x: Tensor, factor: Tensor) -> Tensor:
    """Rotate hue by ``factor`` (in turns, ``[-0.5, 0.5]``) per sample."""
    hsv = _rgb_to_hsv(x)
    h = (hsv[:, 0:1] + _per_sample(factor, x)).remainder(1.0)
    return _hsv_to_rgb(torch.cat((h, hsv[:, 1:]), dim=1))


def solarize(x: Tensor, threshold: float = 128 / 255) -> Tensor:
    return torch.where(x >= threshold, 1.0 - x, x)


def gaussian_kernels(sigma: Tensor, kernel_size: int) -> Tensor:
    """Normalised 1-D Gaussian kernels ``[B, kernel_size]``, as torchvision builds them."""
    half = (kernel_size - 1) * 0.5
    xs = torch.linspace(-half, half, kernel_size, device=sigma.device, dtype=torch.float32)
    pdf = torch.exp(-0.5 * (xs[None, :] / sigma.float()[:, None]) ** 2)
    return pdf / pdf.sum(dim=1, keepdim=True)


def gaussian_blur(x: Tensor, sigma: Tensor, kernel_size: int = 9) -> Tensor:
    """Separable blur with sigma per sample, reflect padding (torchvision's ``gaussian_blur``).

    One grouped convolution per axis: the batch and channels are folded into
    the group dimension, so every image gets its own kernel without a loop.
    """
    b, c, h, w = x.shape
    k = gaussian_kernels(sigma.to(x.device), kernel_size).to(x.dtype)  # [B, K]
    k = k.repeat_interleave(c, dim=0)  # [B*C, K]
    pad = kernel_size // 2
    y = x.reshape(1, b * c, h, w)
    y = F.pad(y, (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, k.view(b * c, 1, 1, kernel_size), groups=b * c)
    y = F.conv2d(y, k.view(b * c, 1, kernel_size, 1), groups=b * c)
    return y.view(b, c, h, w)

"""DINOv2 multi-crop augmentation on batched tensors, on any device.

The PIL recipe (lightly's ``DINOTransform``) costs ~40 ms per image per CPU
core, so on a GPU node the loader, not the model, sets the pace. Here the
loader only decodes and resizes to one fixed size; this module turns a
``uint8 [B, C, H, W]`` batch into the 2 global + n local views on the GPU:

* crops: one ``torchvision.ops.roi_align`` call per view for the whole batch,
  one box per sample (adaptive sampling averages several bilinear samples per
  output pixel, so large downscales are antialiased like PIL's resize);
* flips, colour jitter (random op order per sample, as torchvision's
  ``ColorJitter``), grey, Gaussian blur, solarize: per-sample parameters applied
  with broadcasting or to index subsets (:mod:`pipeline.augment.color`).

All random parameters are drawn on the CPU from one seeded ``torch.Generator``
and moved to the device in one copy, so a seed gives the same crops on CPU and
GPU and nothing waits on the device.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torchvision.ops import roi_align

from pipeline.augment import color
from pipeline.config.augment import AugmentConfig

# Fixed parts of DINOv2's recipe, as torchvision's RandomResizedCrop and lightly's GaussianBlur
# have them on the PIL path.
RATIO = (3 / 4, 4 / 3)  # crop aspect ratios
BLUR_SIGMA = (0.1, 2.0)
BLUR_KERNEL = 9


class ViewParams(NamedTuple):
    """Random parameters of one view for a batch (CPU tensors, one row per sample)."""

    boxes: Tensor  # [B, 4] float x1, y1, x2, y2 in pixels (integer-valued)
    flip: Tensor  # [B] bool, horizontal
    vflip: Tensor  # [B] bool
    jitter: Tensor  # [B] bool, colour jitter applied
    factors: Tensor  # [B, 4] brightness, contrast, saturation, hue
    order: Tensor  # [B, 4] permutation of the four jitter ops
    gray: Tensor  # [B] bool
    blur: Tensor  # [B] bool
    sigma: Tensor  # [B]
    solarize: Tensor  # [B] bool
    rot90: Tensor  # [B] bool


class MultiCrops(NamedTuple):
    global_crops: list[Tensor]  # cfg.global_crops x [B, 3, g, g]
    local_crops: list[Tensor]  # cfg.local_crops x [B, 3, l, l]

    @property
    def views(self) -> list[Tensor]:
        """Globals then locals, the order lightly's DINO training step expects."""
        return [*self.global_crops, *self.local_crops]


def sample_boxes(
    n: int, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float], gen: torch.Generator
) -> Tensor:
    """``RandomResizedCrop.get_params`` for ``n`` samples at once.

    Ten attempts per sample as torchvision; the first one that fits is used,
    samples with none fall back to torchvision's central crop.
    """
    tries = 10
    area = height * width
    target = area * torch.empty(n, tries).uniform_(scale[0], scale[1], generator=gen)
    log_r = torch.empty(n, tries).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=gen)
    ar = torch.exp(log_r)
    w = torch.sqrt(target * ar).round()
    h = torch.sqrt(target / ar).round()
    ok = (w > 0) & (h > 0) & (w <= width) & (h <= height)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.zeros(n, dtype=torch.long))
    w = w.gather(1, first[:, None]).squeeze(1)
    h = h.gather(1, first[:, None]).squeeze(1)
    # Fallback: the largest central crop within the ratio range.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        fw, fh = round(height * ratio[1]), height
    else:
        fw, fh = width, height
    none = ~ok.any(1)
    w = torch.where(none, torch.full_like(w, fw), w)
    h = torch.where(none, torch.full_like(h, fh), h)
    u = torch.rand(n, 2, generator=gen)
    y0 = torch.floor(u[:, 0] * (height - h + 1))
    x0 = torch.floor(u[:, 1] * (width - w + 1))
    y0 = torch.where(none, torch.floor((height - h) / 2), y0)
    x0 = torch.where(none, torch.floor((width - w) / 2), x0)
    return torch.stack((x0, y0, x0 + w, y0 + h), dim=1)


def crop_resize(x: Tensor, boxes: Tensor, size: int) -> Tensor:
    """Crop ``boxes`` (``[B, 4]`` x1, y1, x2, y2, one per sample) and resize to ``size`` in one call.

    ``aligned=True`` puts pixel centres at half-integers, as ``resize`` with
    ``align_corners=False``; ``sampling_ratio=-1`` averages ``ceil(box/size)``
    samples per axis in each output pixel, which antialiases downscaling.
    """
    idx = torch.arange(x.shape[0], device=x.device, dtype=x.dtype)[:, None]
    rois = torch.cat((idx, boxes.to(device=x.device, dtype=x.dtype)), dim=1)
    return roi_align(x, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)


class GPUMultiCrop(nn.Module):
    """Batched DINOv2 multi-crop: ``uint8 [B, C, H, W]`` in, normalised float views out.

    Runs on the device of its input (CPU or GPU). The recipe is the PIL backend's
    (:class:`pipeline.augment.pil_multicrop.MultiCrop`): ``cfg.blur`` is global view 1's blur
    probability, global view 2 and the local views get 0.1x and 0.5x of it, solarize hits
    global view 2 only. The ``grayscale`` preset is for single-channel domains (X-ray, EL,
    SEM): hue and saturation jitter and random grey are meaningless there and off, so the
    three output channels stay equal before normalisation.

    Args:
        cfg: The recipe, with its preset resolved (``rgb`` or ``grayscale``).
        seed: Seed of the generator that draws every random parameter.
        out_dtype: Dtype of the returned views (``torch.bfloat16`` halves the
            memory of the views for bf16 training).
    """

    mean: Tensor  # buffers, registered in __init__
    std: Tensor

    def __init__(self, cfg: AugmentConfig, seed: int = 0, out_dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.cfg = cfg
        self.gray = cfg.grayscale
        # Per view kind: blur probability of global view 1, global view 2 and every local view.
        self.blur_p = (cfg.blur, 0.1 * cfg.blur, 0.5 * cfg.blur)
        self.out_dtype = out_dtype
        self.gen = torch.Generator().manual_seed(seed)
        self.register_buffer("mean", torch.tensor(self.cfg.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.cfg.std).view(1, 3, 1, 1), persistent=False)

    def sample_params(
        self, n: int, height: int, width: int, local: bool, blur_p: float, solarize_p: float
    ) -> ViewParams:
        """Draw one view's random parameters for ``n`` samples of ``height x width``."""
        c, g = self.cfg, self.gen
        saturation, hue = (0.0, 0.0) if self.gray else (c.saturation, c.hue)
        scale = c.local_scale if local else c.global_scale
        boxes = sample_boxes(n, height, width, scale, RATIO, g)
        flip = torch.rand(n, generator=g) < c.hflip
        vflip = torch.rand(n, generator=g) < c.vflip
        jitter = torch.rand(n, generator=g) < c.jitter_prob
        lo_hi = torch.tensor(
            [
                [max(0.0, 1 - c.brightness), 1 + c.brightness],
                [max(0.0, 1 - c.contrast), 1 + c.contrast],
                [max(0.0, 1 - saturation), 1 + saturation],
                [-hue, hue],
            ]
        )
        factors = lo_hi[:, 0] + (lo_hi[:, 1] - lo_hi[:, 0]) * torch.rand(n, 4, generator=g)
        order = torch.argsort(torch.rand(n, 4, generator=g), dim=1)
        gray = torch.rand(n, generator=g) < (0.0 if self.gray else c.grayscale_prob)
        blur = torch.rand(n, generator=g) < blur_p
        sigma = torch.empty(n).uniform_(BLUR_SIGMA[0], BLUR_SIGMA[1], generator=g)
        sol = torch.rand(n, generator=g) < solarize_p
        # drawn only when used, so recipes without it keep their random stream
        rot = torch.rand(n, generator=g) < c.rotate90 if c.rotate90 > 0 else torch.zeros(n, dtype=torch.bool)
        return ViewParams(boxes, flip, vflip, jitter, factors, order, gray, blur, sigma, sol, rot)

    def apply(self, x: Tensor, p: ViewParams, size: int) -> Tensor:  # type: ignore[override]  # not Module.apply(fn)
        """One view of a float ``[0, 1]`` batch ``x`` with parameters ``p``; returns normalised crops."""
        c = self.cfg
        dev = x.device
        y = crop_resize(x, p.boxes, size)
        flip = p.flip.to(dev, non_blocking=True).view(-1, 1, 1, 1)
        y = torch.where(flip, y.flip(-1), y)
        if c.vflip > 0:
            vflip = p.vflip.to(dev, non_blocking=True).view(-1, 1, 1, 1)
            y = torch.where(vflip, y.flip(-2), y)
        if c.rotate90 > 0:  # views are square, so a quarter turn keeps the shape
            rot = p.rot90.to(dev, non_blocking=True).view(-1, 1, 1, 1)
            y = torch.where(rot, y.rot90(1, dims=(-2, -1)), y)
        if y.shape[1] == 1 and not self.gray:
            y = y.expand(-1, 3, -1, -1).contiguous()
        ops = [color.adjust_brightness, color.adjust_contrast]
        if not self.gray:
            ops += [color.adjust_saturation, color.adjust_hue]
        factors = p.factors.to(dev, non_blocking=True)
        # Index subsets are computed on the CPU, so no step waits on the device.
        for step in range(4):
            for op_id, op in enumerate(ops):
                sel = torch.nonzero(p.jitter & (p.order[:, step] == op_id)).squeeze(1)
                if sel.numel():
                    sel = sel.to(dev, non_blocking=True)
                    y[sel] = op(y[sel], factors[sel, op_id])
        sel = torch.nonzero(p.gray).squeeze(1)
        if sel.numel() and y.shape[1] == 3:
            sel = sel.to(dev, non_blocking=True)
            y[sel] = color.grayscale(y[sel]).expand(-1, 3, -1, -1)
        sel = torch.nonzero(p.blur).squeeze(1)
        if sel.numel():
            sigma = p.sigma[sel].to(dev, non_blocking=True)
            sel = sel.to(dev, non_blocking=True)
            y[sel] = color.gaussian_blur(y[sel], sigma, BLUR_KERNEL)
        sel = torch.nonzero(p.solarize).squeeze(1)
        if sel.numel():
            sel = sel.to(dev, non_blocking=True)
            y[sel] = color.solarize(y[sel])
        # A one-channel batch broadcasts against the 3-channel mean to 3 equal-before-normalisation channels.
        mean, std = self.mean.to(dev), self.std.to(dev)  # no-op once the module sits on the input's device
        return ((y - mean) / std).to(self.out_dtype)

    @torch.no_grad()
    def forward(self, images: Tensor) -> MultiCrops:
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"GPUMultiCrop expects uint8 [B, C, H, W] with C in (1, 3), got {tuple(images.shape)}")
        if images.dtype != torch.uint8:
            raise ValueError(f"GPUMultiCrop expects uint8 images, got {images.dtype}")
        c = self.cfg
        b, _, h, w = images.shape
        x = images.float().div_(255.0)
        globals_: list[Tensor] = []
        for i in range(c.global_crops):
            blur_p = self.blur_p[0] if i == 0 else self.blur_p[1]
            sol_p = c.solarize if i == 1 else 0.0
            globals_.append(self.apply(x, self.sample_params(b, h, w, False, blur_p, sol_p), c.global_size))
        locals_ = [
            self.apply(x, self.sample_params(b, h, w, True, self.blur_p[2], 0.0), c.local_size)
            for _ in range(c.local_crops)
        ]
        return MultiCrops(globals_, locals_)

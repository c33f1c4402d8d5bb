"""Batched multi-crop: shapes, determinism, geometry, per-sample colour ops against torchvision."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from pipeline.augment import GPUMultiCrop, color
from pipeline.augment.gpu_multicrop import crop_resize, sample_boxes
from pipeline.config.augment import AugmentConfig

SMALL = AugmentConfig(preset="rgb", global_size=32, local_size=16, global_crops=2, local_crops=3)
# Geometry only: no photometric op, identity normalisation.
GEOM = dataclasses.replace(
    SMALL, jitter_prob=0.0, grayscale_prob=0.0, blur=0.0, solarize=0.0, mean=(0.0,) * 3, std=(1.0,) * 3
)


def _images(b: int = 6, c: int = 3, size: int = 48, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, c, size, size), generator=g, dtype=torch.uint8)


def test_shapes_dtypes_and_view_order() -> None:
    out = GPUMultiCrop(SMALL, seed=0)(_images())
    assert len(out.global_crops) == 2 and len(out.local_crops) == 3
    assert all(v.shape == (6, 3, 32, 32) and v.dtype == torch.float32 for v in out.global_crops)
    assert all(v.shape == (6, 3, 16, 16) for v in out.local_crops)
    assert out.views[0] is out.global_crops[0] and out.views[2] is out.local_crops[0]
    assert all(torch.isfinite(v).all() for v in out.views)
    bf16 = GPUMultiCrop(SMALL, seed=0, out_dtype=torch.bfloat16)(_images())
    assert bf16.views[0].dtype == torch.bfloat16


def test_same_seed_same_views_different_seed_differs() -> None:
    x = _images()
    a = GPUMultiCrop(SMALL, seed=3)(x).views
    b = GPUMultiCrop(SMALL, seed=3)(x).views
    c = GPUMultiCrop(SMALL, seed=4)(x).views
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.allclose(a[0], c[0])


def test_rejects_bad_input() -> None:
    m = GPUMultiCrop(SMALL)
    with pytest.raises(ValueError, match="uint8"):
        m(_images().float())
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        m(_images()[0])


def _gradient(size: int = 64) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return torch.stack((xs * 2, ys * 2, xs + ys)).to(torch.uint8)[None]  # linear in x and y, < 256


def test_crop_is_the_sub_region_resized() -> None:
    img = _gradient().float()
    box = torch.tensor([[10.0, 20.0, 40.0, 44.0]])  # x1, y1, x2, y2: 30 wide, 24 high
    out = crop_resize(img, box, 12)[0]
    # Output pixel centres in input coordinates (half-pixel convention); the image is linear,
    # so any average of symmetric samples equals the value at the centre.
    cx = 10 + (torch.arange(12) + 0.5) * 30 / 12 - 0.5
    cy = 20 + (torch.arange(12) + 0.5) * 24 / 12 - 0.5
    expect = torch.stack((2 * cx[None, :].expand(12, 12), 2 * cy[:, None].expand(12, 12), cx[None, :] + cy[:, None]))
    torch.testing.assert_close(out, expect, atol=1e-3, rtol=0)
    # And it agrees with torchvision's crop + antialiased resize away from the crop border.
    ref = TF.resized_crop(img, top=20, left=10, height=24, width=30, size=[12, 12], antialias=True)[0]
    torch.testing.assert_close(out[:, 1:-1, 1:-1], ref[:, 1:-1, 1:-1], atol=0.6, rtol=0)


def test_geometry_only_views_are_crops_with_flips() -> None:
    x = _gradient().expand(8, -1, -1, -1).contiguous()
    m = GPUMultiCrop(GEOM, seed=1)
    params = m.sample_params(8, 64, 64, local=False, blur_p=0.0, solarize_p=0.0)
    out = m.apply(x.float() / 255, params, 32)
    direct = crop_resize(x.float() / 255, params.boxes, 32)
    flipped = params.flip
    assert 0 < int(flipped.sum()) < 8  # seed chosen so both cases occur
    torch.testing.assert_close(out[~flipped], direct[~flipped])
    torch.testing.assert_close(out[flipped], direct[flipped].flip(-1))
    # On the x-gradient channel a flip reverses the direction of increase.
    dx = out[:, 0, :, -1] - out[:, 0, :, 0]
    assert bool((dx[flipped] < 0).all()) and bool((dx[~flipped] > 0).all())


@pytest.mark.parametrize(
    ("option", "field", "expected"),
    [
        ("vflip", "vflip", lambda v: v.flip(-2)),
        # counter-clockwise, as torchvision's rotate(90) that lightly's RandomRotate calls on the PIL path
        ("rotate90", "rot90", lambda v: TF.rotate(v, 90)),
    ],
)
def test_vertical_flip_and_quarter_turn(option: str, field: str, expected) -> None:
    x = _gradient().expand(8, -1, -1, -1).contiguous()
    m = GPUMultiCrop(dataclasses.replace(GEOM, hflip=0.0, **{option: 0.5}), seed=2)
    p = m.sample_params(8, 64, 64, local=False, blur_p=0.0, solarize_p=0.0)
    out = m.apply(x.float() / 255, p, 32)
    direct = crop_resize(x.float() / 255, p.boxes, 32)
    hit = getattr(p, field)
    assert 0 < int(hit.sum()) < 8 and not p.flip.any()
    torch.testing.assert_close(out[hit], expected(direct[hit]))
    torch.testing.assert_close(out[~hit], direct[~hit])
    off = GPUMultiCrop(dataclasses.replace(GEOM, hflip=0.0), seed=2).sample_params(8, 64, 64, False, 0.0, 0.0)
    assert not getattr(off, field).any()


@pytest.mark.parametrize("scale", [(0.32, 1.0), (0.05, 0.32)])
def test_box_parameters_in_range(scale: tuple[float, float]) -> None:
    g = torch.Generator().manual_seed(0)
    h, w = 80, 120
    boxes = sample_boxes(4000, h, w, scale, (3 / 4, 4 / 3), g)
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all() and (bw > 0).all() and (bh > 0).all()
    area = bw * bh / (h * w)
    # Rounding to whole pixels moves the area a little around the sampled scale.
    assert area.min() >= scale[0] * 0.85 and area.max() <= scale[1] * 1.15 + 1e-6
    ratio = bw / bh
    assert ratio.min() >= 0.7 and ratio.max() <= 1.45
    # Positions spread over the image, not stuck at a corner.
    assert boxes[:, 0].std() > 1.0


def test_box_distribution_matches_torchvision_random_resized_crop() -> None:
    from torchvision.transforms import RandomResizedCrop

    torch.manual_seed(0)
    h, w, n = 90, 160, 3000
    img = torch.zeros(1, h, w)
    ref = torch.tensor([RandomResizedCrop.get_params(img, [0.05, 0.32], [3 / 4, 4 / 3]) for _ in range(n)]).float()
    ours = sample_boxes(n, h, w, (0.05, 0.32), (3 / 4, 4 / 3), torch.Generator().manual_seed(0))
    ref_area, ref_ratio = ref[:, 2] * ref[:, 3] / (h * w), ref[:, 3] / ref[:, 2]  # get_params: (i, j, h, w)
    our_w, our_h = ours[:, 2] - ours[:, 0], ours[:, 3] - ours[:, 1]
    our_area, our_ratio = our_w * our_h / (h * w), our_w / our_h
    q = torch.tensor([0.1, 0.5, 0.9])
    torch.testing.assert_close(our_area.quantile(q), ref_area.quantile(q), atol=0.01, rtol=0)
    torch.testing.assert_close(our_ratio.quantile(q), ref_ratio.quantile(q), atol=0.03, rtol=0)
    # Centres spread the same way (uniform over the valid positions).
    ref_cx = (ref[:, 1] + ref[:, 3] / 2) / w
    our_cx = (ours[:, 0] + our_w / 2) / w
    torch.testing.assert_close(our_cx.quantile(q), ref_cx.quantile(q), atol=0.02, rtol=0)


def test_view_parameter_ranges_and_probabilities() -> None:
    m = GPUMultiCrop(AugmentConfig(preset="rgb"), seed=0)
    p = m.sample_params(20000, 64, 64, local=False, blur_p=0.1, solarize_p=0.2)
    lo = torch.tensor([0.6, 0.6, 0.8, -0.1])
    hi = torch.tensor([1.4, 1.4, 1.2, 0.1])
    assert (p.factors >= lo).all() and (p.factors <= hi).all()
    assert (p.sigma >= 0.1).all() and (p.sigma <= 2.0).all()
    for flag, prob in ((p.flip, 0.5), (p.jitter, 0.8), (p.gray, 0.2), (p.blur, 0.1), (p.solarize, 0.2)):
        assert abs(flag.float().mean().item() - prob) < 0.02
    assert torch.equal(p.order.sort(dim=1).values, torch.arange(4).expand(20000, 4))
    gray = GPUMultiCrop(AugmentConfig(preset="grayscale"), seed=0).sample_params(1000, 64, 64, False, 1.0, 0.0)
    assert not gray.gray.any()


@pytest.mark.parametrize("channels", [1, 3])
def test_grayscale_preset_keeps_channels_equal(channels: int) -> None:
    cfg = dataclasses.replace(SMALL, preset="grayscale")
    m = GPUMultiCrop(cfg, seed=0)
    x = _images(c=1).expand(-1, channels, -1, -1).contiguous()
    for v in m(x).views:
        raw = v * m.std + m.mean  # undo the per-channel normalisation
        torch.testing.assert_close(raw[:, 0], raw[:, 1], atol=1e-5, rtol=0)
        torch.testing.assert_close(raw[:, 0], raw[:, 2], atol=1e-5, rtol=0)


def test_colour_domain_changes_colour() -> None:
    # With hue/saturation jitter and random grey on, some RGB views must stop being grey.
    m = GPUMultiCrop(dataclasses.replace(SMALL, jitter_prob=1.0), seed=0)
    x = _images()
    raw = m(x).views[0] * m.std + m.mean
    assert (raw[:, 0] - raw[:, 1]).abs().max() > 0.05


@pytest.mark.parametrize(
    ("ours", "theirs", "factors"),
    [
        (color.adjust_brightness, TF.adjust_brightness, [0.6, 1.0, 1.4]),
        (color.adjust_contrast, TF.adjust_contrast, [0.6, 1.0, 1.4]),
        (color.adjust_saturation, TF.adjust_saturation, [0.8, 1.0, 1.2]),
        (color.adjust_hue, TF.adjust_hue, [-0.1, 0.03, 0.1]),
    ],
)
def test_per_sample_colour_ops_match_torchvision(ours, theirs, factors) -> None:  # type: ignore[no-untyped-def]
    x = _images(b=3, size=20).float() / 255
    got = ours(x.clone(), torch.tensor(factors))
    for i, f in enumerate(factors):
        torch.testing.assert_close(got[i], theirs(x[i], f), atol=2e-5, rtol=0)


def test_blur_and_solarize_match_torchvision() -> None:
    x = _images(b=3, size=24).float() / 255
    sig = torch.tensor([0.1, 0.9, 2.0])
    got = color.gaussian_blur(x, sig, 9)
    for i in range(3):
        ref = TF.gaussian_blur(x[i], kernel_size=[9, 9], sigma=[float(sig[i])] * 2)
        torch.testing.assert_close(got[i], ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(color.solarize(x), TF.solarize(x, threshold=128 / 255))


@pytest.mark.gpu
def test_gpu_matches_cpu() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    x = _images(b=8, size=64)
    cpu = GPUMultiCrop(SMALL, seed=5)(x).views
    gpu = GPUMultiCrop(SMALL, seed=5).cuda()(x.cuda()).views
    unmoved = GPUMultiCrop(SMALL, seed=5)(x.cuda()).views  # module left on the CPU: follows its input
    for a, b, c in zip(cpu, gpu, unmoved):
        torch.testing.assert_close(b, c, atol=1e-5, rtol=0)
        assert b.is_cuda
        torch.testing.assert_close(b.cpu(), a, atol=2e-3, rtol=0)

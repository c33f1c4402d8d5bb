"""The ``gpu`` augmentation backend: decode-and-resize in the loader, views made by the module."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.augment.device import DecodeResize, device_multicrop, load_size, loader_transform
from pipeline.augment.gpu_multicrop import GPUMultiCrop
from pipeline.augment.pil_multicrop import MultiCrop
from pipeline.config.augment import AugmentConfig
from pipeline.pretrain import data as D
from pipeline.pretrain.methods.base import SSLMethod
from pipeline.pretrain.module import PretrainModule
from tests.unit.pretrain_tiny import write_shards

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
SMALL = dict(global_size=32, local_size=16, local_crops=3, load_size=40)


def _smooth(n: int, size: int, channels: int, seed: int = 0) -> list[Image.Image]:
    """Smooth random images (low-frequency noise upsampled), like photos more than white noise."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, channels, 6, 6, generator=g)
    img = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    arr = (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a[..., 0] if channels == 1 else a) for a in arr]


def _module(spec: AugmentConfig) -> PretrainModule:
    aug = device_multicrop(spec)
    assert isinstance(aug, GPUMultiCrop)
    # SSLMethod's base is never called here (only the batch hooks run); it has no backbones.
    return PretrainModule(SSLMethod(), partial(torch.optim.SGD), lambda *a: None, 2, device_augment=aug)  # type: ignore


def _views(module: PretrainModule, batch: D.ImageBatch) -> list[torch.Tensor]:
    return module.on_after_batch_transfer(module.on_before_batch_transfer(batch, 0), 0)


def test_decode_resize_keeps_aspect_by_centre_cropping() -> None:
    # 40 wide x 20 high: black | gray centre square | white; the square fit sees only the gray centre.
    arr = np.full((20, 40), 128, np.uint8)
    arr[:, :10], arr[:, 30:] = 0, 255
    t = DecodeResize(16, grayscale=True)(Image.fromarray(arr))
    assert t.dtype == torch.uint8 and t.shape == (1, 16, 16)
    assert (t[:, :, 2:-2] == 128).all() and abs(t.float().mean().item() - 128) < 8
    rgb = DecodeResize(16, grayscale=False)(Image.fromarray(arr))  # L promoted to RGB
    assert rgb.shape == (3, 16, 16) and torch.equal(rgb[0], rgb[2])
    gray = DecodeResize(16, grayscale=True)(_smooth(1, 30, 3)[0])  # colour image to one channel
    assert gray.shape == (1, 16, 16)


def test_large_jpegs_decode_at_reduced_scale_to_the_same_square() -> None:
    import io

    big = _smooth(1, 512, 3, seed=3)[0].resize((1024, 768), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    big.save(buf, format="JPEG", quality=95)
    sample = {"__key__": "k", "jpg": buf.getvalue()}
    t = DecodeResize(64, grayscale=False)
    assert D.decode(sample, t.draft).size == (128, 96)  # 1/8 scale: both sides still >= 64
    assert D.decode(sample).size == (1024, 768)
    fast, full = t(D.decode(sample, t.draft)), t(D.decode(sample))
    assert fast.shape == full.shape == (3, 64, 64)
    assert (fast.float() - full.float()).abs().mean() < 2.0  # same picture up to resampling
    gray = D.decode(sample, DecodeResize(64, grayscale=True).draft)
    assert gray.mode == "L" and gray.size == (128, 96)  # luma decoded directly


def test_one_recipe_for_both_backends_and_backend_choice() -> None:
    spec = AugmentConfig(
        preset="grayscale", backend="gpu", blur=0.8, solarize=0.3, vflip=0.5, rotate90=0.25, local_crops=5
    )
    gpu = device_multicrop(spec)
    assert isinstance(gpu, GPUMultiCrop) and gpu.cfg is spec and gpu.gray
    assert gpu.blur_p == pytest.approx((0.8, 0.08, 0.4))  # global 1, global 2 (0.1x), locals (0.5x), as on PIL
    p = gpu.sample_params(4000, 32, 32, local=False, blur_p=0.0, solarize_p=0.0)
    assert not p.gray.any()  # grayscale preset: no random grey, no saturation/hue factors
    torch.testing.assert_close(p.factors[:, 2:], torch.tensor([1.0, 0.0]).expand(4000, 2))
    assert abs(p.rot90.float().mean().item() - 0.25) < 0.03 and abs(p.vflip.float().mean().item() - 0.5) < 0.03
    views = gpu(torch.zeros(2, 1, 40, 40, dtype=torch.uint8)).views
    assert len(views) == 2 + 5 and views[0].shape == (2, 3, 224, 224)
    rgb = GPUMultiCrop(AugmentConfig(preset="rgb"))
    q = rgb.sample_params(4000, 32, 32, local=False, blur_p=0.0, solarize_p=0.0)
    assert not rgb.gray and abs(q.gray.float().mean().item() - 0.2) < 0.03 and q.factors[:, 3].abs().max() > 0.05
    with pytest.raises(ValueError, match="resolved"):
        GPUMultiCrop(AugmentConfig(preset="auto"))
    assert load_size(spec) == 256 and load_size(AugmentConfig(global_size=16, load_size=0)) == 18
    assert isinstance(loader_transform(spec), DecodeResize) and isinstance(device_multicrop(spec), GPUMultiCrop)
    pil = AugmentConfig(preset="rgb")
    assert isinstance(loader_transform(pil), MultiCrop) and device_multicrop(pil) is None
    with pytest.raises(ValueError, match="backend"):
        AugmentConfig(backend="cuda")


def test_loader_yields_uint8_batches_with_per_batch_seeds(tmp_path: Path) -> None:
    write_shards(tmp_path, 36, per_shard=10, seed=4)
    shards, metas = D.describe_folder(tmp_path)
    spec = D.StreamSpec(tuple(map(str, shards)), len(metas), batch_size=6, seed=3, shuffle_buffer=8)
    transform = loader_transform(AugmentConfig(preset="grayscale", backend="gpu", **SMALL))
    full = list(D.ShardLoader(spec, transform))
    assert len(full) == 6
    for b in full:
        assert isinstance(b, D.ImageBatch) and b.images.dtype == torch.uint8 and b.images.shape == (6, 1, 40, 40)
    assert len({b.seed for b in full}) == 6  # every batch its own augmentation seed
    # A resumed loader (start at batch 4) yields the same images and seeds as the full pass.
    resumed = D.ShardLoader(spec, transform)
    resumed.load_state_dict({"epoch": 0, "consumed": 4})
    tail = list(resumed)
    assert [b.seed for b in tail] == [b.seed for b in full[4:]]
    assert all(torch.equal(a.images, b.images) for a, b in zip(tail, full[4:]))
    other = D.ShardLoader(spec, transform)
    other.sampler.set_epoch(1)
    assert {b.seed for b in other}.isdisjoint({b.seed for b in full})


def test_module_makes_normalised_views_deterministically() -> None:
    spec = AugmentConfig(preset="rgb", backend="gpu", **SMALL)
    module = _module(spec)
    images = torch.stack([DecodeResize(40, False)(im) for im in _smooth(8, 48, 3)])
    views = _views(module, D.ImageBatch(images, 123))
    assert [tuple(v.shape) for v in views] == [(8, 3, 32, 32)] * 2 + [(8, 3, 16, 16)] * 3
    assert all(v.dtype == torch.float32 for v in views)
    raw = [v * STD + MEAN for v in views]
    assert all(r.min() >= -1e-5 and r.max() <= 1 + 1e-5 for r in raw)  # un-normalised values are pixels in [0, 1]
    again = _views(module, D.ImageBatch(images, 123))
    assert all(torch.equal(a, b) for a, b in zip(views, again))  # the seed alone fixes the views
    other = _views(module, D.ImageBatch(images, 124))
    assert not torch.equal(views[0], other[0])
    # a plain list of views (the pil backend) passes through untouched
    assert module.on_after_batch_transfer(module.on_before_batch_transfer(views, 0), 0) is views


def test_grayscale_preset_gives_equal_channels_even_from_colour_images() -> None:
    spec = AugmentConfig(preset="grayscale", backend="gpu", **SMALL)
    images = torch.stack([loader_transform(spec)(im) for im in _smooth(8, 48, 3, seed=1)])
    assert images.shape[1] == 1
    for v in _views(_module(spec), D.ImageBatch(images, 7)):
        raw = v * STD + MEAN
        assert v.shape[1] == 3
        torch.testing.assert_close(raw[:, 0], raw[:, 1], atol=1e-5, rtol=0)
        torch.testing.assert_close(raw[:, 1], raw[:, 2], atol=1e-5, rtol=0)


def test_without_random_photometry_views_keep_the_image_statistics() -> None:
    # No jitter, blur or solarize: a view of a constant image is that constant, normalised.
    spec = AugmentConfig(preset="rgb", backend="gpu", jitter_prob=0, grayscale_prob=0, blur=0, solarize=0, **SMALL)
    images = torch.full((4, 3, 40, 40), 100, dtype=torch.uint8)
    want = (100 / 255 - MEAN) / STD
    for v in _views(_module(spec), D.ImageBatch(images, 0)):
        torch.testing.assert_close(v, want.expand_as(v), atol=1e-5, rtol=0)


@pytest.mark.parametrize("preset", ["rgb", "grayscale"])
def test_view_statistics_match_the_pil_backend(preset: str) -> None:
    # Same recipe, same images: per-view, per-channel mean and spread of the normalised pixels agree
    # with lightly's PIL transforms (different random draws, so only in distribution; at 384 images the
    # draws move the means by ~0.03). A wrong mapping (e.g. solarize or blur on the wrong view, missing
    # normalisation) moves them by 0.2 or more.
    kw = dict(preset=preset, global_size=24, local_size=16, local_crops=1)
    pil_spec, gpu_spec = AugmentConfig(**kw), AugmentConfig(backend="gpu", load_size=32, **kw)
    imgs = _smooth(384, 32, 1 if preset == "grayscale" else 3, seed=2)
    D.seed_everything_for(0)
    pil = [torch.stack(v) for v in zip(*(MultiCrop(pil_spec)(im) for im in imgs))]
    batch = torch.stack([loader_transform(gpu_spec)(im) for im in imgs])
    gpu = _views(_module(gpu_spec), D.ImageBatch(batch, 1))
    assert [v.shape for v in pil] == [v.shape for v in gpu]
    for i, (a, b) in enumerate(zip(pil, gpu)):
        for stat in (torch.mean, torch.std):
            sa, sb = stat(a, dim=(0, 2, 3)), stat(b, dim=(0, 2, 3))
            assert torch.allclose(sa, sb, atol=0.1), (i, stat.__name__, sa, sb)


@pytest.mark.gpu
def test_views_on_cuda_match_cpu() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    spec = AugmentConfig(preset="rgb", backend="gpu", **SMALL)
    images = torch.stack([DecodeResize(40, False)(im) for im in _smooth(8, 48, 3)])
    cpu = _views(_module(spec), D.ImageBatch(images, 5))
    module = _module(spec).cuda()
    gpu = _views(module, D.ImageBatch(images.pin_memory().cuda(non_blocking=True), 5))
    for a, b in zip(cpu, gpu):
        assert b.is_cuda and b.dtype == torch.float32
        torch.testing.assert_close(b.cpu(), a, atol=2e-3, rtol=0)

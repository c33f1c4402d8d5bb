import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.augment.pil_multicrop import MultiCrop
from pipeline.config.augment import AugmentConfig, resolve_preset


def test_grayscale_preset_makes_three_equal_channels_and_no_colour_jitter() -> None:
    crop = MultiCrop(AugmentConfig(preset="grayscale", global_size=32, local_size=16, local_crops=3))
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 48), dtype=np.uint8))
    views = crop(img.convert("RGB"))  # an RGB copy of a gray image is converted back to L
    assert [tuple(v.shape) for v in views] == [(3, 32, 32)] * 2 + [(3, 16, 16)] * 3
    # channels differ only by the per-channel normalisation, i.e. the content is one gray channel
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    raw = views[0] * std.view(3, 1, 1) + mean.view(3, 1, 1)
    assert torch.allclose(raw[0], raw[1], atol=1e-5) and torch.allclose(raw[1], raw[2], atol=1e-5)
    jitters = [t for v in crop.views for t in v.transform.transforms if type(t).__name__ == "RandomApply"]
    cj = jitters[0].transforms[0]
    assert cj.saturation is None and cj.hue is None


def test_rgb_preset_keeps_colour() -> None:
    crop = MultiCrop(AugmentConfig(preset="rgb", global_size=24, local_size=12, local_crops=0))
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    views = crop(img)
    assert len(views) == 2 and views[0].shape == (3, 24, 24)
    assert not torch.allclose(views[0][0], views[0][1])


def test_auto_preset_and_bad_preset() -> None:
    assert resolve_preset("auto", 0.95) == "grayscale"
    assert resolve_preset("auto", 0.2) == "rgb"
    assert resolve_preset("rgb", 1.0) == "rgb"
    with pytest.raises(ValueError, match="preset"):
        AugmentConfig(preset="sepia")
    with pytest.raises(ValueError, match="resolved"):
        MultiCrop(AugmentConfig(preset="auto"))


def test_rotate90_turns_every_view_a_quarter_counter_clockwise() -> None:
    # Whole-image crops, no flips, jitter, blur or solarize: only the rotation changes a view.
    spec = AugmentConfig(
        preset="grayscale",
        global_size=16,
        local_crops=0,
        global_scale=(1.0, 1.0),
        hflip=0.0,
        vflip=0.0,
        rotate90=1.0,
        jitter_prob=0.0,
        blur=0.0,
        solarize=0.0,
    )
    img = Image.fromarray(np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1)))  # brighter to the right
    still = MultiCrop(dataclasses.replace(spec, rotate90=0.0))(img)[0]
    turned = MultiCrop(spec)(img)[0]
    torch.testing.assert_close(turned, still.rot90(1, dims=(-2, -1)))
    assert bool((turned[0, 0] > turned[0, -1]).all())  # right edge now on top: brighter at the top

"""Pooling of frozen features: ViT class token + mean patch token, CNN average or GeM pooling; cache keys."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from pipeline.config.eval import BackboneEntryConfig
from pipeline.evaluation.backbones import resolve_backbones
from pipeline.evaluation.features import feature_key, pixel_features, pool


@torch.no_grad()
def test_vit_features_are_cls_next_to_mean_patch_token() -> None:
    torch.manual_seed(0)
    vit = timm.create_model("test_vit", num_classes=0, img_size=32).eval()
    x = torch.randn(2, 3, 32, 32)
    tokens = vit.forward_features(x)  # after the final norm
    f = pool(vit, x)
    d = tokens.shape[-1]
    assert f.shape == (2, 2 * d)
    torch.testing.assert_close(f[:, :d], tokens[:, 0])
    torch.testing.assert_close(f[:, d:], tokens[:, vit.num_prefix_tokens :].mean(1))
    torch.testing.assert_close(f[:, :d], vit(x))  # timm's own pooled output is the class token


@torch.no_grad()
def test_cnn_average_pooling_is_timms_and_gem_is_the_generalised_mean() -> None:
    torch.manual_seed(0)
    cnn = timm.create_model("test_efficientnet", num_classes=0).eval()
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(pool(cnn, x, "avg"), cnn(x))
    fmap = cnn.forward_features(x).clamp(min=1e-6)
    expected = (fmap**3).mean((2, 3)) ** (1 / 3)
    torch.testing.assert_close(pool(cnn, x, "gem"), expected)
    # GeM lies between the mean and the max of the (positive) map.
    assert bool((pool(cnn, x, "gem") >= fmap.mean((2, 3)) - 1e-6).all())
    with pytest.raises(ValueError, match="pooling"):
        pool(cnn, x, "max")


def test_cache_key_depends_on_pooling_but_not_for_pixels(tmp_path: Path) -> None:
    entries = [
        BackboneEntryConfig("cnn", arch="test_efficientnet"),
        BackboneEntryConfig("pixels", arch="raw_pixels", img_size=8),
    ]
    cnn, pixels = resolve_backbones(entries, 0)[0]
    assert feature_key(cnn, "d", 0, "avg") != feature_key(cnn, "d", 0, "gem")
    assert feature_key(pixels, "d", 0, "avg") == feature_key(pixels, "d", 0, "gem")


def test_pixel_features_keep_one_channel_for_gray_images() -> None:
    rng = np.random.default_rng(0)
    gray = [Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8), mode="L") for _ in range(3)]
    f = pixel_features(gray, 8)
    assert f.shape == (3, 64) and f.min() >= 0 and f.max() <= 1
    # Gray images stored as RGB are still gray; one coloured image makes the whole set RGB.
    np.testing.assert_array_equal(pixel_features([im.convert("RGB") for im in gray], 8), f)
    colour = Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8), mode="RGB")
    mixed = pixel_features([gray[0], colour], 8)
    assert mixed.shape == (2, 192)
    np.testing.assert_allclose(mixed[0].reshape(64, 3), np.repeat(f[0][:, None], 3, axis=1))

"""Patch features: the port of PatchCore's patch embedding, CNN and ViT trunks, the on-disk cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image

from pipeline.config.eval import BackboneEntryConfig, PatchCoreConfig
from pipeline.evaluation.backbones import resolve_backbones
from pipeline.evaluation.features import extract, network_features, preprocessing
from pipeline.evaluation.patch_features import (
    aggregate_patches,
    default_layers,
    extract_patches,
    extract_with_patches,
    network_joint_features,
    network_patch_features,
    patch_embedding,
)
from tests.unit.pretrain_tiny import tiny_vit


def _reference_embed(maps: list[torch.Tensor], patchsize: int, pre_dim: int, target_dim: int) -> torch.Tensor:
    """amazon-science/patchcore-inspection ``PatchCore._embed`` after the backbone, transcribed
    (``PatchMaker.patchify``, the resize loop, ``Preprocessing``/``MeanMapper``, ``Aggregator``)."""

    def patchify(features: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        padding = int((patchsize - 1) / 2)
        unfolder = torch.nn.Unfold(kernel_size=patchsize, stride=1, padding=padding, dilation=1)
        unfolded = unfolder(features)
        n_patches = [int((s + 2 * padding - 1 * (patchsize - 1) - 1) / 1 + 1) for s in features.shape[-2:]]
        unfolded = unfolded.reshape(*features.shape[:2], patchsize, patchsize, -1)
        return unfolded.permute(0, 4, 1, 2, 3), n_patches

    pf = [patchify(x) for x in maps]
    patch_shapes = [x[1] for x in pf]
    features = [x[0] for x in pf]
    ref = patch_shapes[0]
    for i in range(1, len(features)):
        f = features[i]
        dims = patch_shapes[i]
        f = f.reshape(f.shape[0], dims[0], dims[1], *f.shape[2:])
        f = f.permute(0, -3, -2, -1, 1, 2)
        base = f.shape
        f = f.reshape(-1, *f.shape[-2:])
        f = F.interpolate(f.unsqueeze(1), size=(ref[0], ref[1]), mode="bilinear", align_corners=False)
        f = f.squeeze(1).reshape(*base[:-2], ref[0], ref[1])
        f = f.permute(0, -2, -1, 1, 2, 3)
        f = f.reshape(len(f), -1, *f.shape[-3:])
        features[i] = f
    features = [x.reshape(-1, *x.shape[-3:]) for x in features]
    mapped = [F.adaptive_avg_pool1d(x.reshape(len(x), 1, -1), pre_dim).squeeze(1) for x in features]
    stacked = torch.stack(mapped, dim=1).reshape(len(mapped[0]), 1, -1)
    return F.adaptive_avg_pool1d(stacked, target_dim).reshape(len(stacked), -1)


def test_aggregate_patches_matches_the_original_embedding() -> None:
    g = torch.Generator().manual_seed(0)
    maps = [torch.randn(2, 5, 8, 6, generator=g), torch.randn(2, 7, 4, 3, generator=g)]
    ours = aggregate_patches(maps, patch_size=3, layer_dim=16, embed_dim=12)
    ref = _reference_embed(maps, 3, 16, 12)
    assert ours.shape == (2, 8, 6, 12)
    torch.testing.assert_close(ours.reshape(-1, 12), ref, rtol=1e-5, atol=1e-6)


def test_default_layers_pick_mid_level_maps() -> None:
    assert default_layers(timm.create_model("test_efficientnet", num_classes=0)) == [2, 3]  # strides 8 and 16
    assert default_layers(timm.create_model("test_resnet", num_classes=0)) == [2, 3]
    assert default_layers(timm.create_model("test_vit", num_classes=0)) == [1, 2]  # of 6 blocks
    assert default_layers(tiny_vit(depth=1)) == [0]


def _images(n: int, size: int = 32) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8), mode="L") for _ in range(n)]


@pytest.mark.parametrize("arch", ["cnn", "vit"])
def test_patch_features_of_a_cnn_and_a_vit(arch: str) -> None:
    opts = PatchCoreConfig(img_size=32, layer_dim=8, embed_dim=6, batch_size=3)
    model = timm.create_model("test_efficientnet", num_classes=0) if arch == "cnn" else tiny_vit(depth=2)
    prep = preprocessing(model, opts.img_size)
    feats = network_patch_features(model, _images(5), prep, opts, default_layers(model))
    # CNN: the stride-8 grid of 32 px; ViT: its patch-4 grid.
    assert feats.shape == ((5, 4, 4, 6) if arch == "cnn" else (5, 8, 8, 6))
    assert feats.dtype == np.float16
    assert np.isfinite(feats).all() and feats.std() > 0


def test_extract_patches_is_cached_per_backbone_and_options(tmp_path: Path) -> None:
    (b,), _ = resolve_backbones([BackboneEntryConfig(name="cnn", arch="test_efficientnet")], seed=0)
    opts = PatchCoreConfig(img_size=32, layer_dim=8, embed_dim=6)
    imgs = _images(4)
    first = extract_patches(b, imgs, tmp_path, "data", opts)
    assert len(list(tmp_path.glob("cnn-patches-*.npy"))) == 1
    np.testing.assert_array_equal(extract_patches(b, imgs, tmp_path, "data", opts), first)
    other = extract_patches(b, imgs, tmp_path, "data", PatchCoreConfig(img_size=64, layer_dim=8, embed_dim=6))
    assert other.shape[1:3] == (8, 8)
    assert len(list(tmp_path.glob("cnn-patches-*.npy"))) == 2


@pytest.mark.parametrize("arch", ["cnn", "vit"])
def test_one_pass_gives_the_pooled_and_the_patch_features_of_two(arch: str) -> None:
    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", num_classes=0) if arch == "cnn" else tiny_vit(depth=2)
    opts = PatchCoreConfig(img_size=None, grid=None, layer_dim=8, embed_dim=6, batch_size=3)
    prep = preprocessing(model, 32)
    imgs, layers = _images(5), default_layers(model)
    pooled, patches = network_joint_features(model, imgs, prep, opts, layers, batch_size=2)
    np.testing.assert_allclose(pooled, network_features(model, imgs, prep, batch_size=4), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        patches.astype(np.float32),
        network_patch_features(model, imgs, prep, opts, layers).astype(np.float32),
        rtol=1e-2,
        atol=1e-3,
    )


def test_maps_finer_than_the_grid_are_pooled_to_it() -> None:
    fine, coarse = torch.randn(2, 4, 12, 12), torch.randn(2, 5, 6, 6)
    out = patch_embedding([coarse, fine], PatchCoreConfig(grid=6, layer_dim=8, embed_dim=6))
    assert out.shape == (2, 6, 6, 6)
    # The same as pooling the fine map by hand: the grid step is an average over 2 x 2 cells.
    want = aggregate_patches([F.avg_pool2d(fine, 2), coarse], 3, 8, 6)
    torch.testing.assert_close(out, want)
    assert patch_embedding([fine], PatchCoreConfig(grid=None, layer_dim=8, embed_dim=6)).shape == (2, 12, 12, 6)


def test_joint_extraction_shares_the_caches_of_the_separate_ones(tmp_path: Path) -> None:
    (b,), _ = resolve_backbones([BackboneEntryConfig(name="cnn", arch="test_efficientnet", img_size=32)], seed=0)
    opts = PatchCoreConfig(layer_dim=8, embed_dim=6)  # img_size=None: the pooled features' pass
    imgs = _images(4)
    feats, patches = extract_with_patches(b, imgs, tmp_path, "data", opts)
    assert len(list(tmp_path.glob("cnn-*.npy"))) == 2
    # Read back by the one-kind extractors: same files, nothing recomputed.
    np.testing.assert_array_equal(extract(b, imgs, tmp_path, "data"), feats)
    np.testing.assert_array_equal(extract_patches(b, imgs, tmp_path, "data", opts), patches)
    assert len(list(tmp_path.glob("cnn-*.npy"))) == 2
